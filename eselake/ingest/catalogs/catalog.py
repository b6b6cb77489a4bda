"""Catalogues (NVSS, FIRST, VLASS, RACS, plain source lists): reading, source ids, cone searches.

Files are read with astropy (FITS tables, VOTable, CSV/ECSV; a UTF-8 byte-order mark is accepted). Columns
are found by their usual VizieR and survey names (see ``ALIASES``); units on the columns are honoured, otherwise
deg / mJy / arcsec are assumed.

Row checks: invalid coordinates and duplicate ids are errors (with the count and the first rows); a flux,
size or angle cell that is not a number ('n/a', '--', blank) becomes NaN for that row only; a row with an
empty name gets its IAU name from its coordinates (a survey) or is an error (a source list). The counts of
such rows are returned by ``catalog_checks`` and kept in the table's schema metadata (``eselake.checks``).
"""
from __future__ import annotations

import json
import warnings
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


class CatalogWarning(UserWarning):
    """Rows of a catalogue that were loaded with a missing value (reported with counts)."""


def _numbers(col) -> tuple[np.ndarray, int]:
    """Column as floats, cell by cell: masked or non-numeric cells ('n/a', '--', '') become NaN.
    Returns (values, number of cells that hold text that is not a number)."""
    import polars as pl

    mask = np.ma.getmaskarray(col)
    if col.dtype.kind in "fiu":
        return np.where(mask, np.nan, np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)), 0
    text = pl.Series(np.asarray(np.ma.filled(col, ""), dtype=str)).str.strip_chars()
    values = text.cast(pl.Float64, strict=False).to_numpy().astype(float)
    values[mask] = np.nan
    bad = int((np.isnan(values) & ~mask & (text != "").to_numpy()).sum())
    return values, bad


def _quantity(col, unit: u.Unit, bad_counts: dict | None = None, role: str = "") -> np.ndarray:
    values, bad = _numbers(col)
    if bad_counts is not None and bad:
        bad_counts[role] = bad
    if getattr(col, "unit", None) is not None:
        try:
            return (values * u.Unit(col.unit)).to_value(unit)
        except (u.UnitConversionError, ValueError):
            pass
    return values.astype(float)


def _coords(table: Table, ra_col: str, dec_col: str) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec in deg: numeric columns (units honoured), or text: numbers or sexagesimal 'hh mm ss.s' /
    '+dd mm ss' (a cell that is neither becomes NaN and is reported as an invalid row)."""
    ra_c, dec_c = table[ra_col], table[dec_col]
    if ra_c.dtype.kind in "fiu" and dec_c.dtype.kind in "fiu":
        return _quantity(ra_c, u.deg), _quantity(dec_c, u.deg)
    ra, ra_bad = _numbers(ra_c) if ra_c.dtype.kind not in "fiu" else (_quantity(ra_c, u.deg), 0)
    dec, dec_bad = _numbers(dec_c) if dec_c.dtype.kind not in "fiu" else (_quantity(dec_c, u.deg), 0)
    if ra_bad or dec_bad:
        try:      # sexagesimal strings
            ra = np.asarray(Angle(np.asarray(ra_c, dtype=str), unit=u.hourangle).deg, float)
            dec = np.asarray(Angle(np.asarray(dec_c, dtype=str), unit=u.deg).deg, float)
        except (ValueError, TypeError):
            pass  # numbers with bad cells: those rows are NaN and reported as invalid coordinates
    return ra, dec


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
            t = Table.read(path, format="ascii.csv", encoding="utf-8-sig")
            if t.colnames and t.colnames[0].startswith("\ufeff"):      # BOM in a gzipped file
                t.rename_column(t.colnames[0], t.colnames[0].lstrip("\ufeff"))
            return t
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
    checks: dict[str, int] = {"rows": len(table)}
    name_col = _find(table, "name")
    if catalog == "sources" and name_col is None:
        raise InputError("a source list needs a name column (name or source_id) besides ra, dec")
    names = None
    if name_col is not None:
        col = table[name_col]
        names = np.char.strip(np.asarray(np.ma.filled(col.astype(str), ""), dtype=str)).astype(object)
        names[np.ma.getmaskarray(col)] = ""
        empty = names == ""
        if empty.any():
            rows = np.flatnonzero(empty)[:5].tolist()
            if catalog == "sources":
                raise InputError(f"{int(empty.sum())} rows have an empty {name_col!r}, first rows {rows}; "
                                 "give every source a name")
            names[empty] = iau_names(catalog.upper(), ra[empty], dec[empty])
            names[empty] = [n.split(" ", 1)[1] for n in names[empty]]     # prefixed again by _ids
            checks["empty_name"] = int(empty.sum())
    ids = _ids(catalog, names, ra, dec)
    if any(not s or len(s) > 200 for s in ids):
        raise InputError("source ids must be 1-200 characters")
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][:5].tolist()
        raise InputError(f"{int((counts > 1).sum())} duplicate source ids, e.g. {dup}")

    bad_cells: dict[str, int] = {}

    def col(role, unit):
        c = _find(table, role)
        if c is None:
            return np.full(len(table), np.nan)
        return _quantity(table[c], unit, bad_cells, f"{role} ({c})")

    out = pa.table({
        "source_id": pa.array(ids.astype(str).tolist(), pa.string()),
        "name": pa.array(names.tolist() if names is not None else ids.astype(str).tolist(), pa.string()),
        "ra_deg": ra, "dec_deg": dec,
        "flux_mjy": col("flux", u.mJy), "flux_err_mjy": col("flux_err", u.mJy),
        "major_arcsec": col("major", u.arcsec), "minor_arcsec": col("minor", u.arcsec),
        "pa_deg": col("pa", u.deg),
    })
    checks.update({f"not_a_number: {k}": v for k, v in bad_cells.items()})
    flux = out.column("flux_mjy").to_numpy()
    if _find(table, "flux") is not None:
        checks["no_flux"] = int((~np.isfinite(flux)).sum())
        checks["negative_flux"] = int((flux < 0).sum())
    problems = {k: v for k, v in checks.items() if k != "rows" and v}
    if problems:
        warnings.warn(f"catalogue of {len(table)} rows: " + ", ".join(f"{v} {k}" for k, v in problems.items()),
                      CatalogWarning, stacklevel=3)
    return out.replace_schema_metadata({"eselake.checks": json.dumps(checks)})


def catalog_checks(table: pa.Table) -> dict[str, int]:
    """Row counts of a loaded catalogue: rows, and rows with an empty name, a cell that is not a number,
    no flux, a negative flux (see the module docstring)."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"eselake.checks")
    return json.loads(raw) if raw else {"rows": table.num_rows}


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
