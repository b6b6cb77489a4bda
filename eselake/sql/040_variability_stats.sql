-- view: variability_stats
-- version: 6
-- Variability statistics per source over its lightcurve_points (fluxes in mJy; w = 1 / err^2), computed by
-- merging the statistics of the source's daily_lightcurves bins, so the kept dataset source_stats is refreshed
-- one day at a time with this same definition. Central moments are merged across days with Chan et al.'s
-- formula: M2 = sum_d m2_d + sum_d n_d (mean_d - mean)^2 (and the same with weights), which stays exact for
-- (near) constant fluxes:
--   n_obs, first_mjd, last_mjd, mean/std (sample)/min/max flux, weighted mean flux
--   chi2_nu         = sum(w (f - f_wmean)^2) / (N - 1)
--   eta_metric      = N / (N - 1) * ( <w f^2> - <w f>^2 / <w> )          (VAST / TraP eta; algebraically
--                     the same number as chi2_nu, kept under both names as the seed and VAST use them)
--   v_metric        = std / mean                                          (fractional variability V)
--   sigma_deviation = max |f - mean| / std   (the seed's meaning). With the sample std it can never exceed
--                     (N - 1) / sqrt(N) < sqrt(N - 1): with 5 epochs at most 1.79, with 10 at most 2.85,
--                     so thresholds of 3-5 sigma need at least 11-27 epochs.
--   two-epoch metrics (Mooley et al. 2016; VAST): for pairs of epochs (a, b)
--     Vs = (f_a - f_b) / sqrt(e_a^2 + e_b^2),  m = 2 (f_a - f_b) / (f_a + f_b)
--   vs_max_abs_m = max |m| among pairs with |Vs| >= 4.3, vs_max_abs = max |Vs|, over the pairs among the
--   days' faintest and brightest points (every point when a source is seen once per day): all of them for
--   sources seen on up to 50 days, beyond that the 50 faintest day-minima and the 50 brightest day-maxima
--   (where max |m| and max |Vs| lie unless those points have much larger errors than the rest): linear cost.
--   n_unnormalized  = points whose image could not be normalised (raw fluxes used)
CREATE OR REPLACE VIEW variability_stats AS
WITH agg AS MATERIALIZED (
    SELECT source_id, CAST(sum(n_points) AS BIGINT) AS n_obs, min(first_mjd) AS first_mjd, max(last_mjd) AS last_mjd,
           sum(n_points * mean_f_mjy) / sum(n_points) AS mean_flux_mjy,
           sum(sum_w * wmean_f_mjy) / sum(sum_w) AS wmean_flux_mjy, sum(sum_w) AS sw,
           min(min_f_mjy) AS min_flux_mjy, max(max_f_mjy) AS max_flux_mjy,
           CAST(sum(n_unnormalized) AS BIGINT) AS n_unnormalized
    FROM daily_lightcurves GROUP BY source_id
),
moments AS (
    SELECT d.source_id,
           sum(d.m2_f + d.n_points * (d.mean_f_mjy - a.mean_flux_mjy) * (d.mean_f_mjy - a.mean_flux_mjy)) AS m2,
           sum(d.wm2_f + d.sum_w * (d.wmean_f_mjy - a.wmean_flux_mjy) * (d.wmean_f_mjy - a.wmean_flux_mjy)) AS chi2
    FROM daily_lightcurves d JOIN agg a USING (source_id) GROUP BY d.source_id
),
stats AS (
    SELECT a.*, CASE WHEN a.n_obs > 1 THEN sqrt(greatest(m.m2, 0.0) / (a.n_obs - 1)) END AS std_flux_mjy,
           greatest(m.chi2, 0.0) AS chi2
    FROM agg a JOIN moments m USING (source_id)
),
candidates AS (
    -- the 50 faintest day-minima and the 50 brightest day-maxima, as keys day * 2 + k (k = 1: a day's brightest
    -- point when it is not also its faintest), so the aggregate states are small lists of integers
    -- (ties in flux broken by the key, so the 50 are one well-defined set)
    SELECT source_id, unnest(list_distinct(list_concat(
               arg_min(day * 2, {'f': min_f_mjy, 'k': day * 2}, 50),
               arg_max(day * 2 + CAST(n_points > 1 AS INTEGER),
                       {'f': max_f_mjy, 'k': day * 2 + CAST(n_points > 1 AS INTEGER)}, 50)))) AS key
    FROM daily_lightcurves GROUP BY source_id
),
extremes AS MATERIALIZED (
    SELECT d.source_id, d.day, c.key % 2 AS k,
           CASE WHEN c.key % 2 = 0 THEN d.min_f_mjy ELSE d.max_f_mjy END AS f,
           CASE WHEN c.key % 2 = 0 THEN d.err_at_min_mjy ELSE d.err_at_max_mjy END AS e
    FROM candidates c JOIN daily_lightcurves d ON d.source_id = c.source_id AND d.day = c.key // 2
),
two_epoch AS (
    SELECT a.source_id,
           max(abs(2.0 * (a.f - b.f) / (a.f + b.f))) FILTER (WHERE abs(a.f - b.f) >= 4.3 * sqrt(a.e * a.e + b.e * b.e))
               AS vs_max_abs_m,
           max(abs(a.f - b.f) / sqrt(a.e * a.e + b.e * b.e)) AS vs_max_abs
    FROM extremes a JOIN extremes b ON a.source_id = b.source_id AND (a.day < b.day OR (a.day = b.day AND a.k < b.k))
    GROUP BY a.source_id
)
SELECT a.source_id, a.n_obs, a.first_mjd, a.last_mjd,
       a.mean_flux_mjy, a.std_flux_mjy, a.min_flux_mjy, a.max_flux_mjy, a.wmean_flux_mjy,
       CASE WHEN a.n_obs > 1 THEN a.chi2 / (a.n_obs - 1) END AS chi2_nu,
       CASE WHEN a.n_obs > 1 THEN a.chi2 / (a.n_obs - 1) END AS eta_metric,
       a.std_flux_mjy / nullif(a.mean_flux_mjy, 0) AS v_metric,
       greatest(a.max_flux_mjy - a.mean_flux_mjy, a.mean_flux_mjy - a.min_flux_mjy)
           / nullif(a.std_flux_mjy, 0) AS sigma_deviation,
       t.vs_max_abs_m, t.vs_max_abs,
       a.n_unnormalized
FROM stats a LEFT JOIN two_epoch t USING (source_id);
