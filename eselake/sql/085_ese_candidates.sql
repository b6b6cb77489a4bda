-- view: ese_candidates
-- version: 1
-- The seed's ese_candidates table, always fresh: candidates of the 'moderate' preset selected by composite
-- score (the mode that weighs the dip scan; long ESE dips rarely reach 3.5 in sigma_deviation alone).
-- Another preset or mode for this connection:
--   SET VARIABLE ese_preset = 'conservative';  SET VARIABLE ese_composite = false;
CREATE OR REPLACE VIEW ese_candidates AS
SELECT * FROM ese_candidates_for(coalesce(getvariable('ese_preset'), 'moderate'), NULL,
                                 coalesce(getvariable('ese_composite'), true));
