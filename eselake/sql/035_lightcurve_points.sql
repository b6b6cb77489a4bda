-- view: lightcurve_points
-- version: 1
-- The points every variability statistic is computed from: one per measurement that has a finite flux and
-- a positive error and is neither blanked (flag 2) nor outside its image (flag 8).
--   flux_jy / err_jy: the normalised flux and error where the image was normalised (normalized = true),
--   else the raw peak flux and error (normalized = false; variability_stats counts these as n_unnormalized).
CREATE OR REPLACE VIEW lightcurve_points AS
SELECT source_id, image_id, CAST(mjd AS DOUBLE) AS mjd,
       CAST(coalesce(normalized_flux_jy, peak_jyb) AS DOUBLE) AS flux_jy,
       CAST(CASE WHEN normalized_flux_jy IS NOT NULL THEN normalized_err_jy ELSE peak_err_jyb END AS DOUBLE) AS err_jy,
       normalized_flux_jy IS NOT NULL AS normalized
FROM photometry
WHERE (flags & 10) = 0 AND isfinite(peak_jyb) AND peak_err_jyb > 0;
