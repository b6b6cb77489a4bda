"""DuckDB over the lake: base views over the Parquet datasets, then the versioned views of ``eselake/sql``."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

from eselake.lake.layout import DATASETS, Dataset
from eselake.offline import DUCKDB_CONFIG

_DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
}
_HEADER = re.compile(r"^--\s*(view|version|depends)\s*:\s*(.+?)\s*$", re.M)


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


def base_view_sql(root: Path, ds: Dataset) -> str:
    """``CREATE VIEW <name>_files``: all Parquet files of a dataset (absolute glob), or a typed empty relation."""
    folder = root / ds.name
    has_files = folder.is_dir() and next(folder.rglob("*.parquet"), None) is not None
    if has_files:
        hive = ""
        if ds.partition:
            hive = f", hive_partitioning = true, hive_types = {{'{ds.partition}': VARCHAR}}"
        src = (f"SELECT * FROM read_parquet({sql_str(str(folder.resolve()) + '/**/*.parquet')}, "
               f"union_by_name = false{hive})")
    else:
        cols = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in ds.schema]
        if ds.partition:
            cols.append(f"CAST(NULL AS VARCHAR) AS {ds.partition}")
        src = f"SELECT {', '.join(cols)} WHERE false"
    return f"CREATE OR REPLACE VIEW {ds.name}_files AS {src}"


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


def refresh_base_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    for ds in DATASETS.values():
        con.execute(base_view_sql(root, ds))


RETRYABLE = ("No such file", "No files found", "Could not open file", "Cannot open file", "cannot open file")


def is_retryable(exc: Exception) -> bool:
    """A file vanished between DuckDB's glob and its read (a writer replaced it): try again."""
    return isinstance(exc, duckdb.IOException) and any(s in str(exc) for s in RETRYABLE)


def open_connection(root: Path, attempts: int = 10) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every eselake view created over the lake at ``root``.
    Creating a view reads the files' schemas, so a concurrent writer removing a file is retried."""
    for attempt in range(attempts):
        con = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
        try:
            _create_views(con, root)
            return con
        except duckdb.Error as exc:
            con.close()
            if not is_retryable(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _create_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    refresh_base_views(con, root)
    files = view_files()
    for vf in files:
        try:
            con.execute(vf.text)
        except duckdb.Error as exc:
            if is_retryable(exc):
                raise
            raise RuntimeError(f"view {vf.name} ({vf.file}) failed to load: {exc}") from exc
    rows = ", ".join(f"({sql_str(v.name)}, {v.version}, {sql_str(v.file)})" for v in files)
    con.execute("CREATE OR REPLACE VIEW eselake_views AS SELECT * FROM (VALUES "
                f"{rows}) AS t(view_name, version, file)")
