-- view: image_gains
-- version: 5
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
--   Computed from a list of each image's references, gathered once (one aggregation; the medians, the
--   clipping and the middle kept ratios are list functions, with no join back to the measurements).
CREATE OR REPLACE VIEW image_gains AS
WITH r AS (
    SELECT m.image_id, CAST(m.peak_jyb AS DOUBLE) / b.baseline_jyb AS ratio,
           CAST(m.peak_err_jyb AS DOUBLE) / abs(b.baseline_jyb) AS frac_err
    FROM measurements m JOIN reference_baselines_current b USING (source_id)
    WHERE b.is_reference AND (m.flags & 15) = 0 AND isfinite(m.peak_jyb)
),
l AS (
    -- per image: its references' (ratio, frac_err)
    SELECT image_id, list({'r': ratio, 'e': frac_err}) AS l FROM r GROUP BY image_id
),
med AS (
    SELECT image_id, l, list_aggregate(list_transform(l, lambda x: x.r), 'median') AS med FROM l
),
mad AS (
    SELECT image_id, l, med, list_aggregate(list_transform(l, lambda x: abs(x.r - med)), 'median') AS mad FROM med
),
kept AS (
    SELECT image_id, med, mad, list_filter(l, lambda x: mad = 0 OR abs(x.r - med) <= 3.0 * 1.4826 * mad) AS k
    FROM mad
),
q AS (
    SELECT image_id, med, mad, list_transform(k, lambda x: x.r) AS kr, len(k) AS n_refs,
           list_aggregate(list_transform(k, lambda x: x.e), 'median') AS med_frac_err
    FROM kept
),
q2 AS (
    SELECT *, list_aggregate(kr, 'quantile_disc', 0.5) AS m2          -- the kept ratio of rank (n - 1) // 2 + 1
    FROM q
),
g AS (
    -- the three middle kept ratios a_lo, a_lo+1 = m2, a_lo+2 (lo = (n - 1) // 2; a_0 = NULL), ties included
    SELECT image_id, med, mad, kr, n_refs, med_frac_err, m2,
           CASE WHEN len(list_filter(kr, lambda x: x < m2)) < (n_refs - 1) // 2 THEN m2
                ELSE list_max(list_filter(kr, lambda x: x < m2)) END AS m1,
           CASE WHEN len(list_filter(kr, lambda x: x <= m2)) >= (n_refs - 1) // 2 + 2 THEN m2
                ELSE list_min(list_filter(kr, lambda x: x > m2)) END AS m3
    FROM q2
),
gm AS (
    -- the median of the kept ratios from the middle ones (DuckDB's median of an even count is (m2 + m3) / 2)
    SELECT *, CASE WHEN n_refs % 2 = 1 THEN m2 ELSE (m2 + m3) / 2 END AS gain FROM g
),
gerr AS (
    SELECT image_id, n_refs, gain, med, mad, m1, m2, m3,
           1.2533 * greatest(1.4826 * list_aggregate(list_transform(kr, lambda x: abs(x - gain)), 'median'),
                             med_frac_err) / sqrt(n_refs) AS gain_err
    FROM gm
)
SELECT i.image_id, i.ingest_id, i.night, i.mjd,
       coalesce(g.n_refs, 0) AS n_refs,
       CASE WHEN g.n_refs >= 4 THEN g.gain END AS gain,
       CASE WHEN g.n_refs >= 4 THEN g.gain_err END AS gain_err,
       coalesce(g.n_refs, 0) >= 4 AS norm_ok,
       CASE WHEN coalesce(g.n_refs, 0) >= 4 THEN NULL ELSE 'too_few_refs' END AS norm_flag,
       g.med AS clip_med, g.mad AS clip_mad,
       g.m1 AS loo_m1, g.m2 AS loo_m2, g.m3 AS loo_m3
FROM images i
LEFT JOIN gerr g USING (image_id);
