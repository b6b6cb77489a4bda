"""Derived datasets: the results of the views, kept in the lake and refreshed incrementally.

| derived table        | definition (view)            | refreshed                                             |
| -------------------- | ---------------------------- | ----------------------------------------------------- |
| reference_baselines  | source_baselines             | full refresh only (the frozen reference set)          |
| image_gains          | image_gains                  | the nights of new, re-measured or removed images      |
| daily_lightcurves    | daily_lightcurves            | the same nights (every bin of those nights, rebuilt)  |
| source_summaries     | (variability_stats, merged)  | days before the newest two; moved forward a day at a  |
|                      |                              | time (see summaries)                                  |
| source_stats         | variability_stats            | sources with a changed bin: summary + newer bins      |
| ese_search           | eselake.detection.search     | sources with a changed bin                            |
| ese_candidates       | ese_search + source_stats    | whole (small)                                         |

Each commit records the versions of the base tables (and of the reference baselines) it was computed from
and the versions of the views that define it. A derived dataset is *current* when those equal the lake's
now; queries read current derived data in place of the views and compute stale ones from the views.

A full refresh re-derives the reference set (source_baselines) and everything else from scratch. An
incremental refresh runs the same views over a sub-snapshot holding only the changed nights (an image's gain
depends only on its own measurements and the frozen references; a daily bin only on its day's points), then
merges each touched source's statistics from its daily sufficient statistics. A full refresh happens by
itself when no reference set exists or the number of images has grown by FULL_REFRESH_GROWTH since the last.
"""
from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from eselake.lake import delta, summaries
from eselake.lake.connect import files_view, open_connection, view_versions
from eselake.lake.layout import days_of_nights, month_index, months_of_days
from eselake.offline import memory_limit_bytes

BIN_RTOL = 1e-9                     # relative difference below which a recomputed daily bin is unchanged
SORT_MEMORY = 0.6                   # of DuckDB's memory limit, for the sort of the by-source copy
FULL_REFRESH_GROWTH = 0.25          # a full refresh when images grew by 25% since the reference set was derived
DERIVED = ("reference_baselines", "image_gains", "daily_lightcurves", "source_summaries", "source_stats",
           "ese_search", "ese_candidates", "measurements_by_source")
# derived datasets read in place of their views when current
SERVED = ("image_gains", "daily_lightcurves", "source_stats", "ese_search", "ese_candidates", "measurements_by_source")
NO_REFS = ("reference_baselines", "measurements_by_source")      # computed without the reference set
# views each derived dataset depends on (their versions are recorded; a new view version makes it stale)
VIEWS_OF = {
    "reference_baselines": ("reference_nights", "source_baselines"),
    "image_gains": ("image_gains", "measurements"),
    "daily_lightcurves": ("daily_lightcurves", "lightcurve_points", "photometry", "image_gains"),
    "source_stats": ("variability_stats", "daily_lightcurves"),      # variability_stats merges the daily bins
    "ese_search": ("daily_lightcurves", "ese_search"),
    "ese_candidates": ("variability_stats", "ese_search", "ese_scores", "ese_presets", "ese_preset_flags",
                       "ese_candidates_all"),
    "measurements_by_source": ("measurements",),    # by year and sorted by source, for lookups
    "source_summaries": ("variability_stats", "daily_lightcurves"),
}
# image_gains is small (a row per image) and read by every lookup: one file, rewritten whole
PARTITION = {"daily_lightcurves": "month", "measurements_by_source": "year"}
LOOKUP_LAYOUT = 3       # layout of measurements_by_source (3: by year, in files of source ranges): a copy
                        # of another layout is rebuilt




# ------------------------------------------------------------------------------------------ state
def _wanted(snaps: dict, dsnaps: dict, name: str) -> dict:
    vv = view_versions()
    src = {"images": snaps["images"].version, "photometry": snaps["photometry"].version}
    if name not in NO_REFS:
        src["reference_baselines"] = dsnaps["reference_baselines"].version
    views = {v: vv.get(v) for v in VIEWS_OF[name]}
    if name == "measurements_by_source":
        views["layout"] = LOOKUP_LAYOUT
    if name == "source_summaries":
        views["layout"] = summaries.LAYOUT
    return {"sources": src, "views": views}


def _is_current(snaps, dsnaps, name: str, root=None) -> bool:
    """Computed from the data the lake holds now: same view versions and references, and no commit since
    that changed images, photometry or the references (compaction and vacuum change files, not data)."""
    s = dsnaps[name]
    if s.version < 0 or not s.info or s.info.get("partial"):
        return False
    want = _wanted(snaps, dsnaps, name)
    if s.info.get("views") != want["views"]:
        return False
    rec, now = s.info.get("sources", {}), want["sources"]
    if name not in NO_REFS and not _refs_match(rec.get("reference_baselines"), now.get("reference_baselines"), root):
        return False
    for table in ("images", "photometry"):
        if rec.get(table) != now[table] and (root is None or delta.changed_since(
                root, table, rec.get(table, -1), now[table])):
            return False
    return True


def _refs_match(then: int | None, now: int | None, root=None) -> bool:
    """The reference set recorded (version ``then``) is the one the lake holds (``now``): the same version, or
    only data-preserving commits since (vacuum, compaction)."""
    return then == now or (root is not None and then is not None and now is not None and then >= 0
                           and not delta.changed_since(root / "derived", "reference_baselines", then, now))


def current_derived(lake, snaps: dict, dsnaps: dict) -> dict:
    """The derived snapshots that are current (read in place of their views). In a lake opened ``as_of`` a
    moment, the derived data of that moment are used as they were."""
    if lake.as_of is not None:           # exact match only (no log walk into the future of that moment)
        return {n: dsnaps[n] for n in SERVED if _is_current(snaps, dsnaps, n)}
    return {n: dsnaps[n] for n in SERVED if _is_current(snaps, dsnaps, n, lake.path)}


def derived_state(lake) -> dict[str, str]:
    """Per derived dataset: 'current', 'stale (N images since)', 'missing' or for the references 'frozen'."""
    snaps, dsnaps = lake.snapshots(), lake.derived_snapshots()
    out = {}
    for name in DERIVED:
        s = dsnaps[name]
        if s.version < 0:
            out[name] = "missing"
        elif name == "reference_baselines":
            n0 = (s.info or {}).get("n_images")
            out[name] = f"frozen ({n0} images)" if n0 is not None else "frozen"
        elif name == "source_summaries":        # moved forward when needed (not at every refresh)
            until = _summaries_until(snaps, dsnaps, lake.path)
            out[name] = f"kept (days before MJD {until})" if until is not None else "stale (eselake refresh)"
        else:
            out[name] = "current" if _is_current(snaps, dsnaps, name, lake.path) else "stale (eselake refresh)"
    return out


# ------------------------------------------------------------------------------------------ refresh
def _fetch(con, query: str, params=None) -> pa.Table:
    from eselake.lake.lake import fetch_arrow

    return fetch_arrow(con, query, params)


def _commit(lake, name: str, table, info: dict, *, predicate: str | None = None,
            full: bool = False, append: bool = False) -> None:
    part = PARTITION.get(name)
    root = lake.table_root(name)
    if isinstance(table, pa.Table):
        table = table.combine_chunks()      # delta-rs keeps the row order of one batch, not of many
    how = dict(target_file_size=1 << 30) if name == "measurements_by_source" else {}
    if append:
        delta.commit(root, name, table, mode="append", partition_by=[part] if part else None,
                     operation="refresh full (part)", info=info, **how)
    elif full or not delta.exists(root, name):         # [] makes a table of an older layout unpartitioned
        delta.commit(root, name, table, mode="overwrite", partition_by=[part] if part else [],
                     schema_mode="overwrite", operation="refresh full", info=info, **how)
    else:
        delta.commit(root, name, table, mode="overwrite", predicate=predicate,
                     partition_by=[part] if part else None, operation="refresh", info=info, **how)


def _with_month(daily: pa.Table) -> pa.Table:
    table, index = month_index(daily.column("day").to_numpy(zero_copy_only=False))
    return daily.append_column("month", pa.array(table.tolist(), pa.string()).take(pa.array(index)))


def _files_of_nights(snap: delta.Snapshot, nights: set[str]) -> delta.Snapshot:
    keep = tuple(f for f in snap.files if any(f"/night={n}/" in f for n in nights))
    return replace(snap, files=keep)


def _image_nights(snap: delta.Snapshot, nights: set[str] | None = None) -> pa.Table:
    """Distinct (image_id, night) of the files of ``nights`` (all when None) of a night-partitioned snapshot."""
    from eselake.lake.connect import new_connection

    files = list(snap.files if nights is None else _files_of_nights(snap, nights).files)
    if not files:
        return pa.table({"image_id": pa.array([], pa.string()), "night": pa.array([], pa.string())})
    con = new_connection()
    try:
        return _fetch(con, "SELECT DISTINCT image_id, night FROM read_parquet($f, hive_partitioning = true, "
                           "hive_types = {'night': VARCHAR})", {"f": files})
    finally:
        con.close()


def _split_images(snaps) -> list[set[str]]:
    """The nights of every image whose rows lie in more than one night: an image's photometry rows and its
    images row share a night, except after a re-measurement into another night killed between its two commits
    (the measurements view joins them by image_id, so a snapshot of some nights must hold both parts)."""
    both = pl.concat([pl.from_arrow(_image_nights(snaps[n])) for n in ("images", "photometry")])
    split = both.unique().group_by("image_id").agg(pl.col("night")).filter(pl.col("night").list.len() > 1)
    return [set(n) for n in split["night"].to_list()]


def _with_partners(snaps, nights: set[str], split: list[set[str]] | None = None) -> set[str]:
    """``nights`` and every night holding the other part of an image found in them (see _split_images): from
    ``split`` when given (a full refresh finds it once), else by reading the image ids of those nights and
    looking up only the images with one part missing there (Delta statistics, few files)."""
    out, todo = set(nights), set(nights)
    while todo:
        if split is not None:
            found = set().union(*(n for n in split if n & todo))
        else:
            ids = {n: set(_image_nights(snaps[n], todo).column("image_id").to_pylist())
                   for n in ("images", "photometry")}
            found = set()
            for name, other in (("photometry", "images"), ("images", "photometry")):
                missing = ids[other] - ids[name]
                if missing and snaps[name].table is not None:
                    found |= delta.nights_holding(snaps[name].table, sorted(missing))
        todo = found - out
        out |= todo
    return out


def _sub_connection(snaps, refs, nights: set[str]):
    sub = dict(snaps)
    for name in ("images", "photometry"):
        sub[name] = _files_of_nights(snaps[name], nights)
    return open_connection(sub, {"reference_baselines": refs} if refs.files else {}, until="daily_lightcurves")


def refresh(lake, *, full: bool = False, progress: Callable[[str], None] | None = None) -> dict:
    """Bring every derived dataset up to date with the lake; returns what was done (mode, images, sources,
    seconds). Serialised by an advisory lock: concurrent refreshes wait for each other."""
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    lake._writable()
    with lake.lock("refresh"):
        snaps, dsnaps = lake.snapshots(), lake.derived_snapshots()
        if snaps["images"].version < 0 or not snaps["images"].files:
            _refresh_empty(lake, snaps, dsnaps)
            return {"mode": "none", "images": 0, "sources": 0, "seconds": time.perf_counter() - t0}
        con = open_connection(snaps, {}, until="images")
        try:
            images = _fetch(con, "SELECT image_id, ingest_id, night FROM images")
        finally:
            con.close()
        n_images = images.num_rows
        refs = dsnaps["reference_baselines"]
        n0 = (refs.info or {}).get("n_images") or 0
        if not full and _needs_full(snaps, dsnaps, n_images, n0, lake.path):
            full = True
        if full:
            return _refresh_full(lake, snaps, n_images, say, t0)
        return _refresh_incremental(lake, snaps, dsnaps, images, say, t0)


def _refresh_empty(lake, snaps, dsnaps) -> None:
    """A lake whose every image was deleted: its served derived datasets are emptied (and so current)."""
    for name in SERVED:
        s = dsnaps[name]
        if s.version >= 0 and s.schema is not None and not _is_current(snaps, dsnaps, name, lake.path):
            _commit(lake, name, s.schema.empty_table(), _record(lake, snaps, name), full=True)


def _needs_full(snaps, dsnaps, n_images: int, n0: int, root=None) -> bool:
    """No reference set yet, the survey grew by FULL_REFRESH_GROWTH since it was derived, a derived dataset is
    missing or was computed with other references or other view versions (a killed full refresh, an upgrade)."""
    refs = dsnaps["reference_baselines"]
    if refs.version < 0 or n_images >= n0 * (1.0 + FULL_REFRESH_GROWTH) + 1:
        return True
    if (refs.info or {}).get("views") != _wanted(snaps, dsnaps, "reference_baselines")["views"]:
        return True
    # (an existing ese_search is checked without importing the search, which loads beside the refresh)
    search = (dsnaps["ese_search"].version >= 0 and importlib.util.find_spec("numba") is not None) or \
        _search_function() is not None
    names = ["image_gains", "daily_lightcurves", "source_stats"] + (["ese_search"] if search else [])
    for name in names:
        info = dsnaps[name].info
        if dsnaps[name].version < 0 or not info or info.get("partial"):
            return True
        want = _wanted(snaps, dsnaps, name)
        if info.get("views") != want["views"] or \
                not _refs_match(info.get("sources", {}).get("reference_baselines"), refs.version, root):
            return True
    return False


def _record(lake, snaps, name: str, **extra) -> dict:
    """What a derived commit records: the base versions it was computed from and the reference set's version
    (one folder listing, not a load of every derived table)."""
    refs = delta.latest_version(lake.table_root("reference_baselines"), "reference_baselines")
    info = _wanted(snaps, {"reference_baselines": delta.Snapshot("reference_baselines", refs, (), None)}, name)
    info.update(extra)
    return info


def _gains_once(con, nights: set[str] | None = None) -> pa.Table:
    """Compute image_gains once into a temp table that the photometry view then joins; returns the gains of
    the images of ``nights`` (all when None)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _gains AS SELECT * FROM image_gains ORDER BY night, image_id")
    con.execute("CREATE OR REPLACE VIEW image_gains_current AS SELECT * FROM _gains")
    if nights is None:
        return _fetch(con, "SELECT * FROM _gains")
    return _fetch(con, "SELECT * FROM _gains WHERE list_contains($n, night)", {"n": sorted(nights)})


def _refresh_full(lake, snaps, n_images: int, say, t0) -> dict:
    say("full refresh: reference set")
    # the search's modules load (a second or more when cold) while DuckDB computes the parts
    threading.Thread(target=_load_search, daemon=True).start()
    split = _split_images(snaps)
    con = open_connection(snaps, {}, until="reference_nights")
    try:
        nights = set(_fetch(con, "SELECT night FROM reference_nights").column("night").to_pylist())
    finally:
        con.close()
    # the images of the reference nights, read from those nights' photometry files (and their partners')
    sub = dict(snaps, photometry=_files_of_nights(snaps["photometry"], _with_partners(snaps, nights, split)))
    con = open_connection(sub, {}, until="source_baselines")
    try:
        refs = _fetch(con, "SELECT * FROM source_baselines ORDER BY source_id")
    finally:
        con.close()
    _commit(lake, "reference_baselines", refs, _record(lake, snaps, "reference_baselines", n_images=n_images),
            full=True)
    refs = lake.derived_snapshots()["reference_baselines"]
    # image gains and daily bins depend only on their own nights (given the frozen references): computed a
    # chunk of nights at a time, so DuckDB's medians never hold more than a chunk (bounded memory at any size)
    chunks = _night_chunks(snaps)
    gains = []
    for i, (g, daily) in enumerate(_parts_at_once(
            lambda nights, con_settings: _gains_and_bins(snaps, refs, nights, split, con_settings), chunks)):
        say(f"full refresh: image gains and daily bins, part {i + 1}/{len(chunks)}")
        gains.append(g)
        # a daily table whose info says "partial" is not current (a killed full refresh is redone)
        _commit(lake, "daily_lightcurves", _with_month(daily),
                _record(lake, snaps, "daily_lightcurves", **({"partial": True} if i < len(chunks) - 1 else {})),
                full=i == 0, append=i > 0)
    sources = _refresh_sources(lake, snaps, None, say, full=True)
    _refresh_lookup(lake, snaps, say)
    _commit(lake, "image_gains", pa.concat_tables(gains), _record(lake, snaps, "image_gains"), full=True)
    return {"mode": "full", "images": n_images, "sources": sources, "seconds": time.perf_counter() - t0}


def _gains_and_bins(snaps, refs, nights: set[str], split, con_settings: dict) -> tuple[pa.Table, pa.Table]:
    """The image gains and daily bins of a part's ``nights``, read with their images' other parts (see
    _with_partners) and kept for the part's own nights."""
    con = _sub_connection(snaps, refs, _with_partners(snaps, nights, split))
    try:
        for key, value in con_settings.items():
            con.execute(f"SET {key} = '{value}'")
        gains = _gains_once(con, nights)
        daily = _fetch(con, "SELECT * FROM daily_lightcurves WHERE list_contains($d, day) ORDER BY source_id, day",
                       {"d": days_of_nights(nights)})
    finally:
        con.close()
    return gains, daily


def _parts_at_once(work: Callable, parts: list):
    """``work(part, con_settings)`` of every part, yielded in order, PARTS_AT_ONCE at a time on threads (DuckDB
    runs without the GIL), each DuckDB with its share of the threads and of the memory limit: a part's
    single-threaded stretches (a list per image, the fetch) overlap with another's scans."""
    at_once = max(1, min(PARTS_AT_ONCE, len(parts), os.cpu_count() or 1))
    if at_once == 1:
        yield from (work(p, {}) for p in parts)
        return
    limit = memory_limit_bytes()
    share = {"threads": max(1, (os.cpu_count() or 1) // at_once)}
    if limit:
        share["memory_limit"] = f"{limit // at_once}B"
    with ThreadPoolExecutor(at_once) as pool:
        running: deque = deque()
        try:
            for p in parts:
                # one part more than the pool runs is queued, so the pool stays busy while the caller commits
                running.append(pool.submit(work, p, share))
                if len(running) > at_once:
                    yield running.popleft().result()
            while running:
                yield running.popleft().result()
        finally:                # the caller failed or stopped: parts not started are not computed
            for f in running:
                f.cancel()


CHUNK_BYTES = 160 << 20          # photometry files of the parts computed together (~8M measurements)
PARTS_AT_ONCE = 2                # parts of a full refresh computed at the same time (one DuckDB each)


def _night_chunks(snaps) -> list[set[str]]:
    """The lake's nights in time order, grouped so that each group's photometry files hold ~CHUNK_BYTES /
    PARTS_AT_ONCE (the parts computed at once hold CHUNK_BYTES), whole months together where they fit (the
    month-partitioned datasets then get one file per month)."""
    part_bytes = max(1, CHUNK_BYTES // PARTS_AT_ONCE)
    size: dict[str, int] = {}
    for name in ("images", "photometry"):
        for f in snaps[name].files:
            m = re.search(r"/night=([^/]+)/", f)
            if m:
                size[m.group(1)] = size.get(m.group(1), 0) + (os.path.getsize(f) if name == "photometry" else 0)
    months: dict[str, list[str]] = {}
    for night in sorted(size):
        months.setdefault(night[:7], []).append(night)
    chunks: list[set[str]] = []
    acc = part_bytes
    for nights in months.values():
        month = sum(size[n] for n in nights)
        if acc + month <= part_bytes or (chunks and not chunks[-1]):
            chunks[-1] |= set(nights)
            acc += month
            continue
        for night in nights if month > part_bytes else [None]:      # a month larger than a part: by night
            part = set(nights) if night is None else {night}
            grow = month if night is None else size[night]
            if not chunks or acc + grow > part_bytes:
                chunks.append(set())
                acc = 0
            chunks[-1] |= part
            acc += grow
    return chunks or [set()]


def _refresh_incremental(lake, snaps, dsnaps, now: pa.Table, say, t0) -> dict:
    """``now``: image_id, ingest_id, night of every committed image."""
    old = pa.table({"image_id": [], "ingest_id": [], "night": []}, schema=now.schema)
    if dsnaps["image_gains"].version >= 0:
        old = delta.open_table(lake.table_root("image_gains"), "image_gains").to_pyarrow_table(
            columns=["image_id", "ingest_id", "night"]).cast(now.schema)
    a, b = pl.from_arrow(now), pl.from_arrow(old)
    changed = a.join(b, on=["image_id", "ingest_id", "night"], how="anti")
    removed = b.join(a, on=["image_id", "ingest_id", "night"], how="anti")
    nights = set(changed["night"].to_list()) | set(removed["night"].to_list())
    fed = _changed_nights(lake, dsnaps["image_gains"].info)
    if fed is None:        # a re-measurement killed before its images row changes no row of the images table
        say("refresh: the change feed since the last refresh is gone (vacuumed): a full refresh")
        return _refresh_full(lake, snaps, now.num_rows, say, t0)
    nights = _with_partners(snaps, nights | fed)
    stale = [n for n in ("image_gains", "daily_lightcurves", "source_stats", "ese_search")
             if dsnaps[n].version >= 0 and not _is_current(snaps, dsnaps, n, lake.path)]
    if not nights and not stale:
        mode = "incremental" if _refresh_lookup(lake, snaps, say) else "current"
        return {"mode": mode, "images": 0, "sources": 0, "seconds": time.perf_counter() - t0}
    threading.Thread(target=_load_search, daemon=True).start()     # while DuckDB computes gains and bins
    say(f"refresh: {changed.height} new or changed image(s), {removed.height} removed, {len(nights)} night(s)")
    refs = dsnaps["reference_baselines"]
    con = _sub_connection(snaps, refs, nights)
    try:
        gains = _gains_once(con)
        daily = _fetch(con, "SELECT * FROM daily_lightcurves ORDER BY source_id, day")
    finally:
        con.close()
    days = days_of_nights(nights)
    months = set(months_of_days(days).tolist())
    old_bins = _kept_bins(lake, days, months)
    pred_days = f"{delta.in_list('month', months)} AND {delta.in_list('day', days)}"
    _commit(lake, "daily_lightcurves", _with_month(daily), _record(lake, snaps, "daily_lightcurves"),
            predicate=pred_days)
    # after a refresh killed once it had committed bins, every source is redone: a source whose bin that
    # refresh removed is in neither the kept bins nor the new ones, yet its statistics (and its summary, for
    # an older day) still hold the removed bin
    touched = _changed_sources(old_bins, daily) if _in_step(dsnaps) else None
    n = _refresh_sources(lake, snaps, touched, say, full=False, days=days)
    _refresh_lookup(lake, snaps, say, nights)
    # last: image_gains records which images are incorporated; a refresh killed before this point is redone
    prev = delta.open_table(lake.table_root("image_gains"), "image_gains").to_pyarrow_table()
    keep = prev.filter(pc.invert(pc.is_in(prev.column("night"), pa.array(sorted(nights), pa.string()))))
    merged = pa.concat_tables([keep.select(gains.column_names).cast(gains.schema), gains])
    _commit(lake, "image_gains", merged.sort_by([("night", "ascending"), ("image_id", "ascending")]),
            _record(lake, snaps, "image_gains"), full=True)
    return {"mode": "incremental", "images": changed.height + removed.height, "nights": len(nights),
            "sources": n, "seconds": time.perf_counter() - t0}


def _refresh_lookup(lake, snaps, say, closed: set[str] = frozenset()) -> bool:
    """Bring measurements_by_source (the measurements view by year, sorted by source_id and MJD, in files of
    source ranges: one source's lightcurve reads a file or two per year) up to date. The rows of the images
    whose images or photometry rows changed since the versions it was made from are replaced: new rows go to
    small files in the year's ``recent`` partition (files of other images are not rewritten); more than
    LOOKUP_ROWS_AT_ONCE changed rows rewrite their years whole. Built whole when missing, made by another
    version of the view or layout, or when the change data feed is gone. ``closed``: nights this refresh
    already widened to their images' other parts (see _with_partners), reused when they cover the changed
    nights."""
    name = "measurements_by_source"
    dsnap = lake.derived_snapshots()[name]
    if not snaps["photometry"].files or _is_current(snaps, {name: dsnap}, name, lake.path):
        return False
    info = dsnap.info or {}
    changed = None
    if dsnap.version >= 0 and not info.get("partial") and info.get("views") == _wanted(snaps, {}, name)["views"] \
            and {"images", "photometry"} <= set(info.get("sources") or {}):
        changed = _changed_images(lake, info)
    if changed is None:
        say("refresh: measurements by source (every year)")
        _write_years(lake, snaps, None, _record(lake, snaps, name), say)
        return True
    nights, ids = changed
    nights = set(closed) if nights and nights <= closed else _with_partners(snaps, nights)
    if ids:
        say(f"refresh: measurements by source, {len(ids)} image(s)")
    years = {n[:4] for n in nights}
    # by image: a new image's rows go to a new file, and the sorted files of earlier images (whose image_id
    # statistics exclude it) are not rewritten; a re-measured or deleted image's files are (by delta-rs: see
    # _lookup_to_compact)
    parts = sorted(years | {y + RECENT for y in years})
    pred = f"{delta.in_list('year', parts)} AND {delta.in_list('image_id', ids)}" if ids else "false"
    con = _lookup_connection(snaps, nights)       # nights already hold their images' other parts
    where = f"WHERE {delta.in_list('image_id', ids)}" if ids else "WHERE false"
    try:
        reader = con.sql(_lookup_query(where, partition=f"substr(night, 1, 4) || '{RECENT}'")).to_arrow_reader(
            64 * 1024)
        batches, n = [], 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if n > LOOKUP_ROWS_AT_ONCE:
                break
        else:
            table = pa.Table.from_batches(batches, schema=reader.schema)      # _commit makes it one batch
            _commit(lake, name, table, _record(lake, snaps, name), predicate=pred)
    finally:
        con.close()
    if n <= LOOKUP_ROWS_AT_ONCE:
        _fold_recent(lake, years)
        return True
    _write_years(lake, snaps, years, _record(lake, snaps, name), say)
    return True


LOOKUP_ROWS_AT_ONCE = 2_000_000   # changed rows of the by-source copy written in one replace-where commit
LOOKUP_FILE_ROWS = 1_000_000      # rows of a by-source file (a range of sources of one year)
RECENT = "r"                      # partition YYYYr: a year's rows added since it was last written whole
RECENT_SHARE = 0.2                # compaction rewrites a year whole when its recent rows reach this share
LOOKUP_RECENT_FILES = 8           # a refresh merges a year's recent files once they outnumber this


def _lookup_query(where: str, partition: str | None = None) -> str:
    """The by-source copy's rows (with their partition column ``year`` = ``partition`` when written by
    delta-rs)."""
    return f"SELECT *{f', {partition} AS year' if partition else ''} FROM measurements {where} " \
           "ORDER BY source_id, mjd"


def _sort_memory(con):
    """Give a connection that sorts the by-source copy SORT_MEMORY of DuckDB's memory limit; returns it."""
    limit = memory_limit_bytes()
    if limit:
        con.execute(f"SET memory_limit = '{int(limit * SORT_MEMORY)}B'")
    return con


def _lookup_connection(snaps, read: set[str] | None):
    """A connection over the images and photometry of the nights ``read`` (all when None; see _with_partners
    for why an image's other parts must be read too), up to the measurements view."""
    sub = dict(snaps)
    if read is not None:
        for table in ("images", "photometry"):
            sub[table] = _files_of_nights(snaps[table], read)
    return _sort_memory(open_connection(sub, {}, until="measurements"))


def _write_years(lake, snaps, years: set[str] | None, info: dict, say) -> None:
    """Write the by-source copy of ``years`` (every year when None) whole: each year's rows sorted by
    source_id and MJD in files of source ranges (written in DuckDB's order: delta-rs's writer would not keep
    it), committed in one transaction replacing those years' files, recent ones included (the whole table
    when None)."""
    name = "measurements_by_source"
    by_year: dict[str, set[str]] = {}
    for f in snaps["images"].files:
        m = re.search(r"/night=([^/]+)/", f)
        if m and (years is None or m.group(1)[:4] in years):
            by_year.setdefault(m.group(1)[:4], set()).add(m.group(1))
    root = lake.table_root(name)
    split = _split_images(snaps)
    files, schema = [], None
    for i, y in enumerate(sorted(by_year)):
        say(f"refresh: measurements by source, {y} ({i + 1}/{len(by_year)})")
        con = _lookup_connection(snaps, _with_partners(snaps, by_year[y], split))
        where = f"WHERE {delta.in_list('night', by_year[y])}"
        try:
            rels, schema = _write_lookup_files(root, y, con.sql(_lookup_query(where)))
        finally:
            con.close()
        files += [(rel, {"year": y}) for rel in rels]
    if schema is None:                      # no images: an empty copy
        con = _lookup_connection(snaps, None)
        try:
            schema = con.sql(_lookup_query("WHERE false")).to_arrow_table().schema
        finally:
            con.close()
    schema = schema.append(pa.field("year", pa.string()))
    if years is None:
        old = lake.derived_snapshots()[name]
        same = old.table is not None and old.schema is not None and old.schema.names == schema.names and \
            old.table.metadata().partition_columns == ["year"]
        delta.commit_files(root, name, files, schema, partition_by=["year"], mode="overwrite",
                           create=not same, operation="refresh full", info=info)
    else:
        delta.commit_files(root, name, files, schema, partition_by=["year"],
                           replace_partitions=sorted(years | {y + RECENT for y in years}), operation="refresh",
                           info=info)


def _write_lookup_files(root, part: str, rel) -> tuple[list[str], pa.Schema]:
    """Write rows of the by-source copy, sorted by source_id and MJD, into partition ``part`` as files of
    about LOOKUP_FILE_ROWS rows cut between sources: each file holds a range of sources (its Delta statistics
    say which), so a one-source lookup opens a file or two per year (see Lake.sql's ``source_id``)."""
    name = "measurements_by_source"
    return delta.write_files(lambda: delta.new_file(root, name, {"year": part}),
                             rel.to_arrow_reader(64 * 1024), max_rows=LOOKUP_FILE_ROWS, cut_on="source_id")


def compact_lookup(lake) -> dict:
    """Rewrite the by-source copy where lookups read more files than they need (see _lookup_to_compact):
    a year's recent files merged into files of source ranges, or the year rewritten whole once its recent
    rows reach RECENT_SHARE of it. Read from those files (not recomputed) and committed with the copy's own
    record, so it stays exactly as current as it was. Under the refresh lock: the only writer of derived
    datasets is a refresh."""
    name = "measurements_by_source"
    if not _lookup_to_compact(lake.derived_snapshots()[name]):
        return {}                                   # nothing to do: no wait for a running refresh
    with lake.lock("refresh"):
        snap = lake.derived_snapshots()[name]
        return _rewrite_lookup(lake, snap, _lookup_to_compact(snap))


def _rewrite_lookup(lake, snap: delta.Snapshot, parts: dict[str, bool]) -> dict:
    """Rewrite partitions of the by-source copy from its own files, sorted into files of source ranges (year ->
    True: the year whole with its recent rows; False: its recent files alone), committed with the copy's
    record (the rows are the same). Under the refresh lock."""
    from eselake.lake.connect import files_view, new_connection

    name = "measurements_by_source"
    root = lake.table_root(name)
    files, done, removed, schema = [], [], 0, None
    for year, whole in sorted(parts.items()):
        part = year if whole else year + RECENT
        read = [year, year + RECENT] if whole else [part]
        old = [f for f in snap.files if any(f"/year={r}/" in f for r in read)]
        con = _sort_memory(new_connection())
        try:
            files_view(con, "lookup_part", "f_part", old)
            rels, schema = _write_lookup_files(root, part, con.sql(
                "SELECT * FROM lookup_part ORDER BY source_id, mjd"))
        finally:
            con.close()
        files += [(rel, {"year": part}) for rel in rels]
        done += read
        removed += len(old)
    if not files:
        return {}
    delta.commit_files(root, name, files, schema.append(pa.field("year", pa.string())),
                       partition_by=["year"], replace_partitions=done, operation="compaction", info=snap.info)
    return {"removed": removed, "added": len(files)}


def _fold_recent(lake, years: set[str]) -> None:
    """Merge a year's recent files (one per refresh that added rows) into files of source ranges once they
    outnumber LOOKUP_RECENT_FILES: a lookup reads every recent file of its years, so a day of tiles would
    otherwise make it read hundreds. Costs the recent rows, not the year; a year whose recent rows exceed
    LOOKUP_ROWS_AT_ONCE is left to `eselake lake compact` (which rewrites such a year whole in time)."""
    snap = lake.derived_snapshots()["measurements_by_source"]
    parts = {y + RECENT for y in years}
    if not snap.files or sum(any(f"/year={p}/" in f for p in parts) for f in snap.files) <= LOOKUP_RECENT_FILES:
        return
    acts = pl.from_arrow(delta.add_actions(snap.table).select(["partition.year", "num_records"]))
    per = acts.filter(pl.col("partition.year").is_in(sorted(parts))).group_by("partition.year").agg(
        pl.len().alias("files"), pl.col("num_records").sum().alias("rows"))
    fold = {p.removesuffix(RECENT): False for p, files, rows in per.iter_rows()
            if files > LOOKUP_RECENT_FILES and rows <= LOOKUP_ROWS_AT_ONCE}
    if fold:
        _rewrite_lookup(lake, snap, fold)


def _lookup_to_compact(snap: delta.Snapshot) -> dict[str, bool]:
    """Partitions of the by-source copy to rewrite -> whether to rewrite the year whole: a year whose files
    overlap in source_id (Delta statistics), hold a file much larger than LOOKUP_FILE_ROWS, or a file that
    write_files did not write (delta-rs rewrote it when an image in it was re-measured or deleted, and its
    writer may not keep the order), or whose recent rows reach RECENT_SHARE of it (whole: True); a recent
    partition whose files overlap (the small files of incremental updates: merged alone, False). Nothing for a
    copy of another layout (the next refresh rebuilds it)."""
    if snap.table is None or not snap.files or (snap.info or {}).get("views", {}).get("layout") != LOOKUP_LAYOUT \
            or snap.table.metadata().partition_columns != ["year"]:
        return {}
    acts = delta.add_actions(snap.table)
    if "min.source_id" not in acts.column_names:
        return {str(y).removesuffix(RECENT): True for y in acts.column("partition.year").to_pylist()}
    df = pl.from_arrow(acts.select(["file", "partition.year", "num_records", "min.source_id", "max.source_id"])
                       ).rename({"partition.year": "part", "min.source_id": "lo", "max.source_id": "hi"}
                                ).sort("part", "lo")
    df = df.with_columns(prev=pl.col("hi").shift().over("part"), year=pl.col("part").str.strip_suffix(RECENT),
                         recent=pl.col("part").str.ends_with(RECENT))
    bad = df.filter(pl.col("lo").is_null() | (pl.col("lo") <= pl.col("prev"))
                    | (pl.col("num_records") > 1.5 * LOOKUP_FILE_ROWS)
                    | (~pl.col("recent") & ~pl.col("file").str.contains(delta.OWN_FILE)))
    rows = df.group_by("year").agg(pl.col("num_records").filter(pl.col("recent")).sum().alias("new"),
                                   pl.col("num_records").filter(~pl.col("recent")).sum().alias("old"))
    out = {y: True for y in rows.filter((pl.col("new") > 0) & (pl.col("new") >= RECENT_SHARE * pl.col("old")))["year"]}
    for year, recent in bad.select("year", "recent").iter_rows():
        out[year] = out.get(year, False) or not recent        # a bad year file: the year whole
    return out


def _cdf_rows(lake, table: str, since: int) -> pa.Table | None:
    """(night, image_id) of the rows inserted or deleted in ``table`` after version ``since`` (Delta's change
    data feed), or None when the feed cannot say (e.g. vacuumed)."""
    dt = delta.open_table(lake.path, table)
    if dt is None:
        return None
    if since >= dt.version():
        return pa.table({"night": pa.array([], pa.string()), "image_id": pa.array([], pa.string())})
    try:
        reader = dt.load_cdf(starting_version=since + 1, columns=["night", "image_id"])
        return pa.table(reader.read_all() if hasattr(reader, "read_all") else reader)
    except Exception:  # noqa: BLE001 - feed unavailable
        return None


def _changed_images(lake, info: dict | None) -> tuple[set[str], set[str]] | None:
    """(nights, image ids) of the images or photometry rows that changed since the versions ``info`` recorded;
    None where the change data feed cannot say."""
    nights: set[str] = set()
    ids: set[str] = set()
    for table in ("images", "photometry"):
        since = ((info or {}).get("sources") or {}).get(table)
        if since is not None:
            rows = _cdf_rows(lake, table, since)
            if rows is None:
                return None
            nights |= {n for n in rows.column("night").unique().to_pylist() if n}
            ids |= {i for i in rows.column("image_id").unique().to_pylist() if i}
    return nights, ids


def _in_step(dsnaps) -> bool:
    """The statistics, search results and candidates were computed from the daily bins as they are (the last
    refresh was not killed between its commits)."""
    rec = (dsnaps["daily_lightcurves"].info or {}).get("sources")
    return rec is not None and all((dsnaps[n].info or {}).get("sources") == rec
                                   for n in ("source_stats", "ese_search", "ese_candidates"))


def _kept_bins(lake, days: list[int], months: set[str]) -> pa.Table | None:
    """The kept daily bins of ``days`` (of ``months``), read from those months' files (None: none kept)."""
    from eselake.lake.connect import new_connection

    snap = lake.derived_snapshots()["daily_lightcurves"]
    files = [f for f in snap.files if any(f"/month={m}/" in f for m in months)]
    if not files or not days:
        return None
    con = new_connection()
    try:
        files_view(con, "kept", "d_kept", files)
        return _fetch(con, "SELECT * FROM kept WHERE list_contains($d, day)", {"d": sorted(days)})
    finally:
        con.close()


def _changed_sources(old: pa.Table | None, new: pa.Table) -> set[str]:
    """Sources whose bins of the refreshed days changed (a tile of one field touches only its own sources,
    though every bin of its nights is recomputed)."""
    new_ids = set(new.column("source_id").to_pylist())
    if old is None or old.num_rows == 0:
        return new_ids
    # a recomputed bin differs in its last bits from the kept one when DuckDB sums a day's points in another
    # order (parallel aggregation): floats are compared to BIN_RTOL, everything else exactly
    keys = ["source_id", "day"]
    a = pl.from_arrow(new).with_columns(pl.lit(True).alias("_new"))
    b = pl.from_arrow(old.select(new.column_names).cast(new.schema)).with_columns(pl.lit(True).alias("_old"))
    j = a.join(b, on=keys, how="full", suffix="_was", coalesce=True, nulls_equal=True)
    differ = [pl.col("_new").is_null() | pl.col("_old").is_null()]
    for name, dtype in a.schema.items():
        if name in keys or name == "_new":
            continue
        x, y = pl.col(name), pl.col(f"{name}_was")
        if dtype.is_float():
            close = (x - y).abs() <= BIN_RTOL * pl.max_horizontal(x.abs(), y.abs())
            differ.append(~((x.is_null() & y.is_null()) | (x == y) | close.fill_null(False)))
        else:
            differ.append(x.ne_missing(y))
    return set(j.filter(pl.any_horizontal(differ))["source_id"].to_list())


def _changed_nights(lake, info: dict | None) -> set[str] | None:
    """Nights whose images or photometry changed since the versions ``info`` recorded (Delta's change data
    feed: inserts and deletes of re-measured, new and removed images; compaction adds nothing); None where the
    feed cannot say (vacuumed past those versions)."""
    changed = _changed_images(lake, info)
    return None if changed is None else changed[0]


def _daily_connection(lake):
    from eselake.lake.connect import new_connection

    snap = lake.derived_snapshots()["daily_lightcurves"]
    con = new_connection()
    if snap.files:
        files_view(con, "daily_all", "d_daily", snap.files)
    else:
        schema = pa.schema([f for f in (snap.schema or pa.schema([])) if f.name != "month"])
        con.register("daily_all", pa.Table.from_pylist([], schema))
    return con


def _refresh_sources(lake, snaps, touched: set[str] | None, say, *, full: bool,
                     days: list[int] | None = None) -> int:
    """source_stats (from source_summaries and the newer bins), ese_search and ese_candidates for the
    ``touched`` sources (all when None); ``days``: the days whose bins changed (None: any)."""
    if touched is not None and touched >= _kept_sources(lake, "source_stats"):
        touched = None             # every source (a tile of the whole survey): no selection of the bins
    dsnaps = lake.derived_snapshots()
    until = None if full else _summaries_until(snaps, dsnaps, lake.path)
    con = _daily_connection(lake)
    try:
        if until is not None:
            files_view(con, "kept_sums", "d_sums", dsnaps["source_summaries"].files)
        bins = "daily_all"         # the statistics read their own days of it; the search, whole lightcurves
        if touched is not None:    # of the touched sources only (the columns it needs: a fifth of the bytes)
            con.register("_touched", pa.table({"source_id": pa.array(sorted(touched), pa.string())}))
            bins += " d SEMI JOIN _touched t USING (source_id)"
        search_fn = _search_function()
        daily = None
        if search_fn is not None:
            # grouped by source, days in order: the search's fast path (DuckDB sorts on every core)
            daily = pl.from_arrow(_fetch(con, f"SELECT source_id, day, mjd, flux_jy, err_jy FROM {bins} "
                                              "ORDER BY source_id, day"))
        n = "all" if touched is None else len(touched)
        say(f"refresh: statistics{' and ESE search' if daily is not None else ''} of {n} source(s)")

        def statistics():
            stats, sums, until_day, moved = summaries.statistics(
                con, kept="kept_sums" if until is not None else None, until_day=until,
                touched=None if touched is None else "_touched", changed_days=days)
            # committed while the search runs; first the summaries (statistics committed imply summaries
            # committed), and both before the search results (a refresh killed in between redoes every source)
            if moved is None or moved:
                _merge_whole(lake, snaps, "source_summaries", sums, None if moved is None else set(moved), full,
                             until_day=until_day)
            _merge_whole(lake, snaps, "source_stats", stats, touched, full)
            return stats.num_rows
        # DuckDB computes the statistics (without the GIL) while the search runs in numpy
        with ThreadPoolExecutor(1) as pool:
            stats_done = pool.submit(statistics)
            search = search_fn(daily).to_arrow() if daily is not None else None
            n_stats = stats_done.result()
    finally:
        con.close()
    if search is not None:
        say("refresh: committing search results and candidates")
        _merge_whole(lake, snaps, "ese_search", search, touched, full)
        _refresh_candidates(lake, snaps)
        # from here on every reader is served candidates that hold the new data (the by-source copy and the
        # gains' bookkeeping that follow change no candidate)
        say("refresh: candidates current")
    return n_stats


def _summaries_until(snaps, dsnaps, root=None) -> int | None:
    """The day before which the kept source_summaries hold every source's bins, or None when they cannot be
    used (missing, or of other view versions or references)."""
    s = dsnaps["source_summaries"]
    info = s.info or {}
    if s.version < 0 or not s.files or info.get("until_day") is None or \
            info.get("views") != _wanted(snaps, dsnaps, "source_summaries")["views"] or \
            not _refs_match((info.get("sources") or {}).get("reference_baselines"),
                            dsnaps["reference_baselines"].version, root):
        return None
    return int(info["until_day"])


def _kept_sources(lake, name: str) -> set[str]:
    """The source ids of a kept per-source dataset (empty when it does not exist yet)."""
    dt = delta.open_table(lake.table_root(name), name)
    return set() if dt is None else set(dt.to_pyarrow_table(columns=["source_id"]).column("source_id").to_pylist())


def _refresh_candidates(lake, snaps) -> None:
    """The candidate list of every preset, from the derived statistics and search results (small: whole)."""
    dsnaps = lake.derived_snapshots()
    use = {n: dsnaps[n] for n in ("reference_baselines", "source_stats", "ese_search") if dsnaps[n].files}
    con = open_connection(snaps, use, until="ese_candidates_all")
    try:
        cands = _fetch(con, "SELECT * FROM ese_candidates_all ORDER BY preset, fap_per_source_year, source_id")
    finally:
        con.close()
    _commit(lake, "ese_candidates", cands, _record(lake, snaps, "ese_candidates"), full=True)


def _view_text(name: str) -> str:
    from eselake.lake.connect import view_files

    return next(v.text for v in view_files() if v.name == name)


def _load_search() -> None:
    """Import the search and load its compiled loops."""
    if _search_function() is not None:
        from eselake.detection.search import load_compiled
        load_compiled()


def _search_function():
    try:
        from eselake.detection.search import search_lightcurves
    except ImportError:
        return None
    return search_lightcurves


def _merge_whole(lake, snaps, name: str, new: pa.Table, touched: set[str] | None, full: bool, **extra) -> None:
    """Replace the rows of ``touched`` sources (all rows when ``full``) and rewrite the small table whole;
    ``extra``: recorded in the commit."""
    info = _record(lake, snaps, name, **extra)
    dt = delta.open_table(lake.table_root(name), name)
    if full or dt is None or touched is None:
        _commit(lake, name, new, info, full=True)
        return
    old = dt.to_pyarrow_table()
    keep = old.filter(pc.invert(pc.is_in(old.column("source_id"), pa.array(sorted(touched), pa.string()))))
    merged = pa.concat_tables([keep, new.cast(keep.schema) if new.schema != keep.schema else new],
                              promote_options="permissive")
    merged = merged.take(pc.sort_indices(merged, [("source_id", "ascending")]))
    _commit(lake, name, merged, info, full=True)
