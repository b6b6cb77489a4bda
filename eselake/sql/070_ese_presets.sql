-- view: ese_presets
-- version: 2
-- Detection presets are false-alarm targets: a source is a candidate of a preset when its best template fit
-- is a dip (is_dip: positive depth supported by several nights, preferred to a flare or a step) with a
-- false-alarm rate per source-year at or below max_fap_per_source_year, over at least min_n_days nights.
-- A 40,000-source survey at 1e-3 expects about 40 false candidates a year to review.
CREATE OR REPLACE VIEW ese_presets AS
SELECT * FROM (VALUES
    ('conservative', 1e-4, 20),
    ('moderate',     1e-3, 15),
    ('sensitive',    1e-2, 10)
) AS t(preset, max_fap_per_source_year, min_n_days);
