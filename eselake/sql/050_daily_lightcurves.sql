-- view: daily_lightcurves
-- version: 1
-- Lightcurves binned by day (DSA-110 sees each source once per sidereal day): inverse-variance weighted
-- mean of lightcurve_points per source per MJD day (floor(mjd)), its error and the number of points.
CREATE OR REPLACE VIEW daily_lightcurves AS
SELECT source_id,
       CAST(floor(mjd) AS BIGINT) AS day,
       avg(mjd) AS mjd,
       sum(flux_jy / (err_jy * err_jy)) / sum(1.0 / (err_jy * err_jy)) AS flux_jy,
       1.0 / sqrt(sum(1.0 / (err_jy * err_jy))) AS err_jy,
       count(*) AS n_points
FROM lightcurve_points
GROUP BY source_id, CAST(floor(mjd) AS BIGINT);
