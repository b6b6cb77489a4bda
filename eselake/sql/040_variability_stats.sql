-- view: variability_stats
-- version: 3
-- Variability statistics per source over its lightcurve_points (fluxes in mJy; w = 1 / err^2), computed by
-- merging the sufficient statistics of the source's daily_lightcurves bins (sums, extremes and extreme points),
-- so the kept dataset source_stats is refreshed one day at a time with this same definition:
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
--   vs_max_abs_m = max |m| among pairs with |Vs| >= 4.3, vs_max_abs = max |Vs|. Every pair is used for
--   sources with up to 100 points; beyond that, pairs between the 50 faintest and 50 brightest points
--   (the extreme pairs, where max |m| and max |Vs| lie unless those points have much larger errors than
--   the rest), which keeps the cost linear in the number of points.
--   n_unnormalized  = points whose image could not be normalised (raw fluxes used)
CREATE OR REPLACE VIEW variability_stats AS
WITH agg AS (
    SELECT source_id, CAST(sum(n_points) AS BIGINT) AS n_obs, min(first_mjd) AS first_mjd, max(last_mjd) AS last_mjd,
           sum(sum_f) AS sf, sum(sum_ff) AS sff, sum(sum_w) AS sw, sum(sum_wf) AS swf, sum(sum_wff) AS swff,
           min(min_f_mjy) AS min_flux_mjy, max(max_f_mjy) AS max_flux_mjy,
           CAST(sum(n_unnormalized) AS BIGINT) AS n_unnormalized
    FROM daily_lightcurves GROUP BY source_id
),
stats AS (
    SELECT *, sf / n_obs AS mean_flux_mjy,
           CASE WHEN n_obs > 1 THEN sqrt(greatest(sff - sf * sf / n_obs, 0.0) / (n_obs - 1)) END AS std_flux_mjy,
           swf / sw AS wmean_flux_mjy, swff - swf * swf / sw AS chi2
    FROM agg
),
pts AS (
    SELECT source_id, unnest(extremes) AS x FROM daily_lightcurves
),
extremes AS MATERIALIZED (
    SELECT source_id, x.image_id, x.mjd, x.f, x.e FROM (
        SELECT source_id, unnest(list_distinct(list_concat(arg_min(x, x.f, 50), arg_max(x, x.f, 50)))) AS x
        FROM pts GROUP BY source_id)
),
pairs AS (
    SELECT a.source_id, (a.f - b.f) / sqrt(a.e * a.e + b.e * b.e) AS vs, 2.0 * (a.f - b.f) / (a.f + b.f) AS m
    FROM extremes a JOIN extremes b
      ON a.source_id = b.source_id AND (a.mjd < b.mjd OR (a.mjd = b.mjd AND a.image_id < b.image_id))
),
two_epoch AS (
    SELECT source_id, max(abs(m)) FILTER (WHERE abs(vs) >= 4.3) AS vs_max_abs_m, max(abs(vs)) AS vs_max_abs
    FROM pairs GROUP BY source_id
)
SELECT a.source_id, a.n_obs, a.first_mjd, a.last_mjd,
       a.mean_flux_mjy, a.std_flux_mjy, a.min_flux_mjy, a.max_flux_mjy, a.wmean_flux_mjy,
       CASE WHEN a.n_obs > 1 THEN greatest(a.chi2, 0.0) / (a.n_obs - 1) END AS chi2_nu,
       CASE WHEN a.n_obs > 1 THEN a.n_obs / (a.n_obs - 1.0)
            * (a.swff / a.n_obs - (a.swf / a.n_obs) * (a.swf / a.n_obs) / (a.sw / a.n_obs)) END AS eta_metric,
       a.std_flux_mjy / nullif(a.mean_flux_mjy, 0) AS v_metric,
       greatest(a.max_flux_mjy - a.mean_flux_mjy, a.mean_flux_mjy - a.min_flux_mjy)
           / nullif(a.std_flux_mjy, 0) AS sigma_deviation,
       t.vs_max_abs_m, t.vs_max_abs,
       a.n_unnormalized
FROM stats a LEFT JOIN two_epoch t USING (source_id);
