"""Reading radio images (CASA, WSClean, mosaics): pixels, celestial WCS, beam, time, frequency, rms.

Checks made on every image (each failure is an InputError naming the file and the keyword):
- beam: BMAJ/BMIN in degrees, at least ``MIN_BEAM_PIX`` and at most ``MAX_BEAM_PIX`` pixels (a BMAJ in arcsec is
  caught before any array is allocated);
- time: DATE-OBS / MJD-OBS not in the future, the two agreeing within ``TIME_TOLERANCE_S`` when both are given,
  EXPTIME (or EXPOSURE, INTTIME, ...) between 0 and a day (a value in ms would move the mid-time to another night);
- frequency: from the spectral axis on any WCS axis (FREQ, VOPT/FELO/ZOPT, VRAD, VELO, WAVE, with RESTFRQ or
  ALTRVAL), also when NAXIS=2 but WCSAXES=4 (WSClean cutouts); a cube with several spectral or Stokes planes is
  measured on an explicit ``plane`` or refused;
- sky axes and frame: RA/Dec (ICRS, FK5, FK4/B1950) or GLON/GLAT (galactic) on any two FITS axes in either
  order; catalogue positions (ICRS) are converted into the image's frame
  (FK5 J2000 is taken as ICRS: they differ by < 0.03 arcsec); a single-plane Stokes axis must be Stokes I;
- background: a smooth background (a pedestal, large-scale emission) is subtracted when the image has a
  significant one (``background_map``); zero-mean interferometric images are left as they are;
- units: BUNIT Jy/beam, mJy/beam or uJy/beam (scaled to Jy/beam), for images and noise maps;
- blanks: NaN, absurd values (|v| > ``ABSURD_JYB``, e.g. -1e30 sentinels), and pseudo-blank regions found by
  value statistics (runs of one constant value, or patches of values far below the noise, e.g. 1e-7 Jy/beam
  fill; in coarsely quantised integer images only constant squares 4 beams wide) become NaN, so the rms and the
  photometry use valid pixels only.
Every error is one line naming the file; astropy's warnings about the file are not printed.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.utils.exceptions import AstropyWarning
from astropy.time import Time
from astropy.wcs import WCS
from scipy import ndimage

from eselake.errors import InputError

_HIST_BEAM = re.compile(r"BMAJ\s*=\s*([-+.\dEe]+)\s+BMIN\s*=\s*([-+.\dEe]+)\s+BPA\s*=\s*([-+.\dEe]+)")
_EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE", "INTTIME", "DURATION", "TELAPSE")
MIN_BEAM_PIX = 0.5           # beam FWHM (minor axis) below this many pixels: refused (nothing to fit)
UNDERSAMPLED_BEAM_PIX = 2.0  # below this the kernel integrates the beam over pixels and flags the sources
MAX_BEAM_PIX = 2000.0        # beam FWHM above this many pixels: a unit error (arcsec taken as deg)
TIME_TOLERANCE_S = 2.0       # MJD-OBS and DATE-OBS must agree to this
MAX_EXPOSURE_S = 86400.0     # an exposure longer than a day is a unit error (ms, or a sum over nights)
FUTURE_SLACK_DAYS = 1.0
MIN_MJD, MAX_MJD = 30000.0, 100000.0   # observation times outside (1941-2132) are header errors
ABSURD_JYB = 1e12            # |pixel| above this (Jy/beam) is a blank sentinel (e.g. -1e30), not sky
BACKGROUND_Z2 = 9.0          # tile medians scattering about 0 by more than 3x their noise: a background
COARSE_QUANTUM = 1e-3        # integer data quantised more coarsely than this x the noise: runs of equal values are sky
_TIME_KEYS = ("TIME-OBS", "UT", "UTSTART", "UT-START")   # time of day beside a date-only DATE-OBS
_STOKES = {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR", -5: "XX", -6: "YY", -7: "XY",
           -8: "YX"}
C_M_S = 299_792_458.0


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
    telescope: str | None = None
    noise_floor_jyb: float | None = None   # lowest local noise level of the image (errors never go below it)
    n_blank: int = 0                        # pseudo-blank pixels set to NaN (constant runs, near-zero fill)
    plane: int | None = None                # cube plane measured (None for 2-D images / single planes)
    frame: object = None                    # the image's sky frame (astropy), None for ICRS / FK5 J2000
    background_jyb: float = 0.0             # median of the background subtracted (0: none, see background_map)

    @property
    def shape(self):
        return self.data.shape

    def world_to_pixel(self, ra_deg, dec_deg):
        """0-based pixel (x, y) of ICRS sky positions (deg)."""
        return sky_to_pixel(self.wcs, self.frame, ra_deg, dec_deg)

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
        ra, dec = pixel_to_sky(self.wcs, self.frame, cx, cy)
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


def _block_rms(data: np.ndarray, block: int = 32) -> np.ndarray:
    """MAD rms of the finite pixels of each block x block tile (see ``_block_stats``)."""
    return _block_stats(data, block)[1]


def _block_stats(data: np.ndarray, block: int = 32, clip: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(median, MAD rms, tile side in pixels) of the finite pixels of each block x block tile, from a grid of
    at most 16 x 16 samples per tile (noise is correlated over a beam: a sparser grid loses little); NaN where
    fewer than a quarter of the samples are finite. ``clip`` iterations drop samples 3 MAD rms from the median
    (sources) before the statistics are taken again."""
    stride = max(1, block // 16)
    d = data[::stride, ::stride]
    b = block // stride
    ny, nx = d.shape
    d = np.pad(d, ((0, -ny % b), (0, -nx % b)), constant_values=np.nan)
    d = d.reshape(d.shape[0] // b, b, d.shape[1] // b, b).swapaxes(1, 2).reshape(d.shape[0] // b, d.shape[1] // b, -1)
    n = np.isfinite(d).sum(axis=-1)
    ok = n >= max(8, b * b // 4)

    def median(x, n):               # NaN-aware median by sorting (NaN sort last): much faster than nanmedian
        return np.take_along_axis(np.sort(x, axis=-1), np.maximum((n - 1) // 2, 0)[..., None], axis=-1)

    med = median(d, n)
    mad = median(np.abs(d - med), n)[..., 0] * 1.4826
    for _ in range(clip):
        with np.errstate(invalid="ignore"):
            d = np.where(np.abs(d - med) <= 3.0 * mad[..., None], d, np.nan)
        n = np.isfinite(d).sum(axis=-1)
        med = median(d, n)
        mad = median(np.abs(d - med), n)[..., 0] * 1.4826
    return np.where(ok, med[..., 0], np.nan), np.where(ok, mad, np.nan), b * stride


def background_map(data: np.ndarray, beam_fwhm_pix: float) -> np.ndarray | None:
    """The image's smooth background (Jy/beam) to subtract, or None when it has none to speak of.

    Sigma-clipped medians of tiles ~12 beams wide, bilinearly interpolated between tile centres (as PySE and BANE do), used
    only when they scatter about zero by more than three times their own noise (mean of (median / error)^2 >
    ``BACKGROUND_Z2``, error 1.25 rms / sqrt(beams per tile)): a pedestal or large-scale emission is removed,
    while a zero-mean interferometric image is left exactly as it is."""
    block = int(np.clip(12 * beam_fwhm_pix, 48, 384))
    med, rms, tile = _block_stats(data, block, clip=2)
    ok = np.isfinite(med) & (rms > 0)
    if not ok.any():
        return None
    err = 1.2533 * rms / np.sqrt(tile * tile / (1.1331 * beam_fwhm_pix ** 2))
    if not np.mean((med[ok] / err[ok]) ** 2) > BACKGROUND_Z2:
        return None
    near = ndimage.distance_transform_edt(~ok, return_distances=False, return_indices=True)
    grid = med[tuple(near)]                           # tiles without a median take their nearest one's

    def weights(n, m):       # (n pixels, m tiles) linear interpolation weights, extrapolated beyond the centres
        w = np.zeros((n, m))
        if m == 1:
            w[:, 0] = 1.0
            return w
        start = np.arange(m) * tile
        centres = (start + np.minimum(start + tile, n) - 1) / 2.0       # the last tile may be partial
        p = np.arange(n)
        j = np.clip(np.searchsorted(centres, p, side="right") - 1, 0, m - 2)
        f = (p - centres[j]) / (centres[j + 1] - centres[j])
        w[np.arange(n), j] = 1.0 - f
        w[np.arange(n), j + 1] = f
        return w
    return weights(data.shape[0], grid.shape[0]) @ grid @ weights(data.shape[1], grid.shape[1]).T


def _runs(mask: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Pixels of ``mask`` inside runs of at least ``length`` consecutive True values along ``axis``."""
    struct = np.ones((1, length) if axis == 1 else (length, 1), bool)
    return ndimage.binary_opening(mask, structure=struct)


def blank_and_noise(data: np.ndarray, beam_fwhm_pix: float = 3.0,
                    quantum: float = 0.0) -> tuple[np.ndarray, float, float]:
    """(pseudo-blank mask, typical noise, noise floor) of an image.

    Pseudo-blank: finite pixels that are not sky: runs of >= 5 identical values along a row or a column
    (0 or constant fill), and beam-sized patches of values 1e-3 below the image's typical noise (e.g. 1e-7
    fill outside a mosaic's footprint; beam-correlated noise essentially never produces such a patch).
    Integer images quantised in steps of ``quantum`` (Jy/beam, BSCALE) coarser than COARSE_QUANTUM x the noise
    have runs of equal values and exact zeros in their sky: there only squares of one value >= 4 beams wide
    count (fill).
    Typical noise: the upper-quartile rms of blocks of ~60 beams; noise floor: their 5th percentile over
    the sky (in a primary-beam-corrected image, about the noise at the pointing centre)."""
    finite = np.isfinite(data)
    coarse = quantum > 0 and not quantum <= COARSE_QUANTUM * robust_rms(data)
    blank = np.zeros(data.shape, bool)
    if coarse:                     # pixels equal to their right and upper neighbours, in squares 4 beams wide
        same = np.zeros(data.shape, bool)
        same[:-1, :-1] = (data[:-1, :-1] == data[1:, :-1]) & (data[:-1, :-1] == data[:-1, 1:])
        side = max(5, int(np.ceil(4 * beam_fwhm_pix)))
        blank = ndimage.binary_dilation(ndimage.binary_opening(same, structure=np.ones((side, side), bool))) & finite
    for axis in () if coarse else (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        same = (data[tuple(a)] == data[tuple(b)]) & finite[tuple(a)]
        if same.sum() >= 4:
            eq = np.zeros(data.shape, bool)
            eq[tuple(a)] |= same
            eq[tuple(b)] |= same
            blank |= _runs(eq, 5, axis)
    sky = np.where(finite & ~blank, data, np.nan)
    block = int(np.clip(8 * beam_fwhm_pix, 32, 256))
    rms = _block_rms(sky, block)
    good = rms[np.isfinite(rms) & (rms > 0)]
    if not good.size:
        finite_sky = sky[np.isfinite(sky)]
        level = float(np.std(finite_sky)) if finite_sky.size else float("nan")
        return blank, level, level
    level = float(np.percentile(good, 75))
    k = max(3, int(np.ceil(min(beam_fwhm_pix, 15.0))) | 1)
    with np.errstate(invalid="ignore"):
        tiny = np.abs(sky) < 1e-3 * level            # NaN compares False
    if tiny.sum() >= k * k and not coarse:
        blank |= ndimage.binary_opening(tiny, structure=np.ones((k, k), bool))
    live = good[good > 1e-2 * level]
    floor = float(np.percentile(live, 5)) if live.size else level
    return blank, level, floor


def pseudo_blank_mask(data: np.ndarray, beam_fwhm_pix: float = 3.0) -> np.ndarray:
    """See ``blank_and_noise``."""
    return blank_and_noise(data, beam_fwhm_pix)[0]


def noise_floor(data: np.ndarray, beam_fwhm_pix: float = 4.0) -> float:
    """See ``blank_and_noise``."""
    return blank_and_noise(data, beam_fwhm_pix)[2]


def _beam(header, beam, path="image") -> tuple[float, float, float]:
    if beam is not None:
        return tuple(float(v) for v in beam)
    if all(k in header for k in ("BMAJ", "BMIN")):
        return float(header["BMAJ"]), float(header["BMIN"]), float(header.get("BPA", 0.0))
    for card in reversed(header.get("HISTORY", [])):
        m = _HIST_BEAM.search(str(card))
        if m:
            return tuple(float(v) for v in m.groups())
    raise InputError(f"{path}: image has no restoring beam (BMAJ/BMIN/BPA keywords); give one with "
                     "--beam BMAJ_DEG BMIN_DEG BPA_DEG (Python: beam=(bmaj_deg, bmin_deg, bpa_deg))")


def _exposure(header, path) -> float | None:
    for k in _EXPOSURE_KEYS:
        if k not in header:
            continue
        try:
            exposure = float(header[k])
        except (TypeError, ValueError):
            continue
        unit = str(header.comments[k]).lower()
        if re.search(r"(\[|\b)(ms|msec|millisec)", unit):
            exposure /= 1000.0
        if not (0 <= exposure <= MAX_EXPOSURE_S) or not np.isfinite(exposure):
            raise InputError(f"{path}: {k} = {header[k]} s is not a duration of 0-{MAX_EXPOSURE_S:.0f} s "
                             f"(in milliseconds? the mid-time DATE-OBS + {k}/2 would move by "
                             f"{exposure / 2 / 86400:.2f} days); fix the header or give the time with --mjd")
        return exposure
    return None


def _date_obs(header, path) -> tuple[str | None, bool]:
    """DATE-OBS as an ISO string (the old 'DD/MM/YY' form read as 19YY; a date-only value joined with TIME-OBS
    or UT when the header has one) and whether it gives a time of day."""
    raw = str(header.get("DATE-OBS", "")).strip()
    if not raw:
        return None, False
    old = re.fullmatch(r"(\d\d)/(\d\d)/(\d\d)", raw)          # FITS before 2000: DD/MM/YY, 19YY
    if old:
        raw = f"19{old.group(3)}-{old.group(2)}-{old.group(1)}"
    if "T" in raw:
        return raw, True
    for k in _TIME_KEYS:
        tod = str(header.get(k, "")).strip()
        if re.fullmatch(r"\d\d?:\d\d(:\d\d(\.\d*)?)?", tod):
            return f"{raw}T{tod}", True
    return raw, False


def _parse_time(value, path, key, **kw) -> Time:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # erfa's "dubious year" for absurd dates: checked below
            t = Time(value, **kw)
            t.utc.mjd
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: cannot parse {key} {value!r} ({_first_line(exc)})") from exc
    return t


def _obs_time(header, mjd=None, path="image") -> tuple[float, float | None]:
    """Observation mid-time (MJD, UTC) and exposure (s), with sanity checks (see the module docstring)."""
    exposure = _exposure(header, path)
    if mjd is not None:
        if not MIN_MJD <= float(mjd) <= MAX_MJD:
            raise InputError(f"{path}: --mjd {mjd} is outside MJD {MIN_MJD:.0f}-{MAX_MJD:.0f}")
        return float(mjd), exposure
    scale = str(header.get("TIMESYS", "UTC")).strip().lower()
    scale = scale if scale in ("utc", "tai", "tt") else "utc"
    start = date = None
    if "MJD-OBS" in header:
        try:
            value = float(header["MJD-OBS"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: cannot parse MJD-OBS {header['MJD-OBS']!r}") from exc
        start = _parse_time(value, path, "MJD-OBS", format="mjd", scale=scale)
    iso, has_time = _date_obs(header, path)
    if iso is not None:
        date = _parse_time(iso, path, "DATE-OBS", scale=scale)
    if start is not None and date is not None:
        if has_time:
            diff = abs(start.utc.mjd - date.utc.mjd) * 86400.0
            if diff > TIME_TOLERANCE_S:
                raise InputError(f"{path}: MJD-OBS = {header['MJD-OBS']} ({start.utc.isot}) contradicts DATE-OBS = "
                                 f"{iso} by {diff:.0f} s; fix the header or give the time with --mjd")
        elif start.utc.isot[:10] != date.utc.isot[:10]:
            raise InputError(f"{path}: MJD-OBS = {header['MJD-OBS']} ({start.utc.isot}) is not on DATE-OBS = "
                             f"{iso}; fix the header or give the time with --mjd")
    start = start if start is not None else date
    if start is None:
        raise InputError(f"{path}: image has no observation time (MJD-OBS or DATE-OBS); give one with --mjd")
    t0 = start.utc.mjd
    if not MIN_MJD <= t0 <= MAX_MJD:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            when = start.utc.isot[:10]
        raise InputError(f"{path}: observation time {when} = MJD {t0:.5f} (DATE-OBS/MJD-OBS) is outside MJD "
                         f"{MIN_MJD:.0f}-{MAX_MJD:.0f}; fix the header or give the time with --mjd")
    now = Time.now().utc.mjd
    if t0 > now + FUTURE_SLACK_DAYS:
        raise InputError(f"{path}: observation time {start.utc.isot} (DATE-OBS/MJD-OBS) is in the future; "
                         "fix the header or give the time with --mjd")
    mid = t0 + (exposure / 2.0 / 86400.0 if exposure else 0.0)
    return float(mid), exposure


def _n_wcs_axes(header) -> int:
    n = max(int(header.get("NAXIS", 0)), int(header.get("WCSAXES", 0)))
    return max([n] + [int(k[5:]) for k in header if re.fullmatch(r"CTYPE\d+", k)])


def spectral_axis(header) -> int | None:
    """1-based FITS axis number of the spectral axis, on any WCS axis (NAXIS=2 with WCSAXES=4 included)."""
    for ax in range(1, _n_wcs_axes(header) + 1):
        ctype = str(header.get(f"CTYPE{ax}", "")).strip().upper()
        if ctype[:4] in ("FREQ", "VOPT", "VRAD", "VELO", "FELO", "ZOPT", "WAVE"):
            return ax
    return None


def _restfrq(header) -> float | None:
    for k in ("RESTFRQ", "RESTFREQ"):
        if k in header:
            try:
                v = float(header[k])
            except (TypeError, ValueError):
                continue
            if v > 0:
                return v
    return None


def frequency_hz(header, plane: int = 0) -> float | None:
    """Observing frequency (Hz) of 0-based ``plane`` of the spectral axis.

    FREQ axes give it directly; velocity axes (VOPT/FELO/ZOPT optical, VRAD radio, VELO relativistic) are
    converted with RESTFRQ, or, without a usable RESTFRQ, taken from ALTRVAL (the frequency at ALTRPIX); WAVE
    is c / lambda. Without a spectral axis: RESTFRQ/RESTFREQ/FREQ/CRVAL3 keywords, else None."""
    ax = spectral_axis(header)
    if ax is not None:
        ctype = str(header[f"CTYPE{ax}"]).strip().upper()
        pix = plane + 1.0
        crpix = float(header.get(f"CRPIX{ax}", 1.0))
        cdelt = float(header.get(f"CDELT{ax}", header.get(f"CD{ax}_{ax}", 0.0)) or 0.0)
        val = float(header.get(f"CRVAL{ax}", np.nan)) + (pix - crpix) * cdelt
        unit = str(header.get(f"CUNIT{ax}", "")).strip().lower()
        scale = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9, "m/s": 1.0, "km/s": 1e3, "m": 1.0,
                 "cm": 1e-2, "mm": 1e-3}.get(unit, 1.0)
        val *= scale
        rest = _restfrq(header)
        kind = ctype[:4]
        if kind == "FREQ":
            f = val
        elif kind == "WAVE":
            f = C_M_S / val if val > 0 else np.nan
        elif rest is not None:
            beta = val / C_M_S
            if kind in ("VOPT", "FELO"):
                f = rest / (1.0 + beta)
            elif kind == "ZOPT":
                f = rest / (1.0 + val / scale)
            elif kind == "VRAD":
                f = rest * (1.0 - beta)
            else:                                   # VELO: relativistic
                f = rest * np.sqrt((1.0 - beta) / (1.0 + beta)) if abs(beta) < 1 else np.nan
        else:
            f = np.nan
        if not (np.isfinite(f) and f > 0) and "ALTRVAL" in header:
            f = float(header["ALTRVAL"])
            if pix != float(header.get("ALTRPIX", 1.0)):
                f = np.nan                          # ALTRVAL is the frequency of ALTRPIX only
        return float(f) if np.isfinite(f) and f > 0 else None
    for k in ("RESTFRQ", "RESTFREQ", "FREQ", "ALTRVAL"):
        if k in header:
            try:
                v = float(header[k])
            except (TypeError, ValueError):
                continue
            if v > 0:
                return v
    return None


def _freq(header) -> float | None:
    return frequency_hz(header)


def _select_plane(data: np.ndarray, header, path, plane: int | None,
                  sky: tuple[int, int] = (1, 2)) -> tuple[np.ndarray, int | None]:
    """The 2-D Stokes I image of a 2-4-D array whose sky axes are the FITS axes ``sky`` (any two, any order):
    single-plane axes dropped (a Stokes one must be Stokes I), Stokes I chosen on a Stokes axis, a spectral
    axis with several planes needs ``plane`` (0-based) or the image is refused. The result's axes are the sky
    axes in FITS order (numpy: higher FITS axis first), as the celestial WCS has them."""
    nd = data.ndim
    if max(sky) > nd:
        raise InputError(f"{path}: the sky axes are FITS axes {sky[0]} and {sky[1]}, but the data have {nd} axes")
    chosen = None
    index = []
    # numpy axis k corresponds to FITS axis nd - k
    for k in range(nd):
        ax = nd - k
        if ax in sky:
            index.append(slice(None))
            continue
        n = data.shape[k]
        ctype = str(header.get(f"CTYPE{ax}", "")).strip().upper()
        if ctype.startswith("STOKES"):
            crval, cdelt = float(header.get(f"CRVAL{ax}", 1)), float(header.get(f"CDELT{ax}", 1))
            crpix = float(header.get(f"CRPIX{ax}", 1))
            codes = crval + (np.arange(1, n + 1) - crpix) * cdelt
            hit = np.flatnonzero(np.isclose(codes, 1.0))
            if not hit.size:
                names = ", ".join(_STOKES.get(int(round(c)), f"{c:g}") for c in codes[:8])
                raise InputError(f"{path}: the STOKES axis (CTYPE{ax}) holds {names}, no Stokes I plane; "
                                 "forced photometry needs a Stokes I image")
            index.append(int(hit[0]))
        elif n == 1:
            index.append(0)
        else:
            if plane is None:
                raise InputError(f"{path}: a cube with {n} planes on axis {ax} ({ctype or 'unnamed'}); measure one "
                                 f"plane with --plane K (Python: plane=K; 0..{n - 1}) or give the "
                                 "frequency-averaged (MFS) image")
            if not 0 <= plane < n:
                raise InputError(f"{path}: plane {plane} is outside axis {ax} ({ctype}), which has {n} planes")
            index.append(int(plane))
            chosen = int(plane)
    out = data[tuple(index)]
    if out.ndim != 2:
        raise InputError(f"{path}: cannot take a 2-D sky image from data of shape {data.shape}")
    return out, chosen


def read_header(path):
    """Header of the first image HDU (no pixel data read)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=True) as hdul:
                for h in hdul:
                    if h.header.get("NAXIS", 0) >= 2 and (h.is_image if hasattr(h, "is_image") else True):
                        return h.header.copy()
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, zlib.error, EOFError, ... from any codec
        raise InputError(f"{path}: not a readable FITS image ({_first_line(exc)})") from exc
    raise InputError(f"{path}: no image data in any HDU")


def _read_pixels(path) -> tuple[np.ndarray, fits.Header]:
    """Pixels (float64, BSCALE/BZERO applied, BLANK as NaN) and header of the first HDU holding an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=False) as hdul:
                hdu = next((h for h in hdul if getattr(h, "data", None) is not None and h.data.ndim >= 2), None)
                if hdu is None:
                    raise InputError(f"{path}: no image data in any HDU")
                return np.asarray(hdu.data, dtype=np.float64), hdu.header
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, zlib.error, EOFError, ... from any codec
        raise InputError(f"{path}: not a readable FITS image ({_first_line(exc)})") from exc


_JY_BEAM = ("JY/BEAM", "JY/BM", "JANSKY/BEAM", "JYBEAM-1", "JY.BEAM-1", "BEAM-1JY", "JY/BEAM(S)")
_PREFIX = {"": 1.0, "M": 1e-3, "U": 1e-6, "MICRO": 1e-6, "MILLI": 1e-3}


def jyb_scale(header, path, what: str = "image") -> float:
    """Factor taking the pixels to Jy/beam from BUNIT: Jy/beam (or no BUNIT) 1, mJy/beam 1e-3, uJy/beam 1e-6;
    any other unit (K, Jy/pixel, MJy/sr, ...) is refused."""
    raw = str(header.get("BUNIT", "")).strip().replace(" ", "").replace("\u00b5", "u").replace("\u03bc", "u")
    if not raw:
        return 1.0
    up = raw.upper()
    for prefix, scale in _PREFIX.items():
        rest = up[len(prefix):] if up.startswith(prefix) else None
        if rest is not None and rest in _JY_BEAM and not (prefix == "M" and raw.startswith("MJy")):   # MJy: mega
            return scale
    raise InputError(f"{path}: {what} BUNIT is {header.get('BUNIT')!r}; forced photometry needs Jy/beam "
                     "(or mJy/beam, uJy/beam) images")


def _first_line(exc) -> str:
    """The message of an exception in one line (wcslib's 'ERROR n in f() at line ...' location line skipped)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"ERROR \d+ in \w+\(\) at line", ln)] or lines
    return lines[0] if lines else type(exc).__name__


def _full_wcs(header, path) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        try:
            wfull = WCS(header)
        except Exception as exc:  # noqa: BLE001 - astropy raises many kinds here
            raise InputError(f"{path}: invalid WCS ({_first_line(exc)})") from exc
    if not wfull.has_celestial:
        raise InputError(f"{path}: no celestial WCS (RA/DEC axes) in the header")
    return wfull


def _celestial_wcs(header, path):
    """The celestial WCS (its two axes in the header's order), its sky frame (None for ICRS/FK5 J2000) and the
    1-based FITS axes of (longitude, latitude)."""
    full = _full_wcs(header, path)
    cel = full.celestial
    return cel, sky_frame(cel, path), (full.wcs.lng + 1, full.wcs.lat + 1)


def sky_frame(wcs, path="image"):
    """The astropy frame of a celestial WCS, or None when it is ICRS or FK5 J2000 (the catalogues' frame)."""
    from astropy.wcs.utils import wcs_to_celestial_frame
    kind = wcs.wcs.ctype[wcs.wcs.lng][:4].rstrip("-").upper()
    if kind not in ("RA", "GLON"):          # astropy takes e.g. ELON/ELAT (ecliptic) for ICRS
        raise InputError(f"{path}: sky axes {'/'.join(wcs.wcs.ctype)} are not supported; RA/DEC (ICRS, FK5, "
                         "FK4) or GLON/GLAT (galactic) are")
    try:
        frame = wcs_to_celestial_frame(wcs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: sky axes {'/'.join(wcs.wcs.ctype)} (RADESYS {wcs.wcs.radesys or '-'}) are in a "
                         f"frame eselake cannot convert to ICRS ({_first_line(exc)})") from exc
    if frame.name == "icrs" or (frame.name == "fk5" and abs(frame.equinox.jyear - 2000.0) < 1e-6):
        return None
    return frame


def _convert(lon, lat, frame_from, frame_to):
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    c = SkyCoord(np.asarray(lon, float) * u.deg, np.asarray(lat, float) * u.deg, frame=frame_from)
    sph = c.transform_to(frame_to).spherical
    return sph.lon.deg, sph.lat.deg


def sky_to_pixel(wcs, frame, ra_deg, dec_deg):
    """0-based pixel (x, y) of ICRS positions (deg) on a celestial WCS in ``frame`` (None: ICRS)."""
    lon, lat = (ra_deg, dec_deg) if frame is None else _convert(ra_deg, dec_deg, "icrs", frame)
    world = (lon, lat) if wcs.wcs.lng == 0 else (lat, lon)
    x, y = wcs.all_world2pix(np.asarray(world[0], float), np.asarray(world[1], float), 0)
    return np.asarray(x), np.asarray(y)


def pixel_to_sky(wcs, frame, x, y):
    """ICRS (ra, dec) in deg of 0-based pixels on a celestial WCS in ``frame`` (None: ICRS)."""
    a, b = wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    lon, lat = (a, b) if wcs.wcs.lng == 0 else (b, a)
    if frame is None:
        return np.asarray(lon), np.asarray(lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    ra, dec = np.full(np.shape(lon), np.nan), np.full(np.shape(lat), np.nan)
    if ok.any():
        ra[ok], dec[ok] = _convert(np.asarray(lon)[ok], np.asarray(lat)[ok], frame, "icrs")
    return ra, dec


def pixel_scale_deg(wcs) -> tuple[float, float]:
    """(smallest, largest) pixel size in deg along the celestial axes."""
    m = np.abs(wcs.pixel_scale_matrix)
    sizes = np.sqrt((m ** 2).sum(axis=0))
    return float(sizes.min()), float(sizes.max())


def check_beam(bmaj, bmin, wcs, path, source="BMAJ/BMIN") -> None:
    """Beam sanity in pixels: positive, at least MIN_BEAM_PIX, at most MAX_BEAM_PIX (a unit error)."""
    if not (np.isfinite(bmaj) and np.isfinite(bmin) and bmaj > 0 and bmin > 0):
        raise InputError(f"{path}: beam must be positive, got BMAJ={bmaj} BMIN={bmin}")
    small, large = pixel_scale_deg(wcs)
    maj_pix = bmaj / small
    if maj_pix > MAX_BEAM_PIX:
        raise InputError(f"{path}: {source} = {bmaj:g} deg is {maj_pix:.3g} pixels of {small * 3600:.3g} arcsec; "
                         "beam keywords must be in degrees (arcsec given?)")
    if bmin / large < MIN_BEAM_PIX:
        raise InputError(f"{path}: {source} minor axis {bmin:g} deg is {bmin / large:.2f} pixels of "
                         f"{large * 3600:.3g} arcsec, less than {MIN_BEAM_PIX} pixel: the image cannot be "
                         "measured (degrees expected; is the beam in radians or the pixel size wrong?)")


def image_identity(header, path, *, beam=None, mjd=None, kind: str = "image", plane: int | None = None):
    """(telescope, ra_center, dec_center, mjd, freq_hz) of an image from its header alone (cheap); the centre
    in ICRS (deg)."""
    wcs, frame, (lng, lat) = _celestial_wcs(header, path)
    nx, ny = (int(header.get(f"NAXIS{a}", 0)) for a in sorted((lng, lat)))
    ra_c, dec_c = pixel_to_sky(wcs, frame, [(nx - 1) / 2.0], [(ny - 1) / 2.0])
    t, _ = _obs_time(header, mjd, path)
    tel = str(header.get("TELESCOP", "")).strip() or None
    return tel, float(ra_c[0]) % 360.0, float(dec_c[0]), t, frequency_hz(header, plane or 0)


def read_image(path, *, beam=None, mjd=None, check_unit=True, plane: int | None = None) -> RadioImage:
    """Read a FITS image (2-D, or 3/4-D: degenerate axes dropped, Stokes I chosen; a cube with several
    spectral planes needs ``plane``).

    Raises InputError with a clear message for unreadable files, no celestial WCS, missing or absurd beam
    (see ``check_beam``), missing or inconsistent time (see ``_obs_time``), a BUNIT other than Jy/beam (a
    missing BUNIT is taken as Jy/beam), or an image with no valid pixels. Pseudo-blank pixels (constant runs,
    near-zero fill) are set to NaN. ``beam`` (bmaj_deg, bmin_deg, bpa_deg) and ``mjd`` (observation mid-time)
    override the header.
    """
    path = Path(path)
    header = read_header(path)
    # everything that can be checked from the header is checked before the pixels are read
    wcs, frame, sky = _celestial_wcs(header, path)
    bmaj, bmin, bpa = _beam(header, beam, path)
    check_beam(bmaj, bmin, wcs, path, "--beam" if beam is not None else "BMAJ/BMIN")
    mjd, exposure = _obs_time(header, mjd, path)
    scale = jyb_scale(header, path) if check_unit else 1.0
    # integer pixels (BITPIX > 0) are quantised in steps of BSCALE (read before astropy rescales the header)
    quantum = abs(float(header.get("BSCALE", 1.0) or 1.0)) * scale if int(header.get("BITPIX", -32)) > 0 else 0.0
    data, header, plane = _sky_pixels(path, plane, sky, scale)
    if not np.isfinite(data).any():
        raise InputError(f"{path}: image has no finite pixels (all NaN/blank)")
    with np.errstate(invalid="ignore"):
        absurd = np.abs(data) > ABSURD_JYB
    beam_pix = bmin / pixel_scale_deg(wcs)[1]
    blank, _, floor = blank_and_noise(np.where(absurd, np.nan, data), beam_pix, quantum)
    blank |= absurd
    n_blank = int(blank.sum())
    if n_blank:
        data[blank] = np.nan
        if not np.isfinite(data).any():
            raise InputError(f"{path}: image has no valid pixels (all blank, constant or zero)")
    bkg = background_map(data, beam_pix)
    if bkg is not None:
        data -= bkg
    ny, nx = data.shape
    ra_c, dec_c = pixel_to_sky(wcs, frame, [(nx - 1) / 2.0], [(ny - 1) / 2.0])
    rms = robust_rms(data)
    if not (rms > 0):
        raise InputError(f"{path}: image rms is {rms}; the image is constant or empty")
    floor = min(floor, rms) if np.isfinite(floor) and floor > 0 else rms
    return RadioImage(path=path, data=data, wcs=wcs, bmaj_deg=bmaj, bmin_deg=bmin, bpa_deg=bpa, mjd=mjd,
                      exposure_s=exposure, freq_hz=frequency_hz(header, plane or 0), rms_jyb=rms,
                      ra_center_deg=float(ra_c[0]) % 360.0, dec_center_deg=float(dec_c[0]),
                      telescope=str(header.get("TELESCOP", "")).strip() or None, noise_floor_jyb=floor,
                      n_blank=n_blank, plane=plane, frame=frame,
                      background_jyb=float(np.nanmedian(bkg)) if bkg is not None else 0.0)


def read_sky_plane(path, plane: int = 0):
    """(2-D pixels in Jy/beam, celestial WCS, sky frame) of an image, cheaply (no blank search or rms): the
    Stokes I plane, ``plane`` of a cube (for display: cut-outs)."""
    header = read_header(path)
    wcs, frame, sky = _celestial_wcs(header, path)
    return _sky_pixels(path, plane, sky, jyb_scale(header, path))[0], wcs, frame


def _sky_pixels(path, plane, sky, scale: float):
    """(2-D Jy/beam pixels of the chosen plane, the pixels' HDU header, the plane taken) of an image whose sky
    axes are the FITS axes ``sky`` and whose BUNIT gives ``scale``."""
    data, header = _read_pixels(path)
    data, plane = _select_plane(data, header, path, plane, sky)
    if scale != 1.0:
        data *= scale
    return data, header, plane


def read_noise_map(path, shape) -> np.ndarray:
    """Read an rms/noise map matching an image's shape, in Jy/beam (BUNIT Jy/beam, mJy/beam or uJy/beam)."""
    data, header = _read_pixels(path)
    data *= jyb_scale(header, path, "noise map")
    while data.ndim > 2:
        data = data[0]
    if data.shape != tuple(shape):
        raise InputError(f"{path}: noise map shape {data.shape} differs from the image's {tuple(shape)}")
    if not (np.isfinite(data) & (data > 0)).any():
        raise InputError(f"{path}: noise map has no positive rms values (zero, negative or blank everywhere)")
    return data
