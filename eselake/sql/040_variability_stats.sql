-- view: variability_stats
-- version: 2
-- Variability statistics per source over lightcurve_points (fluxes in mJy; w = 1 / err^2):
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
WITH p AS MATERIALIZED (
    SELECT source_id, image_id, mjd, flux_jy * 1000.0 AS f, err_jy * 1000.0 AS e,
           1.0 / (err_jy * err_jy * 1e6) AS w, normalized
    FROM lightcurve_points
),
agg AS (
    SELECT source_id,
           count(*) AS n_obs,
           min(mjd) AS first_mjd, max(mjd) AS last_mjd,
           avg(f) AS mean_flux_mjy, stddev_samp(f) AS std_flux_mjy,
           min(f) AS min_flux_mjy, max(f) AS max_flux_mjy,
           sum(w * f) / sum(w) AS wmean_flux_mjy,
           sum(w * f * f) - sum(w * f) * sum(w * f) / sum(w) AS chi2,
           avg(w * f * f) AS mean_wff, avg(w * f) AS mean_wf, avg(w) AS mean_w,
           count(*) FILTER (WHERE NOT normalized) AS n_unnormalized
    FROM p GROUP BY source_id
),
extremes AS MATERIALIZED (
    -- the 50 faintest and 50 brightest points of each source (top-N aggregates: no full sort)
    SELECT source_id, x.image_id, x.mjd, x.f, x.e FROM (
        SELECT source_id, unnest(list_distinct(list_concat(
                   arg_min({'image_id': image_id, 'mjd': mjd, 'f': f, 'e': e}, f, 50),
                   arg_max({'image_id': image_id, 'mjd': mjd, 'f': f, 'e': e}, f, 50)))) AS x
        FROM p GROUP BY source_id)
),
pairs AS (
    SELECT a.source_id,
           (a.f - b.f) / sqrt(a.e * a.e + b.e * b.e) AS vs,
           2.0 * (a.f - b.f) / (a.f + b.f) AS m
    FROM extremes a
    JOIN extremes b
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
            * (a.mean_wff - a.mean_wf * a.mean_wf / a.mean_w) END AS eta_metric,
       a.std_flux_mjy / nullif(a.mean_flux_mjy, 0) AS v_metric,
       greatest(a.max_flux_mjy - a.mean_flux_mjy, a.mean_flux_mjy - a.min_flux_mjy)
           / nullif(a.std_flux_mjy, 0) AS sigma_deviation,
       t.vs_max_abs_m, t.vs_max_abs,
       a.n_unnormalized
FROM agg a
LEFT JOIN two_epoch t USING (source_id);
