-- view: source_baselines
-- version: 6
-- Per source: the robust baseline flux used by the ensemble normalisation, and whether the source may
-- serve as a reference. Only clean measurements count (flags edge|nan|blended|outside = 15 clear), of the images
-- of reference_nights (about 1000 images, whole nights spread evenly in time): a median of ~1000 measurements is
-- as good a baseline as one of all, and the (full-refresh) cost stays bounded as the survey grows.
--   baseline_jyb     median raw peak flux over those clean measurements (n_clean of them)
--   median_snr       median signal-to-noise (peak / error where a measurement has no snr, e.g. imported)
--   compact          catalogue major axis unknown or < 30 arcsec (unresolved by DSA-110)
--   frac_scatter     1.4826 * MAD of (flux / (g1 * baseline)) about 1, where g1 is a preliminary gain of
--                    each image (median flux / baseline over its bright sources, leaving the source itself
--                    out: the stability test is not circular), so that calibration errors shared by an
--                    image do not count as the source's own variability; images with fewer than 4 bright
--                    sources get g1 = 1
--   median_frac_err  median of peak_err / baseline
--   is_reference     bright (median SNR >= 20), compact, >= 3 clean measurements, and stable:
--                    frac_scatter <= 2.5 * median_frac_err + 0.01
CREATE OR REPLACE VIEW source_baselines AS
WITH sampled AS (
    SELECT image_id FROM images SEMI JOIN reference_nights USING (night)
),
clean AS MATERIALIZED (
    SELECT source_id, image_id, CAST(peak_jyb AS DOUBLE) AS f, CAST(peak_err_jyb AS DOUBLE) AS e,
           CAST(coalesce(snr, peak_jyb / peak_err_jyb) AS DOUBLE) AS snr
    FROM measurements SEMI JOIN sampled USING (image_id)
    WHERE (flags & 15) = 0 AND isfinite(peak_jyb) AND peak_err_jyb > 0
),
base AS MATERIALIZED (
    SELECT source_id, median(f) AS baseline_jyb, median(snr) AS median_snr, count(*) AS n_clean
    FROM clean GROUP BY source_id
),
bright AS MATERIALIZED (
    SELECT c.image_id, c.f / b.baseline_jyb AS ratio
    FROM clean c JOIN base b USING (source_id)
    WHERE b.median_snr >= 20.0 AND b.baseline_jyb > 0
),
pq AS (
    SELECT image_id, median(ratio) AS g1, count(*) AS n_bright, quantile_disc(ratio, 0.5) AS m2
    FROM bright GROUP BY image_id
),
prelim AS (
    -- per image: median ratio of the bright sources, their number and the three middle ratios (loo_median)
    SELECT r.image_id, any_value(p.g1) AS g1, any_value(p.n_bright) AS n_bright, any_value(p.m2) AS m2,
           CASE WHEN count(*) FILTER (WHERE r.ratio < p.m2) < (any_value(p.n_bright) - 1) // 2 THEN any_value(p.m2)
                ELSE max(r.ratio) FILTER (WHERE r.ratio < p.m2) END AS m1,
           CASE WHEN count(*) FILTER (WHERE r.ratio <= p.m2) >= (any_value(p.n_bright) - 1) // 2 + 2
                THEN any_value(p.m2) ELSE min(r.ratio) FILTER (WHERE r.ratio > p.m2) END AS m3
    FROM bright r JOIN pq p USING (image_id) GROUP BY r.image_id
),
shape AS (
    -- (a catalogue without sizes stores NaN: unknown, so compact; NaN would sort above every size)
    SELECT source_id, max(major_arcsec) FILTER (WHERE isfinite(major_arcsec)) AS major_arcsec
    FROM catalog_sources GROUP BY source_id
),
scatter AS (
    SELECT c.source_id,
           1.4826 * median(abs(c.f / (CASE WHEN p.n_bright < 4 OR p.n_bright IS NULL THEN 1.0
                                            WHEN b.median_snr >= 20.0 THEN loo_median(p.n_bright, p.m1, p.m2, p.m3, c.f / b.baseline_jyb)
                                            ELSE p.g1 END * b.baseline_jyb) - 1.0)) AS frac_scatter,
           median(c.e / abs(b.baseline_jyb)) AS median_frac_err
    FROM clean c JOIN base b USING (source_id) LEFT JOIN prelim p USING (image_id)
    WHERE b.baseline_jyb > 0
    GROUP BY c.source_id
)
SELECT b.source_id, b.baseline_jyb, b.median_snr, b.n_clean,
       coalesce(s.major_arcsec IS NULL OR s.major_arcsec < 30.0, true) AS compact,
       sc.frac_scatter, sc.median_frac_err,
       (b.median_snr >= 20.0 AND b.n_clean >= 3 AND b.baseline_jyb > 0
        AND coalesce(s.major_arcsec IS NULL OR s.major_arcsec < 30.0, true)
        AND sc.frac_scatter <= 2.5 * sc.median_frac_err + 0.01) AS is_reference
FROM base b
LEFT JOIN shape s USING (source_id)
LEFT JOIN scatter sc USING (source_id);
