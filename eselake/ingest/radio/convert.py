"""UVH5 subband files -> one Measurement Set per tile.

Files named ``<ISO time>_sbNN.hdf5`` are grouped by timestamp (files of one tile differ by seconds; a new
group starts more than ``tolerance_s`` after the previous file), ordered by frequency, joined, phased to the
meridian at the tile's mid-time and written as a Measurement Set (pyuvdata + python-casacore).
"""
from __future__ import annotations

import re
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.time import Time

from eselake.errors import InputError
from eselake.ingest.radio import dsa110

_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(\d{2})\.hdf5$")


@dataclass
class Tile:
    """The subband files of one 5-minute tile."""
    start: datetime
    files: dict[int, Path] = field(default_factory=dict)

    @property
    def tile_id(self) -> str:
        return self.start.strftime("%Y-%m-%dT%H:%M:%S")

    @property
    def missing(self) -> list[int]:
        return [sb for sb in range(dsa110.N_SUBBANDS) if sb not in self.files]

    @property
    def complete(self) -> bool:
        return not self.missing


def group_tiles(folder, tolerance_s: float = 60.0) -> list[Tile]:
    """Group ``<ISO time>_sbNN.hdf5`` files of ``folder`` into tiles (timestamps within ``tolerance_s``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((datetime.fromisoformat(m.group(1)), int(m.group(2)), p))
    found.sort()
    tiles: list[Tile] = []
    for t, sb, p in found:
        if not tiles or (t - tiles[-1].start).total_seconds() > tolerance_s or sb in tiles[-1].files:
            tiles.append(Tile(start=t))
        tiles[-1].files[sb] = p
    return tiles


def subband_band_hz(sb: int) -> tuple[float, float]:
    """(low, high) edges of DSA-110 subband ``sb`` (sb00 is the highest)."""
    width = (dsa110.BAND_HIGH_HZ - dsa110.BAND_LOW_HZ) / dsa110.N_SUBBANDS
    return dsa110.BAND_HIGH_HZ - (sb + 1) * width, dsa110.BAND_HIGH_HZ - sb * width


def is_dsa110(name: str) -> bool:
    """Telescope names DSA-110 data carry (DSA-110, DSA_110, DSA110, OVRO_DSA, and the correlator's OVRO_MMA)."""
    n = re.sub(r"[^A-Z0-9]", "", str(name).upper())
    return "DSA" in n or n == "OVROMMA"


def check_tile(tile: Tile) -> None:
    """Header-only checks of a tile's subband files (h5py, no visibilities read), before any expensive stage:
    each file a readable UVH5 file from DSA-110, all subbands covering the same integrations and baselines,
    and each file's frequencies inside its subband's band. A file of another tile or day is named."""
    import h5py

    ref = None
    for sb, path in sorted(tile.files.items()):
        try:
            with h5py.File(path, "r") as f:
                h = f["Header"]
                tel = h["telescope_name"][()]
                times = np.asarray(h["time_array"][()], float)
                freqs = np.asarray(h["freq_array"][()], float).ravel()
                nblts = int(h["Nblts"][()])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InputError(f"{path}: unreadable UVH5 ({type(exc).__name__}: {exc})") from exc
        tel = tel.decode() if isinstance(tel, bytes) else str(tel)
        if not is_dsa110(tel):
            raise InputError(f"{path}: telescope {tel!r} is not DSA-110; the chain images DSA-110 subbands only")
        lo, hi = subband_band_hz(sb)
        pad = 0.5 * (hi - lo)
        if freqs.size == 0 or freqs.min() < lo - pad or freqs.max() > hi + pad:
            raise InputError(f"{path}: frequencies {freqs.min() / 1e6:.2f}-{freqs.max() / 1e6:.2f} MHz are not "
                             f"those of subband sb{sb:02d} ({lo / 1e6:.2f}-{hi / 1e6:.2f} MHz)")
        t0, t1 = Time(times.min(), format="jd").isot[:19], Time(times.max(), format="jd").isot[:19]
        if ref is None:
            ref = (path, times.min(), times.max(), nblts, t0, t1)
            continue
        if abs(times.min() - ref[1]) * 86400 > 1.0 or abs(times.max() - ref[2]) * 86400 > 1.0:
            raise InputError(f"{path}: observed {t0} to {t1}, but {ref[0].name} {ref[4]} to {ref[5]}: a subband "
                             f"of another tile or day in tile {tile.tile_id}")
        if nblts != ref[3]:
            raise InputError(f"{path}: {nblts} baseline-times, but {ref[0].name} has {ref[3]}: not the same "
                             f"observation as the other subbands of tile {tile.tile_id}")


def read_tile(tile: Tile, *, allow_incomplete: bool = False):
    """Read and join a tile's subbands (ascending frequency) into one pyuvdata UVData."""
    from pyuvdata import UVData

    if not tile.complete and not allow_incomplete:
        raise InputError(f"tile {tile.tile_id}: missing subband(s) {', '.join(f'sb{s:02d}' for s in tile.missing)}")
    parts = []
    for sb in sorted(tile.files):
        path = tile.files[sb]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parts.append(UVData.from_file(str(path), file_type="uvh5", run_check=True))
        except Exception as exc:  # noqa: BLE001 - h5py/pyuvdata raise many kinds for a bad file
            raise InputError(f"{path}: unreadable UVH5 ({type(exc).__name__}: {exc})") from exc
    ref = parts[0]
    for sb, p in zip(sorted(tile.files), parts):
        if p.Nblts != ref.Nblts or p.Npols != ref.Npols or not np.allclose(p.time_array, ref.time_array):
            raise InputError(f"tile {tile.tile_id}: sb{sb:02d} has different times or baselines than the others")
    freqs = [p.freq_array.mean() for p in parts]
    order = np.argsort(freqs)
    lo = [parts[i].freq_array.min() for i in order]
    hi = [parts[i].freq_array.max() for i in order]
    if any(h >= l2 for h, l2 in zip(hi[:-1], lo[1:])):
        raise InputError(f"tile {tile.tile_id}: subband frequencies overlap or are inconsistent")
    sbs = sorted(tile.files)
    if any(freqs[a] <= freqs[b] for a, b in zip(range(len(sbs) - 1), range(1, len(sbs)))):
        raise InputError(f"tile {tile.tile_id}: subband numbers do not descend in frequency (sb00 must be highest)")
    uv = parts[order[0]]
    if len(parts) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uv = uv.fast_concat([parts[i] for i in order[1:]], axis="freq", inplace=False)
    uv.reorder_freqs(channel_order="freq")
    return uv


def phase_to_meridian(uv, dec_deg: float | None = None):
    """Phase to the meridian (at ``dec_deg``, default the pointing declination) at the tile's mid-time."""
    from eselake.sim.visibilities import meridian_icrs

    mid = Time(np.mean(np.unique(uv.time_array)), format="jd", scale="utc")
    if dec_deg is None:
        if "phase_center_dec" not in uv.extra_keywords:
            raise InputError("the UVH5 files do not record the pointing declination (extra keyword "
                             "phase_center_dec, radians); give it with --dec-deg")
        dec_deg = float(np.rad2deg(uv.extra_keywords["phase_center_dec"]))
    center = meridian_icrs(mid, dec_deg)
    uv.phase(ra=center.ra.rad, dec=center.dec.rad, epoch="J2000", cat_name=f"meridian_{mid.isot[:19]}")
    return uv, center


def convert_tile(tile: Tile, ms_path, *, dec_deg: float | None = None):
    """Write ``tile`` as a Measurement Set at ``ms_path`` (atomically: temp folder then rename).
    Returns (ms_path, phase centre SkyCoord, mid-time MJD)."""
    ms_path = Path(ms_path)
    uv = read_tile(tile)
    uv, center = phase_to_meridian(uv, dec_deg)
    tmp = ms_path.with_name(f".{ms_path.name}.{uuid.uuid4().hex[:6]}.tmp")
    ms_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uv.write_ms(str(tmp), clobber=True)
        if ms_path.exists():
            shutil.rmtree(ms_path)
        tmp.rename(ms_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    mid = Time(np.mean(np.unique(uv.time_array)), format="jd", scale="utc").mjd
    return ms_path, center, mid
