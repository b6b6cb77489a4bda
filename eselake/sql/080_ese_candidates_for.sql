-- view: ese_candidates_for
-- version: 1
-- Table macro: ESE candidates of one preset, e.g.
--   SELECT * FROM ese_candidates_for('conservative', NULL, false)
-- min_sigma (or NULL) overrides the preset's sigma threshold; composite = true selects by composite score
-- instead of all thresholds. status comes from the latest review ('active' when never reviewed).
CREATE OR REPLACE MACRO ese_candidates_for(preset_name, min_sigma_override, composite) AS TABLE
SELECT s.source_id, p.preset, s.significance, s.composite_score, s.confidence,
       coalesce(r.status, 'active') AS status, r.notes AS review_notes,
       s.n_obs, s.mean_flux_mjy, s.sigma_deviation, s.chi2_nu, s.eta_metric, s.v_metric, s.vs_max_abs_m,
       s.dip_significance, s.dip_z, s.dip_depth, s.dip_start_mjd, s.dip_end_mjd, s.dip_duration_days,
       s.window_days, s.first_mjd, s.last_mjd
FROM ese_scores s
JOIN ese_presets p ON p.preset = preset_name
LEFT JOIN reviews r USING (source_id)
WHERE s.n_obs >= p.min_n_obs
  AND CASE WHEN composite THEN s.composite_score >= p.min_composite_score
           ELSE s.sigma_deviation >= coalesce(min_sigma_override, p.min_sigma)
                AND s.chi2_nu >= p.min_chi2_nu
                AND s.eta_metric >= p.min_eta
                AND coalesce(s.dip_significance, 0) >= p.min_dip_significance END;
