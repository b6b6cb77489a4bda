-- view: image_gains
-- version: 2
-- Ensemble normalisation, one row per image: the gain correction shared by all sources of the image
-- (calibration errors), measured on the reference sources of reference_baselines_current (frozen between
-- full refreshes).
--   ratio r = peak / baseline for each reference in the image; med = median(r), mad = median |r - med|;
--   references with |r - med| > 3 * 1.4826 * mad are clipped; gain = median of the kept ratios;
--   gain_err = 1.2533 * 1.4826 * MAD(kept) / sqrt(n_refs) (standard error of a median).
--   norm_ok is false (and gain NULL) when fewer than 3 references remain: such images are flagged
--   ('too_few_refs'), never silently passed as normalised.
CREATE OR REPLACE VIEW image_gains AS
WITH r AS MATERIALIZED (
    SELECT m.image_id, CAST(m.peak_jyb AS DOUBLE) / b.baseline_jyb AS ratio
    FROM measurements m JOIN reference_baselines_current b USING (source_id)
    WHERE b.is_reference AND (m.flags & 15) = 0 AND isfinite(m.peak_jyb)
),
med AS (
    SELECT image_id, median(ratio) AS med FROM r GROUP BY image_id
),
dev AS MATERIALIZED (
    SELECT r.image_id, r.ratio, med.med, abs(r.ratio - med.med) AS adev FROM r JOIN med USING (image_id)
),
mad AS (
    SELECT image_id, median(adev) AS mad FROM dev GROUP BY image_id
),
kept AS MATERIALIZED (
    SELECT d.image_id, d.ratio FROM dev d JOIN mad USING (image_id)
    WHERE mad.mad = 0 OR d.adev <= 3.0 * 1.4826 * mad.mad
),
g AS MATERIALIZED (
    SELECT image_id, median(ratio) AS gain, count(*) AS n_refs FROM kept GROUP BY image_id
),
gerr AS (
    SELECT k.image_id, 1.2533 * 1.4826 * median(abs(k.ratio - g.gain)) / sqrt(g.n_refs) AS gain_err
    FROM kept k JOIN g USING (image_id) GROUP BY k.image_id, g.n_refs
)
SELECT i.image_id, i.ingest_id, i.night, i.mjd,
       coalesce(g.n_refs, 0) AS n_refs,
       CASE WHEN g.n_refs >= 3 THEN g.gain END AS gain,
       CASE WHEN g.n_refs >= 3 THEN gerr.gain_err END AS gain_err,
       coalesce(g.n_refs, 0) >= 3 AS norm_ok,
       CASE WHEN coalesce(g.n_refs, 0) >= 3 THEN NULL ELSE 'too_few_refs' END AS norm_flag
FROM images i
LEFT JOIN g USING (image_id)
LEFT JOIN gerr USING (image_id);
