-- view: daily_lightcurves
-- version: 2
-- Lightcurves binned by day (DSA-110 sees each source once per sidereal day): inverse-variance weighted
-- mean of lightcurve_points per source per MJD day (floor(mjd)), its error and the number of points.
-- Each bin also carries the mergeable sufficient statistics of its points, from which variability_stats is
-- kept current one day at a time (fluxes f and errors e in mJy, w = 1 / e^2):
--   sum_f, sum_ff, sum_w, sum_wf, sum_wff, min_f_mjy, max_f_mjy, first_mjd, last_mjd, n_unnormalized, and
--   extremes: the day's 50 faintest and 50 brightest points {image_id, mjd, f, e} (all points of a day with
--   at most 100), so that the two-epoch metrics' extreme pairs can be merged across days.
CREATE OR REPLACE VIEW daily_lightcurves AS
WITH p AS (
    SELECT source_id, image_id, mjd, flux_jy, err_jy, normalized,
           flux_jy * 1000.0 AS f, err_jy * 1000.0 AS e, 1.0 / (err_jy * err_jy * 1e6) AS w
    FROM lightcurve_points
)
SELECT source_id,
       CAST(floor(mjd) AS BIGINT) AS day,
       avg(mjd) AS mjd,
       sum(flux_jy / (err_jy * err_jy)) / sum(1.0 / (err_jy * err_jy)) AS flux_jy,
       1.0 / sqrt(sum(1.0 / (err_jy * err_jy))) AS err_jy,
       count(*) AS n_points,
       sum(f) AS sum_f, sum(f * f) AS sum_ff, sum(w) AS sum_w, sum(w * f) AS sum_wf, sum(w * f * f) AS sum_wff,
       min(f) AS min_f_mjy, max(f) AS max_f_mjy, min(mjd) AS first_mjd, max(mjd) AS last_mjd,
       count(*) FILTER (WHERE NOT normalized) AS n_unnormalized,
       list_distinct(list_concat(
           arg_min({'image_id': image_id, 'mjd': mjd, 'f': f, 'e': e}, f, 50),
           arg_max({'image_id': image_id, 'mjd': mjd, 'f': f, 'e': e}, f, 50))) AS extremes
FROM p
GROUP BY source_id, CAST(floor(mjd) AS BIGINT);
