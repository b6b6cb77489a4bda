-- view: reference_nights
-- version: 1
-- The nights whose images the reference set (source_baselines) is derived from: every k-th night in time order,
-- k = ceil(images / 1000), so about 1000 images spread evenly over the survey (all nights up to 1000 images).
-- Whole nights, so that a full refresh reads only those nights' photometry files (a tenth of a 10k-image lake)
-- and the cost of the reference set stays bounded as the survey grows.
CREATE OR REPLACE VIEW reference_nights AS
SELECT night FROM (
    SELECT night, row_number() OVER (ORDER BY night) - 1 AS r FROM (SELECT DISTINCT night FROM images)
)
WHERE r % (SELECT CAST(greatest(ceil(count(*) / 1000.0), 1) AS BIGINT) FROM images) = 0;
