-- view: images
-- version: 2
-- One row per measured image (the images Delta table; one row per image_id, the newest if a lake of the old
-- layout was upgraded with duplicates).
CREATE OR REPLACE VIEW images AS
SELECT * EXCLUDE (rn)
FROM (
    SELECT *, row_number() OVER (PARTITION BY image_id ORDER BY ingest_id DESC) AS rn
    FROM images_files
)
WHERE rn = 1;
