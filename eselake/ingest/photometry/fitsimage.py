"""Reading radio images (CASA, WSClean, mosaics): pixels, celestial WCS, beam, time, frequency, rms."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from eselake.errors import InputError

_HIST_BEAM = re.compile(r"BMAJ\s*=\s*([-+.\dEe]+)\s+BMIN\s*=\s*([-+.\dEe]+)\s+BPA\s*=\s*([-+.\dEe]+)")
_EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE", "INTTIME", "DURATION", "TELAPSE")


@dataclass
class RadioImage:
    path: Path
    data: np.ndarray            # 2-D (ny, nx) Stokes I plane, Jy/beam
    wcs: WCS                    # celestial WCS of ``data``
    bmaj_deg: float
    bmin_deg: float
    bpa_deg: float
    mjd: float                  # observation mid-time (MJD, UTC)
    exposure_s: float | None
    freq_hz: float | None
    rms_jyb: float              # robust (sigma-clipped, MAD) rms of the whole image
    ra_center_deg: float
    dec_center_deg: float

    @property
    def shape(self):
        return self.data.shape

    def world_to_pixel(self, ra_deg, dec_deg):
        """0-based pixel (x, y) of sky positions (deg)."""
        x, y = self.wcs.all_world2pix(np.asarray(ra_deg, float), np.asarray(dec_deg, float), 0)
        return np.asarray(x), np.asarray(y)

    def jacobian_pix_per_deg(self, ra_deg, dec_deg, step_deg=1e-4):
        """(n, 2, 2) local map from (east, north) offsets in deg to (x, y) pixel offsets."""
        ra = np.asarray(ra_deg, float)
        dec = np.asarray(dec_deg, float)
        cosd = np.maximum(np.cos(np.deg2rad(dec)), 1e-6)
        dec_n = np.where(dec + step_deg > 90, dec - step_deg, dec + step_deg)
        sign_n = np.where(dec + step_deg > 90, -1.0, 1.0)
        x0, y0 = self.world_to_pixel(ra, dec)
        xe, ye = self.world_to_pixel(ra + step_deg / cosd, dec)
        xn, yn = self.world_to_pixel(ra, dec_n)
        jac = np.empty(ra.shape + (2, 2))
        jac[..., 0, 0] = (xe - x0) / step_deg
        jac[..., 1, 0] = (ye - y0) / step_deg
        jac[..., 0, 1] = sign_n * (xn - x0) / step_deg
        jac[..., 1, 1] = sign_n * (yn - y0) / step_deg
        return jac

    def footprint_radius_deg(self) -> float:
        """Largest distance (deg) from the image centre to a corner."""
        ny, nx = self.shape
        cx, cy = [0, nx - 1, 0, nx - 1], [0, 0, ny - 1, ny - 1]
        ra, dec = self.wcs.all_pix2world(cx, cy, 0)
        from astropy.coordinates import angular_separation
        sep = angular_separation(*np.deg2rad([ra, dec]), np.deg2rad(self.ra_center_deg),
                                 np.deg2rad(self.dec_center_deg))
        sep = np.rad2deg(sep)
        return float(np.nanmax(sep)) if np.isfinite(sep).any() else 180.0


def robust_rms(data: np.ndarray, max_samples: int = 1_000_000) -> float:
    """Sigma-clipped (3 sigma, MAD) rms of the finite pixels, from a regular subsample of at most ~1e6."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return float("nan")
    sample = finite[:: max(1, finite.size // max_samples)]
    return float(sigma_clipped_stats(sample, sigma=3.0, maxiters=5, stdfunc="mad_std")[2])


def _beam(header, beam) -> tuple[float, float, float]:
    if beam is not None:
        return tuple(float(v) for v in beam)
    if all(k in header for k in ("BMAJ", "BMIN")):
        return float(header["BMAJ"]), float(header["BMIN"]), float(header.get("BPA", 0.0))
    for card in reversed(header.get("HISTORY", [])):
        m = _HIST_BEAM.search(str(card))
        if m:
            return tuple(float(v) for v in m.groups())
    raise InputError("image has no restoring beam (BMAJ/BMIN/BPA keywords); give one with "
                     "--beam BMAJ_DEG BMIN_DEG BPA_DEG (Python: beam=(bmaj_deg, bmin_deg, bpa_deg))")


def _obs_time(header, mjd=None) -> tuple[float, float | None]:
    exposure = None
    for k in _EXPOSURE_KEYS:
        if k in header:
            try:
                exposure = float(header[k])
                break
            except (TypeError, ValueError):
                pass
    if mjd is not None:
        return float(mjd), exposure
    scale = str(header.get("TIMESYS", "UTC")).lower()
    scale = scale if scale in ("utc", "tai", "tt") else "utc"
    if "MJD-OBS" in header:
        start = Time(float(header["MJD-OBS"]), format="mjd", scale=scale)
    elif "DATE-OBS" in header:
        try:
            start = Time(str(header["DATE-OBS"]).strip(), scale=scale)
        except ValueError as exc:
            raise InputError(f"cannot parse DATE-OBS {header['DATE-OBS']!r}: {exc}") from exc
    else:
        raise InputError("image has no observation time (MJD-OBS or DATE-OBS); give one with --mjd")
    mjd = start.utc.mjd + (exposure / 2.0 / 86400.0 if exposure else 0.0)
    return float(mjd), exposure


def _freq(header) -> float | None:
    for ax in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{ax}", "")).upper().startswith("FREQ"):
            return float(header[f"CRVAL{ax}"])
    for k in ("RESTFRQ", "RESTFREQ", "FREQ"):
        if k in header:
            return float(header[k])
    return None


def read_image(path, *, beam=None, mjd=None, check_unit=True) -> RadioImage:
    """Read a FITS image (2-D, or 3/4-D with FREQ/STOKES axes: the first plane is used).

    Raises InputError with a clear message for unreadable files, no celestial WCS, missing beam or time,
    a BUNIT other than Jy/beam (a missing BUNIT is taken as Jy/beam), or an image with no finite pixels.
    ``beam`` (bmaj_deg, bmin_deg, bpa_deg) and ``mjd`` (observation mid-time) override the header.
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = next((h for h in hdul if getattr(h, "data", None) is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise InputError(f"{path}: no image data in any HDU")
            header = hdu.header
            data = np.asarray(hdu.data, dtype=np.float64)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{path}: not a readable FITS image ({exc})") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wfull = WCS(header)
        except Exception as exc:  # noqa: BLE001 - astropy raises many kinds here
            raise InputError(f"{path}: invalid WCS ({exc})") from exc
    if not wfull.has_celestial:
        raise InputError(f"{path}: no celestial WCS (RA/DEC axes) in the header")
    while data.ndim > 2:
        data = data[0]
    bunit = str(header.get("BUNIT", "")).strip().upper().replace(" ", "")
    if check_unit and bunit and bunit not in ("JY/BEAM", "JY/BM", "JANSKY/BEAM", "JYBEAM-1", "JY.BEAM-1", "BEAM-1JY"):
        raise InputError(f"{path}: BUNIT is {header.get('BUNIT')!r}; forced photometry needs Jy/beam images")
    if not np.isfinite(data).any():
        raise InputError(f"{path}: image has no finite pixels (all NaN/blank)")
    bmaj, bmin, bpa = _beam(header, beam)
    if not (bmaj > 0 and bmin > 0):
        raise InputError(f"{path}: beam must be positive, got BMAJ={bmaj} BMIN={bmin}")
    mjd, exposure = _obs_time(header, mjd)
    wcs = wfull.celestial
    ny, nx = data.shape
    ra_c, dec_c = wcs.all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
    rms = robust_rms(data)
    if not (rms > 0):
        raise InputError(f"{path}: image rms is {rms}; the image is constant or empty")
    return RadioImage(path=path, data=data, wcs=wcs, bmaj_deg=bmaj, bmin_deg=bmin, bpa_deg=bpa, mjd=mjd,
                      exposure_s=exposure, freq_hz=_freq(header), rms_jyb=rms,
                      ra_center_deg=float(ra_c[0]) % 360.0, dec_center_deg=float(dec_c[0]))


def read_noise_map(path, shape) -> np.ndarray:
    """Read an rms/noise map (Jy/beam) matching an image's shape."""
    try:
        data = np.asarray(fits.getdata(path), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable FITS noise map ({exc})") from exc
    while data.ndim > 2:
        data = data[0]
    if data.shape != tuple(shape):
        raise InputError(f"{path}: noise map shape {data.shape} differs from the image's {tuple(shape)}")
    if not (np.isfinite(data) & (data > 0)).any():
        raise InputError(f"{path}: noise map has no positive rms values (zero, negative or blank everywhere)")
    return data
