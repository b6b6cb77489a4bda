-- view: ese_candidates
-- version: 2
-- The seed's ese_candidates table: candidates of the default preset, 'moderate' (<= 1e-3 false candidates per
-- source-year), the same list as `eselake ese-detect`, detect_ese_candidates(lake), the API and the page.
-- Another preset for this connection:  SET VARIABLE ese_preset = 'conservative';
CREATE OR REPLACE VIEW ese_candidates AS
SELECT * FROM ese_candidates_for(coalesce(getvariable('ese_preset'), 'moderate'), getvariable('ese_min_sigma'))
ORDER BY fap_per_source_year, lr DESC, source_id;
