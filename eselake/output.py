"""Writing query results: rich tables on the terminal, or CSV / JSON / Parquet / VOTable files."""
from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json", "parquet", "votable")


def rich_table(df: pl.DataFrame, *, title: str | None = None, max_rows: int = 200) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for k, name in enumerate(df.columns):
        table.add_column(name, overflow="fold", no_wrap=(k == 0))
    for row in df.head(max_rows).iter_rows():
        table.add_row(*[_cell(v) for v in row])
    if df.height > max_rows:
        table.caption = f"{max_rows} of {df.height} rows shown; use --format csv --output F for all"
    return table


def _cell(v) -> str:
    if v is None:
        return "[dim]null[/dim]"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _json_ready(df: pl.DataFrame) -> list[dict]:
    rows = df.to_dicts()
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None
            elif not isinstance(v, (str, int, float, bool, type(None), list, dict)):
                r[k] = str(v)
    return rows


def to_json(df: pl.DataFrame) -> str:
    return json.dumps(_json_ready(df), indent=1)


def to_votable_bytes(df: pl.DataFrame) -> bytes:
    from astropy.io.votable import from_table
    from astropy.table import Table as ATable

    from astropy.table import MaskedColumn

    cols = {}
    for name in df.columns:
        s = df[name]
        if s.dtype == pl.Utf8 or s.dtype == pl.Object:
            cols[name] = s.fill_null("").cast(pl.Utf8).to_numpy().astype(str)
        elif s.dtype.is_temporal():
            cols[name] = s.cast(pl.Utf8).fill_null("").to_numpy().astype(str)
        else:
            cols[name] = MaskedColumn(s.fill_null(0).to_numpy(), mask=s.is_null().to_numpy())
    t = ATable(cols)
    buf = io.BytesIO()
    from_table(t).to_xml(buf)
    return buf.getvalue()


MEDIA_TYPES = {"csv": "text/csv", "json": "application/json", "votable": "application/x-votable+xml",
               "parquet": "application/vnd.apache.parquet"}


def frame_bytes(df: pl.DataFrame, fmt: str) -> bytes:
    """``df`` encoded as csv, json, votable or parquet."""
    if fmt == "csv":
        return df.write_csv().encode()
    if fmt == "json":
        return (to_json(df) + "\n").encode()
    if fmt == "votable":
        return to_votable_bytes(df)
    if fmt == "parquet":
        buf = io.BytesIO()
        df.write_parquet(buf)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(MEDIA_TYPES)}")


def write_frame(df: pl.DataFrame, fmt: str, output: str | None, *, title: str | None = None,
                console: Console | None = None) -> None:
    """Print ``df`` (table/csv/json to stdout) or write it to ``output`` in ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "table":
        (console or Console()).print(rich_table(df, title=title))
        return
    if fmt in ("parquet", "votable") and not output:
        raise ValueError(f"--format {fmt} needs --output FILE")
    data = frame_bytes(df, fmt)
    if output:
        Path(output).write_bytes(data)
    else:
        sys.stdout.write(data.decode())
