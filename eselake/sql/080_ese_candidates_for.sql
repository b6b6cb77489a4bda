-- view: ese_candidates_for
-- version: 3
-- Table macro: ESE candidates of one preset, e.g.
--   SELECT * FROM ese_candidates_for('conservative', NULL, false)
-- min_sigma (or NULL) overrides the preset's sigma threshold; composite = true selects by composite score
-- instead of all thresholds (see ese_preset_flags). status comes from the latest review ('active' when never
-- reviewed).
CREATE OR REPLACE MACRO ese_candidates_for(preset_name, min_sigma_override, composite) AS TABLE
SELECT f.source_id, f.preset, f.significance, f.composite_score, f.confidence,
       coalesce(r.status, 'active') AS status, r.notes AS review_notes,
       f.n_obs, f.mean_flux_mjy, f.sigma_deviation, f.chi2_nu, f.eta_metric, f.v_metric, f.vs_max_abs_m,
       f.dip_significance, f.dip_z, f.dip_depth, f.dip_start_mjd, f.dip_end_mjd, f.dip_duration_days,
       f.window_days, f.first_mjd, f.last_mjd
FROM ese_preset_flags f
LEFT JOIN reviews r ON r.source_id = f.source_id
WHERE f.preset = preset_name
  AND CASE WHEN composite THEN f.passes_composite
           WHEN min_sigma_override IS NULL THEN f.passes_thresholds
           ELSE f.passes_non_sigma AND f.sigma_deviation >= min_sigma_override END;
