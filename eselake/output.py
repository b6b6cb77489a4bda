"""Writing query results: rich tables on the terminal, or CSV / JSON / Parquet / VOTable files.

Every format carries units: CSV and JSON through the column names (``_mjy``, ``_jyb``, ``_deg``, ``_mjd``...)
and, for lightcurve exports, a metadata block; VOTable through FIELD unit/ucd/description and PARAMs;
Parquet through Arrow field metadata (``unit``, ``ucd``, ``description``) and file metadata.
"""
from __future__ import annotations

import io
import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from eselake.errors import EselakeError

FORMATS = ("table", "csv", "json", "parquet", "votable")
TEXT_FORMATS = ("csv", "json", "votable")

# name -> (unit, UCD, description) of the columns users meet in exports and tables
COLUMNS: dict[str, tuple[str, str, str]] = {
    "source_id": ("", "meta.id;meta.main", "catalogue source name"),
    "mjd": ("d", "time.epoch", "observation mid-time, MJD (UTC)"),
    "date_utc": ("", "time.epoch", "observation mid-time, ISO 8601 (UTC)"),
    "peak_jyb": ("Jy/beam", "phot.flux.density", "forced-photometry peak flux density"),
    "peak_err_jyb": ("Jy/beam", "stat.error;phot.flux.density", "1-sigma error of peak_jyb"),
    "normalized_flux_jy": ("Jy", "phot.flux.density", "peak flux divided by the image's ensemble gain"),
    "normalized_err_jy": ("Jy", "stat.error;phot.flux.density", "1-sigma error of normalized_flux_jy"),
    "local_rms_jyb": ("Jy/beam", "stat.stdev;phot.flux.density", "local image rms around the source"),
    "snr": ("", "stat.snr", "peak_jyb / peak_err_jyb"),
    "flags": ("", "meta.code.qual", "1 edge, 2 NaN, 4 blended, 8 outside, 16 rms not measurable"),
    "gain": ("", "arith.factor", "ensemble gain of the image (median flux / baseline of references)"),
    "n_refs": ("", "meta.number", "reference sources behind the image's gain"),
    "norm_flag": ("", "meta.code.qual", "normalisation flag of the image"),
    "freq_hz": ("Hz", "em.freq", "observing frequency"),
    "ra_deg": ("deg", "pos.eq.ra;meta.main", "right ascension (J2000)"),
    "dec_deg": ("deg", "pos.eq.dec;meta.main", "declination (J2000)"),
    "image_id": ("", "meta.id", "image identifier"),
    "image_path": ("", "meta.ref.url", "path of the image file"),
    "n_obs": ("", "meta.number", "number of measurements"),
    "first_mjd": ("d", "time.start", "first observation, MJD"),
    "last_mjd": ("d", "time.end", "last observation, MJD"),
    "mean_flux_mjy": ("mJy", "phot.flux.density;stat.mean", "mean flux density"),
    "std_flux_mjy": ("mJy", "stat.stdev;phot.flux.density", "standard deviation of the flux density"),
    "catalog_flux_mjy": ("mJy", "phot.flux.density", "catalogue flux density"),
    "flux_mjy": ("mJy", "phot.flux.density", "catalogue flux density"),
    "chi2_nu": ("", "stat.fit.chi2", "reduced chi-squared against a constant"),
    "eta_metric": ("", "stat.fit.chi2", "VAST eta (weighted reduced chi-squared)"),
    "v_metric": ("", "stat.variance", "modulation index std / mean"),
    "sigma_deviation": ("", "stat.value", "max |f - mean| / std"),
    "significance": ("", "stat.value", "detection significance"),
    "composite_score": ("", "stat.value", "composite ESE score (0-10)"),
    "dip_depth": ("", "phot.flux;arith.ratio", "fractional depth of the dip"),
    "dip_significance": ("", "stat.value", "calibrated significance of the dip"),
    "dip_start_mjd": ("d", "time.start", "dip start, MJD"),
    "dip_end_mjd": ("d", "time.end", "dip end, MJD"),
    "dip_duration_days": ("d", "time.duration", "dip duration"),
    "center_mjd": ("d", "time.epoch", "fitted event centre, MJD"),
    "duration_days": ("d", "time.duration", "fitted event duration"),
    "depth": ("", "arith.ratio", "fitted fractional depth"),
    "lens_alpha": ("", "phys.size;arith.ratio", "plasma-lens strength alpha"),
    "fap_per_source_year": ("yr-1", "stat.probability", "false-alarm probability per source-year"),
    "sigma": ("", "stat.value", "Gaussian-equivalent significance"),
}
SUFFIX_UNITS = (("_mjd", "d"), ("_days", "d"), ("_mjy", "mJy"), ("_jyb", "Jy/beam"), ("_jy", "Jy"),
                ("_deg", "deg"), ("_hz", "Hz"), ("_arcsec", "arcsec"), ("_s", "s"))


def column_meta(name: str) -> tuple[str, str, str]:
    """(unit, UCD, description) of a column: known names, else the unit implied by its suffix."""
    if name in COLUMNS:
        return COLUMNS[name]
    for suffix, unit in SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit, "", ""
    return "", "", ""


def with_iso_dates(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``date_utc`` (ISO 8601) right after ``mjd``."""
    if "mjd" not in df.columns or "date_utc" in df.columns:
        return df
    iso = (pl.lit(datetime(1858, 11, 17)) + pl.duration(microseconds=(pl.col("mjd") * 86_400e6).round(0)
                                                         .cast(pl.Int64))).dt.strftime("%Y-%m-%dT%H:%M:%S")
    df = df.with_columns(iso.alias("date_utc"))
    cols = df.columns[:-1]
    k = cols.index("mjd") + 1
    return df.select(cols[:k] + ["date_utc"] + cols[k:])


def mjd_to_iso(mjd: float | None) -> str | None:
    if mjd is None or not math.isfinite(mjd):
        return None
    from datetime import timedelta
    return (datetime(1858, 11, 17) + timedelta(days=float(mjd))).strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------------------------- terminal
def _cell(v, name: str = "") -> str:
    if v is None:
        return "[dim]-[/dim]"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if name.endswith("_mjd") or name == "mjd":
            return f"{v:.3f}"
        if name in ("ra_deg", "dec_deg") or name.endswith(("_ra_deg", "_dec_deg")):
            return f"{v:.5f}"
        return f"{v:.4g}"
    return str(v)


def _plain_len(text: str) -> int:
    return len(text.replace("[dim]", "").replace("[/dim]", ""))


def rich_table(df: pl.DataFrame, *, title: str | None = None, max_rows: int = 200,
               width: int | None = None) -> Table:
    """A rich table of ``df`` that fits ``width`` columns: columns are kept in order while they fit; the
    caption names those left out (all of them are in --format csv/json)."""
    rows = [[_cell(v, name) for v, name in zip(r, df.columns)] for r in df.head(max_rows).iter_rows()]
    widths = []
    for k, name in enumerate(df.columns):
        content = max([_plain_len(r[k]) for r in rows] or [0])
        widths.append(min(max(len(name), content), 24) if k else max(len(name), min(content, 32)))
    keep, used = [], 1
    for k, w in enumerate(widths):           # a prefix of the columns: their order says what matters most
        if width is not None and used + w + 3 > width and keep:
            break
        keep.append(k)
        used += w + 3
    table = Table(title=title, show_lines=False, header_style="bold", pad_edge=False)
    for k in keep:
        name = df.columns[k]
        table.add_column(name, overflow="fold", no_wrap=(k == keep[0]),
                         justify="right" if df[name].dtype.is_numeric() else "left")
    for r in rows:
        table.add_row(*[r[k] for k in keep])
    notes = []
    if df.height > max_rows:
        notes.append(f"{max_rows} of {df.height} rows shown")
    hidden = [df.columns[k] for k in range(len(df.columns)) if k not in keep]
    if hidden:
        notes.append(f"{len(hidden)} more column(s): {', '.join(hidden)}")
    if notes:
        table.caption = "; ".join(notes) + " (all in --format csv/json)"
    if df.height == 0:
        table.caption = "no rows" + (f"; {table.caption}" if table.caption else "")
    return table


# ---------------------------------------------------------------------------------------------- files
def json_frame(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with JSON-ready columns, column by column: non-finite floats null, values JSON has no type for
    (dates, times, decimals) as their text."""
    plain = (pl.Utf8, pl.Boolean, pl.Null)
    cols = []
    for name, dtype in df.schema.items():
        c = pl.col(name)
        if dtype.is_float():
            cols.append(pl.when(c.is_finite()).then(c).alias(name))
        elif dtype.is_integer() or dtype in plain or isinstance(dtype, (pl.List, pl.Array, pl.Struct)):
            cols.append(c)
        else:
            cols.append(c.cast(pl.Utf8).alias(name))
    return df.select(cols)


def _json_ready(df: pl.DataFrame) -> list[dict]:
    return json_frame(df).to_dicts()


def json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if not isinstance(v, (str, int, float, bool, type(None), list, dict)):
        return str(v)
    return v


def to_json(df: pl.DataFrame, meta: dict | None = None) -> str:
    """Rows as a JSON list; with ``meta`` an object {**meta, "columns": [{name, unit, ucd}], "rows": [...]}."""
    if meta is None:
        return json.dumps(_json_ready(df), indent=1)
    cols = [{"name": c, "unit": column_meta(c)[0] or None, "ucd": column_meta(c)[1] or None,
             "description": column_meta(c)[2] or None} for c in df.columns]
    return json.dumps({**{k: json_value(v) for k, v in meta.items()}, "columns": cols, "rows": _json_ready(df)},
                      indent=1)


def to_votable_bytes(df: pl.DataFrame, meta: dict | None = None) -> bytes:
    """A VOTable with unit, UCD and description on every known FIELD and ``meta`` as PARAMs."""
    from astropy.io.votable.tree import Param
    from astropy.io.votable import from_table
    from astropy.table import MaskedColumn
    from astropy.table import Table as ATable

    cols = {}
    for name in df.columns:
        s = df[name]
        if s.dtype == pl.Utf8 or s.dtype == pl.Object:
            cols[name] = s.fill_null("").cast(pl.Utf8).to_numpy().astype(str)
        elif s.dtype.is_temporal():
            cols[name] = s.cast(pl.Utf8).fill_null("").to_numpy().astype(str)
        elif s.dtype == pl.Boolean:
            cols[name] = MaskedColumn(s.fill_null(False).to_numpy(), mask=s.is_null().to_numpy())
        else:
            cols[name] = MaskedColumn(s.fill_null(0).to_numpy(), mask=s.is_null().to_numpy())
    t = ATable(cols) if cols else ATable()
    vot = from_table(t)
    table = vot.get_first_table()
    for field in table.fields:
        unit, ucd, desc = column_meta(field.name)
        if unit:
            field.unit = unit
        if ucd:
            field.ucd = ucd
        if desc:
            field.description = desc
    for key, value in (meta or {}).items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        unit, ucd, desc = column_meta(key)
        if isinstance(value, str):
            p = Param(vot, name=key, datatype="char", arraysize="*", value=value, ucd=ucd or None)
        elif isinstance(value, bool):
            p = Param(vot, name=key, datatype="boolean", value=value, ucd=ucd or None)
        elif isinstance(value, int):
            p = Param(vot, name=key, datatype="long", value=value, ucd=ucd or None)
        else:
            p = Param(vot, name=key, datatype="double", value=float(value), unit=unit or None, ucd=ucd or None)
        if desc:
            p.description = desc
        table.params.append(p)
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def to_parquet_bytes(df: pl.DataFrame, meta: dict | None = None) -> bytes:
    """Parquet with unit/ucd/description in each field's metadata and ``meta`` in the file metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = df.to_arrow()
    fields = []
    for f in table.schema:
        unit, ucd, desc = column_meta(f.name)
        md = {k: v for k, v in (("unit", unit), ("ucd", ucd), ("description", desc)) if v}
        fields.append(f.with_metadata(md) if md else f)
    schema = pa.schema(fields, metadata={"eselake": json.dumps({k: json_value(v) for k, v in (meta or {}).items()})}
                       if meta else None)
    buf = io.BytesIO()
    pq.write_table(table.cast(schema), buf)
    return buf.getvalue()


MEDIA_TYPES = {"csv": "text/csv", "json": "application/json", "votable": "application/x-votable+xml",
               "parquet": "application/vnd.apache.parquet"}
FORMAT_OF_SUFFIX = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".vot": "votable",
                    ".votable": "votable", ".xml": "votable"}
EXTENSIONS = {"csv": "csv", "json": "json", "votable": "vot", "parquet": "parquet"}


def frame_bytes(df: pl.DataFrame, fmt: str, meta: dict | None = None) -> bytes:
    """``df`` encoded as csv, json, votable or parquet; ``meta`` (e.g. the source's id and position) goes
    into JSON as fields, VOTable as PARAMs, Parquet as file metadata and CSV as constant columns."""
    if fmt == "csv":
        if meta:
            extra = [pl.lit(json_value(v)).alias(k) for k, v in meta.items() if k not in df.columns]
            df = df.select(extra + [pl.col(c) for c in df.columns]) if extra else df
        return df.write_csv().encode()
    if fmt == "json":
        return (to_json(df, meta) + "\n").encode()
    if fmt == "votable":
        return to_votable_bytes(df, meta)
    if fmt == "parquet":
        return to_parquet_bytes(df, meta)
    raise EselakeError(f"unknown format {fmt!r}; choose one of {', '.join(MEDIA_TYPES)}")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a clear error when the folder does not exist or is not writable)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise EselakeError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EselakeError(f"cannot write {path}: {exc.strerror or exc}") from exc


def format_of(output: str) -> str:
    """The file format (csv, json, votable, parquet) of an output file from its extension."""
    fmt = FORMAT_OF_SUFFIX.get(Path(output).suffix.lower())
    if fmt is None:
        raise EselakeError(f"cannot tell the format of {output} from its extension; give --format "
                           "csv, json, votable or parquet")
    return fmt


def write_frame(df: pl.DataFrame, fmt: str, output: str | None, *, title: str | None = None,
                console: Console | None = None, meta: dict | None = None) -> None:
    """Print ``df`` (a table fitting the terminal; csv/json/votable as text) or write it to ``output``."""
    if fmt not in FORMATS:
        raise EselakeError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "table":
        if output:
            return write_frame(df, format_of(output), output, meta=meta)
        con = console or Console()
        con.print(rich_table(df, title=title, width=con.width))
        return
    if fmt == "parquet" and not output:
        raise EselakeError("--format parquet is binary: give --output FILE")
    data = frame_bytes(df, fmt, meta)
    if output:
        write_bytes_atomic(output, data)
    else:
        sys.stdout.write(data.decode())
        sys.stdout.flush()
