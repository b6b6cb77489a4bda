"""``Lake``: the folder of Parquet datasets, its writers, and DuckDB queries over it."""
from __future__ import annotations

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
import pyarrow.parquet as pq

from eselake.errors import LakeError
from eselake.lake import connect as _connect
from eselake.lake.layout import (CATALOG_SCHEMA, DATASETS, IMAGES_SCHEMA, PHOTOMETRY_SCHEMA,
                                 REVIEWS_SCHEMA, TMP_SUFFIX, new_ingest_id, night_of, safe_name)
from eselake.lake.write import conform, file_lock, with_constant, write_parquet_atomic



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


ATTEMPTS = 10     # tries of a query whose files a concurrent writer replaced under it


def default_lake_path() -> Path:
    """``$ESELAKE_LAKE`` or ``./lake``."""
    return Path(os.environ.get("ESELAKE_LAKE") or "lake")


class Lake:
    """A lake folder. ``Lake(path).sql(q)`` returns a polars DataFrame from the eselake views."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path if path is not None else default_lake_path()).expanduser().absolute()
        if self.path.exists() and not self.path.is_dir():
            raise LakeError(f"lake path {self.path} is a file, not a folder")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._state: dict[str, tuple] | None = None       # fingerprint() when the connection was last synced
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Lake({str(self.path)!r})"

    # ---------------------------------------------------------------- queries
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new in-process DuckDB connection with all eselake views (caller closes it)."""
        return _connect.open_connection(self.path)

    def fingerprint(self) -> dict[str, tuple]:
        """Per dataset, the names, sizes and mtimes of its files: changes whenever anything is written."""
        out = {}
        for name in DATASETS:
            files = []
            folder = self.dataset_dir(name)
            if folder.is_dir():
                for f in folder.rglob("*.parquet"):
                    try:
                        st = f.stat()
                    except FileNotFoundError:
                        continue
                    files.append((str(f), st.st_size, st.st_mtime_ns))
            out[name] = tuple(sorted(files))
        return out

    def _sync(self) -> duckdb.DuckDBPyConnection:
        """The process's connection, brought up to date with the files: base views are re-created when any
        file changed (a dataset may have become empty or non-empty), and the cached image gains are rebuilt
        when measurements, images or catalogues changed."""
        state = self.fingerprint()
        if self._con is None:
            self._con, self._state = self.connect(), None
        old = self._state or {}
        if state != old:
            _connect.refresh_base_views(self._con, self.path)
        data = ("images", "photometry", "catalog_sources")
        if self._state is None or any(state[d] != old.get(d) for d in data):
            self._con.execute("CREATE OR REPLACE TEMP TABLE _image_gains_cache AS SELECT * FROM image_gains")
            self._con.execute("CREATE OR REPLACE VIEW image_gains_current AS SELECT * FROM _image_gains_cache")
        self._state = state
        return self._con

    def _query(self, fn):
        with self._lock:
            for attempt in range(ATTEMPTS):
                try:
                    return fn(self._sync())
                except duckdb.Error as exc:
                    if attempt == ATTEMPTS - 1 or not _connect.is_retryable(exc):
                        raise
                    self._state = None          # files changed under the query: re-sync everything
                    time.sleep(0.05 * (attempt + 1))

    def sql(self, query: str, params: list | dict | None = None) -> pl.DataFrame:
        """Run SQL against the eselake views; returns a polars DataFrame (parameters bound, never formatted)."""
        return pl.from_arrow(self.arrow(query, params))

    def arrow(self, query: str, params: list | dict | None = None) -> pa.Table:
        """Like ``sql`` but returns a pyarrow Table."""
        return self._query(lambda con: fetch_arrow(con, query, params))

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ---------------------------------------------------------------- layout
    def dataset_dir(self, name: str) -> Path:
        return self.path / DATASETS[name].name

    def files(self, name: str) -> list[Path]:
        folder = self.dataset_dir(name)
        return sorted(folder.rglob("*.parquet")) if folder.is_dir() else []

    def _ensure_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot create lake folder {self.path}: {exc.strerror}") from exc
        if not os.access(self.path, os.W_OK):
            raise LakeError(f"lake folder {self.path} is not writable")

    def lock(self, name: str, *, blocking: bool = True):
        """Advisory lock ``LAKE/_locks/<name>.lock`` (used to serialise writers of one image)."""
        return file_lock(self.path / "_locks" / f"{safe_name(name)}.lock", blocking=blocking)

    # ---------------------------------------------------------------- writes
    def commit_image(self, image: dict[str, Any], photometry: pa.Table) -> str:
        """Write one image's photometry and its ``images`` row atomically; replaces an earlier ingest.

        ``image`` holds the IMAGES_SCHEMA fields (ingest_id, ingested_at, n_sources are filled in).
        Returns the new ingest_id.
        """
        self._ensure_writable()
        image_id = image["image_id"]
        ingest_id = new_ingest_id()
        row = dict(image, ingest_id=ingest_id, n_sources=photometry.num_rows,
                   ingested_at=datetime.now(timezone.utc))
        night = night_of(row["mjd"])
        for name, value in {"image_id": image_id, "ingest_id": ingest_id}.items():
            photometry = with_constant(photometry, name, value, PHOTOMETRY_SCHEMA)
        for name, value in {"image_path": row.get("path"), "mjd": row["mjd"], "freq_hz": row.get("freq_hz")}.items():
            photometry = with_constant(photometry, name, value, PHOTOMETRY_SCHEMA, replace=False)
        phot = conform(photometry, PHOTOMETRY_SCHEMA)
        fname = f"{image_id}~{ingest_id}.parquet"
        with self.lock(f"image-{image_id}"):
            try:
                write_parquet_atomic(phot, self.dataset_dir("photometry") / f"night={night}" / fname,
                                     sort_by="source_id")
                write_parquet_atomic(conform(pa.Table.from_pylist([row]), IMAGES_SCHEMA),
                                     self.dataset_dir("images") / f"night={night}" / fname)
            except OSError as exc:
                raise LakeError(f"writing image {image_id} to {self.path} failed: {exc}") from exc
            self._remove_superseded(image_id, keep=ingest_id)
        return ingest_id

    def commit_batch(self, images: pa.Table, photometry: pa.Table) -> str:
        """Commit many images at once (bulk loads, compaction): per night one photometry file and one images
        file sharing a new ingest_id. Earlier ingests of these images become invisible at once (the views
        keep the newest ingest per image); their files are removed by ``eselake lake compact``."""
        self._ensure_writable()
        ingest_id = new_ingest_id()
        now = datetime.now(timezone.utc)
        counts = {}
        if photometry.num_rows:
            ids, n = np.unique(np.asarray(photometry.column("image_id").to_pylist(), dtype=object),
                               return_counts=True)
            counts = dict(zip(ids.tolist(), n.tolist()))
        img = images.to_pylist()
        nights = [night_of(r["mjd"]) for r in img]
        night_of_image = {r["image_id"]: nt for r, nt in zip(img, nights)}
        rows = [dict(r, ingest_id=ingest_id, ingested_at=now, n_sources=counts.get(r["image_id"], 0)) for r in img]
        phot_nights = np.array([night_of_image[i] for i in photometry.column("image_id").to_pylist()], dtype=object)
        phot = conform(with_constant(photometry, "ingest_id", ingest_id, PHOTOMETRY_SCHEMA), PHOTOMETRY_SCHEMA)
        fname = f"batch-{ingest_id}.parquet"
        try:
            for night in sorted(set(nights)):
                write_parquet_atomic(phot.filter(pa.array(phot_nights == night)),
                                     self.dataset_dir("photometry") / f"night={night}" / fname, sort_by="source_id")
            for night in sorted(set(nights)):          # images rows last: they are the commit markers
                night_rows = [r for r, nt in zip(rows, nights) if nt == night]
                write_parquet_atomic(conform(pa.Table.from_pylist(night_rows), IMAGES_SCHEMA),
                                     self.dataset_dir("images") / f"night={night}" / fname)
        except OSError as exc:
            raise LakeError(f"writing to {self.path} failed: {exc}") from exc
        return ingest_id

    def _remove_superseded(self, image_id: str, keep: str) -> None:
        for ds in ("images", "photometry"):
            for f in self.dataset_dir(ds).glob(f"night=*/{image_id}~*.parquet"):
                if not f.name.endswith(f"~{keep}.parquet"):
                    f.unlink(missing_ok=True)

    def committed_image(self, image_id: str) -> dict[str, Any] | None:
        """The committed ``images`` row of ``image_id`` (newest ingest), or None."""
        files = sorted(self.dataset_dir("images").glob(f"night=*/{image_id}~*.parquet"),
                       key=lambda f: f.name)
        for f in reversed(files):
            try:
                return pq.read_table(f).to_pylist()[0]
            except (OSError, pa.ArrowInvalid):
                continue
        if not self.files("images"):
            return None
        rows = self.sql("SELECT * FROM images WHERE image_id = ?", [image_id]).to_dicts()   # batch/compacted
        return rows[0] if rows else None

    def write_catalog(self, catalog: str, table: pa.Table) -> Path:
        """Replace catalogue ``catalog``'s sources (one file per catalogue) atomically."""
        self._ensure_writable()
        folder = self.dataset_dir("catalog_sources") / f"catalog={safe_name(catalog.lower())}"
        now = datetime.now(timezone.utc)
        table = conform(table.append_column("loaded_at", pa.array([now] * table.num_rows,
                                                                    CATALOG_SCHEMA.field("loaded_at").type))
                        if "loaded_at" not in table.column_names else table, CATALOG_SCHEMA)
        with self.lock(f"catalog-{catalog}"):
            old = list(folder.glob("*.parquet")) if folder.is_dir() else []
            out = write_parquet_atomic(table, folder / f"{new_ingest_id()}.parquet", sort_by="source_id")
            for f in old:
                f.unlink(missing_ok=True)
        return out

    def add_reviews(self, rows: Iterable[dict[str, Any]]) -> Path:
        """Append review rows (source_id, status, notes, reviewer); never rewrites earlier reviews."""
        self._ensure_writable()
        now = datetime.now(timezone.utc)
        rows = [dict(r, reviewed_at=r.get("reviewed_at") or now) for r in rows]
        table = conform(pa.Table.from_pylist(rows), REVIEWS_SCHEMA)
        return write_parquet_atomic(table, self.dataset_dir("reviews") / f"{new_ingest_id()}.parquet")

    # ---------------------------------------------------------------- info
    def info(self) -> pl.DataFrame:
        """Rows and files per dataset (committed rows, as the views see them)."""
        counts = self.sql("""
            SELECT 'images' AS dataset, count(*) AS rows FROM images
            UNION ALL SELECT 'photometry', count(*) FROM measurements
            UNION ALL SELECT 'catalog_sources', count(*) FROM catalog_sources
            UNION ALL SELECT 'reviews', count(*) FROM reviews_files""")
        files = pl.DataFrame({"dataset": list(DATASETS),
                              "files": [len(self.files(d)) for d in DATASETS],
                              "bytes": [sum(f.stat().st_size for f in self.files(d)) for d in DATASETS]})
        return counts.join(files, on="dataset", how="left")

    def temp_files(self) -> list[Path]:
        return sorted(self.path.rglob(f".*{TMP_SUFFIX}")) if self.path.is_dir() else []
