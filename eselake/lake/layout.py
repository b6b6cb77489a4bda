"""Lake layout: the Delta tables of a lake, their Arrow schemas and partition columns, and image identity.

A lake is one folder of Delta Lake tables (each ``LAKE/<table>/`` with its ``_delta_log/``)::

    images            one row per measured image (partitioned by night)
    photometry        one row per source per image (partitioned by night)
    catalog_sources   NVSS, FIRST, VLASS, RACS, source lists (partitioned by catalog)
    reviews           append-only candidate reviews
    derived/<name>    datasets computed from the above and kept current by ``eselake refresh``

``night`` is the UTC date of the observation mid-time (= floor(MJD) as a date). An image is identified by
its observation (``observation_id``), so measuring it again from any folder replaces its rows.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.time import Time

UTC_TS = pa.timestamp("us", tz="UTC")

IMAGES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("ingest_id", pa.string()),
    ("path", pa.string()),
    ("kind", pa.string()),                 # image | mosaic
    ("mjd", pa.float64()),                 # observation mid-time, MJD (UTC)
    ("exposure_s", pa.float64()),
    ("freq_hz", pa.float64()),
    ("bmaj_deg", pa.float64()),
    ("bmin_deg", pa.float64()),
    ("bpa_deg", pa.float64()),
    ("rms_jyb", pa.float64()),             # robust (sigma-clipped) image rms, Jy/beam
    ("ra_center_deg", pa.float64()),
    ("dec_center_deg", pa.float64()),
    ("n_sources", pa.int32()),
    ("file_size", pa.int64()),
    ("file_mtime", pa.float64()),
    ("ingested_at", UTC_TS),
    ("pipeline_version", pa.string()),
    ("night", pa.string()),                # partition: UTC date of mjd, YYYY-MM-DD
])

PHOTOMETRY_SCHEMA = pa.schema([
    ("source_id", pa.string()),
    ("image_id", pa.string()),
    ("ingest_id", pa.string()),
    ("image_path", pa.string()),
    ("mjd", pa.float64()),
    ("ra_deg", pa.float64()),
    ("dec_deg", pa.float64()),
    ("peak_jyb", pa.float64()),
    ("peak_err_jyb", pa.float64()),
    ("local_rms_jyb", pa.float64()),
    ("snr", pa.float64()),
    ("chi2", pa.float64()),
    ("dof", pa.int32()),
    ("flags", pa.int32()),                 # bitmask, see eselake.ingest.photometry.kernel.FLAGS
    ("blend_group", pa.int32()),
    ("catalog_flux_mjy", pa.float64()),
    ("sep_from_center_deg", pa.float64()),
    ("freq_hz", pa.float64()),
    ("night", pa.string()),                # partition: UTC date of mjd, YYYY-MM-DD
])

CATALOG_SCHEMA = pa.schema([
    ("source_id", pa.string()),
    ("name", pa.string()),
    ("ra_deg", pa.float64()),
    ("dec_deg", pa.float64()),
    ("flux_mjy", pa.float64()),
    ("flux_err_mjy", pa.float64()),
    ("major_arcsec", pa.float64()),
    ("minor_arcsec", pa.float64()),
    ("pa_deg", pa.float64()),
    ("loaded_at", UTC_TS),
    ("catalog", pa.string()),              # partition: catalogue name (nvss, first, ...)
])

REVIEWS_SCHEMA = pa.schema([
    ("source_id", pa.string()),
    ("status", pa.string()),               # active | investigated | dismissed
    ("notes", pa.string()),
    ("reviewer", pa.string()),
    ("reviewed_at", UTC_TS),
])


@dataclass(frozen=True)
class Dataset:
    name: str
    schema: pa.Schema
    partition: str | None      # Delta partition column (VARCHAR), or None


DATASETS = {
    "images": Dataset("images", IMAGES_SCHEMA, "night"),
    "photometry": Dataset("photometry", PHOTOMETRY_SCHEMA, "night"),
    "catalog_sources": Dataset("catalog_sources", CATALOG_SCHEMA, "catalog"),
    "reviews": Dataset("reviews", REVIEWS_SCHEMA, None),
}

_MJD0 = np.datetime64("1858-11-17", "D")


def months_of_days(days) -> np.ndarray:
    """Partition values of the daily bins: YYYY-MM of integer MJD days."""
    table, index = month_index(days)
    return table.astype(object)[index]


def month_index(days) -> tuple[np.ndarray, np.ndarray]:
    """(YYYY-MM of each day of the span of ``days``, index of every day into it): a lookup table, so that many
    days (millions of daily bins) cost an integer subtraction each."""
    d = np.asarray(days, dtype="int64").reshape(-1)
    lo = int(d.min()) if d.size else 0
    span = np.arange(lo, (int(d.max()) if d.size else lo) + 1)
    return np.datetime_as_string(_MJD0 + span, unit="M"), d - lo


def days_of_nights(nights) -> list[int]:
    """Integer MJD days (floor(MJD)) of YYYY-MM-DD nights, sorted."""
    return sorted(int((np.datetime64(n, "D") - _MJD0).astype(int)) for n in nights)


def nights_of(mjd) -> np.ndarray:
    """Partition values for many MJDs at once: UTC dates as YYYY-MM-DD strings."""
    days = np.floor(np.asarray(mjd, dtype=float)).astype("int64")
    return np.datetime_as_string(_MJD0 + days, unit="D").astype(object)


TMP_SUFFIX = ".tmp"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def night_of(mjd: float) -> str:
    """Partition value: UTC date (YYYY-MM-DD) of an MJD."""
    return str(nights_of([mjd])[0])


def observation_id(telescope: str | None, ra_deg: float, dec_deg: float, mjd: float,
                   freq_hz: float | None, kind: str = "image") -> str:
    """Image identity from the observation, not the file: telescope, field centre (RA/Dec rounded to 1 arcsec),
    observation mid-time (MJD rounded to 1 s), frequency (rounded to 1 kHz) and kind (image | mosaic).
    The same observation read from any folder (moved, copied, symlinked) gets the same id, so measuring it
    again replaces its rows. Readable prefix: telescope and UTC time, e.g. ``dsa-110-20250101T120000-<hash>``."""
    tel = _SAFE.sub("-", (telescope or "unknown").strip().lower()).strip("-") or "unknown"
    ra = round(float(ra_deg) % 360.0 * 3600.0) % (360 * 3600)
    dec = round(float(dec_deg) * 3600.0)
    sec = round(float(mjd) * 86400.0)
    khz = round(float(freq_hz) / 1e3) if freq_hz is not None and freq_hz == freq_hz else -1
    key = f"{tel}|{ra}|{dec}|{sec}|{khz}|{kind}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    stamp = Time(sec / 86400.0, format="mjd", scale="utc").to_datetime().strftime("%Y%m%dT%H%M%S")
    return f"{tel}-{stamp}-{digest}"


def image_id_for(path: str | os.PathLike) -> str:
    """Stable image id: the file stem (made filesystem-safe) plus a hash of the absolute path."""
    p = Path(path).resolve()
    digest = hashlib.sha1(str(p).encode()).hexdigest()[:10]
    stem = _SAFE.sub("_", p.name.removesuffix(".fits"))[:80]
    return f"{stem}-{digest}"


def new_ingest_id() -> str:
    """Time-ordered unique id of one write (sorts by creation time)."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:8]}"


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text)[:120]
