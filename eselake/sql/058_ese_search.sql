-- view: ese_search
-- version: 1
-- ESE template search, one row per source: eselake.detection.search.search_lightcurves over the source's
-- daily_lightcurves (a bank of Clegg, Fey & Lazio 1998 plasma-lens and flat-dip templates on a free baseline and
-- slope; 2 ln likelihood ratio `lr` against no event, corrected for the source's red noise; calibrated to a
-- false-alarm rate per source-year and a Gaussian-equivalent `sigma`; flare and step alternatives; `is_dip`).
-- The search is numerical code, not SQL: its results are the derived dataset ese_search, kept current by
-- `eselake refresh` (every ingest ends with one) and read here in place of this empty definition.
CREATE OR REPLACE VIEW ese_search AS
SELECT CAST(NULL AS VARCHAR) AS source_id,
       CAST(NULL AS BIGINT) AS n_days,
       CAST(NULL AS DOUBLE) AS span_days,
       CAST(NULL AS DOUBLE) AS first_mjd,
       CAST(NULL AS DOUBLE) AS last_mjd,
       CAST(NULL AS DOUBLE) AS baseline_jy,
       CAST(NULL AS DOUBLE) AS lr,
       CAST(NULL AS DOUBLE) AS sigma,
       CAST(NULL AS DOUBLE) AS fap_per_source_year,
       CAST(NULL AS VARCHAR) AS model,
       CAST(NULL AS DOUBLE) AS lens_alpha,
       CAST(NULL AS DOUBLE) AS lens_alpha_err,
       CAST(NULL AS DOUBLE) AS duration_days,
       CAST(NULL AS DOUBLE) AS duration_err_days,
       CAST(NULL AS DOUBLE) AS center_mjd,
       CAST(NULL AS DOUBLE) AS center_err_days,
       CAST(NULL AS DOUBLE) AS size_ratio,
       CAST(NULL AS DOUBLE) AS depth,
       CAST(NULL AS DOUBLE) AS depth_err,
       CAST(NULL AS BOOLEAN) AS caustics,
       CAST(NULL AS DOUBLE) AS slope_jy_per_day,
       CAST(NULL AS DOUBLE) AS dip_start_mjd,
       CAST(NULL AS DOUBLE) AS dip_end_mjd,
       CAST(NULL AS BIGINT) AS n_dip_days,
       CAST(NULL AS DOUBLE) AS robust_frac,
       CAST(NULL AS VARCHAR) AS alt_model,
       CAST(NULL AS DOUBLE) AS alt_lr,
       CAST(NULL AS DOUBLE) AS flare_lr,
       CAST(NULL AS DOUBLE) AS step_lr,
       CAST(NULL AS DOUBLE) AS lr_white,
       CAST(NULL AS BOOLEAN) AS is_dip,
       CAST(NULL AS DOUBLE) AS error_scale,
       CAST(NULL AS DOUBLE) AS red_noise_amp,
       CAST(NULL AS DOUBLE) AS red_noise_tau_days,
       CAST(NULL AS BIGINT) AS n_capped
WHERE false;
