-- view: daily_lightcurves
-- version: 3
-- Lightcurves binned by day (DSA-110 sees each source once per sidereal day): inverse-variance weighted
-- mean of lightcurve_points per source per MJD day (floor(mjd)), its error and the number of points.
-- Each bin also carries mergeable statistics of its points, from which variability_stats is kept current one
-- day at a time (fluxes f and errors e in mJy, w = 1 / e^2). They are central moments, merged across days
-- with Chan et al.'s pairwise formula, so a source with (near) constant flux keeps an exact (near) zero std:
--   n_points, mean_f_mjy, m2_f (sum (f - mean)^2), sum_w, wmean_f_mjy (sum w f / sum w),
--   wm2_f (sum w (f - wmean)^2), min_f_mjy / err_at_min_mjy, max_f_mjy / err_at_max_mjy (the day's faintest
--   and brightest points, for the two-epoch metrics), first_mjd, last_mjd, n_unnormalized.
-- All aggregates are of fixed size, so the binning of 100M points runs (and spills) within DuckDB's memory limit.
CREATE OR REPLACE VIEW daily_lightcurves AS
WITH p AS (
    SELECT source_id, mjd, flux_jy, err_jy, normalized,
           flux_jy * 1000.0 AS f, err_jy * 1000.0 AS e, 1.0 / (err_jy * err_jy * 1e6) AS w
    FROM lightcurve_points
),
b AS (
    SELECT source_id,
           CAST(floor(mjd) AS BIGINT) AS day,
           avg(mjd) AS mjd,
           sum(flux_jy / (err_jy * err_jy)) / sum(1.0 / (err_jy * err_jy)) AS flux_jy,
           1.0 / sqrt(sum(1.0 / (err_jy * err_jy))) AS err_jy,
           count(*) AS n_points,
           avg(f) AS mean_f_mjy,
           var_pop(f) * count(*) AS m2_f,                      -- DuckDB's var_pop is Welford's (stable)
           sum(w) AS sum_w, sum(w * f) AS swf, sum(w * f * f) AS swff,
           min(f) AS min_f_mjy, arg_min(e, f) AS err_at_min_mjy,
           max(f) AS max_f_mjy, arg_max(e, f) AS err_at_max_mjy,
           min(mjd) AS first_mjd, max(mjd) AS last_mjd,
           count(*) FILTER (WHERE NOT normalized) AS n_unnormalized
    FROM p
    GROUP BY source_id, CAST(floor(mjd) AS BIGINT)
)
SELECT source_id, day, mjd, flux_jy, err_jy, n_points, mean_f_mjy, m2_f, sum_w,
       swf / sum_w AS wmean_f_mjy,
       -- within one day (usually one or a few points): exact zero for a single point
       CASE WHEN n_points = 1 THEN 0.0 ELSE greatest(swff - swf * swf / sum_w, 0.0) END AS wm2_f,
       min_f_mjy, err_at_min_mjy, max_f_mjy, err_at_max_mjy, first_mjd, last_mjd, n_unnormalized
FROM b;
