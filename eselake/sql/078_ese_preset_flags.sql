-- view: ese_preset_flags
-- version: 2
-- Every source's ese_scores row once per preset, with whether it is a candidate of that preset:
--   passes = is_dip AND fap_per_source_year <= max_fap_per_source_year AND n_days >= min_n_days
CREATE OR REPLACE VIEW ese_preset_flags AS
SELECT s.*, p.preset, p.max_fap_per_source_year,
       coalesce(s.is_dip AND s.fap_per_source_year <= p.max_fap_per_source_year AND s.n_days >= p.min_n_days,
                false) AS passes
FROM ese_scores s CROSS JOIN ese_presets p;
