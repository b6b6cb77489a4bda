-- view: ese_dip_windows
-- version: 1
-- ESE dip scan. For every source, window length L in (14, 30, 60, 90, 180) days and window start day d
-- (windows lying inside the observed span), over the daily-binned lightcurve with weights w = 1/err^2:
--   mean_in   weighted mean inside [d, d + L)        (a RANGE window frame)
--   mean_out  weighted mean of all other days        (the baseline)
--   depth     1 - mean_in / mean_out                 (0.3 = a 30% dip)
--   z         (mean_out - mean_in) / sqrt(1/W_in + 1/W_out)   white-noise significance
--   dip_significance: (delta - median delta) / max(scatter, white-noise error), where delta = mean_out -
--             mean_in and the scatter is 1.4826 * MAD of delta over all positions of that window length
--             for the same source. Red noise and calibration systematics inflate that scatter, so they do
--             not fake dips; for white noise dip_significance ~ z.
-- A window needs >= max(3, L/4) daily points inside, >= 10 outside, and >= 10 positions to calibrate.
CREATE OR REPLACE VIEW ese_dip_windows AS
WITH d AS MATERIALIZED (
    SELECT source_id, day, mjd, flux_jy AS f, 1.0 / (err_jy * err_jy) AS w FROM daily_lightcurves
),
tot AS (
    SELECT source_id, sum(w) AS w_tot, sum(w * f) AS s_tot, count(*) AS n_tot, max(day) AS last_day
    FROM d GROUP BY source_id
),
lens AS (
    SELECT unnest([14, 30, 60, 90, 180]) AS window_days
),
win AS (
    SELECT d.source_id, l.window_days, d.day AS start_day, d.mjd AS start_mjd,
           sum(d.w) OVER fr AS w_in, sum(d.w * d.f) OVER fr AS s_in, count(*) OVER fr AS n_in,
           max(d.mjd) OVER fr AS end_mjd
    FROM d CROSS JOIN lens l
    WINDOW fr AS (PARTITION BY d.source_id, l.window_days ORDER BY d.day
                  RANGE BETWEEN CURRENT ROW AND l.window_days - 1 FOLLOWING)
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
spread AS (
    SELECT source_id, window_days, median(mean_out - mean_in) AS med_delta, count(*) AS n_windows
    FROM cal GROUP BY source_id, window_days
),
scatter AS (
    SELECT c.source_id, c.window_days, s.med_delta, s.n_windows,
           1.4826 * median(abs((c.mean_out - c.mean_in) - s.med_delta)) AS sd_delta
    FROM cal c JOIN spread s USING (source_id, window_days)
    GROUP BY c.source_id, c.window_days, s.med_delta, s.n_windows
)
SELECT c.source_id, c.window_days, c.start_day, c.start_mjd AS window_start_mjd, c.end_mjd AS window_end_mjd,
       c.n_in, c.n_out, c.mean_in AS mean_in_jy, c.mean_out AS mean_out_jy,
       1.0 - c.mean_in / c.mean_out AS depth,
       (c.mean_out - c.mean_in) / c.delta_err AS z,
       s.sd_delta AS scatter_jy, s.n_windows,
       CASE WHEN s.n_windows >= 10 THEN
            ((c.mean_out - c.mean_in) - s.med_delta) / greatest(s.sd_delta, c.delta_err) END AS dip_significance
FROM cal c JOIN scatter s USING (source_id, window_days);
