"""Synthetic FITS images with known truth: point sources convolved with a Gaussian beam in beam-correlated
noise. Used by the tests and benchmarks (and handy for checking a photometry set-up)."""
from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from scipy.ndimage import gaussian_filter

from eselake.ingest.photometry.kernel import FWHM_TO_SIGMA


def correlated_noise(shape, rms, beam_sigma_pix, rng) -> np.ndarray:
    """Gaussian noise of the given rms whose correlation function is the (circular) beam shape."""
    white = rng.standard_normal(shape)
    sm = gaussian_filter(white, beam_sigma_pix / np.sqrt(2.0), mode="wrap")
    return sm * (rms / sm.std())


def make_wcs(shape, ra_deg, dec_deg, cell_deg, proj="SIN") -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = [f"RA---{proj}", f"DEC--{proj}"]
    w.wcs.crval = [ra_deg, dec_deg]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-cell_deg, cell_deg]
    return w


def point_source_image(shape, x, y, peak_jyb, beam_fwhm_pix, *, rms=1e-3, rng=None,
                       bmin_fwhm_pix=None, bpa_deg=0.0) -> np.ndarray:
    """Image (Jy/beam) of point sources at pixel (x, y) with peak fluxes, plus beam-correlated noise."""
    rng = rng or np.random.default_rng(0)
    ny, nx = shape
    smaj = beam_fwhm_pix * FWHM_TO_SIGMA
    smin = (bmin_fwhm_pix or beam_fwhm_pix) * FWHM_TO_SIGMA
    img = correlated_noise(shape, rms, np.sqrt(smaj * smin), rng) if rms > 0 else np.zeros(shape)
    h = int(np.ceil(6 * smaj))
    pa = np.deg2rad(bpa_deg)
    # major axis along north (+y) rotated towards east (-x for standard RA axis)
    ex, ey = -np.sin(pa), np.cos(pa)
    for xi, yi, fi in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(peak_jyb)):
        x0, y0 = int(round(xi)), int(round(yi))
        ys, xs = np.mgrid[max(0, y0 - h):min(ny, y0 + h + 1), max(0, x0 - h):min(nx, x0 + h + 1)]
        dx, dy = xs - xi, ys - yi
        a = dx * ex + dy * ey
        b = dx * ey - dy * ex
        img[ys, xs] += fi * np.exp(-0.5 * (a * a / smaj**2 + b * b / smin**2))
    return img


def write_image(path, data, wcs: WCS, *, bmaj_deg, bmin_deg, bpa_deg=0.0, mjd=60000.0, freq_hz=1.405e9,
                four_d=False, exptime_s=None, bunit="JY/BEAM", extra=None) -> None:
    """Write a CASA/WSClean-like FITS image (2-D or 4-D RA, DEC, FREQ, STOKES)."""
    hdr = wcs.to_header()
    if four_d:
        w4 = WCS(naxis=4)
        w4.wcs.ctype = list(wcs.wcs.ctype) + ["FREQ", "STOKES"]
        w4.wcs.crval = list(wcs.wcs.crval) + [freq_hz, 1.0]
        w4.wcs.crpix = list(wcs.wcs.crpix) + [1.0, 1.0]
        w4.wcs.cdelt = list(wcs.wcs.cdelt) + [1e6, 1.0]
        w4.wcs.cunit = ["deg", "deg", "Hz", ""]
        hdr = w4.to_header()
        data = data[None, None, :, :]
    else:
        hdr["RESTFRQ"] = freq_hz
    hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = bmaj_deg, bmin_deg, bpa_deg
    hdr["BUNIT"] = bunit
    hdr["DATE-OBS"] = Time(mjd, format="mjd", scale="utc").isot
    hdr["TIMESYS"] = "UTC"
    if exptime_s:
        hdr["EXPTIME"] = exptime_s
    for k, v in (extra or {}).items():
        hdr[k] = v
    fits.PrimaryHDU(data.astype(np.float32), header=hdr).writeto(path, overwrite=True)
