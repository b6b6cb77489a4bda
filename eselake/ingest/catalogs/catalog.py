"""Catalogues (NVSS, FIRST, VLASS, RACS, plain source lists): reading, source ids, cone searches.

Files are read with astropy (FITS tables, VOTable, CSV/ECSV). Columns are found by their usual VizieR and
survey names (see ``ALIASES``); units on the columns are honoured, otherwise deg / mJy / arcsec are assumed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy import units as u
from astropy.coordinates import Angle, angular_separation
from astropy.table import Table

from eselake.errors import InputError

CATALOGS = ("nvss", "first", "vlass", "racs", "sources")

ALIASES = {
    "name": ["source_id", "name", "nvss", "first", "component_name", "source_name", "gaussian_id",
             "source_id_racs", "id", "iau_name"],
    "ra": ["ra_deg", "ra", "raj2000", "_raj2000", "ra_j2000", "radeg", "ra_icrs"],
    "dec": ["dec_deg", "dec", "dej2000", "_dej2000", "decj2000", "dec_j2000", "dedeg", "de_icrs"],
    "flux": ["flux_mjy", "s1.4", "s1_4", "s1400", "fint", "total_flux", "total_flux_source", "flux",
             "int_flux", "sint", "fpeak", "peak_flux"],
    "flux_err": ["flux_err_mjy", "e_s1.4", "e_s1_4", "e_fint", "e_total_flux", "e_total_flux_source",
                 "e_flux", "flux_err", "e_int_flux", "e_fpeak", "e_peak_flux"],
    "major": ["major_arcsec", "majaxis", "maj", "maj_axis", "dc_maj", "deconv_maj"],
    "minor": ["minor_arcsec", "minaxis", "min", "min_axis", "dc_min", "deconv_min"],
    "pa": ["pa_deg", "pa", "posang", "dc_pa"],
}


def _find(table: Table, role: str) -> str | None:
    lower = {c.lower(): c for c in table.colnames}
    for alias in ALIASES[role]:
        if alias in lower:
            return lower[alias]
    return None


def _quantity(col, unit: u.Unit) -> np.ndarray:
    values = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan) if col.dtype.kind in "fiu" else None
    if values is None:
        return None
    if getattr(col, "unit", None) is not None:
        try:
            return (values * u.Unit(col.unit)).to_value(unit)
        except (u.UnitConversionError, ValueError):
            pass
    return values.astype(float)


def _coords(table: Table, ra_col: str, dec_col: str) -> tuple[np.ndarray, np.ndarray]:
    ra_c, dec_c = table[ra_col], table[dec_col]
    if ra_c.dtype.kind in "fiu" and dec_c.dtype.kind in "fiu":
        return _quantity(ra_c, u.deg), _quantity(dec_c, u.deg)
    try:      # sexagesimal strings: 'hh mm ss.s' / '+dd mm ss'
        ra = Angle(np.asarray(ra_c, dtype=str), unit=u.hourangle).deg
        dec = Angle(np.asarray(dec_c, dtype=str), unit=u.deg).deg
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot parse coordinates in columns {ra_col!r}/{dec_col!r}: {exc}") from exc
    return np.asarray(ra, float), np.asarray(dec, float)


def iau_names(prefix: str, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """IAU-style names 'PREFIX JHHMMSS+DDMMSS' (truncated, as NVSS does), vectorised."""
    ra_s = np.floor(np.mod(ra_deg, 360.0) / 15.0 * 3600.0 + 1e-6).astype(np.int64)
    dec_s = np.floor(np.abs(dec_deg) * 3600.0 + 1e-6).astype(np.int64)
    sign = np.where(dec_deg < 0, "-", "+")
    hh, mm, ss = ra_s // 3600, (ra_s // 60) % 60, ra_s % 60
    dd, dm, ds = dec_s // 3600, (dec_s // 60) % 60, dec_s % 60
    return np.array([f"{prefix} J{a:02d}{b:02d}{c:02d}{s}{d:02d}{e:02d}{f:02d}"
                     for a, b, c, s, d, e, f in zip(hh, mm, ss, sign, dd, dm, ds)], dtype=object)


def _ids(catalog: str, names: np.ndarray | None, ra, dec) -> np.ndarray:
    prefix = catalog.upper()
    if names is None:
        return iau_names(prefix, ra, dec)
    names = np.array([str(n).strip() for n in names], dtype=object)
    if catalog == "sources":
        return names
    out = []
    for n in names:
        if n.upper().startswith(prefix + " "):
            out.append(n)
        elif n[:1] in "JB":
            out.append(f"{prefix} {n}")
        elif n[:1].isdigit():
            out.append(f"{prefix} J{n}")
        else:
            out.append(f"{prefix} {n}")
    return np.array(out, dtype=object)


def read_table(path) -> Table:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = "".join(path.suffixes).lower()
    try:
        if suffix.endswith((".csv", ".csv.gz")):
            return Table.read(path, format="ascii.csv", encoding="utf-8")
        if suffix.endswith((".vot", ".xml", ".votable")):
            return Table.read(path, format="votable")
        if suffix.endswith((".ecsv",)):
            return Table.read(path, format="ascii.ecsv")
        return Table.read(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except Exception as exc:  # noqa: BLE001 - astropy readers raise many kinds
        raise InputError(f"{path}: cannot read as a table ({type(exc).__name__}: {exc})") from exc


def parse_catalog(table: Table, catalog: str) -> pa.Table:
    """Normalise a catalogue table to the lake's catalog_sources columns; validates every row."""
    catalog = catalog.lower()
    if len(table) == 0:
        raise InputError("catalogue is empty")
    ra_col, dec_col = _find(table, "ra"), _find(table, "dec")
    if ra_col is None or dec_col is None:
        raise InputError("catalogue needs RA and Dec columns (e.g. ra/dec, ra_deg/dec_deg, RAJ2000/DEJ2000); "
                         f"found: {', '.join(table.colnames)}")
    ra, dec = _coords(table, ra_col, dec_col)
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise InputError(f"{int(bad.sum())} rows have missing or invalid coordinates (Dec outside +-90 or "
                         f"not a number), first rows {rows}")
    ra = np.mod(ra, 360.0)
    name_col = _find(table, "name")
    names = None if name_col is None else np.asarray(table[name_col]).astype(str)
    if catalog == "sources" and name_col is None:
        raise InputError("a source list needs a name column (name or source_id) besides ra, dec")
    ids = _ids(catalog, names, ra, dec)
    if any(not s or len(s) > 200 for s in ids):
        raise InputError("source ids must be 1-200 characters")
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][:5].tolist()
        raise InputError(f"{int((counts > 1).sum())} duplicate source ids, e.g. {dup}")

    def col(role, unit):
        c = _find(table, role)
        if c is None:
            return np.full(len(table), np.nan)
        q = _quantity(table[c], unit)
        return np.full(len(table), np.nan) if q is None else q

    return pa.table({
        "source_id": pa.array(ids.astype(str).tolist(), pa.string()),
        "name": pa.array(names.tolist() if names is not None else ids.astype(str).tolist(), pa.string()),
        "ra_deg": ra, "dec_deg": dec,
        "flux_mjy": col("flux", u.mJy), "flux_err_mjy": col("flux_err", u.mJy),
        "major_arcsec": col("major", u.arcsec), "minor_arcsec": col("minor", u.arcsec),
        "pa_deg": col("pa", u.deg),
    })


def load_catalog_file(path, catalog: str) -> pa.Table:
    """Read and normalise a catalogue file (FITS, VOTable, CSV) into catalog_sources columns."""
    if catalog.lower() not in CATALOGS:
        raise InputError(f"unknown catalogue {catalog!r}; choose one of {', '.join(CATALOGS)}")
    return parse_catalog(read_table(path), catalog)


def cone_mask(ra_deg, dec_deg, ra0_deg, dec0_deg, radius_deg) -> np.ndarray:
    """Sources within ``radius_deg`` of (ra0, dec0): exact great-circle distance, correct across RA 0/360
    and at the poles. A Dec band is cut first so that large catalogues are cheap."""
    ra = np.asarray(ra_deg, float)
    dec = np.asarray(dec_deg, float)
    band = np.abs(dec - dec0_deg) <= radius_deg
    out = np.zeros(ra.shape, bool)
    idx = np.flatnonzero(band)
    sep = angular_separation(np.deg2rad(ra[idx]), np.deg2rad(dec[idx]), np.deg2rad(ra0_deg),
                             np.deg2rad(dec0_deg))
    out[idx] = np.rad2deg(sep) <= radius_deg
    return out


def separation_deg(ra_deg, dec_deg, ra0_deg, dec0_deg) -> np.ndarray:
    return np.rad2deg(angular_separation(np.deg2rad(ra_deg), np.deg2rad(dec_deg), np.deg2rad(ra0_deg),
                                         np.deg2rad(dec0_deg)))
