"""Helpers for writing tables: conforming Arrow tables to a schema, constant columns, an advisory lock.
Commits themselves go through Delta transactions (``eselake.lake.delta``)."""
from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

import pyarrow as pa


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
