"""DuckDB over one committed snapshot of the lake: base views over the files the Delta log lists, the
versioned views of ``eselake/sql`` (the definition of every statistic), and, where current, the derived
datasets in place of the views that define them.

File lists reach DuckDB as bound variables (``SET VARIABLE f_photometry = ?``), never as SQL text, with glob
characters escaped, so a lake path holding ``?``, ``[`` or ``'`` reads its own files and nothing else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from eselake.errors import EselakeError
from eselake.lake.delta import Snapshot
from eselake.lake.layout import DATASETS
from eselake.offline import DUCKDB_CONFIG

_DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int32(): "INTEGER",
    pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
}
_HEADER = re.compile(r"^--\s*(view|version|depends)\s*:\s*(.+?)\s*$", re.M)

# derived dataset -> the view whose place it takes when current (its definition stays in eselake/sql)
DERIVED_VIEWS = {
    "reference_baselines": "reference_baselines_current",
    "image_gains": "image_gains_current",
    "daily_lightcurves": "daily_lightcurves",
    "source_stats": "variability_stats",
    "ese_search": "ese_search",
    "ese_candidates": "ese_candidates_all",
    "measurements_by_source": "measurements",     # the measurements laid out for one-source lookups
    "source_summaries": None,     # internal: variability_stats kept current from them (see lake.summaries)
}


@dataclass(frozen=True)
class ViewFile:
    name: str
    version: int
    file: str
    text: str


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return _DUCK_TYPES[t]


def sql_str(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def glob_escape(path: str) -> str:
    """A file path as a DuckDB glob pattern matching exactly that file (``*``, ``?``, ``[`` as classes)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def view_files() -> list[ViewFile]:
    """The versioned view definitions, in the order they are applied (file name order)."""
    out = []
    for entry in sorted(resources.files("eselake.sql").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text()
        header = dict((k, v) for k, v in _HEADER.findall(text))
        if "view" not in header or "version" not in header:
            raise RuntimeError(f"{entry.name}: needs '-- view: NAME' and '-- version: N' header lines")
        out.append(ViewFile(header["view"], int(header["version"]), entry.name, text))
    return out


def view_versions() -> dict[str, int]:
    return {v.name: v.version for v in view_files()}


def _files_view(con: duckdb.DuckDBPyConnection, view: str, var: str, snap: Snapshot,
                schema: pa.Schema, partition: str | None) -> None:
    """``CREATE VIEW <view>``: the snapshot's files (columns of ``schema``), or a typed empty relation."""
    cols = [f.name for f in schema if f.name != partition]
    if snap.files:
        con.execute(f"SET VARIABLE {var} = ?", [[glob_escape(f) for f in snap.files]])
        part = ""
        if partition:
            part = f", hive_partitioning = true, hive_types = {{'{partition}': VARCHAR}}"
            cols.append(partition)
        # one schema for all files of a snapshot (the Delta log enforces it): only the first file's footer is
        # read to bind the view
        src = (f"SELECT {', '.join(cols)} FROM read_parquet(getvariable('{var}'), "
               f"union_by_name = false{part})")
    else:
        src = "SELECT " + ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in schema) + " WHERE false"
    con.execute(f"CREATE OR REPLACE VIEW {view} AS {src}")


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with eselake's settings: offline, bounded memory, parquet footers cached, and no
    progress bar of DuckDB's own (it would print into eselake's output; long work reports through rich)."""
    con = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET enable_progress_bar = false")
    return con


def files_view(con: duckdb.DuckDBPyConnection, view: str, var: str, files) -> None:
    """``CREATE VIEW <view>`` over the columns of parquet ``files`` bound as variable ``var`` (never as SQL
    text); partition folders (``month=...``) add no column: a derived dataset has its view's columns."""
    con.execute(f"SET VARIABLE {var} = ?", [[glob_escape(f) for f in files]])
    con.execute(f"CREATE OR REPLACE VIEW {view} AS {_read_files(var)}")


def _read_files(var: str) -> str:
    """SELECT every column of the parquet files listed in variable ``var`` (a derived dataset's: its view's
    columns, no partition column)."""
    return f"SELECT * FROM read_parquet(getvariable('{var}'), union_by_name = false, hive_partitioning = false)"


HELD = ("image_gains", "reference_baselines")   # small, and joined by every lightcurve lookup


def hold_in_memory(con: duckdb.DuckDBPyConnection, derived: dict[str, Snapshot]) -> None:
    """Copy the HELD derived datasets of ``derived`` (those current) into temp tables read in place of their
    files: a long-lived connection (a server, a notebook) then joins them without opening a file per query
    (~7 ms of a 30 ms lookup at 100M). Call again after the files change."""
    for name in HELD:
        if name in derived and derived[name].files:
            con.execute(f"CREATE OR REPLACE TEMP TABLE _held_{name} AS {_read_files(f'd_{name}')}")
            con.execute(f"CREATE OR REPLACE VIEW {DERIVED_VIEWS[name]} AS SELECT * FROM _held_{name}")


def open_connection(snaps: dict[str, Snapshot], derived: dict[str, Snapshot] | None = None,
                    *, sandbox_root: Path | None = None, until: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection over one snapshot: ``snaps`` holds the base tables, ``derived`` the
    derived datasets to read in place of their views (only those that are current). With ``sandbox_root``
    the connection is locked down for an untrusted console (no file access outside that folder, no
    extensions, no configuration changes). ``until`` stops after that view (a refresh needs only the first ones)."""
    con = new_connection()
    try:
        for name, ds in DATASETS.items():
            _files_view(con, f"{name}_files", f"f_{name}", snaps[name], ds.schema, ds.partition)
        # a view that a current derived dataset replaces is created over that dataset's files in its place, so
        # the views built on it bind against a few files rather than re-binding its whole chain of views
        # (DuckDB binds a view when it is created: every nested read_parquet over every night's files)
        instead = {DERIVED_VIEWS[name]: (name, snap) for name, snap in (derived or {}).items() if snap.files}
        files = view_files()
        needed = None if until is None else _needed(files, until, set(instead))
        for vf in files:
            if needed is not None and vf.name not in needed:
                continue
            try:
                if vf.name in instead:
                    name, snap = instead.pop(vf.name)
                    files_view(con, vf.name, f"d_{name}", snap.files)
                else:
                    con.execute(vf.text)
            except duckdb.Error as exc:
                raise EselakeError(f"view {vf.name} ({vf.file}) failed to load: {exc}") from exc
            if vf.name == until:
                break
        for view, (name, snap) in instead.items():
            files_view(con, view, f"d_{name}", snap.files)
        rows = ", ".join(f"({sql_str(v.name)}, {v.version}, {sql_str(v.file)})" for v in files)
        con.execute("CREATE OR REPLACE VIEW eselake_views AS SELECT * FROM (VALUES "
                    f"{rows}) AS t(view_name, version, file)")
        if sandbox_root is not None:
            lock_down(con, sandbox_root)
        return con
    except BaseException:
        con.close()
        raise


def _needed(files: list[ViewFile], until: str, replaced: set[str]) -> set[str]:
    """The views that view ``until`` reads, directly or through others (a view in ``replaced`` is read from a
    derived dataset's files: not what it is defined from). Binding a view costs 2-60 ms on a large lake."""
    names = {vf.name for vf in files}
    uses = {vf.name: {n for n in re.findall(r"\b\w+\b", re.sub(r"--[^\n]*", "", vf.text)) if n in names} - {vf.name}
            for vf in files}
    out, todo = set(), [until]
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            if name not in replaced:
                todo.extend(uses.get(name, ()))
    return out


def shape(snaps: dict[str, Snapshot], derived: dict[str, Snapshot] | None) -> tuple:
    """What the views of a connection depend on beyond file lists: which tables have files."""
    return (tuple(n for n, s in snaps.items() if s.files),
            tuple(sorted(n for n, s in (derived or {}).items() if s.files)))


def update_files(con: duckdb.DuckDBPyConnection, snaps: dict[str, Snapshot],
                 derived: dict[str, Snapshot] | None) -> None:
    """Point an open connection's views at another snapshot of the same shape (views bind file lists late)."""
    for name, snap in snaps.items():
        if snap.files:
            con.execute(f"SET VARIABLE f_{name} = ?", [[glob_escape(f) for f in snap.files]])
    for name, snap in (derived or {}).items():
        if snap.files:
            con.execute(f"SET VARIABLE d_{name} = ?", [[glob_escape(f) for f in snap.files]])


def lock_down(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """No file access outside ``root``, no extension installs or loads, configuration locked."""
    real = str(Path(root).resolve()) + "/"
    con.execute("SET allowed_directories = ?", [sorted({real, glob_escape(real)})])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


# statements the read-only console accepts
_READ_ONLY = {"SELECT", "EXPLAIN", "VARIABLE_SET", "PRAGMA"}


def check_read_only(query: str) -> None:
    """Raise EselakeError unless every statement of ``query`` only reads (SELECT, EXPLAIN, SET VARIABLE)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise EselakeError(f"SQL error: {str(exc).splitlines()[0]}") from exc
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1].upper()
        if kind not in _READ_ONLY:
            raise EselakeError(f"the SQL console is read-only: {kind} statements are refused "
                               "(use --unsafe to allow them at your own risk)")
        if kind == "PRAGMA" and not re.match(r"\s*(PRAGMA\s+)?(show|table_info|database_size|version)",
                                             st.query, re.I):
            raise EselakeError("the SQL console is read-only: only informational PRAGMAs are allowed")
