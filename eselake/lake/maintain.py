"""Lake maintenance, all through the Delta log: ``check`` (unreferenced files, referenced files missing,
damaged, unreadable or of the wrong schema, duplicate rows and observations), ``fix`` (remove unreferenced files
past a grace period; set damaged referenced files aside and remove them from their table), ``compact`` (Delta
OPTIMIZE: photometry clustered by source_id), ``vacuum``, ``history`` and ``upgrade`` (a lake of eselake 0.1's
hand-written layout to Delta tables)."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from eselake.errors import EselakeError
from eselake.lake import delta
from eselake.lake.connect import DERIVED_VIEWS
from eselake.lake.layout import DATASETS

GRACE_S = 3600.0             # unreferenced files younger than this may belong to a commit in progress


@dataclass
class Finding:
    severity: str          # error: data a reader sees wrongly or not at all | leftover: harmless residue
    kind: str
    path: str
    detail: str
    table: str = ""


DAMAGE = ("missing file", "damaged file", "unreadable file")    # referenced files ``fix`` removes from the table
REPAIRS = DAMAGE + ("damaged log",)                               # findings ``fix`` repairs (not leftovers)
QUARANTINE = "quarantine"      # LAKE/quarantine/<time>/<table path>/...: damaged files set aside by ``fix``


def _all_tables(lake) -> list[tuple[str, Path]]:
    return [(n, lake.table_root(n)) for n in list(DATASETS) + list(DERIVED_VIEWS)]


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def check(lake, *, deep: bool = True, full: bool = False,
          progress: Callable[[str], None] | None = None) -> list[Finding]:
    """Everything unusual in the lake, from the Delta logs. Errors mean data a reader would see wrongly or
    not at all; leftovers are files no version references (a failed or concurrent commit, stray copies).

    Every referenced file's size is compared with the log's; ``deep`` reads each footer (schema, row count);
    ``full`` reads every row and compares row counts, null counts and numeric min/max with the statistics the
    log recorded when the file was written (damage inside a page that keeps values in range goes unseen:
    delta-rs writes no page checksums)."""
    out: list[Finding] = []
    say = progress or (lambda msg: None)
    if not lake.path.is_dir():
        return []                       # nothing to check (the CLI says that no lake exists there)
    if delta.old_layout(lake.path, DATASETS):
        out.append(Finding("error", "old layout", str(lake.path),
                           "a lake of eselake 0.1 (no Delta log): run `eselake lake upgrade`"))
        return out
    for name, root in _all_tables(lake):
        folder = root / name
        if not folder.is_dir():
            continue
        if not delta.exists(root, name):           # a creation killed before its first commit: no table
            for p in delta.data_files(folder):
                out.append(Finding("leftover", "unreferenced file", str(p),
                                   f"table {name} was never committed ({_age_s(p):.0f} s old; invisible)", name))
            continue
        log = delta.read_log(folder)
        bad_log = [f for f, actions in log if actions is None]
        for p in bad_log:
            remedy = ("it is the table's newest commit: `lake check --fix` sets it aside (the table returns to its "
                      "previous version; measure that commit's images again)" if p == log[-1][0] else
                      "later commits build on it: restore the file from a backup")
            out.append(Finding("error", "damaged log", str(p), f"a commit of table {name} that cannot be read "
                               f"(empty or not JSON, e.g. after a crash of the machine); {remedy}", name))
        if bad_log:
            continue
        dt = delta.open_table(root, name)
        acts = delta.add_actions(dt).to_pylist()
        referenced = {str(Path(a["file"])) for a in acts}
        if full:
            say(f"reading table {name} ({len(acts)} files)")
        for a in sorted(acts, key=lambda a: a["file"]):
            problem = _file_problem(Path(a["file"]), a, name, deep=deep, full=full)
            if problem:
                kind, detail = problem
                out.append(Finding("error", kind, str(Path(a["file"])),
                                   f"table {name} v{dt.version()}: {detail}; {_remedy(name)}", name))
        ever = _ever_added(folder, log)
        for p in delta.data_files(folder):
            if str(p) not in referenced and str(p) not in ever:
                out.append(Finding("leftover", "unreferenced file", str(p),
                                   f"in no version of table {name} ({_age_s(p):.0f} s old; invisible)", name))
    if any(f.severity == "error" for f in out):
        return out
    out += _check_rows(lake)
    return out


def _remedy(name: str) -> str:
    if name in DATASETS:
        return "`lake check --fix` sets it aside and removes its rows from the table (measure its images again)"
    return "`lake check --fix` sets it aside and rebuilds the derived data"


def _file_problem(p: Path, act: dict, name: str, *, deep: bool, full: bool) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with referenced file ``p`` given its add action ``act``, or None."""
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return "missing file", "referenced but absent"
    if deep or full:
        try:
            pf = pq.ParquetFile(p)
            schema = pf.schema_arrow
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a finding
            return "unreadable file", f"{type(exc).__name__}: {delta.reason(exc)}"
    if act.get("size_bytes") is not None and size != act["size_bytes"]:
        return "damaged file", f"{size} bytes, the log recorded {act['size_bytes']} (truncated or overwritten)"
    if not (deep or full):
        return None
    n_log = act.get("num_records")
    if n_log is not None and pf.metadata.num_rows != n_log:
        return "damaged file", f"{pf.metadata.num_rows} rows, the log recorded {n_log}"
    expected = DATASETS[name].schema if name in DATASETS else None
    if expected is not None:
        part = DATASETS[name].partition
        bad = [fld.name for fld in expected if fld.name != part and (
            fld.name not in schema.names or not _compatible(schema.field(fld.name).type, fld.type))]
        if bad:
            return "schema", f"columns missing or of the wrong type: {bad}"
    if not full:
        return None
    try:
        found = _read_stats(pf)
    except Exception as exc:  # noqa: BLE001 - a page that does not decode
        return "unreadable file", f"{type(exc).__name__}: {delta.reason(exc)}"
    return _stats_mismatch(found, act)


def _read_stats(pf: pq.ParquetFile) -> dict:
    """Rows, null counts and numeric min/max (NaN ignored) of every column, one row group at a time."""
    import pyarrow.compute as pc

    rows, nulls, lo, hi = 0, {}, {}, {}
    for i in range(pf.metadata.num_row_groups):
        rg = pf.read_row_group(i)
        rows += rg.num_rows
        for col, arr in zip(rg.column_names, rg.columns):
            nulls[col] = nulls.get(col, 0) + arr.null_count
            if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
                continue
            mm = pc.min_max(arr).as_py()
            for key, out, pick in (("min", lo, min), ("max", hi, max)):
                v = mm[key]
                if v is not None and v == v:
                    out[col] = v if col not in out else pick(out[col], v)
    return {"rows": rows, "nulls": nulls, "min": lo, "max": hi}


def _stats_mismatch(found: dict, act: dict) -> tuple[str, str] | None:
    if act.get("num_records") is not None and found["rows"] != act["num_records"]:
        return "damaged file", f"{found['rows']} rows read, the log recorded {act['num_records']}"
    for col, n in found["nulls"].items():
        logged = act.get(f"null_count.{col}")
        if logged is not None and n != logged:
            return "damaged file", f"{n} nulls in column {col}, the log recorded {logged}"
    for key in ("min", "max"):
        for col, v in found[key].items():
            logged = act.get(f"{key}.{col}")
            if isinstance(logged, (int, float)) and logged == logged and v != logged:
                return "damaged file", f"{key} of column {col} is {v}, the log recorded {logged}"
    return None


def _ever_added(folder: Path, log) -> set[str]:
    """Data files some version of the table added (kept for time travel until ``vacuum``) and its change-data
    files: the add, cdc and remove actions of every commit still in the log (``delta.read_log``)."""
    from urllib.parse import unquote

    out = set()
    for _, actions in log:
        for action in actions or ():
            for kind in ("add", "cdc", "remove"):          # data files and change-data-feed files
                entry = action.get(kind)
                if entry and entry.get("path"):
                    out.add(str(folder / unquote(entry["path"])))
    return out


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected:
        return True
    if pa.types.is_string(expected) and (pa.types.is_large_string(actual) or pa.types.is_string_view(actual)):
        return True
    return pa.types.is_timestamp(expected) and pa.types.is_timestamp(actual)


def _check_rows(lake) -> list[Finding]:
    import duckdb

    try:
        return _check_rows_(lake)
    except duckdb.Error as exc:        # a data page that does not decode: the file-by-file read names it
        return [Finding("error", "unreadable data", str(lake.path),
                        f"{delta.reason(exc)}: `lake check --full` names the damaged file")]


def _check_rows_(lake) -> list[Finding]:
    out: list[Finding] = []
    images = delta.exists(lake.path, "images")
    if not images and not delta.exists(lake.path, "photometry"):
        return out
    con = lake.connect(derived=False)
    try:
        # photometry of images never committed (no images table at all: the lake's first ingest was killed)
        unmatched = "ANTI JOIN images_files i USING (image_id)" if images else ""
        for iid, n, ingest in con.execute(f"SELECT p.image_id, count(*), max(p.ingest_id) FROM photometry_files p "
                                          f"{unmatched} GROUP BY ALL LIMIT 20").fetchall():
            out.append(Finding("leftover", "photometry without image", iid,
                               f"{n} rows of an ingest that did not commit the image ({ingest_age_s(ingest):.0f} s "
                               "ago: interrupted, or still running; invisible): measure it again, or `lake check "
                               "--fix` removes them once older than --min-age-s", "photometry"))
        if delta.exists(lake.path, "catalog_sources"):
            for cat, sid, n in con.execute("""SELECT catalog, source_id, count(*) FROM catalog_sources_files
                                              GROUP BY ALL HAVING count(*) > 1 LIMIT 20""").fetchall():
                out.append(Finding("error", "duplicate catalogue rows", f"{cat}: {sid}",
                                   f"{n} rows: load the catalogue again (`eselake catalog load NAME FILE`) to "
                                   "replace them", "catalog_sources"))
        if not images:
            return out
        for iid, n in con.execute("""SELECT image_id, count(*) FROM images_files GROUP BY image_id
                                     HAVING count(*) > 1 LIMIT 20""").fetchall():
            out.append(Finding("error", "duplicate image rows", iid, f"{n} rows in images"))
        for sid, iid, n in con.execute("""SELECT source_id, image_id, count(*) FROM photometry_files
                                          GROUP BY ALL HAVING count(*) > 1 LIMIT 20""").fetchall():
            out.append(Finding("error", "duplicate rows", iid, f"source {sid} appears {n} times"))
        for iid, want, got in con.execute("""
                SELECT i.image_id, i.n_sources, count(p.source_id) FROM images_files i
                LEFT JOIN photometry_files p USING (image_id) GROUP BY ALL
                HAVING count(p.source_id) <> i.n_sources LIMIT 20""").fetchall():
            out.append(Finding("error", "row count", iid, f"images says {want} sources, photometry holds {got}: "
                               "measure the image again, or remove it with `eselake lake delete-image`", "photometry"))
        # two image ids that are one observation (ids from file paths in lakes of eselake 0.1, or copies)
        for a, b, tel in con.execute("""
                SELECT a.image_id, b.image_id, a.kind FROM images_files a JOIN images_files b
                  ON a.image_id < b.image_id AND abs(a.mjd - b.mjd) < 1.0 / 86400
                 AND abs(a.ra_center_deg - b.ra_center_deg) < 1.0 / 3600
                 AND abs(a.dec_center_deg - b.dec_center_deg) < 1.0 / 3600
                 AND coalesce(abs(a.freq_hz - b.freq_hz) < 1e3, a.freq_hz IS NULL AND b.freq_hz IS NULL)
                 AND a.kind = b.kind LIMIT 20""").fetchall():
            out.append(Finding("error", "duplicate observation", f"{a} = {b}",
                               f"two {tel}s of one observation (same centre, time and frequency): their sources "
                               "are counted twice; remove one with `eselake lake delete-image`"))
    finally:
        con.close()
    return out


def fix(lake, findings: list[Finding], min_age_s: float = GRACE_S,
        progress: Callable[[str], None] | None = None) -> list[str]:
    """Repair what ``check`` found: unreferenced files older than ``min_age_s`` are removed (younger ones may
    belong to a commit in progress); photometry rows of images never committed are deleted; damaged, unreadable
    or missing referenced files are set aside in LAKE/quarantine/ and removed from their table in one Delta
    commit per table (delta-rs FSCK), after which every derived dataset is rebuilt (a full refresh). Referenced
    files that are intact are never touched. Returns what was done."""
    removed = []
    damaged = [f for f in findings if f.kind in DAMAGE and f.table]
    lost = [f for f in findings if f.kind == "damaged log" and _newest_commit(Path(f.path))]
    if damaged or lost:
        removed += _repair(lake, damaged, lost, progress)
    for f in findings:
        if f.kind == "unreferenced file":
            p = Path(f.path)
            if p.exists() and _age_s(p) >= min_age_s:
                p.unlink(missing_ok=True)
                removed.append(str(p))
        elif f.kind == "photometry without image":
            # only the rows of ingests older than the grace period: a younger one may be between its photometry
            # and images commits (and a check's snapshot may have caught it there)
            dt = delta.open_table(lake.path, "photometry")
            ingests = dt.to_pyarrow_table(columns=["ingest_id"], filters=[("image_id", "=", f.path)])
            old = sorted(i for i in set(ingests.column("ingest_id").to_pylist()) if ingest_age_s(i) >= min_age_s)
            if old:
                pred = f"image_id = {delta.sql_literal(f.path)} AND {delta.in_list('ingest_id', old)}"
                delta.run_retrying(lake.path, "photometry", lambda: dt.delete(pred), "delete", table=dt)
                removed.append(f"photometry rows of {f.path}")
    return removed


def ingest_age_s(ingest_id: str | None) -> float:
    """Seconds since ingest ``ingest_id`` began (its id starts with the time in ns, hex; see new_ingest_id)."""
    try:
        return time.time() - int(str(ingest_id)[:16], 16) / 1e9
    except ValueError:
        return float("inf")              # an id of another form (an import): old


def _newest_commit(path: Path) -> bool:
    """``path`` is a commit file and the newest of its log (nothing builds on it)."""
    commits = delta.log_commits(path.parent.parent)
    return bool(commits) and commits[-1] == path


def _repair(lake, damaged: list[Finding], lost: list[Finding], progress) -> list[str]:
    """Set damaged data files and lost newest commits aside (kept for inspection), drop every absent file
    from its table, rebuild derived data."""
    from deltalake import CommitProperties

    from eselake.lake.derived import refresh

    lake._writable()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    done = []
    def set_aside(p: Path) -> Path:
        dest = lake.path / QUARANTINE / stamp / p.relative_to(lake.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
        return dest
    for f in lost:                      # the table returns to its previous version
        done.append(f"{f.path} (a lost commit, set aside in {set_aside(Path(f.path))})")
        delta.forget_listing(Path(f.path).parent)
    for f in damaged:
        p = Path(f.path)
        done.append(f"{p} (set aside in {set_aside(p)})" if p.exists() else f"{p} (absent)")
    for name in sorted({f.table for f in damaged}):
        root = lake.table_root(name)
        dt = delta.open_table(root, name)
        meta = {"eselake.operation": "repair"}
        if name not in DATASETS:        # derived data that lost rows: not current until rebuilt
            meta["eselake.info"] = json.dumps({"partial": True, "repaired": True})
        props = CommitProperties(custom_metadata=meta)
        delta.run_retrying(root, name, lambda: dt.repair(dry_run=False, commit_properties=props), "repair", table=dt)
    refresh(lake, full=True, progress=progress)
    return done


def compact(lake, *, target_mb: int = 256) -> dict[str, dict]:
    """Delta OPTIMIZE of every table: small files merged; photometry and the daily lightcurves Z-ordered by
    source_id so one source's rows sit in few row groups; the by-source copy's recent files merged sorted (see derived.compact_lookup).
    A transaction like any other: concurrent commits are never lost (a conflict is retried on the newer
    snapshot). Returns per table files removed/added."""
    lake._writable()
    done = {}
    for name, root in _all_tables(lake):
        dt = delta.open_table(root, name)
        if dt is None:
            continue
        if name == "measurements_by_source":      # rewritten sorted (delta-rs's writer may not keep the order)
            from eselake.lake.derived import compact_lookup

            got = compact_lookup(lake)
            if got:
                done[name] = got
            continue
        parts = _partitions_to_compact(dt)
        if not parts:
            continue

        def run(dt=dt, name=name, parts=parts):
            dt.update_incremental()
            filters = None if parts == [None] else [(parts[0][0], "in", [p[1] for p in parts])]
            if name in ("photometry", "daily_lightcurves"):
                return dt.optimize.z_order(["source_id"], partition_filters=filters, target_size=target_mb << 20,
                                           max_spill_size=2 << 30, writer_properties=delta.WRITER)
            return dt.optimize.compact(partition_filters=filters, target_size=target_mb << 20,
                                       writer_properties=delta.WRITER)

        metrics = delta.run_retrying(root, name, run, "compaction")
        if metrics.get("numFilesRemoved"):
            done[name] = {"removed": metrics.get("numFilesRemoved", 0), "added": metrics.get("numFilesAdded", 0)}
    return done


def _partitions_to_compact(dt) -> list:
    """Partitions holding more than one file, as (column, value) pairs; [None] for an unpartitioned table
    with more than one file; [] when there is nothing to do."""
    import pyarrow.compute as pc

    acts = pa.table(dt.get_add_actions(flatten=True))
    if acts.num_rows <= 1:
        return []
    cols = dt.metadata().partition_columns
    if not cols:
        return [None]
    col = cols[0]
    values = acts.column(f"partition.{col}")
    counts = pc.value_counts(values)
    return [(col, v["values"].as_py()) for v in counts if v["counts"].as_py() > 1]


def vacuum(lake, *, retention_hours: float = 168.0, dry_run: bool = False) -> dict[str, int]:
    """Delete files no version within ``retention_hours`` needs (time travel further back ends there)."""
    lake._writable()
    out = {}
    for name, root in _all_tables(lake):
        dt = delta.open_table(root, name)
        if dt is None:
            continue
        files = delta.run_retrying(root, name, lambda dt=dt: dt.vacuum(
            retention_hours=int(retention_hours), dry_run=dry_run, enforce_retention_duration=False), "vacuum",
            table=dt)
        if files:
            out[name] = len(files)
    return out


def history(lake, limit: int = 50) -> list[dict]:
    """Versions of every table, newest first: time, table, version, operation and what eselake recorded."""
    rows = []
    for name, root in _all_tables(lake):
        dt = delta.open_table(root, name)
        if dt is None:
            continue
        for h in dt.history(limit):
            info = h.get("eselake.info")
            rows.append({
                "time": datetime.fromtimestamp(h.get("timestamp", 0) / 1000.0, tz=timezone.utc)
                .strftime("%Y-%m-%d %H:%M:%S"),
                "table": name, "version": h.get("version"),
                "operation": h.get("eselake.operation") or h.get("operation", "").lower(),
                "rows_added": (h.get("operationMetrics") or {}).get("num_added_rows"),
                "detail": info if isinstance(info, str) else "",
            })
    rows.sort(key=lambda r: (r["time"], r["table"], r["version"]), reverse=True)
    return rows[:limit]


def upgrade(lake) -> dict[str, int]:
    """Convert a lake of eselake 0.1 (Parquet files under night=/catalog= folders, images rows as commit
    markers) to Delta tables. The old files stay where they are, readable, until every new table's log has
    committed; then they move to ``LAKE/_old_layout/`` (delete it when satisfied). Returns rows converted."""
    from eselake.lake.connect import glob_escape, new_connection

    lake._writable()
    base = lake.path
    if all(delta.exists(base, n) for n in ("images", "photometry")):
        raise EselakeError(f"{base} is already a Delta lake")
    old = {n: sorted(p for p in (base / n).rglob("*.parquet")) if (base / n).is_dir() else []
           for n in DATASETS}
    if not old["images"] and not old["catalog_sources"]:
        raise EselakeError(f"{base} holds no lake of the old layout")
    staging = base / "_upgrade"
    if staging.exists():
        shutil.rmtree(staging)
    con = new_connection()
    counts = {}
    try:
        def read(name, query):
            con.execute("SET VARIABLE f = ?", [[glob_escape(str(p)) for p in old[name]]])
            return con.sql(query).to_arrow_table()
        tables = {}
        if old["images"]:
            tables["images"] = read("images", """
                SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (PARTITION BY image_id ORDER BY ingest_id DESC)
                AS rn FROM read_parquet(getvariable('f'), hive_partitioning = true, union_by_name = true)) WHERE rn = 1""")
            con.register("imgs", tables["images"])
            tables["photometry"] = read("photometry", """
                SELECT p.* FROM read_parquet(getvariable('f'), hive_partitioning = true, union_by_name = true) p
                JOIN imgs i ON p.image_id = i.image_id AND p.ingest_id = i.ingest_id""")
        if old["catalog_sources"]:
            tables["catalog_sources"] = read("catalog_sources", """SELECT * FROM read_parquet(getvariable('f'),
                hive_partitioning = true, union_by_name = true)""")
        if old["reviews"]:
            tables["reviews"] = read("reviews", "SELECT * FROM read_parquet(getvariable('f'), union_by_name = true)")
    finally:
        con.close()
    from eselake.lake.lake import CDF
    from eselake.lake.write import conform

    for name, table in tables.items():
        ds = DATASETS[name]
        t = conform(table, ds.schema)
        delta.commit(staging, name, t, mode="append", partition_by=[ds.partition] if ds.partition else None,
                     operation="upgrade", info={"rows": t.num_rows},
                     configuration=CDF if name in ("images", "photometry") else None)
        counts[name] = t.num_rows
    # every new log has committed: swap folders (old files kept aside)
    aside = base / "_old_layout"
    aside.mkdir(exist_ok=True)
    for name in DATASETS:
        if (base / name).exists():
            os.replace(base / name, aside / name)
        if (staging / name).exists():
            os.replace(staging / name, base / name)
    shutil.rmtree(staging, ignore_errors=True)
    return counts
