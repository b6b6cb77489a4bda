-- view: ese_candidates_all
-- version: 1
-- The candidates of every preset (one row per source and preset it passes), best first within a preset:
-- the fitted lens (alpha, duration, centre, source/lens size ratio, depth, baseline, caustics) with
-- uncertainties, its false-alarm rate, the best alternative model and its likelihood ratio, and the seed's
-- fields (significance, chi2_nu, eta_metric). Kept as a derived dataset by `eselake refresh`.
CREATE OR REPLACE VIEW ese_candidates_all AS
SELECT source_id, preset, significance, sigma, fap_per_source_year, confidence, model,
       depth, depth_err, duration_days, duration_err_days, center_mjd, center_err_days,
       dip_start_mjd, dip_end_mjd, n_dip_days, lens_alpha, lens_alpha_err, size_ratio, caustics,
       baseline_jy * 1000.0 AS baseline_mjy, slope_jy_per_day, lr, alt_model, alt_lr,
       n_obs, n_days, mean_flux_mjy, sigma_deviation, chi2_nu, eta_metric, v_metric, vs_max_abs_m,
       red_noise_amp, red_noise_tau_days, first_mjd, last_mjd
FROM ese_preset_flags
WHERE passes;
