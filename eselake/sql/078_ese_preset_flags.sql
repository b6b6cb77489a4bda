-- view: ese_preset_flags
-- version: 1
-- Every source's ese_scores row once per preset, with which presets it passes:
--   passes_thresholds = enough epochs AND sigma_deviation, chi2_nu, eta and dip significance all at or above
--                       the preset's thresholds
--   passes_composite  = enough epochs AND composite_score >= the preset's min_composite_score
--   passes_non_sigma  = passes_thresholds without the sigma_deviation cut (for a custom --min-sigma)
CREATE OR REPLACE VIEW ese_preset_flags AS
SELECT s.*, p.preset, p.min_sigma,
       (s.n_obs >= p.min_n_obs AND s.chi2_nu >= p.min_chi2_nu AND s.eta_metric >= p.min_eta
        AND coalesce(s.dip_significance, 0) >= p.min_dip_significance) AS passes_non_sigma,
       (s.n_obs >= p.min_n_obs AND s.chi2_nu >= p.min_chi2_nu AND s.eta_metric >= p.min_eta
        AND coalesce(s.dip_significance, 0) >= p.min_dip_significance
        AND s.sigma_deviation >= p.min_sigma) AS passes_thresholds,
       (s.n_obs >= p.min_n_obs AND s.composite_score >= p.min_composite_score) AS passes_composite
FROM ese_scores s CROSS JOIN ese_presets p;
