"""Calibration with casatasks: a calibrator model from the catalogue (component list + ft), bandpass and
complex gain solutions (kept beside the MS), applycal, and transfer of a calibrator tile's solutions to the
target tiles of the same day."""
from __future__ import annotations

import csv
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.time import Time
from astropy import units as u

from eselake.errors import InputError
from eselake.ingest.radio import dsa110
from eselake.ingest.radio.casa import in_folder, tasks, tools


@dataclass(frozen=True)
class Calibrator:
    name: str
    ra_deg: float
    dec_deg: float
    flux_jy: float          # at 1.4 GHz


def read_calibrators(path) -> list[Calibrator]:
    """Calibrators from a CSV (name, ra_deg, dec_deg, flux_jy) or the VLA calibrator list (20 cm fluxes)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such calibrator list")
    text = path.read_text(errors="replace")
    if "IAU NAME" in text[:500]:
        return _read_vla_list(text)
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                out.append(Calibrator(row["name"], float(row["ra_deg"]), float(row["dec_deg"]), float(row["flux_jy"])))
            except (KeyError, ValueError) as exc:
                raise InputError(f"{path}: calibrator rows need name, ra_deg, dec_deg, flux_jy ({exc})") from exc
    return out


def _read_vla_list(text: str) -> list[Calibrator]:
    """The VLA calibrator list: J2000 position lines, then band lines; the 20cm (L band) flux is used."""
    out, current = [], None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "J2000":
            c = SkyCoord(parts[3].replace("h", ":").replace("m", ":").rstrip("s"),
                         parts[4].replace("d", ":").replace("'", ":").rstrip('"'), unit=(u.hourangle, u.deg))
            current = (f"J{parts[0]}", float(c.ra.deg), float(c.dec.deg))
        elif current and parts[:2] == ["20cm", "L"] and len(parts) >= 7:
            try:
                out.append(Calibrator(current[0], current[1], current[2], float(parts[6])))
            except ValueError:
                pass
            current = None
    return out


def calibrator_in_field(center: SkyCoord, calibrators: list[Calibrator], radius_deg: float = 0.5,
                        min_flux_jy: float = 1.0) -> Calibrator | None:
    """The brightest calibrator within ``radius_deg`` of the tile's phase centre, if any."""
    best = None
    for cal in calibrators:
        if cal.flux_jy >= min_flux_jy and center.separation(SkyCoord(cal.ra_deg, cal.dec_deg, unit="deg")).deg <= radius_deg:
            if best is None or cal.flux_jy > best.flux_jy:
                best = cal
    return best


def ms_times_freqs(ms) -> tuple[np.ndarray, np.ndarray]:
    """Unique integration mid-times (MJD) and channel frequencies (Hz) of a Measurement Set."""
    tb = tools().table()
    tb.open(str(ms))
    t = np.unique(tb.getcol("TIME")) / 86400.0
    tb.close()
    tb.open(f"{ms}/SPECTRAL_WINDOW")
    f = np.concatenate([tb.getcell("CHAN_FREQ", r) for r in range(tb.nrows())])
    tb.close()
    return t, f


def mean_beam(ra_deg, dec_deg, times_mjd, freqs_hz, dec_pointing_deg, nfreq: int = 8) -> np.ndarray:
    """Primary-beam response averaged over the tile's integrations and band (the drift scan moves the beam
    along RA), for sky positions (deg)."""
    from eselake.sim.visibilities import meridian_icrs

    ra = np.deg2rad(np.asarray(ra_deg, float))
    dec = np.deg2rad(np.asarray(dec_deg, float))
    pts = meridian_icrs(Time(np.asarray(times_mjd), format="mjd", scale="utc"), dec_pointing_deg)
    f = np.linspace(np.min(freqs_hz), np.max(freqs_hz), nfreq)
    acc = np.zeros(np.broadcast(ra, dec).shape)
    for pra, pdec in zip(pts.ra.rad, pts.dec.rad):
        cos_t = np.sin(dec) * np.sin(pdec) + np.cos(dec) * np.cos(pdec) * np.cos(ra - pra)
        theta = np.arccos(np.clip(cos_t, -1, 1))
        acc += dsa110.airy_power(theta[..., None], f).mean(axis=-1)
    return acc / len(pts)


def _atomic_table(final: Path, make) -> Path:
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:6]}.tmp")
    make(str(tmp))
    if not tmp.exists():
        raise RuntimeError(f"CASA did not write {final.name} (see the CASA log)")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def solve(ms, cal: Calibrator, dec_pointing_deg: float, refant: str | None = None) -> list[Path]:
    """Bandpass and gain tables for ``ms`` from a point-source model of ``cal`` (its catalogue flux times the
    mean primary-beam response). Tables are written beside the MS: <ms>.bcal and <ms>.gcal."""
    ms = Path(ms)
    t, f = ms_times_freqs(ms)
    apparent = cal.flux_jy * float(mean_beam(cal.ra_deg, cal.dec_deg, t, f, dec_pointing_deg))
    ct = tasks()
    with in_folder(ms.parent):
        cl_path = ms.with_suffix(".cl")
        if cl_path.exists():
            shutil.rmtree(cl_path)
        cl = tools().componentlist()
        cl.addcomponent(flux=apparent, fluxunit="Jy", shape="point",
                        dir=f"J2000 {cal.ra_deg}deg {cal.dec_deg}deg", freq="1.405GHz", spectrumtype="constant")
        cl.rename(str(cl_path))
        cl.close()
        ct.ft(vis=str(ms), complist=str(cl_path), usescratch=True)
        if refant is None:
            tb = tools().table()
            tb.open(f"{ms}/ANTENNA")
            refant = tb.getcol("NAME")[0]
            tb.close()
        bcal = _atomic_table(ms.with_suffix(".bcal"), lambda p: ct.bandpass(
            vis=str(ms), caltable=p, refant=refant, solint="inf", combine="scan", solnorm=True, minsnr=2.0))
        gcal = _atomic_table(ms.with_suffix(".gcal"), lambda p: ct.gaincal(
            vis=str(ms), caltable=p, refant=refant, gaintype="G", calmode="ap", solint="inf", combine="scan",
            gaintable=[str(bcal)], minsnr=2.0))
    return [bcal, gcal]


def apply(ms, tables: list[Path]) -> None:
    """applycal the tables to ``ms`` (CORRECTED_DATA)."""
    ms = Path(ms)
    missing = [str(t) for t in tables if not Path(t).exists()]
    if missing:
        raise InputError(f"calibration tables not found: {', '.join(missing)}")
    with in_folder(ms.parent):
        tasks().applycal(vis=str(ms), gaintable=[str(t) for t in tables], calwt=False, flagbackup=False,
                         interp=["nearest,linear", "nearest"])


def read_gains(tables: list[Path]) -> np.ndarray:
    """Combined solutions (n_ant, n_chan, 2): bandpass x gain, from the tables of ``solve``."""
    tb = tools().table()
    out = None
    for t in tables:
        tb.open(str(t))
        cp = tb.getcol("CPARAM")                 # (npol, nchan, nrow)
        ant = tb.getcol("ANTENNA1")
        flags = tb.getcol("FLAG")
        tb.close()
        g = np.where(flags, np.nan, cp)
        per_ant = np.full((ant.max() + 1, cp.shape[1], cp.shape[0]), np.nan + 0j)
        per_ant[ant] = np.transpose(g, (2, 1, 0))
        out = per_ant if out is None else out * per_ant      # G has one channel: broadcasts
    return out
