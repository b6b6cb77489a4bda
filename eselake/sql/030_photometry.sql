-- view: photometry
-- version: 5
-- The seed's photometry table: every committed measurement with its image metadata and the ensemble
-- normalisation of its image (image_gains):
--   gain               the image's gain; for a reference source that served in it, the median of the other
--                      references' ratios (leave-one-out: no source normalises itself, so a reference's own
--                      variability is never divided away); gain_leave_one_out says which
--   normalized_flux_jy = peak_jyb / gain
--   normalized_err_jy  = sqrt((peak_err_jyb / gain)^2 + (peak_jyb * gain_err / gain^2)^2)
-- Both are NULL, and norm_flag says why, when the image could not be normalised.
CREATE OR REPLACE VIEW photometry AS
WITH j AS (
    SELECT m.*, g.gain AS image_gain, g.gain_err, g.n_refs, g.norm_flag,
           -- a reference that served in this image (the image_gains selection: clean, finite, not clipped)
           coalesce(b.source_id IS NOT NULL AND g.gain IS NOT NULL AND (m.flags & 15) = 0 AND isfinite(m.peak_jyb)
                    AND (g.clip_mad = 0 OR abs(CAST(m.peak_jyb AS DOUBLE) / b.baseline_jyb - g.clip_med)
                                           <= 3.0 * 1.4826 * g.clip_mad), false) AS gain_leave_one_out,
           CAST(m.peak_jyb AS DOUBLE) / b.baseline_jyb AS own_ratio,
           g.loo_m1, g.loo_m2, g.loo_m3
    FROM measurements m
    LEFT JOIN image_gains_current g USING (image_id)
    LEFT JOIN reference_baselines_current b ON b.source_id = m.source_id AND b.is_reference
),
k AS (
    SELECT * EXCLUDE (own_ratio, loo_m1, loo_m2, loo_m3, gain_err),
           CASE WHEN gain_leave_one_out THEN loo_median(n_refs, loo_m1, loo_m2, loo_m3, own_ratio)
                ELSE image_gain END AS gain,
           -- a median of n - 1 references instead of n
           gain_err * CASE WHEN gain_leave_one_out THEN sqrt(n_refs / (n_refs - 1.0)) ELSE 1.0 END AS gain_err
    FROM j
)
SELECT k.* EXCLUDE (gain_leave_one_out), k.gain_leave_one_out,
       CAST(k.peak_jyb AS DOUBLE) / k.gain AS normalized_flux_jy,
       -- squares as products: pow() costs a third of a full refresh's daily binning (every measurement)
       sqrt((CAST(k.peak_err_jyb AS DOUBLE) / k.gain) * (CAST(k.peak_err_jyb AS DOUBLE) / k.gain)
            + (CAST(k.peak_jyb AS DOUBLE) * k.gain_err / (k.gain * k.gain))
              * (CAST(k.peak_jyb AS DOUBLE) * k.gain_err / (k.gain * k.gain))) AS normalized_err_jy
FROM k;
