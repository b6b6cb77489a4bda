"""Delta Lake tables of a lake (delta-rs): opening snapshots, committing with retries, one-line errors.

Every dataset of the lake is a Delta table in its own folder (``LAKE/<name>/`` with ``_delta_log/``). A commit
is atomic; concurrent writers are serialised by the log (a conflicting commit is retried on the new
snapshot); a reader sees exactly one committed version: the files listed by that version's log, never
whatever else lies in the folder.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote
from uuid import uuid4

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, DeltaProtocolError, TableNotFoundError

from eselake.errors import LakeError

ATTEMPTS = 30                  # commits retried after a conflicting concurrent commit
ROW_GROUP_ROWS = 64 * 1024     # small row groups: a single-source lookup reads little of a sorted file
WRITER = WriterProperties(compression="ZSTD", max_row_group_size=ROW_GROUP_ROWS)
PAGE_BYTES = 16 * 1024         # small pages in files written by write_files: a lookup skips the pages of other rows


@dataclass(frozen=True)
class Snapshot:
    """One committed version of a table: its files (absolute paths) and version (-1: no table yet)."""
    name: str
    version: int
    files: tuple[str, ...]
    schema: pa.Schema | None
    timestamp_ms: int | None = None
    info: dict | None = None           # eselake's metadata of the newest commit (what a refresh recorded)
    table: DeltaTable | None = field(default=None, compare=False, repr=False)   # loaded at ``version``


def table_path(root: Path, name: str) -> Path:
    return Path(root) / name


# delta-rs turns table paths into URLs and cannot open a folder whose path holds one of these
UNSUPPORTED_PATH_CHARS = "[]^|\\%#?"   # delta-rs: no table history under # or ?


def exists(root: Path, name: str) -> bool:
    """A committed table: its log holds at least one commit (a creation killed before its first commit
    leaves a folder that is no table)."""
    log = table_path(root, name) / "_delta_log"
    try:
        return any(n.endswith(".json") or n == "_last_checkpoint" for n in (p.name for p in log.iterdir()))
    except (FileNotFoundError, NotADirectoryError):
        return False


def reason(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "no space left" in low:
        return "the disk is full (No space left on device)"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS or "read-only file system" in low:
        return "the file system is read-only"
    if isinstance(exc, PermissionError) or "permission denied" in low:
        return "permission denied"
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def open_table(root: Path, name: str, as_of: int | datetime | None = None) -> DeltaTable | None:
    """The table ``name`` (at version/time ``as_of``), or None if the lake has no such table yet."""
    path = table_path(root, name)
    if not exists(root, name):
        return None
    try:
        dt = DeltaTable(str(path))
        if as_of is not None:
            dt.load_as_version(as_of)
        refuse_lost_commits(root, name, dt.version())
        return dt
    except TableNotFoundError:
        return None
    except (DeltaError, DeltaProtocolError, OSError) as exc:
        if as_of is not None and ("not found" in str(exc).lower() or "version" in str(exc).lower()):
            raise LakeError(f"table {name} of {root} has no version as of {as_of}: {reason(exc)}") from exc
        bad = corrupt_log_files(path)
        where = f" (its log file {bad[0]} is damaged)" if bad else ""
        raise LakeError(f"cannot read table {name} of {root}{where}: {reason(exc)}") from exc


def refuse_lost_commits(root: Path, name: str, version: int | None = None) -> None:
    """A LakeError if the log of table ``name`` (up to ``version``) holds an empty commit file: delta-rs would
    read it as a commit without actions, so readers would miss that commit's rows and writers would build on
    it for good."""
    lost = _empty_commits(table_path(root, name), version)
    if lost:
        raise LakeError(f"table {name} of {root}: its log file {lost[0]} is empty (a commit lost, e.g. by a crash "
                        "of the machine): `eselake lake check --fix` sets it aside if it is the table's newest "
                        "commit; otherwise restore it from a backup")


def _empty_commits(path: Path, version: int | None) -> list[Path]:
    """Empty commit files that the snapshot at ``version`` replays (after its newest checkpoint); delta-rs
    reads an empty commit as one without actions, which would silently drop that commit's rows. One listing."""
    files = _log_listing(path, version)
    checkpoint = max((v for v, kind, _, _ in files if kind != ".json"), default=-1)
    return [f for v, kind, f, st in files if kind == ".json" and v > checkpoint and st is not None and st.st_size == 0]


def _log_listing(path: Path, version: int | None = None) -> list[tuple[int, str, Path, os.stat_result | None]]:
    """One listing of table folder ``path``'s log up to ``version``: (version, ".json" or the checkpoint's
    suffix, file, stat) of its newest checkpoint and every commit file from it on, oldest first; stat None for
    a file removed since the listing (log cleanup after another writer's checkpoint). FileNotFoundError
    without a log."""
    found = []
    with os.scandir(Path(path) / "_delta_log") as it:
        for e in it:
            v = e.name[:20]
            if v.isdigit() and (version is None or int(v) <= version) and \
                    (e.name[20:] == ".json" or e.name.endswith(".checkpoint.parquet")):
                found.append((int(v), e.name[20:], e))
    checkpoint = max((v for v, kind, _ in found if kind != ".json"), default=-1)
    out = []
    for v, kind, e in sorted(found, key=lambda f: (f[0], f[1])):
        if v >= checkpoint:
            try:
                st = e.stat()
            except FileNotFoundError:
                st = None
            out.append((v, kind, Path(e.path), st))
    return out


def log_commits(path: Path) -> list[Path]:
    """The commit files (``<20-digit version>.json``) of table folder ``path``'s log, oldest first."""
    return sorted(f for f in (Path(path) / "_delta_log").glob("*.json") if re.fullmatch(r"\d{20}\.json", f.name))


def read_log(path: Path) -> list[tuple[Path, list[dict] | None]]:
    """Every commit file of table folder ``path``, in order, with its actions; None for a commit that is empty
    or holds a line that is not JSON (a commit always holds at least its commitInfo: an empty file is a commit
    lost, e.g. by a crash without fsync)."""
    out = []
    for f in log_commits(path):
        try:
            actions = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:         # removed by log cleanup meanwhile
            continue
        except (OSError, ValueError):
            actions = []
        out.append((f, actions or None))
    return out


def corrupt_log_files(path: Path) -> list[Path]:
    """Commit files of table folder ``path`` that are empty or not JSON (see ``read_log``)."""
    return [f for f, actions in read_log(path) if actions is None]


def local_files(dt: DeltaTable) -> list[str]:
    """The snapshot's data files as local paths (delta-rs gives percent-encoded URIs)."""
    out = []
    for uri in dt.file_uris():
        if uri.startswith("file://"):
            uri = uri[len("file://"):]
        out.append(unquote(uri))
    return out


def files_matching(dt: DeltaTable, filters: list[tuple]) -> list[str]:
    """Local paths of the snapshot's files that may hold rows matching ``filters`` (partition values and the
    log's min/max statistics: delta-rs's file pruning)."""
    return [unquote(u.removeprefix("file://")) for u in dt.file_uris(file_pruning_predicate=filters)]


def table_folder(dt: DeltaTable) -> str:
    """The local folder of table ``dt``."""
    return unquote(dt.table_uri.removeprefix("file://")).rstrip("/")


def add_actions(dt: DeltaTable) -> pa.Table:
    """The log's add actions of the snapshot, flattened (``partition.<col>``, ``num_records``,
    ``min.<col>``, ``max.<col>``...), with ``file``: each file's local path (as in ``local_files``)."""
    acts = pa.table(dt.get_add_actions(flatten=True))
    folder = table_folder(dt)
    return acts.append_column("file", pa.array([f"{folder}/{unquote(p)}" for p in acts.column("path").to_pylist()],
                                               pa.string()))


def nights_holding(dt: DeltaTable, ids: list[str]) -> set[str]:
    """Nights of the night-partitioned table ``dt`` (at its loaded version) holding a row of one of ``ids``:
    only the files that may hold one by the Delta log's image_id statistics are read (delta-rs file pruning)."""
    import pyarrow.dataset as pds

    files = files_matching(dt, [("image_id", "in", list(ids))]) if ids else []
    if not files:
        return set()
    # one schema for every file: delta-rs's own rewrites (delete, optimize) store strings as string_view,
    # which pyarrow's is_in has no kernel for
    data = pds.dataset(files, format="parquet", schema=pa.schema([("image_id", pa.string()), ("night", pa.string())]),
                       partition_base_dir=table_folder(dt),
                       partitioning=pds.partitioning(pa.schema([("night", pa.string())]), flavor="hive"))
    found = data.to_table(columns=["night"], filter=pds.field("image_id").isin(list(ids)))
    return set(found.column("night").unique().to_pylist())


def snapshot(dt: DeltaTable | None, name: str) -> Snapshot:
    if dt is None:
        return Snapshot(name, -1, (), None)
    files = tuple(sorted(local_files(dt)))
    version = dt.version()
    found = _described(dt, version)
    if found is None:                 # the commit files were cleaned up after a checkpoint: ask delta-rs
        meta = dt.history(1)
        ts = meta[0].get("timestamp") if meta else None
        info = None
        first = meta and meta[0].get("version") == version and meta[0].get("eselake.info")
        for h in meta if first else dt.history(200):
            # the newest commit of this version or before that eselake described (skips compaction and vacuum)
            if isinstance(h.get("eselake.info"), str) and h.get("version", -1) <= version:
                info = json.loads(h["eselake.info"])
                break
    else:
        ts, info = found
    return Snapshot(name, dt.version(), files, pa.schema(dt.schema().to_arrow()), ts, info, dt)


_SNAPSHOTS: dict[str, tuple[tuple, Snapshot]] = {}   # table folder -> (its log's key, newest snapshot)
SNAPSHOTS_KEPT = 64    # tables whose newest snapshot a process keeps
_SNAPSHOTS_LOCK = threading.Lock()


def _log_key(path: Path) -> tuple | None:
    """What identifies a table's newest snapshot, from one listing of its log: the newest checkpoint and every
    commit file after it (version, size, modification time, inode), so that a new commit, a commit set aside
    and committed again, or a damaged (e.g. emptied) commit file all change it; None without a log or when a
    listed file was removed meanwhile (the caller then opens the table itself)."""
    try:
        files = _log_listing(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if any(st is None for *_, st in files):
        return None
    return tuple((v, kind, st.st_size, st.st_mtime_ns, st.st_ino) for v, kind, _, st in files)


def current_snapshot(root: Path, name: str) -> Snapshot:
    """The newest committed snapshot of table ``name``, kept per process while its log is unchanged (opening a
    table replays its log: 5-50 ms; checking the log is one listing). Treat it as read-only: its ``table`` is
    shared with later callers (anything that commits or time-travels opens its own with ``open_table``)."""
    path = table_path(root, name)
    key = _log_key(path)
    if key is None:
        return snapshot(open_table(root, name), name)
    hit = _SNAPSHOTS.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    snap = snapshot(open_table(root, name), name)
    if key and snap.version == max(v for v, *_ in key):     # not when a commit landed between key and open
        with _SNAPSHOTS_LOCK:                                # (the API serves requests on threads)
            _SNAPSHOTS.pop(str(path), None)
            _SNAPSHOTS[str(path)] = (key, snap)
            while len(_SNAPSHOTS) > SNAPSHOTS_KEPT:
                _SNAPSHOTS.pop(next(iter(_SNAPSHOTS)))
    return snap


def _described(dt: DeltaTable, version: int, limit: int = 200):
    """(timestamp of ``version``, eselake.info of the newest commit at or before it that has one), read from
    the log's own commit files: delta-rs's history() of a table loaded at an older version numbers the
    newest commits as if they were that version's. None when a commit file is gone (cleaned after a
    checkpoint)."""
    log = Path(table_folder(dt)) / "_delta_log"
    ts = None
    for v in range(version, max(-1, version - limit), -1):
        commit = _commit_info(log, v)
        if commit is None:
            return None
        if v == version:
            ts = commit.get("timestamp")
        if isinstance(commit.get("eselake.info"), str):
            return ts, json.loads(commit["eselake.info"])
    return ts, None


_LISTED: dict[Path, tuple[int, int, float]] = {}   # log folder -> (mtime in ns, newest version, when listed)
SETTLED_S = 2.0        # a log folder unchanged this long (s) gets a new mtime with its next commit
LISTED_S = 1.0         # a listing is reused this long (s) at most (file systems whose folder times do not move)


def _commit_info(log: Path, version: int) -> dict | None:
    """The commitInfo of commit ``version`` read from its file in folder ``log`` ({} if it has none); None when
    the file cannot be read (cleaned up after a checkpoint, damaged)."""
    try:
        with open(log / f"{version:020d}.json", encoding="utf-8") as fh:   # commitInfo is a line of its own
            return next((json.loads(ln).get("commitInfo") or {} for ln in fh if '"commitInfo"' in ln), {})
    except (OSError, ValueError):
        return None


def forget_listing(log: Path) -> None:
    """Drop this process's cached listing of log folder ``log`` (after a commit file was moved away)."""
    _LISTED.pop(Path(log), None)


def latest_version(root: Path, name: str) -> int:
    """Newest committed version of a table from its log folder (cheap: one directory listing, reused for up
    to LISTED_S while the folder keeps the modification time it had when listed, if it was then at least
    SETTLED_S old: file systems with coarse timestamps give two changes within one tick the same time);
    -1 if none."""
    log = table_path(root, name) / "_delta_log"
    try:
        mtime = log.stat().st_mtime_ns
        seen = _LISTED.get(log)
        now = time.time()
        if seen is not None and seen[0] == mtime and now - seen[2] < LISTED_S:
            return seen[1]
        settled = now - mtime / 1e9 >= SETTLED_S
        names = [p.name for p in log.iterdir()]
    except FileNotFoundError:
        return -1
    versions = [int(n[:20]) for n in names if n.endswith(".json") and n[:20].isdigit() and len(n) == 25]
    if not versions:
        # only a checkpoint left after log cleanup: ask delta-rs
        dt = open_table(root, name)
        return dt.version() if dt is not None else -1
    if settled:
        _LISTED[log] = (mtime, max(versions), now)
    return max(versions)


def commit(root: Path, name: str, data: pa.Table, *, mode: str = "append", predicate: str | None = None,
           partition_by: Iterable[str] | None = None, operation: str = "write", info: dict | None = None,
           schema_mode: str | None = None, configuration: dict | None = None,
           writer: WriterProperties | None = None, target_file_size: int | None = None) -> int:
    """Commit ``data`` to table ``name`` in one transaction and return the new version.

    ``mode='overwrite'`` with ``predicate`` replaces exactly the rows matching it (replace-where), atomically.
    Conflicting concurrent commits are retried on the newer snapshot; I/O failures become one-line LakeErrors
    (nothing is half-written: files of a failed commit are never referenced by the log). ``data`` may be a
    RecordBatchReader (streamed, bounded memory), which can be written once: a conflict is then an error.
    """
    attempts = 1 if isinstance(data, pa.RecordBatchReader) else ATTEMPTS
    path = table_path(root, name)
    meta = {"eselake.operation": operation, "eselake.time": datetime.now(timezone.utc).isoformat()}
    if info:
        meta["eselake.info"] = json.dumps(info, default=str)
    if isinstance(data, pa.Table):
        ensure_room(root, name, data.nbytes)
    if exists(Path(root), name):
        refuse_lost_commits(root, name)
    for attempt in range(attempts):
        try:
            path.mkdir(parents=True, exist_ok=True)
            new = not exists(Path(root), name)
            if new and predicate is not None:
                # create the table empty first: a replace-where without its predicate (there is nothing to
                # replace yet) would replace every row of a table another writer created meanwhile
                write_deltalake(str(path), data.schema.empty_table(), mode="append",
                                partition_by=list(partition_by) if partition_by is not None else None,
                                configuration=configuration, writer_properties=writer or WRITER,
                                commit_properties=CommitProperties(custom_metadata={"eselake.operation": "create"}))
                new = False
            write_deltalake(str(path), data, mode=mode, predicate=predicate if not new else None,
                            partition_by=list(partition_by) if partition_by is not None else None,
                            schema_mode=schema_mode, writer_properties=writer or WRITER,
                            target_file_size=target_file_size,
                            configuration=configuration if new else None,
                            commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=5))
            _LISTED.pop(table_path(root, name) / "_delta_log", None)      # this process committed: list again
            return latest_version(root, name)
        except CommitFailedError:
            if attempt == attempts - 1:
                raise LakeError(f"could not commit to table {name} of {root}: too many concurrent writers")
            time.sleep(min(0.02 * (attempt + 1), 0.5) * (0.5 + random.random()))
        except (DeltaError, DeltaProtocolError, OSError, pa.ArrowException) as exc:
            if "schema" in str(exc).lower() and "mismatch" in str(exc).lower():
                raise LakeError(f"table {name} of {root}: data does not match the table's schema "
                                f"({reason(exc)})") from exc
            raise LakeError(f"writing table {name} of {root} failed: {reason(exc)}") from exc
    raise AssertionError("unreachable")


RESERVE_BYTES = 64 << 10       # free space kept beyond a commit's data (its log entry; the data in memory
                               # take several times their compressed size on disk)


def ensure_room(root: Path, name: str, nbytes: int) -> None:
    """Refuse a commit whose data (``nbytes`` in memory, more than on disk) may not fit on the disk: a write
    that runs out of space fails anyway, after leaving partial files and delta-rs's panic messages behind."""
    folder = Path(root)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < nbytes + RESERVE_BYTES:
        raise LakeError(f"writing table {name} of {root}: the disk is full or nearly ({free / 1e6:.0f} MB free; "
                        f"this commit needs up to {(nbytes + RESERVE_BYTES) / 1e6:.0f} MB)")


_UUID = r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}"
OWN_FILE = rf"(^|/)part-{_UUID}\.zstd\.parquet$"   # new_file's names
# every name a Delta writer of the lake gives a data file: new_file's and delta-rs's (part-00000-<uuid>-c000)
WRITER_FILE = re.compile(rf"^part-([0-9]{{5}}-)?{_UUID}(-c[0-9]{{3}})?(\.\w+)?\.parquet$")


def data_files(folder: Path) -> list[Path]:
    """Every Parquet file under a table folder, outside its _delta_log (by walking, never by glob)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "_delta_log"]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".parquet")]
    return out


def old_layout(root: Path, names: Iterable[str]) -> list[str]:
    """Tables of ``names`` held in eselake 0.1's layout: a folder without a Delta log holding Parquet files no
    Delta writer named (a creation killed before its first commit leaves only writers' files, or none)."""
    out = []
    for name in names:
        folder = table_path(root, name)
        if folder.is_dir() and not (folder / "_delta_log").is_dir() and \
                any(not WRITER_FILE.match(p.name) for p in data_files(folder)):
            out.append(name)
    return out


def new_file(root: Path, name: str, partition: dict[str, str]) -> tuple[str, Path]:
    """A fresh data file name inside table ``name`` (relative path for the log, absolute path to write)."""
    rel = "".join(f"{k}={v}/" for k, v in partition.items()) + f"part-{uuid4()}.zstd.parquet"
    path = table_path(root, name) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return rel, path


_STAT_KINDS = {("BYTE_ARRAY", "STRING"), ("INT32", "NONE"), ("INT64", "NONE"), ("DOUBLE", "NONE"), ("FLOAT", "NONE")}


def write_files(next_file, reader: pa.RecordBatchReader, *, max_rows: int | None = None,
                cut_on: str | None = None) -> tuple[list[str], pa.Schema]:
    """Stream ``reader`` into parquet files in its order (zstd, ROW_GROUP_ROWS-row groups of PAGE_BYTES
    pages): a new file is begun once a file holds ``max_rows`` rows, at the next change of column ``cut_on``
    (by which ``reader`` is sorted), so no value of it spans two files and each file's statistics bound a range
    of it. ``next_file()`` gives a new file's (relative name, path). Returns the relative names and the files'
    schema (Delta's types); on error no file is left behind."""
    import pyarrow.parquet as pq

    schema = _delta_types(reader.schema)
    names, paths, out, n, last = [], [], None, 0, None
    try:
        for batch in reader:
            batch = batch.cast(schema)
            while batch.num_rows:
                if out is None:
                    rel, path = next_file()
                    names.append(rel)
                    paths.append(path)
                    out, n = pq.ParquetWriter(path, schema, compression="zstd", data_page_size=PAGE_BYTES), 0
                cut = batch.num_rows
                if max_rows and n + batch.num_rows >= max_rows:
                    cut = _first_change(batch.column(cut_on), max(0, max_rows - n), last)
                if cut:
                    out.write_batch(batch.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
                    n += cut
                    last = batch.column(cut_on)[cut - 1].as_py() if cut_on else None
                if cut < batch.num_rows:
                    out.close()
                    out = None
                batch = batch.slice(cut)
        if out is not None:
            out.close()
    except BaseException:
        try:
            if out is not None:
                out.close()
        finally:
            for path in paths:
                path.unlink(missing_ok=True)
        raise
    return names, schema


def _first_change(key: pa.Array, start: int, before) -> int:
    """The first index >= ``start`` at which sorted ``key`` differs from the value before it (``before``: the
    value preceding index 0); len(key) when none does."""
    import pyarrow.compute as pc

    if start == 0 and before is not None and len(key) and key[0].as_py() != before:
        return 0
    if len(key) < 2:
        return len(key)
    change = pc.indices_nonzero(pc.not_equal(key.slice(1), key.slice(0, len(key) - 1))).to_numpy() + 1
    change = change[change >= start]
    return int(change[0]) if len(change) else len(key)


def _file_stats(path: Path) -> str:
    """Delta statistics of a parquet file from its footer: row count, and min/max/null count of its string,
    integer and finite float columns (the rest left out: Delta statistics may cover any subset)."""
    import math

    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    lo, hi, nulls = {}, {}, {}
    for j in range(md.num_columns):
        col = md.schema.column(j)
        kind = (col.physical_type, col.logical_type.type)
        if kind not in _STAT_KINDS:
            continue
        stats = [md.row_group(i).column(j).statistics for i in range(md.num_row_groups)]
        if any(s is None for s in stats):
            continue
        if all(s.has_null_count for s in stats):
            nulls[col.name] = sum(s.null_count for s in stats)
        vals = [s for s in stats if s.has_min_max]
        if vals:
            a, b = min(s.min for s in vals), max(s.max for s in vals)
            if isinstance(a, bytes) or (isinstance(a, float) and not (math.isfinite(a) and math.isfinite(b))):
                continue
            lo[col.name], hi[col.name] = a, b
    return json.dumps({"numRecords": md.num_rows, "minValues": lo, "maxValues": hi, "nullCount": nulls})


def _delta_types(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the types Delta knows: any time zone as UTC (DuckDB says Etc/UTC), strings as string."""
    def fix(t: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(t):
            return pa.timestamp("us", tz="UTC" if t.tz else None)
        if pa.types.is_large_string(t) or t == pa.string_view():
            return pa.string()
        return t
    return pa.schema([f.with_type(fix(f.type)) for f in schema])


def commit_files(root: Path, name: str, files: list[tuple[str, dict[str, str]]], schema: pa.Schema, *,
                 partition_by: list[str], mode: str = "append", replace_partitions: list[str] | None = None,
                 create: bool = False, operation: str = "write", info: dict | None = None) -> int:
    """Commit parquet ``files`` already written inside the table folder (relative path, partition values) in
    one transaction; returns the new version. The files keep the row order they were written in (delta-rs's
    own writer does not keep the order of its input). ``replace_partitions``: values of the (single) partition
    column whose files the commit replaces; ``create``: a new table (any older one's files and schema replaced)
    first, in a commit of its own holding no rows. ``schema``: the table's, partition columns included."""
    from deltalake.transaction import AddAction

    path = table_path(root, name)
    schema = _delta_types(schema)
    meta = {"eselake.operation": operation, "eselake.time": datetime.now(timezone.utc).isoformat()}
    if info:
        meta["eselake.info"] = json.dumps(info, default=str)
    if not create and exists(Path(root), name):
        refuse_lost_commits(root, name)
    try:
        if create or not exists(Path(root), name):
            DeltaTable.create(str(path), schema, partition_by=partition_by, mode="overwrite",
                              commit_properties=CommitProperties(custom_metadata={"eselake.operation": operation}))
        now = int(time.time() * 1000)
        adds = [AddAction(rel, (path / rel).stat().st_size, part, now, True, _file_stats(path / rel))
                for rel, part in files]
        dt = DeltaTable(str(path))
        filters = None
        if replace_partitions is not None:
            mode, filters = "overwrite", [(partition_by[0], "in", sorted(replace_partitions))]
        dt.create_write_transaction(adds, mode, schema, partition_by=partition_by, partition_filters=filters,
                                    commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=5))
        _LISTED.pop(table_path(root, name) / "_delta_log", None)      # this process committed: list again
        return latest_version(root, name)
    except CommitFailedError as exc:
        raise LakeError(f"could not commit to table {name} of {root}: a concurrent commit conflicts") from exc
    except (DeltaError, DeltaProtocolError, OSError, pa.ArrowException) as exc:
        raise LakeError(f"writing table {name} of {root} failed: {reason(exc)}") from exc


DATA_PRESERVING = {"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"}


def changed_since(root: Path, name: str, version: int, now: int) -> bool:
    """True if a commit after ``version`` up to ``now`` changed the table's data (compaction and vacuum don't)."""
    if now == version:
        return False
    if now < version or version < 0:
        return True
    log = table_path(root, name) / "_delta_log"
    ops = [_commit_info(log, v) for v in range(version + 1, now + 1)]
    if all(op is not None for op in ops):         # the commit files themselves: no replay of the log
        return any(op.get("operation") not in DATA_PRESERVING for op in ops)
    dt = open_table(root, name)
    if dt is None:
        return True
    ops = [h for h in dt.history(now - version + 5) if version < h.get("version", -1) <= now]
    return len(ops) < now - version or any(h.get("operation") not in DATA_PRESERVING for h in ops)


def run_retrying(root: Path, name: str, fn, what: str, table: DeltaTable | None = None):
    """Run a table operation (optimize, vacuum, delete) with the same conflict retries and error messages.
    ``table``: the DeltaTable ``fn`` works on, brought to the newest version before every retry (an operation
    on the snapshot it lost to would conflict again, every time)."""
    for attempt in range(ATTEMPTS):
        try:
            if table is not None and attempt:
                table.update_incremental()
            return fn()
        except CommitFailedError:
            if attempt == ATTEMPTS - 1:
                raise LakeError(f"{what} of table {name} of {root}: too many concurrent writers")
            time.sleep(min(0.05 * (attempt + 1), 1.0) * (0.5 + random.random()))
        except (DeltaError, DeltaProtocolError, OSError) as exc:
            raise LakeError(f"{what} of table {name} of {root} failed: {reason(exc)}") from exc
    raise AssertionError("unreachable")


def sql_literal(value) -> str:
    """A SQL literal for delta-rs predicates (strings quoted, quotes doubled)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def in_list(column: str, values: Iterable) -> str:
    vals = sorted(set(values))
    if not vals:
        return "false"
    return f"{column} IN ({', '.join(sql_literal(v) for v in vals)})"


def commit_info(dt: DeltaTable, limit: int = 1) -> list[dict]:
    """The newest ``limit`` commits of a table: version, timestamp, operation and eselake's own metadata."""
    out = []
    for h in dt.history(limit):
        info = h.get("eselake.info")
        out.append({"version": h.get("version"), "timestamp_ms": h.get("timestamp"),
                    "operation": h.get("eselake.operation") or h.get("operation"),
                    "delta_operation": h.get("operation"),
                    "info": json.loads(info) if isinstance(info, str) else None})
    return out
