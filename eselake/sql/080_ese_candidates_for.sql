-- view: ese_candidates_for
-- version: 2
-- Table macro: ESE candidates of one preset, e.g.
--   SELECT * FROM ese_candidates_for('conservative', NULL, false)
-- min_sigma (or NULL) overrides the preset's sigma threshold; composite = true selects by composite score
-- instead of all thresholds (see ese_preset_flags). status comes from the latest review ('active' when never
-- reviewed).
CREATE OR REPLACE MACRO ese_candidates_for(preset_name, min_sigma_override, composite) AS TABLE
SELECT s.source_id, f.preset, s.significance, s.composite_score, s.confidence,
       coalesce(r.status, 'active') AS status, r.notes AS review_notes,
       s.n_obs, s.mean_flux_mjy, s.sigma_deviation, s.chi2_nu, s.eta_metric, s.v_metric, s.vs_max_abs_m,
       s.dip_significance, s.dip_z, s.dip_depth, s.dip_start_mjd, s.dip_end_mjd, s.dip_duration_days,
       s.window_days, s.first_mjd, s.last_mjd
FROM ese_scores s
JOIN ese_preset_flags f ON f.source_id = s.source_id AND f.preset = preset_name
LEFT JOIN reviews r ON r.source_id = s.source_id
WHERE CASE WHEN composite THEN f.passes_composite
           WHEN min_sigma_override IS NULL THEN f.passes_thresholds
           ELSE f.passes_non_sigma AND s.sigma_deviation >= min_sigma_override END;
