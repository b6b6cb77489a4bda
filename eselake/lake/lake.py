"""``Lake``: a folder of Delta tables, its transactional writers, and DuckDB queries over one snapshot."""
from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from eselake.errors import EselakeError, LakeError
from eselake.lake import connect as _connect
from eselake.lake import delta
from eselake.lake.layout import (CATALOG_SCHEMA, DATASETS, IMAGES_SCHEMA, PHOTOMETRY_SCHEMA, REVIEWS_SCHEMA,
                                 new_ingest_id, nights_of, safe_name)
from eselake.lake.write import conform, file_lock, with_constant

DERIVED_DIR = "derived"
# images and photometry keep Delta's change data feed: an incremental refresh reads what changed since it ran
CDF = {"delta.enableChangeDataFeed": "true"}


def fetch_arrow(con: duckdb.DuckDBPyConnection, query: str, params=None) -> pa.Table:
    """Run ``query`` (parameters bound) and return the whole result as a pyarrow Table."""
    rel = con.sql(query, params=params) if params else con.sql(query)
    if rel is None:                       # a statement without a result (CREATE, SET, ...)
        return pa.table({})
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        fn = getattr(rel, name, None)
        if fn is not None:
            table = fn()
            return table.read_all() if isinstance(table, pa.RecordBatchReader) else table
    raise RuntimeError("this DuckDB version has no Arrow export")


def default_lake_path() -> Path:
    """``$ESELAKE_LAKE`` or ``./lake``."""
    return Path(os.environ.get("ESELAKE_LAKE") or "lake")


def parse_as_of(value) -> int | datetime | None:
    """``--as-of``: a version of the images table (integer, see ``lake history``) or an ISO time (UTC if no
    zone is given)."""
    if value is None or isinstance(value, (int, datetime)):
        return value.replace(tzinfo=value.tzinfo or timezone.utc) if isinstance(value, datetime) else value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        if int(text) < 0:
            raise EselakeError(f"--as-of {text}: versions start at 0")
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EselakeError(f"--as-of {text!r}: give a version number or an ISO time such as "
                           "2025-06-01T12:00:00") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class Lake:
    """A lake folder. ``Lake(path).sql(q)`` returns a polars DataFrame from the eselake views.

    ``as_of`` (a version of the images table, or a datetime / ISO time) opens the lake as it was then: every
    table at its newest version committed at or before that moment. Such a lake is read-only.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, as_of=None):
        self.path = Path(path if path is not None else default_lake_path()).expanduser().absolute()
        if self.path.exists() and not self.path.is_dir():
            raise LakeError(f"lake path {self.path} is a file, not a folder")
        bad = sorted(set(str(self.path)) & set(delta.UNSUPPORTED_PATH_CHARS))
        if bad:
            raise LakeError(f"lake path {self.path}: the character(s) {' '.join(bad)} cannot be used in a lake's "
                            "path (the Delta Lake library cannot open such folders); choose another folder name")
        self.as_of = parse_as_of(as_of)
        self._base_versions: dict | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._synced: tuple | None = None
        self._shape: tuple | None = None
        self._use: dict = {}                # derived datasets the connection reads
        self._ranges: tuple | None = None   # (version, files, min, max source_id) of the by-source copy
        self._narrowed = False              # the by-source copy's file list is one source's
        self._lock = threading.RLock()
        self.stale: list[str] = []          # derived datasets recomputed from their views in the last sync

    def __repr__(self) -> str:
        return f"Lake({str(self.path)!r})" if self.as_of is None else f"Lake({str(self.path)!r}, as_of={self.as_of!r})"

    # ---------------------------------------------------------------- tables and snapshots
    def exists(self) -> bool:
        """True when the folder holds at least one table of a lake."""
        return any(delta.exists(self.path, n) for n in DATASETS)

    def require(self) -> "Lake":
        """Raise a one-line error unless the lake exists (read commands on a mistyped --lake)."""
        if not self.exists():
            if delta.old_layout(self.path, DATASETS):
                raise LakeError(f"{self.path} is a lake of eselake 0.1 (files without a Delta log): convert it "
                                "with `eselake lake upgrade`")
            hint = " (it exists but holds no lake tables)" if self.path.is_dir() else ""
            raise LakeError(f"no lake at {self.path}{hint}; check --lake / ESELAKE_LAKE, or create one with "
                            "`eselake init` or a first ingest")
        return self

    def table_root(self, name: str) -> Path:
        return self.path / DERIVED_DIR if name not in DATASETS else self.path

    def dataset_dir(self, name: str) -> Path:
        return self.table_root(name) / name

    def table(self, name: str):
        """The ``deltalake.DeltaTable`` of ``name`` (at this lake's ``as_of``), or None if it does not exist."""
        as_of = self.as_of
        if isinstance(as_of, int):
            as_of = self._as_of_time()
        dt = delta.open_table(self.table_root(name), name)
        if dt is None or as_of is None:
            return dt
        if name not in DATASETS:
            return self._derived_as_of(dt, name)
        if name == "images" and isinstance(self.as_of, int):
            dt.load_as_version(self.as_of)             # the version asked for, exactly
            return dt
        return self._at_time(dt, name, as_of)

    def _derived_as_of(self, dt, name: str):
        """A derived table as computed from the base tables of this lake's moment: its newest version whose
        recorded source versions are not newer than theirs (a refresh runs after the ingest it follows)."""
        import json

        if self._base_versions is None:
            self._base_versions = {n: delta.snapshot(self.table(n), n).version for n in ("images", "photometry")}
        for h in dt.history(2000):
            raw = h.get("eselake.info")
            info = json.loads(raw) if isinstance(raw, str) else None
            src = (info or {}).get("sources") or {}
            if src and not info.get("partial") and all(src.get(t, 1 << 62) <= v
                                                       for t, v in self._base_versions.items()):
                dt.load_as_version(h["version"])
                return dt
        return None

    def _at_time(self, dt, name: str, when: datetime):
        first = dt.history()[-1].get("timestamp", 0)
        if when.timestamp() * 1000 < first:
            return None                     # the table did not exist yet
        try:
            dt.load_as_version(when)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several kinds here
            raise LakeError(f"cannot open table {name} as of {when.isoformat()}: {exc}") from exc
        return dt

    def _as_of_time(self) -> datetime:
        """The moment of version ``as_of`` of the images table: every ingest commits its photometry, then its
        images rows, so an images version marks a lake state with every ingest complete."""
        dt = delta.open_table(self.path, "images")
        if dt is None:
            raise LakeError(f"{self.path} has no images table to take version {self.as_of} of")
        # delta-rs travels in time by the commit files' modification times (not the commitInfo timestamp,
        # taken before the file is written): the moment is that of version as_of's commit file
        try:
            mtime_ns = (self.path / "images" / "_delta_log" / f"{self.as_of:020d}.json").stat().st_mtime_ns
            if 0 <= self.as_of <= dt.version():
                return datetime.fromtimestamp(mtime_ns / 1e9 + 1e-6, tz=timezone.utc)
        except FileNotFoundError:         # cleaned up after a checkpoint: the recorded commit time
            pass
        for h in dt.history():
            if h.get("version") == self.as_of:
                return datetime.fromtimestamp(h["timestamp"] / 1000.0 + 0.0005, tz=timezone.utc)
        raise LakeError(f"the images table of {self.path} has no version {self.as_of} "
                        f"(newest is {dt.version()}; see `eselake lake history`)")

    def versions(self) -> dict[str, int]:
        """Newest committed version of every table (-1: not created yet). Cheap: one folder listing each."""
        names = list(DATASETS) + list(_connect.DERIVED_VIEWS)
        return {n: delta.latest_version(self.table_root(n), n) for n in names}

    def snapshots(self) -> dict[str, delta.Snapshot]:
        """The committed snapshot of every base table (files and version), at ``as_of`` if set."""
        return {n: self._snapshot(n) for n in DATASETS}

    def derived_snapshots(self) -> dict[str, delta.Snapshot]:
        return {n: self._snapshot(n) for n in _connect.DERIVED_VIEWS}

    def _snapshot(self, name: str) -> delta.Snapshot:
        if self.as_of is None:
            return delta.current_snapshot(self.table_root(name), name)
        return delta.snapshot(self.table(name), name)

    # ---------------------------------------------------------------- queries
    def connect(self, *, derived: bool = True, sandbox: bool = False) -> duckdb.DuckDBPyConnection:
        """A new in-process DuckDB connection over the current snapshot (caller closes it).

        ``derived=True`` reads the derived datasets that are current in place of their views;
        ``derived=False`` computes everything from the measurements (the definitions), except the reference
        baselines, which are frozen between full refreshes (``eselake refresh --full``)."""
        snaps, use = self._snapshot_state(derived)
        return _connect.open_connection(snaps, use, sandbox_root=self.path if sandbox else None)

    def _snapshot_state(self, derived: bool = True):
        from eselake.lake.derived import SERVED, current_derived

        snaps = self.snapshots()
        dsnaps = self.derived_snapshots()
        use = current_derived(self, snaps, dsnaps) if derived else {}
        if dsnaps["reference_baselines"].files:
            use.setdefault("reference_baselines", dsnaps["reference_baselines"])
        self.stale = [n for n in SERVED if derived and dsnaps[n].version >= 0 and n not in use]
        # the search is not SQL: stale search results and candidates are served (and said to be stale) rather
        # than none; the statistics above are computed from their views instead
        for name in ("ese_search", "ese_candidates"):
            if name in self.stale and dsnaps[name].files:
                use[name] = dsnaps[name]
        return snaps, use

    def _sync(self) -> duckdb.DuckDBPyConnection:
        """The process's connection, pointed at the newest snapshot: when only file lists changed, the views'
        file variables are updated in place (cheap); when a table appeared or a derived dataset became current
        or stale, the views are created again."""
        state = None if self.as_of is not None else tuple(sorted(self.versions().items()))
        if self._con is not None and (state is None or state == self._synced):
            return self._con
        snaps, use = self._snapshot_state(True)
        shape = _connect.shape(snaps, use)
        if self._con is not None and shape == self._shape:
            _connect.update_files(self._con, snaps, use)
        else:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._con = _connect.open_connection(snaps, use)
            self._shape = shape
        _connect.hold_in_memory(self._con, use)
        self._synced, self._use, self._narrowed = state, use, False
        return self._con

    def _source_files(self, source_id: str) -> list[str] | None:
        """The by-source copy's files that may hold ``source_id`` by their Delta statistics (the copy is cut
        into ranges of sources), or None when a one-source read cannot be narrowed: the copy is not read, or
        the image gains and reference baselines are not (computed from their views, they read every source)."""
        snap = self._use.get("measurements_by_source")
        if snap is None or not snap.files or not {"image_gains", "reference_baselines"} <= set(self._use):
            return None
        if self._ranges is None or self._ranges[0] != (snap.version, snap.files):
            acts = delta.add_actions(snap.table)
            files = np.array(acts.column("file").to_pylist())
            cols = set(acts.column_names)
            lo = acts.column("min.source_id").fill_null("") if "min.source_id" in cols else None
            hi = acts.column("max.source_id").fill_null("\U0010ffff") if "max.source_id" in cols else None
            if lo is None or hi is None or set(files) != set(snap.files):
                return None
            self._ranges = ((snap.version, snap.files), files, np.array(lo.to_pylist()), np.array(hi.to_pylist()))
        _, files, lo, hi = self._ranges
        hit = files[(lo <= source_id) & (source_id <= hi)]
        return hit.tolist() if len(hit) else files[:1].tolist()      # no file holds it: an empty answer

    def _narrow(self, con, source_id: str | None) -> None:
        """Point the by-source copy's view at the files that may hold ``source_id`` (None: at all of them)."""
        files = self._source_files(source_id) if source_id is not None else None
        if files is None and not self._narrowed:
            return
        narrowed = files is not None
        files = files if narrowed else self._use["measurements_by_source"].files
        self._narrowed = True           # until the list below is set (an interrupted SET leaves it unknown)
        con.execute("SET VARIABLE d_measurements_by_source = ?", [[_connect.glob_escape(f) for f in files]])
        self._narrowed = narrowed

    def _query(self, fn, source_id: str | None = None):
        with self._lock:
            for attempt in range(5):
                try:
                    con = self._sync()
                    self._narrow(con, source_id)
                    return fn(con)
                except duckdb.IOException as exc:
                    # a file of our snapshot was removed by vacuum under the query: take the newer snapshot
                    if attempt == 4:
                        raise LakeError(f"reading {self.path} failed: {str(exc).splitlines()[0]}") from exc
                    self._synced = None
                    time.sleep(0.05 * (attempt + 1))

    def sql(self, query: str, params: list | dict | None = None, *, source_id: str | None = None) -> pl.DataFrame:
        """Run SQL against the eselake views; returns a polars DataFrame (parameters bound, never formatted).
        ``source_id``: the query reads the measurements of that one source only (a lightcurve lookup): only
        the by-source files that may hold it are read. Results for other sources would be missing."""
        return pl.from_arrow(self.arrow(query, params, source_id=source_id))

    def arrow(self, query: str, params: list | dict | None = None, *, source_id: str | None = None) -> pa.Table:
        """Like ``sql`` but returns a pyarrow Table."""
        return self._query(lambda con: fetch_arrow(con, query, params), source_id)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ---------------------------------------------------------------- writes
    def lock(self, name: str, *, blocking: bool = True):
        """Advisory lock ``LAKE/_locks/<name>.lock``: avoids duplicate work (two processes measuring one image,
        two refreshes) and keeps an ingest's two commits and a delete's two commits apart ("base"); the Delta log
        serialises every commit."""
        return file_lock(self.path / "_locks" / f"{safe_name(name)}.lock", blocking=blocking)

    def _writable(self) -> None:
        if self.as_of is not None:
            raise LakeError(f"{self!r} is a past version of the lake and cannot be written")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot create lake folder {self.path}: {exc.strerror}") from exc
        if not os.access(self.path, os.W_OK):
            raise LakeError(f"lake folder {self.path} is not writable (read-only)")

    def init(self) -> None:
        """Create the lake's base tables (empty) if they do not exist yet."""
        self._writable()
        for name, ds in DATASETS.items():
            if not delta.exists(self.path, name):
                delta.commit(self.path, name, pa.Table.from_pylist([], schema=ds.schema), mode="append",
                             partition_by=[ds.partition] if ds.partition else None, operation="init",
                             configuration=CDF if name in ("images", "photometry") else None)

    def commit_image(self, image: dict[str, Any], photometry: pa.Table) -> str:
        """Commit one image's photometry and its ``images`` row; replaces an earlier measurement of it.

        Two Delta transactions, photometry first: each replaces exactly that image's rows (replace-where on
        image_id), so readers see the image's old rows or its new rows, never a mix or both. ``image`` holds
        the IMAGES_SCHEMA fields (ingest_id, ingested_at, n_sources and night are filled in).
        """
        photometry = with_constant(photometry, "image_id", image["image_id"], PHOTOMETRY_SCHEMA)
        for name, value in (("image_path", image.get("path")), ("mjd", image["mjd"]),
                            ("freq_hz", image.get("freq_hz"))):
            photometry = with_constant(photometry, name, value, PHOTOMETRY_SCHEMA, replace=False)
        images = pa.Table.from_pylist([image])
        return self.commit_batch(images, photometry)

    def commit_batch(self, images: pa.Table, photometry: pa.Table, *, operation: str = "ingest") -> str:
        """Commit many images at once (one transaction per table): photometry rows, then the images rows.
        Images already in the lake are replaced (their rows, in whatever night they were)."""
        self._writable()
        ingest_id = new_ingest_id()
        now = datetime.now(timezone.utc)
        ids = images.column("image_id").to_pylist()
        if len(set(ids)) != len(ids):
            raise EselakeError("a batch names the same image twice")
        mjd = images.column("mjd").to_numpy(zero_copy_only=False).astype(float)
        night = dict(zip(ids, nights_of(mjd)))
        counts: dict[str, int] = {}
        if photometry.num_rows:
            u, n = np.unique(np.asarray(photometry.column("image_id").to_pylist(), dtype=object), return_counts=True)
            counts = dict(zip(u.tolist(), n.tolist()))
            unknown = set(counts) - set(ids)
            if unknown:
                raise EselakeError(f"photometry rows of {len(unknown)} image(s) without an images row")
        phot = with_constant(photometry, "ingest_id", ingest_id, PHOTOMETRY_SCHEMA)
        phot_ids = phot.column("image_id").to_pylist()
        if "night" in phot.column_names:
            phot = phot.drop_columns(["night"])
        phot = phot.append_column("night", pa.array([night[i] for i in phot_ids], pa.string()))
        phot = conform(phot, PHOTOMETRY_SCHEMA)
        flags = phot.column("flags")
        if flags.null_count:                 # rows of unknown flags are rows without flags
            phot = phot.set_column(phot.schema.get_field_index("flags"), "flags", pc.fill_null(flags, 0))
        phot = phot.take(pc.sort_indices(phot, [("night", "ascending"), ("source_id", "ascending")]))
        img = images
        for name, value in (("ingest_id", ingest_id), ("ingested_at", now)):
            img = with_constant(img, name, value, IMAGES_SCHEMA)
        img = img.drop_columns([c for c in ("n_sources", "night") if c in img.column_names])
        img = img.append_column("n_sources", pa.array([counts.get(i, 0) for i in ids], pa.int32()))
        img = img.append_column("night", pa.array([night[i] for i in ids], pa.string()))
        img = conform(img, IMAGES_SCHEMA)

        info = {"ingest_id": ingest_id, "images": len(ids), "rows": phot.num_rows}
        if len(ids) <= 20:
            info["image_ids"] = ids
        with self._base_lock():
            old_nights = self._nights_of_images(ids)
            # always replace-where (never a blind append): a concurrent commit of the same images conflicts with
            # this one's read of their nights, and the retry replaces its rows instead of adding a second copy
            nights = set(night.values()) | set(old_nights)
            pred = f"{delta.in_list('night', nights)} AND {delta.in_list('image_id', ids)}"
            for table, name in ((phot, "photometry"), (img, "images")):
                delta.commit(self.path, name, table, mode="overwrite", predicate=pred, partition_by=["night"],
                             operation=operation, info=info, configuration=CDF)
        return ingest_id

    @contextlib.contextmanager
    def _base_lock(self):
        """Held for the two commits (photometry, then images) of an ingest or a delete, so that an ingest and a
        delete of one image never interleave (which left an images row without its measurements). Each commit
        is a Delta transaction on its own; on a file system without locks, this goes unlocked."""
        lock = self.lock("base")
        try:
            lock.__enter__()
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            lock = None
        try:
            yield
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)

    def _nights_of_images(self, ids: list[str]) -> list[str]:
        """Nights in which any of ``ids`` is committed now (to replace their rows wherever they are); photometry
        may hold rows of an image whose images row was never committed (an ingest killed between its commits,
        the lake's first included)."""
        nights: set[str] = set()
        for name in ("images", "photometry"):
            dt = delta.open_table(self.path, name)
            if dt is not None:
                nights |= delta.nights_holding(dt, ids)
        return sorted(n for n in nights if n)

    def refresh(self, *, full: bool = False, progress=None) -> dict:
        """Bring the derived datasets up to date (see ``eselake.lake.derived.refresh``)."""
        from eselake.lake.derived import refresh

        return refresh(self, full=full, progress=progress)

    def delete_images(self, image_ids: list[str]) -> int:
        """Remove images and their photometry (photometry first, then the images rows). Returns images removed."""
        self._writable()
        with self._base_lock():
            nights = self._nights_of_images(image_ids)
            if not nights:
                return 0
            pred = f"{delta.in_list('night', nights)} AND {delta.in_list('image_id', image_ids)}"
            n = 0
            for name in ("photometry", "images"):
                dt = delta.open_table(self.path, name)
                if dt is not None:
                    res = delta.run_retrying(self.path, name, lambda dt=dt: dt.delete(pred), "delete", table=dt)
                    if name == "images":
                        n = int(res.get("num_deleted_rows", 0) or 0)
        return n

    def committed_image(self, image_id: str) -> dict[str, Any] | None:
        """The committed ``images`` row of ``image_id``, or None."""
        dt = self.table("images")
        if dt is None:
            return None
        rows = dt.to_pyarrow_table(filters=[("image_id", "=", image_id)]).to_pylist()
        return rows[0] if rows else None

    def write_catalog(self, catalog: str, table: pa.Table) -> int:
        """Replace catalogue ``catalog``'s sources in one transaction (readers see the old or the new list)."""
        self._writable()
        name = safe_name(catalog.lower())
        if "loaded_at" not in table.column_names:
            table = table.append_column("loaded_at", pa.array([datetime.now(timezone.utc)] * table.num_rows,
                                                              CATALOG_SCHEMA.field("loaded_at").type))
        table = with_constant(table, "catalog", name, CATALOG_SCHEMA)
        table = conform(table, CATALOG_SCHEMA).sort_by("source_id")
        # replace-where even on a new table (delta.commit creates it first): two first loads of one catalogue
        # then conflict, and the second replaces the first's rows instead of adding a copy
        return delta.commit(self.path, "catalog_sources", table, mode="overwrite",
                            predicate=f"catalog = {delta.sql_literal(name)}",
                            partition_by=["catalog"], operation="catalog load",
                            info={"catalog": name, "rows": table.num_rows})

    def add_reviews(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append review rows (source_id, status, notes, reviewer) in one transaction; never rewrites."""
        self._writable()
        now = datetime.now(timezone.utc)
        rows = [dict(r, reviewed_at=r.get("reviewed_at") or now) for r in rows]
        table = conform(pa.Table.from_pylist(rows), REVIEWS_SCHEMA)
        return delta.commit(self.path, "reviews", table, mode="append", operation="review",
                            info={"sources": sorted({r["source_id"] for r in rows})[:20]})

    # ---------------------------------------------------------------- info
    def info(self) -> pl.DataFrame:
        """Per table: version, rows, files and bytes of the current snapshot; derived datasets with their
        state (current / stale / missing)."""
        from eselake.lake.derived import derived_state

        out = []
        for name in DATASETS:
            dt = self.table(name)
            out.append(_table_row(name, "base", dt, "base"))
        state = derived_state(self)
        for name in _connect.DERIVED_VIEWS:
            dt = self.table(name)
            out.append(_table_row(name, "derived", dt, state.get(name, "missing")))
        return pl.DataFrame(out)


def _table_row(name: str, kind: str, dt, state: str) -> dict:
    if dt is None:
        return {"table": name, "state": state, "version": None, "rows": 0, "files": 0, "mb": 0.0}
    acts = pa.table(dt.get_add_actions(flatten=True))
    n = acts.num_rows
    rows = int(pc.sum(acts.column("num_records")).as_py() or 0) if n and "num_records" in acts.column_names else 0
    size = int(pc.sum(acts.column("size_bytes")).as_py() or 0) if n else 0
    return {"table": name, "state": state, "version": dt.version(), "rows": rows, "files": n,
            "mb": round(size / 1e6, 2)}

