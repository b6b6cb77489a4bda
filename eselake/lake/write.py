"""Atomic, idempotent Parquet writes.

Every file is written to a hidden temporary name in its final folder, flushed to disk, then renamed
(``os.replace``): a reader sees the whole file or nothing. Files are never rewritten in place.

Committing an image (``commit_image``) is three steps:
  1. its photometry rows go to ``photometry/night=N/<image_id>~<ingest_id>.parquet``;
  2. its ``images`` row goes to ``images/night=N/<image_id>~<ingest_id>.parquet``: the commit point;
  3. files of earlier ingests of the same image are removed.
The views join photometry to the newest ``images`` row on (image_id, ingest_id), so a reader sees the old
rows of an image or the new ones, never a mix, and photometry left by a crash before step 2 stays invisible
(``eselake lake check`` reports it; the next ingest of that image removes it).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from eselake.lake.layout import TMP_SUFFIX

ROW_GROUP_SIZE = 128 * 1024


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_atomic(table: pa.Table, final: Path, *, sort_by: str | None = None) -> Path:
    """Write ``table`` to ``final`` atomically (temp file in the same folder, fsync, rename)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if sort_by and table.num_rows:
        table = table.sort_by(sort_by)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd", row_group_size=ROW_GROUP_SIZE,
                           write_statistics=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True):
    """Exclusive advisory lock (fcntl) held for the ``with`` block; yields False if not blocking and busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def with_constant(table: pa.Table, name: str, value, schema: pa.Schema, *, replace: bool = True) -> pa.Table:
    """``table`` with column ``name`` holding ``value`` on every row, typed as in ``schema``; an existing
    column is replaced, or kept when ``replace`` is False."""
    if name in table.column_names:
        if not replace:
            return table
        table = table.drop_columns([name])
    return table.append_column(name, pa.array([value] * table.num_rows, schema.field(name).type))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table``'s columns to ``schema`` (missing columns become nulls)."""
    cols = []
    for field in schema:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema)
