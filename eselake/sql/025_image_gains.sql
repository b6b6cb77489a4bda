-- view: image_gains
-- version: 3
-- Ensemble normalisation, one row per image: the gain correction shared by all sources of the image
-- (calibration errors), measured on the reference sources of reference_baselines_current (frozen between
-- full refreshes).
--   ratio r = peak / baseline for each reference in the image; med = median(r), mad = median |r - med|;
--   references with |r - med| > 3 * 1.4826 * mad are clipped; gain = median of the kept ratios;
--   clip_med, clip_mad (which references are kept) and loo_m1..3, the three middle kept ratios: the
--   photometry view takes a kept reference's own ratio out of the median (leave-one-out, loo_median), so no
--   source normalises itself;
--   gain_err = 1.2533 * max(1.4826 * MAD(kept), median(peak_err / baseline) of the kept) / sqrt(n_refs): the
--   standard error of a median, never below what the references' own noise allows (two equal ratios cannot
--   make it 0).
--   norm_ok is false (and gain NULL) when fewer than 4 references remain (leave-one-out keeps >= 3): such
--   images are flagged ('too_few_refs'), never silently passed as normalised.
CREATE OR REPLACE VIEW image_gains AS
WITH r AS MATERIALIZED (
    SELECT m.image_id, CAST(m.peak_jyb AS DOUBLE) / b.baseline_jyb AS ratio,
           CAST(m.peak_err_jyb AS DOUBLE) / abs(b.baseline_jyb) AS frac_err
    FROM measurements m JOIN reference_baselines_current b USING (source_id)
    WHERE b.is_reference AND (m.flags & 15) = 0 AND isfinite(m.peak_jyb)
),
med AS (
    SELECT image_id, median(ratio) AS med FROM r GROUP BY image_id
),
dev AS MATERIALIZED (
    SELECT r.image_id, r.ratio, r.frac_err, med.med, abs(r.ratio - med.med) AS adev FROM r JOIN med USING (image_id)
),
mad AS (
    SELECT image_id, median(adev) AS mad FROM dev GROUP BY image_id
),
kept AS MATERIALIZED (
    SELECT d.image_id, d.ratio, d.frac_err FROM dev d JOIN mad USING (image_id)
    WHERE mad.mad = 0 OR d.adev <= 3.0 * 1.4826 * mad.mad
),
q AS (
    SELECT image_id, median(ratio) AS gain, count(*) AS n_refs, median(frac_err) AS med_frac_err,
           quantile_disc(ratio, 0.5) AS m2                 -- the kept ratio of rank (n - 1) // 2 + 1
    FROM kept GROUP BY image_id
),
g AS MATERIALIZED (
    -- the three middle kept ratios a_lo, a_lo+1, a_lo+2 (lo = (n - 1) // 2), ties included, for leave-one-out
    SELECT k.image_id, any_value(q.gain) AS gain, any_value(q.n_refs) AS n_refs,
           any_value(q.med_frac_err) AS med_frac_err, any_value(q.m2) AS m2,
           CASE WHEN count(*) FILTER (WHERE k.ratio < q.m2) < (any_value(q.n_refs) - 1) // 2 THEN any_value(q.m2)
                ELSE max(k.ratio) FILTER (WHERE k.ratio < q.m2) END AS m1,
           CASE WHEN count(*) FILTER (WHERE k.ratio <= q.m2) >= (any_value(q.n_refs) - 1) // 2 + 2 THEN any_value(q.m2)
                ELSE min(k.ratio) FILTER (WHERE k.ratio > q.m2) END AS m3
    FROM kept k JOIN q USING (image_id) GROUP BY k.image_id
),
gerr AS (
    SELECT k.image_id, 1.2533 * greatest(1.4826 * median(abs(k.ratio - g.gain)), any_value(g.med_frac_err))
               / sqrt(g.n_refs) AS gain_err
    FROM kept k JOIN g USING (image_id) GROUP BY k.image_id, g.n_refs
)
SELECT i.image_id, i.ingest_id, i.night, i.mjd,
       coalesce(g.n_refs, 0) AS n_refs,
       CASE WHEN g.n_refs >= 4 THEN g.gain END AS gain,
       CASE WHEN g.n_refs >= 4 THEN gerr.gain_err END AS gain_err,
       coalesce(g.n_refs, 0) >= 4 AS norm_ok,
       CASE WHEN coalesce(g.n_refs, 0) >= 4 THEN NULL ELSE 'too_few_refs' END AS norm_flag,
       med.med AS clip_med, mad.mad AS clip_mad,
       g.m1 AS loo_m1, g.m2 AS loo_m2, g.m3 AS loo_m3
FROM images i
LEFT JOIN g USING (image_id)
LEFT JOIN gerr USING (image_id)
LEFT JOIN med USING (image_id)
LEFT JOIN mad USING (image_id);
