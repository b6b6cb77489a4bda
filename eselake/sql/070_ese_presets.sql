-- view: ese_presets
-- version: 1
-- Detection presets. A source is a candidate of a preset when it has at least min_n_obs points and
--   sigma_deviation >= min_sigma AND chi2_nu >= min_chi2_nu AND eta_metric >= min_eta
--   AND dip_significance >= min_dip_significance,
-- or, with composite scoring, when composite_score >= min_composite_score.
CREATE OR REPLACE VIEW ese_presets AS
SELECT * FROM (VALUES
    ('conservative', 5.0, 4.0, 3.0, 5.0, 7.0, 20),
    ('moderate',     3.5, 2.5, 2.0, 4.0, 5.0, 15),
    ('sensitive',    3.0, 1.5, 1.0, 3.0, 3.5, 10)
) AS t(preset, min_sigma, min_chi2_nu, min_eta, min_dip_significance, min_composite_score, min_n_obs);
