"""``eselake ingest table``: measurements made elsewhere (CSV, Parquet, or a SQLite products database such as
the seed pipeline's, table ``photometry``) into the lake, in one commit; also the fast bulk path.

Required columns: source_id, mjd, peak_jyb, peak_err_jyb, and image_id or image_path. Optional: ra_deg/dec_deg
(or ra/dec), flags, local_rms_jyb (or local_rms), snr, freq_hz. Rows group into images by image_id, else by
image_path; an image's mjd is the median of its rows'. Re-importing the same file replaces its images (ids
are the given image_id, else ``table-`` + a hash of image_path), so an import is idempotent. Bad rows are
rejected with counts per reason; the good rows are committed together, or nothing is.
"""
from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from eselake.errors import InputError

ALIASES = {"ra": "ra_deg", "dec": "dec_deg", "local_rms": "local_rms_jyb", "peak_flux_jyb": "peak_jyb",
           "peak_err": "peak_err_jyb"}
REQUIRED = ("source_id", "mjd", "peak_jyb", "peak_err_jyb")
NUMERIC = ("mjd", "peak_jyb", "peak_err_jyb", "ra_deg", "dec_deg", "local_rms_jyb", "snr", "freq_hz")


@dataclass
class ImportResult:
    images: int
    rows: int
    rejected: dict[str, int] = field(default_factory=dict)


def read_table_file(path: Path, table: str = "photometry") -> pl.DataFrame:
    """A CSV, Parquet or SQLite file as a DataFrame (SQLite: ``table``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(16)
    try:
        if head.startswith(b"SQLite format 3"):
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
                if table not in names:
                    raise InputError(f"{path}: SQLite database without a table {table!r} "
                                     f"(tables: {', '.join(sorted(names)) or 'none'})")
                cur = con.execute(f'SELECT * FROM "{table}"')
                cols = [d[0] for d in cur.description]
                rows = cur.fetchall()
            finally:
                con.close()
            return pl.DataFrame(rows, schema=cols, orient="row", infer_schema_length=None)
        if head.startswith(b"PAR1"):
            with open(path, "rb") as fh:
                return pl.read_parquet(fh)
        with open(path, "rb") as fh:
            return pl.read_csv(fh, infer_schema=False)
    except InputError:
        raise
    except (pl.exceptions.PolarsError, sqlite3.Error, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as CSV, Parquet or SQLite ({str(exc).splitlines()[0]})") from exc


def prepare(df: pl.DataFrame, source: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """Normalise names and types and drop bad rows; returns the good rows and rejection counts by reason."""
    df = df.rename({c: ALIASES.get(c.strip().lower(), c.strip().lower()) for c in df.columns})
    missing = [c for c in REQUIRED if c not in df.columns]
    if "image_id" not in df.columns and "image_path" not in df.columns:
        missing.append("image_id or image_path")
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)} (have: {', '.join(df.columns)})")
    for c in NUMERIC:
        if c in df.columns:
            df = df.with_columns(pl.col(c).cast(pl.Utf8, strict=False).str.strip_chars()
                                 .cast(pl.Float64, strict=False).alias(c))
    for c in ("source_id", "image_id", "image_path"):
        if c in df.columns:
            df = df.with_columns(pl.col(c).cast(pl.Utf8, strict=False).str.strip_chars().alias(c))
    if "flags" in df.columns:
        df = df.with_columns(pl.col("flags").cast(pl.Float64, strict=False).fill_null(0).cast(pl.Int32))
    path_id = pl.lit(None, pl.Utf8)
    if "image_path" in df.columns:       # one hash per distinct path, joined back (no per-row Python)
        paths = df.select(pl.col("image_path").unique().drop_nulls())
        paths = paths.with_columns(pl.Series("_path_id", [_id_of_path(p) for p in paths["image_path"]], pl.Utf8))
        df = df.join(paths, on="image_path", how="left")
        path_id = pl.col("_path_id")
    image_id = pl.col("image_id") if "image_id" in df.columns else pl.lit(None, pl.Utf8)
    df = df.with_columns(pl.coalesce([image_id, path_id]).alias("image_id"))
    if "_path_id" in df.columns:
        df = df.drop("_path_id")
    reasons = [
        ("missing source_id", pl.col("source_id").is_null() | (pl.col("source_id") == "")),
        ("missing image_id/image_path", pl.col("image_id").is_null() | (pl.col("image_id") == "")),
        ("mjd not a number in 30000-100000", ~(pl.col("mjd").is_between(30000, 100000)).fill_null(False)),
        ("peak_jyb not finite", ~pl.col("peak_jyb").is_finite().fill_null(False)),
        ("peak_err_jyb not > 0", ~(pl.col("peak_err_jyb") > 0).fill_null(False)),
    ]
    counts: dict[str, int] = {}
    bad = pl.lit(False)
    for name, cond in reasons:
        n = df.select((cond & ~bad).sum()).item()
        if n:
            counts[name] = int(n)
        bad = bad | cond
    df = df.filter(~bad)
    dup = df.select(pl.struct("source_id", "image_id").is_duplicated().sum()).item()
    if dup:
        counts["source measured twice in one image"] = int(dup)
        df = df.filter(~pl.struct("source_id", "image_id").is_duplicated())
    return df, counts


def _id_of_path(path: str | None) -> str | None:
    if not path:
        return None
    return "table-" + hashlib.sha1(path.encode()).hexdigest()[:16]


def import_table(lake, path: Path, *, table: str = "photometry", refresh: bool = True) -> ImportResult:
    """Import a measurement table into ``lake`` (see the module docstring). Returns counts."""
    from eselake.ingest.photometry.measure import PIPELINE_VERSION

    raw = read_table_file(path, table)
    df, rejected = prepare(raw, str(path))
    if df.height == 0:
        raise InputError(f"{path}: no valid rows to import" + (f" (rejected: {_reasons(rejected)})" if rejected else ""))
    if "image_path" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Utf8).alias("image_path"))
    images = df.group_by("image_id").agg(
        pl.col("mjd").median(), pl.col("image_path").first().alias("path"),
        pl.col("freq_hz").median() if "freq_hz" in df.columns else pl.lit(None, pl.Float64).alias("freq_hz"),
        pl.col("ra_deg").median().alias("ra_center_deg") if "ra_deg" in df.columns else
        pl.lit(None, pl.Float64).alias("ra_center_deg"),
        pl.col("dec_deg").median().alias("dec_center_deg") if "dec_deg" in df.columns else
        pl.lit(None, pl.Float64).alias("dec_center_deg"),
    ).with_columns(pl.lit("image").alias("kind"), pl.lit(f"{PIPELINE_VERSION} (imported)").alias("pipeline_version"))
    phot = df.drop([c for c in ("path",) if c in df.columns])
    lake.commit_batch(images.to_arrow(), phot.to_arrow(), operation="ingest table")
    if refresh:
        from eselake.lake.derived import refresh as do_refresh

        do_refresh(lake)
    return ImportResult(images.height, df.height, rejected)


def _reasons(rejected: dict[str, int]) -> str:
    return "; ".join(f"{n} {r}" for r, n in rejected.items())

