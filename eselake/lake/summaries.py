"""Per-source summaries of the daily bins before a day, merged with the later bins into variability_stats.

The derived dataset ``source_summaries`` holds, per source, the mergeable statistics of its daily bins with
day < ``until_day`` (recorded in the commit): the merged central moments of ``variability_stats`` (n, mean,
M2, sum w, weighted mean, weighted M2, min, max, first/last MJD), its two-epoch candidates (the 50 faintest
day-minima ``lo`` and 50 brightest day-maxima ``hi`` as (key = day * 2 + k, f mJy, e mJy)) and the largest
two-epoch |Vs| and |m| among the pairs of those candidates with the keys of the pair reaching each. A source's
statistics are then its summary merged with its bins since ``until_day``, exactly as the view merges all its
bins (Chan et al.'s formula is associative; the top-50 of a union is the top-50 of the parts' top-50s), so a
refresh costs work in proportion to the new bins, not to the sources' histories:

- the two-epoch maxima of the merged candidates are the summary's (when the pair reaching each is still among
  the candidates) or else come from the pairs with a new candidate; only a source whose maximal pair lost a
  member is paired whole again (rare: 100 candidates per source);
- when a refresh's newest changed day passes the summary, the summary moves forward (merged with the bins in
  between: a day of bins); a change before ``until_day`` (a re-measured or deleted old image) rebuilds the
  summaries of the sources it touched from their bins.

The view ``variability_stats`` stays the definition; tests prove the kept statistics equal to it.
"""
from __future__ import annotations

import pyarrow as pa

RECENT_DAYS = 2           # the newest days kept out of the summaries (a day's tiles, late data of the day before)
TOP = 50                  # two-epoch candidates per side (as in the variability_stats view)
LAYOUT = 1                # version of this summary (recorded; another one is rebuilt)
SCREEN_DAYS = 7          # a summary merged with bins of at most this many days screens the sources first
PACK = 1 << 24            # a pair of candidate keys (day * 2 + k < 2^24: MJD < 8.3M) packed into one BIGINT

# sum_base: summaries (source_id, columns below); sum_bins: daily_lightcurves rows. Both hold only the sources
# to merge. Produces their merged summaries. @EXT@: the sources to merge in full (changing) and their candidates
# (ext); the others keep their summary's lists and maximal pairs
_MERGE_SQL = f"""
WITH parts AS (
    SELECT source_id, n_obs AS n_points, first_mjd, last_mjd, mean_f_mjy, m2_f, sum_w, wmean_f_mjy, wm2_f,
           min_f_mjy, max_f_mjy, n_unnormalized FROM sum_base
    UNION ALL
    SELECT source_id, n_points, first_mjd, last_mjd, mean_f_mjy, m2_f, sum_w, wmean_f_mjy, wm2_f,
           min_f_mjy, max_f_mjy, n_unnormalized FROM sum_bins
),
agg AS MATERIALIZED (
    SELECT source_id, CAST(sum(n_points) AS BIGINT) AS n_obs, min(first_mjd) AS first_mjd, max(last_mjd) AS last_mjd,
           sum(n_points * mean_f_mjy) / sum(n_points) AS mean_f_mjy, sum(sum_w) AS sum_w,
           sum(sum_w * wmean_f_mjy) / sum(sum_w) AS wmean_f_mjy,
           min(min_f_mjy) AS min_f_mjy, max(max_f_mjy) AS max_f_mjy,
           CAST(sum(n_unnormalized) AS BIGINT) AS n_unnormalized
    FROM parts GROUP BY source_id
),
moments AS (
    SELECT p.source_id,
           sum(p.m2_f + p.n_points * (p.mean_f_mjy - a.mean_f_mjy) * (p.mean_f_mjy - a.mean_f_mjy)) AS m2_f,
           sum(p.wm2_f + p.sum_w * (p.wmean_f_mjy - a.wmean_f_mjy) * (p.wmean_f_mjy - a.wmean_f_mjy)) AS wm2_f
    FROM parts p JOIN agg a USING (source_id) GROUP BY p.source_id
),
-- the bins' candidates: each day's faintest (side 0) and brightest (side 1) point
bin_ext AS (
    SELECT source_id, 0 AS side, {{'key': day * 2, 'f': min_f_mjy, 'e': err_at_min_mjy}} AS x FROM sum_bins
    UNION ALL SELECT source_id, 1 AS side,
                     {{'key': day * 2 + CAST(n_points > 1 AS BIGINT), 'f': max_f_mjy, 'e': err_at_max_mjy}} AS x
              FROM sum_bins
),
@EXT@lists AS MATERIALIZED (
    SELECT source_id, coalesce(arg_min(x, {{'f': x.f, 'k': x.key}}, {TOP}) FILTER (WHERE side = 0), []) AS lo,
           coalesce(arg_max(x, {{'f': x.f, 'k': x.key}}, {TOP}) FILTER (WHERE side = 1), []) AS hi
    FROM ext GROUP BY source_id
),
-- fresh: no summary, or a member of its maximal pairs left the candidates (the source is paired whole)
flags AS MATERIALIZED (
    SELECT l.source_id, b.source_id IS NULL OR NOT list_has_all(
               list_transform(list_concat(l.lo, l.hi), lambda x: x.key),
               list_concat(coalesce(b.pm_v_keys, []), coalesce(b.pm_m_keys, []))) AS fresh,
           b.pm_v AS old_v, b.pm_v_keys AS old_v_keys, b.pm_m AS old_m, b.pm_m_keys AS old_m_keys
    FROM lists l LEFT JOIN sum_base b USING (source_id)
),
old_keys AS (
    SELECT DISTINCT source_id, unnest(list_transform(list_concat(lo, hi), lambda x: x.key)) AS key
    FROM sum_base SEMI JOIN changing USING (source_id)
),
members AS MATERIALIZED (
    SELECT m.source_id, m.key, m.f, m.e, fl.fresh OR o.key IS NULL AS new
    FROM (SELECT DISTINCT source_id, x.key AS key, x.f AS f, x.e AS e
          FROM (SELECT source_id, unnest(list_concat(lo, hi)) AS x FROM lists)) m
    JOIN flags fl USING (source_id)
    LEFT JOIN old_keys o ON o.source_id = m.source_id AND o.key = m.key
),
-- the pairs with at least one new member (each once), as the view writes them (symmetric in a and b)
pairs AS (
    SELECT a.source_id, a.key * {PACK} + b.key AS pk,        -- the pair's keys in one integer
           abs(a.f - b.f) / sqrt(a.e * a.e + b.e * b.e) AS v,
           abs(2.0 * (a.f - b.f) / (a.f + b.f)) AS m,
           abs(a.f - b.f) >= 4.3 * sqrt(a.e * a.e + b.e * b.e) AS big
    FROM (SELECT * FROM members WHERE new) a JOIN members b ON a.source_id = b.source_id
    WHERE a.key <> b.key AND (NOT b.new OR a.key < b.key)
),
pm AS (
    SELECT source_id, v, CASE WHEN pv IS NOT NULL THEN [pv // {PACK}, pv % {PACK}] END AS v_keys,
           m, CASE WHEN pmk IS NOT NULL THEN [pmk // {PACK}, pmk % {PACK}] END AS m_keys
    FROM (SELECT source_id, max(v) AS v, arg_max(pk, v) AS pv,
                 max(m) FILTER (WHERE big) AS m, arg_max(pk, m) FILTER (WHERE big) AS pmk
          FROM pairs GROUP BY source_id)
)
SELECT a.source_id, a.n_obs, a.first_mjd, a.last_mjd, a.mean_f_mjy, mo.m2_f, a.sum_w, a.wmean_f_mjy, mo.wm2_f,
       a.min_f_mjy, a.max_f_mjy, a.n_unnormalized,
       CASE WHEN l.source_id IS NULL THEN b.lo ELSE l.lo END AS lo,
       CASE WHEN l.source_id IS NULL THEN b.hi ELSE l.hi END AS hi,
       CASE WHEN l.source_id IS NULL THEN b.pm_v
            WHEN fl.fresh OR fl.old_v IS NULL OR p.v > fl.old_v THEN p.v ELSE fl.old_v END AS pm_v,
       CASE WHEN l.source_id IS NULL THEN b.pm_v_keys
            WHEN fl.fresh OR fl.old_v IS NULL OR p.v > fl.old_v THEN p.v_keys ELSE fl.old_v_keys END AS pm_v_keys,
       CASE WHEN l.source_id IS NULL THEN b.pm_m
            WHEN fl.fresh OR fl.old_m IS NULL OR p.m > fl.old_m THEN p.m ELSE fl.old_m END AS pm_m,
       CASE WHEN l.source_id IS NULL THEN b.pm_m_keys
            WHEN fl.fresh OR fl.old_m IS NULL OR p.m > fl.old_m THEN p.m_keys ELSE fl.old_m_keys END AS pm_m_keys
FROM agg a JOIN moments mo USING (source_id) LEFT JOIN sum_base b USING (source_id)
LEFT JOIN lists l USING (source_id) LEFT JOIN flags fl USING (source_id) LEFT JOIN pm p USING (source_id)
"""
# every source's candidates
MERGE_SQL = _MERGE_SQL.replace("@EXT@", """changing AS MATERIALIZED (SELECT source_id FROM agg),
ext AS (
    SELECT source_id, 0 AS side, unnest(lo) AS x FROM sum_base
    UNION ALL SELECT source_id, 1 AS side, unnest(hi) AS x FROM sum_base
    UNION ALL SELECT * FROM bin_ext
),
""")
# a summary merged with a day or two of bins: most sources' extremes of those days are not among their 50, so
# only the sources whose lists the bins can change are merged in full: no summary, a list shorter than TOP, a
# candidate that passes the list's last (or a NULL flux: not compared). The lists, pairs and maximal pairs of
# the others stay their summary's. (Screening many days of bins costs more than it saves.)
SCREENED_MERGE_SQL = _MERGE_SQL.replace("@EXT@", f"""ends AS (
    SELECT source_id, lo, hi,
           list_max(list_transform(lo, lambda x: {{'f': x.f, 'k': x.key}})) AS lo_last,
           list_min(list_transform(hi, lambda x: {{'f': x.f, 'k': x.key}})) AS hi_last,
           list_bool_or(list_transform(list_concat(lo, hi), lambda x: x.f IS NULL)) AS has_null
    FROM sum_base
),
changing AS MATERIALIZED (
    SELECT DISTINCT n.source_id FROM bin_ext n LEFT JOIN ends b USING (source_id)
    WHERE b.source_id IS NULL OR n.x.f IS NULL OR coalesce(b.has_null, true)
       OR (n.side = 0 AND (len(b.lo) < {TOP} OR {{'f': n.x.f, 'k': n.x.key}} < b.lo_last))
       OR (n.side = 1 AND (len(b.hi) < {TOP} OR {{'f': n.x.f, 'k': n.x.key}} > b.hi_last))
),
ext AS (
    SELECT source_id, 0 AS side, unnest(lo) AS x FROM sum_base SEMI JOIN changing USING (source_id)
    UNION ALL SELECT source_id, 1 AS side, unnest(hi) AS x FROM sum_base SEMI JOIN changing USING (source_id)
    UNION ALL SELECT * FROM bin_ext SEMI JOIN changing USING (source_id)
),
""")

# the columns of variability_stats from summaries (relation ``sums``), with the view's formulas
STATS_SQL = """
SELECT source_id, n_obs, first_mjd, last_mjd, mean_f_mjy AS mean_flux_mjy,
       CASE WHEN n_obs > 1 THEN sqrt(greatest(m2_f, 0.0) / (n_obs - 1)) END AS std_flux_mjy,
       min_f_mjy AS min_flux_mjy, max_f_mjy AS max_flux_mjy, wmean_f_mjy AS wmean_flux_mjy,
       CASE WHEN n_obs > 1 THEN greatest(wm2_f, 0.0) / (n_obs - 1) END AS chi2_nu,
       CASE WHEN n_obs > 1 THEN greatest(wm2_f, 0.0) / (n_obs - 1) END AS eta_metric,
       CASE WHEN n_obs > 1 THEN sqrt(greatest(m2_f, 0.0) / (n_obs - 1)) END / nullif(mean_f_mjy, 0) AS v_metric,
       greatest(max_f_mjy - mean_f_mjy, mean_f_mjy - min_f_mjy)
           / nullif(CASE WHEN n_obs > 1 THEN sqrt(greatest(m2_f, 0.0) / (n_obs - 1)) END, 0) AS sigma_deviation,
       pm_m AS vs_max_abs_m, pm_v AS vs_max_abs, n_unnormalized
FROM sums ORDER BY source_id
"""

_EMPTY_BASE = """SELECT CAST(NULL AS VARCHAR) AS source_id, CAST(NULL AS BIGINT) AS n_obs, CAST(NULL AS DOUBLE) AS first_mjd,
    CAST(NULL AS DOUBLE) AS last_mjd, CAST(NULL AS DOUBLE) AS mean_f_mjy, CAST(NULL AS DOUBLE) AS m2_f,
    CAST(NULL AS DOUBLE) AS sum_w, CAST(NULL AS DOUBLE) AS wmean_f_mjy, CAST(NULL AS DOUBLE) AS wm2_f,
    CAST(NULL AS DOUBLE) AS min_f_mjy, CAST(NULL AS DOUBLE) AS max_f_mjy, CAST(NULL AS BIGINT) AS n_unnormalized,
    CAST(NULL AS STRUCT(key BIGINT, f DOUBLE, e DOUBLE)[]) AS lo, CAST(NULL AS STRUCT(key BIGINT, f DOUBLE, e DOUBLE)[]) AS hi,
    CAST(NULL AS DOUBLE) AS pm_v, CAST(NULL AS BIGINT[]) AS pm_v_keys, CAST(NULL AS DOUBLE) AS pm_m,
    CAST(NULL AS BIGINT[]) AS pm_m_keys WHERE false"""


def _merge(con, table: str, base: str | None, bins: str, days: int | None = None) -> None:
    """CREATE TEMP TABLE ``table`` as the merge of summaries ``base`` (a relation, or None: none) and bins
    ``bins`` (a relation of daily_lightcurves rows, of ``days`` days at most when known)."""
    screen = base is not None and days is not None and days <= SCREEN_DAYS
    base = base or _EMPTY_BASE
    if screen:      # a few days: the summaries and bins are read once, not by each part of the query
        con.execute(f"CREATE OR REPLACE TEMP TABLE _sum_base AS {base}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _sum_bins AS {bins}")
        base, bins = "SELECT * FROM _sum_base", "SELECT * FROM _sum_bins"
    con.execute(f"CREATE OR REPLACE TEMP VIEW sum_base AS {base}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW sum_bins AS {bins}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {SCREENED_MERGE_SQL if screen else MERGE_SQL}")


def statistics(con, *, kept: str | None, until_day: int | None, touched: str | None,
               changed_days: list[int] | None) -> tuple[pa.Table, pa.Table | None, int, list[str] | None]:
    """variability_stats of the ``touched`` sources (a relation of source_id; all when None) from the bins of
    view ``daily_all`` and the kept summaries (relation ``kept`` of days < ``until_day``; None: none valid).
    ``changed_days``: days whose bins this refresh changed (None: all may have).

    Returns (statistics, summaries to keep, their until_day, sources whose summaries changed (None: all,
    the summaries returned are the whole table; []: none changed, nothing to keep))."""
    newest = con.execute("SELECT max(day) FROM daily_all").fetchone()[0]
    inside = "" if touched is None else f" AND source_id IN (SELECT source_id FROM {touched})"
    if kept is None or until_day is None or changed_days is None or \
            (touched is None and changed_days and min(changed_days) < until_day):
        # whole: every source's summary of its days before the newest RECENT_DAYS
        until = (newest if newest is not None else 0) - RECENT_DAYS + 1
        _merge(con, "_sums", None, f"SELECT * FROM daily_all WHERE day < {until}")
        return _stats(con, "_sums", until, newest, inside), con.sql("SELECT * FROM _sums ORDER BY source_id").to_arrow_table(), \
            until, None
    until = max(until_day, (max(changed_days) if changed_days else until_day) - RECENT_DAYS + 1)
    rebuild = touched is not None and changed_days and min(changed_days) < until_day
    parts = []
    if rebuild:        # an older day changed: the touched sources' summaries from their bins
        _merge(con, "_rebuilt", None, f"SELECT * FROM daily_all WHERE day < {until}{inside}")
        parts.append("_rebuilt")
    if until > until_day:    # move forward: merged with the bins in between
        skip = f" AND source_id NOT IN (SELECT source_id FROM {touched})" if rebuild else ""
        moved = f"SELECT * FROM daily_all WHERE day >= {until_day} AND day < {until}{skip}"
        _merge(con, "_moved", f"SELECT * FROM {kept} WHERE source_id IN (SELECT source_id FROM ({moved}))", moved,
               days=until - until_day)
        parts.append("_moved")
    if not parts:
        return _stats(con, kept, until, newest, inside), None, until, []
    new = " UNION ALL ".join(f"SELECT * FROM {p}" for p in parts)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _new AS {new}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _sums_all AS SELECT * FROM _new UNION ALL SELECT * FROM {kept} "
                "WHERE source_id NOT IN (SELECT source_id FROM _new)"
                + (f" AND source_id NOT IN (SELECT source_id FROM {touched})" if rebuild else ""))
    changed = [r[0] for r in con.execute("SELECT source_id FROM _new").fetchall()]
    if rebuild:
        changed += [r[0] for r in con.execute(f"SELECT source_id FROM {touched}").fetchall()]
    return _stats(con, "_sums_all", until, newest, inside), \
        con.sql("SELECT * FROM _new ORDER BY source_id").to_arrow_table(), until, sorted(set(changed))


def _stats(con, sums: str, until: int, newest: int | None, inside: str) -> pa.Table:
    """Statistics of the sources of ``inside`` (a filter on source_id; "" all): summaries ``sums`` merged with
    their bins from ``until`` on (to ``newest``)."""
    _merge(con, "_final", f"SELECT * FROM {sums} WHERE true{inside}",
           f"SELECT * FROM daily_all WHERE day >= {until}{inside}",
           days=None if newest is None else max(newest - until + 1, 0))
    con.execute("CREATE OR REPLACE TEMP VIEW sums AS SELECT * FROM _final")
    return con.sql(STATS_SQL).to_arrow_table()
