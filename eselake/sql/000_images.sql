-- view: images
-- version: 1
-- One row per committed image: the newest ingest of each image_id. An images row is the commit marker of
-- an ingest (its photometry file is written first), so rows of unfinished ingests never appear.
CREATE OR REPLACE VIEW images AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT *, row_number() OVER (PARTITION BY image_id ORDER BY ingest_id DESC) AS rn
    FROM images_files
)
WHERE rn = 1;
