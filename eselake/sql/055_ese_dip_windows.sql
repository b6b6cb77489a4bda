-- view: ese_dip_windows
-- version: 4
-- ESE dip scan. For every source, window length L in (14, 30, 60, 90, 180) days and window start day d
-- (windows lying inside the observed span), over the daily-binned lightcurve with weights w = 1/err^2:
--   mean_in   weighted mean inside [d, d + L)        (a RANGE window frame)
--   mean_out  weighted mean of all other days        (the baseline)
--   depth     1 - mean_in / mean_out                 (0.3 = a 30% dip)
--   z         (mean_out - mean_in) / sqrt(1/W_in + 1/W_out)   white-noise significance
--   dip_significance: (delta - median delta) / max(scatter, white-noise error), where delta = mean_out -
--             mean_in and the scatter is 1.4826 * MAD of delta over the positions of that window length, for
--             the same source, whose windows do not overlap the most significant one (n_windows of them).
--             Red noise and calibration systematics inflate that scatter, so they do not fake dips; the dip
--             itself does not; for white noise dip_significance ~ z.
-- Windows start every max(1, L/10) days (every day for 14-day windows, every 18 days for 180-day ones): the
-- dip's edges are measured separately (ese_dips), so a coarser start grid for long windows loses nothing.
-- A window needs >= max(3, L/4) daily points inside, >= 10 outside, and >= 10 positions to calibrate.
CREATE OR REPLACE VIEW ese_dip_windows AS
WITH d AS MATERIALIZED (
    SELECT source_id, day, mjd, flux_jy AS f, 1.0 / (err_jy * err_jy) AS w FROM daily_lightcurves
),
tot AS (
    SELECT source_id, sum(w) AS w_tot, sum(w * f) AS s_tot, count(*) AS n_tot, max(day) AS last_day
    FROM d GROUP BY source_id
),
wide AS MATERIALIZED (
    -- all five window lengths in one pass (constant frames are much faster than a per-row frame size)
    SELECT source_id, day, mjd,
           sum(w) OVER w14 AS w_in_14, sum(w * f) OVER w14 AS s_in_14, count(*) OVER w14 AS n_in_14,
           max(mjd) OVER w14 AS end_mjd_14,
           sum(w) OVER w30 AS w_in_30, sum(w * f) OVER w30 AS s_in_30, count(*) OVER w30 AS n_in_30,
           max(mjd) OVER w30 AS end_mjd_30,
           sum(w) OVER w60 AS w_in_60, sum(w * f) OVER w60 AS s_in_60, count(*) OVER w60 AS n_in_60,
           max(mjd) OVER w60 AS end_mjd_60,
           sum(w) OVER w90 AS w_in_90, sum(w * f) OVER w90 AS s_in_90, count(*) OVER w90 AS n_in_90,
           max(mjd) OVER w90 AS end_mjd_90,
           sum(w) OVER w180 AS w_in_180, sum(w * f) OVER w180 AS s_in_180, count(*) OVER w180 AS n_in_180,
           max(mjd) OVER w180 AS end_mjd_180
    FROM d
    WINDOW w14 AS (PARTITION BY source_id ORDER BY day RANGE BETWEEN CURRENT ROW AND 13 FOLLOWING),
           w30 AS (PARTITION BY source_id ORDER BY day RANGE BETWEEN CURRENT ROW AND 29 FOLLOWING),
           w60 AS (PARTITION BY source_id ORDER BY day RANGE BETWEEN CURRENT ROW AND 59 FOLLOWING),
           w90 AS (PARTITION BY source_id ORDER BY day RANGE BETWEEN CURRENT ROW AND 89 FOLLOWING),
           w180 AS (PARTITION BY source_id ORDER BY day RANGE BETWEEN CURRENT ROW AND 179 FOLLOWING)
),
win AS (
    SELECT source_id, 14 AS window_days, day AS start_day, mjd AS start_mjd, w_in_14 AS w_in, s_in_14 AS s_in, n_in_14 AS n_in, end_mjd_14 AS end_mjd FROM wide
    UNION ALL SELECT source_id, 30 AS window_days, day AS start_day, mjd AS start_mjd, w_in_30 AS w_in, s_in_30 AS s_in, n_in_30 AS n_in, end_mjd_30 AS end_mjd FROM wide WHERE day % 3 = 0
    UNION ALL SELECT source_id, 60 AS window_days, day AS start_day, mjd AS start_mjd, w_in_60 AS w_in, s_in_60 AS s_in, n_in_60 AS n_in, end_mjd_60 AS end_mjd FROM wide WHERE day % 6 = 0
    UNION ALL SELECT source_id, 90 AS window_days, day AS start_day, mjd AS start_mjd, w_in_90 AS w_in, s_in_90 AS s_in, n_in_90 AS n_in, end_mjd_90 AS end_mjd FROM wide WHERE day % 9 = 0
    UNION ALL SELECT source_id, 180 AS window_days, day AS start_day, mjd AS start_mjd, w_in_180 AS w_in, s_in_180 AS s_in, n_in_180 AS n_in, end_mjd_180 AS end_mjd FROM wide WHERE day % 18 = 0
),
cal AS MATERIALIZED (
    SELECT w.source_id, w.window_days, w.start_day, w.start_mjd, w.end_mjd, w.n_in,
           t.n_tot - w.n_in AS n_out,
           w.s_in / w.w_in AS mean_in,
           (t.s_tot - w.s_in) / (t.w_tot - w.w_in) AS mean_out,
           sqrt(1.0 / w.w_in + 1.0 / (t.w_tot - w.w_in)) AS delta_err
    FROM win w JOIN tot t USING (source_id)
    WHERE w.start_day + w.window_days - 1 <= t.last_day
      AND w.n_in >= greatest(3, w.window_days / 4)
      AND t.n_tot - w.n_in >= 10
),
best_z AS (
    SELECT source_id, window_days, arg_max(start_day, (mean_out - mean_in) / delta_err) AS best_start
    FROM cal GROUP BY source_id, window_days
),
marked AS (
    -- the calibration sample: positions whose window does not overlap the most significant one, so that the
    -- dip (and its caustics) does not inflate the scatter it is measured against
    SELECT c.*, c.mean_out - c.mean_in AS delta, abs(c.start_day - b.best_start) >= c.window_days AS far
    FROM cal c JOIN best_z b USING (source_id, window_days)
),
spread AS (
    SELECT *, median(delta) FILTER (WHERE far) OVER per_length AS med_delta,
           count(*) FILTER (WHERE far) OVER per_length AS n_windows
    FROM marked
    WINDOW per_length AS (PARTITION BY source_id, window_days)
),
scatter AS (
    SELECT *, 1.4826 * median(abs(delta - med_delta)) FILTER (WHERE far)
                  OVER (PARTITION BY source_id, window_days) AS sd_delta
    FROM spread
)
SELECT source_id, window_days, start_day, start_mjd AS window_start_mjd, end_mjd AS window_end_mjd,
       n_in, n_out, mean_in AS mean_in_jy, mean_out AS mean_out_jy,
       1.0 - mean_in / mean_out AS depth,
       delta / delta_err AS z,
       sd_delta AS scatter_jy, n_windows,
       CASE WHEN n_windows >= 10 THEN (delta - med_delta) / greatest(sd_delta, delta_err) END AS dip_significance
FROM scatter;
