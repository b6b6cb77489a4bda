-- view: reviews
-- version: 1
-- Review status of candidates: the latest entry per source of the append-only reviews dataset
-- (eselake review SOURCE_ID --status investigated|dismissed|active --notes "...").
CREATE OR REPLACE VIEW reviews AS
SELECT source_id, status, notes, reviewer, reviewed_at
FROM reviews_files
QUALIFY row_number() OVER (PARTITION BY source_id ORDER BY reviewed_at DESC) = 1;
