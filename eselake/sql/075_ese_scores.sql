-- view: ese_scores
-- version: 1
-- Every source with its variability statistics, its best dip and a composite ESE score (0-10):
--   each metric is mapped to 0..1 between a 'no variability' and a 'clear ESE' value
--     sigma_deviation 3 -> 6, chi2_nu 1 -> 5, eta 1 -> 5, dip_significance 3 -> 8, dip depth 0.05 -> 0.30
--   composite_score = 10 * (0.15 sigma + 0.20 chi2 + 0.15 eta + 0.35 dip + 0.15 depth)
--   confidence: high (score >= 7), medium (>= 5), low.
-- significance keeps the seed's meaning: sigma_deviation (max deviation in units of the std).
CREATE OR REPLACE VIEW ese_scores AS
WITH s AS (
    SELECT v.*, d.window_days, d.window_start_mjd, d.window_end_mjd, d.dip_depth, d.dip_z,
           d.dip_significance, d.dip_mean_mjy, d.baseline_mjy, d.dip_start_mjd, d.dip_end_mjd,
           d.dip_duration_days
    FROM variability_stats v LEFT JOIN ese_dips d USING (source_id)
),
c AS (
    SELECT *,
           least(greatest((coalesce(sigma_deviation, 0) - 3.0) / 3.0, 0.0), 1.0) AS c_sigma,
           least(greatest((coalesce(chi2_nu, 0) - 1.0) / 4.0, 0.0), 1.0) AS c_chi2,
           least(greatest((coalesce(eta_metric, 0) - 1.0) / 4.0, 0.0), 1.0) AS c_eta,
           least(greatest((coalesce(dip_significance, 0) - 3.0) / 5.0, 0.0), 1.0) AS c_dip,
           least(greatest((coalesce(dip_depth, 0) - 0.05) / 0.25, 0.0), 1.0) AS c_depth
    FROM s
)
SELECT * EXCLUDE (c_sigma, c_chi2, c_eta, c_dip, c_depth),
       sigma_deviation AS significance,
       10.0 * (0.15 * c_sigma + 0.20 * c_chi2 + 0.15 * c_eta + 0.35 * c_dip + 0.15 * c_depth) AS composite_score,
       CASE WHEN 10.0 * (0.15 * c_sigma + 0.20 * c_chi2 + 0.15 * c_eta + 0.35 * c_dip + 0.15 * c_depth) >= 7 THEN 'high'
            WHEN 10.0 * (0.15 * c_sigma + 0.20 * c_chi2 + 0.15 * c_eta + 0.35 * c_dip + 0.15 * c_depth) >= 5 THEN 'medium'
            ELSE 'low' END AS confidence
FROM c;
