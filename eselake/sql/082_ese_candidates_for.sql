-- view: ese_candidates_for
-- version: 4
-- Table macro: ESE candidates of one preset with their review status, e.g.
--   SELECT * FROM ese_candidates_for('conservative', NULL)
-- min_sigma (or NULL) additionally requires significance >= min_sigma. status comes from the latest review
-- ('active' when never reviewed).
CREATE OR REPLACE MACRO ese_candidates_for(preset_name, min_sigma) AS TABLE
SELECT c.*, coalesce(r.status, 'active') AS status, r.notes AS review_notes
FROM ese_candidates_all c
LEFT JOIN reviews r ON r.source_id = c.source_id
WHERE c.preset = preset_name
  AND (min_sigma IS NULL OR c.significance >= min_sigma);
