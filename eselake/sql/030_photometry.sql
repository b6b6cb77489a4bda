-- view: photometry
-- version: 2
-- The seed's photometry table: every committed measurement with its image metadata and the ensemble
-- normalisation of its image (image_gains):
--   normalized_flux_jy = peak_jyb / gain
--   normalized_err_jy  = sqrt((peak_err_jyb / gain)^2 + (peak_jyb * gain_err / gain^2)^2)
-- Both are NULL, and norm_flag says why, when the image could not be normalised.
CREATE OR REPLACE VIEW photometry AS
SELECT m.*,
       g.gain, g.gain_err, g.n_refs, g.norm_flag,
       CAST(m.peak_jyb AS DOUBLE) / g.gain AS normalized_flux_jy,
       sqrt(pow(CAST(m.peak_err_jyb AS DOUBLE) / g.gain, 2)
            + pow(CAST(m.peak_jyb AS DOUBLE) * g.gain_err / pow(g.gain, 2), 2)) AS normalized_err_jy
FROM measurements m
LEFT JOIN image_gains_current g USING (image_id);
