-- view: ese_dips
-- version: 2
-- The best dip of each source: the window of ese_dip_windows with the highest dip_significance (and a
-- positive depth), and the dip's extent: the run of days, overlapping that window, on which the 7-day
-- smoothed daily lightcurve lies below the half-depth level mean_out * (1 - depth / 2) (gaps of up to
-- 3 days allowed). dip_start_mjd / dip_end_mjd fall back to the window's edges if no such run exists.
-- dip_depth = 1 - median daily flux inside the extent / median outside (baseline_mjy, dip_mean_mjy);
-- window_depth is the best window's own depth.
CREATE OR REPLACE VIEW ese_dips AS
WITH best AS MATERIALIZED (
    SELECT * FROM ese_dip_windows
    WHERE depth > 0 AND dip_significance IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY source_id ORDER BY dip_significance DESC, window_days) = 1
),
smooth AS (
    SELECT source_id, day, mjd,
           sum(flux_jy / (err_jy * err_jy)) OVER s / sum(1.0 / (err_jy * err_jy)) OVER s AS f_smooth
    FROM daily_lightcurves
    WHERE source_id IN (SELECT source_id FROM best)
    WINDOW s AS (PARTITION BY source_id ORDER BY day RANGE BETWEEN 3 PRECEDING AND 3 FOLLOWING)
),
below AS (
    SELECT s.source_id, s.day, s.mjd, b.start_day, b.window_days,
           lag(s.day) OVER (PARTITION BY s.source_id ORDER BY s.day) AS prev_day
    FROM smooth s JOIN best b USING (source_id)
    WHERE s.f_smooth < b.mean_out_jy * (1.0 - b.depth / 2.0)
),
runs AS (
    SELECT *, sum(CASE WHEN prev_day IS NULL OR day - prev_day > 3 THEN 1 ELSE 0 END)
              OVER (PARTITION BY source_id ORDER BY day) AS run_id
    FROM below
),
run_extent AS (
    SELECT source_id, run_id, min(mjd) AS run_start_mjd, max(mjd) AS run_end_mjd,
           count(*) FILTER (WHERE day >= start_day AND day < start_day + window_days) AS days_in_window
    FROM runs GROUP BY source_id, run_id
),
chosen AS (
    SELECT * FROM run_extent WHERE days_in_window > 0
    QUALIFY row_number() OVER (PARTITION BY source_id ORDER BY days_in_window DESC) = 1
),
extent AS (
    SELECT b.*, coalesce(c.run_start_mjd, b.window_start_mjd) AS dip_start_mjd,
           coalesce(c.run_end_mjd, b.window_end_mjd) AS dip_end_mjd
    FROM best b LEFT JOIN chosen c USING (source_id)
),
levels AS (
    -- the dip's depth over its extent: median daily flux inside against median daily flux outside
    SELECT e.source_id,
           median(d.flux_jy) FILTER (WHERE d.mjd BETWEEN e.dip_start_mjd AND e.dip_end_mjd) AS inside_jy,
           median(d.flux_jy) FILTER (WHERE d.mjd NOT BETWEEN e.dip_start_mjd AND e.dip_end_mjd) AS outside_jy
    FROM extent e JOIN daily_lightcurves d USING (source_id)
    GROUP BY e.source_id
)
SELECT e.source_id, e.window_days, e.window_start_mjd, e.window_end_mjd,
       coalesce(1.0 - l.inside_jy / l.outside_jy, e.depth) AS dip_depth,
       e.depth AS window_depth, e.z AS dip_z, e.dip_significance,
       l.inside_jy * 1000.0 AS dip_mean_mjy, l.outside_jy * 1000.0 AS baseline_mjy,
       e.dip_start_mjd, e.dip_end_mjd, e.dip_end_mjd - e.dip_start_mjd AS dip_duration_days
FROM extent e LEFT JOIN levels l USING (source_id);
