"""Forced photometry speed: eselake's vectorised kernel vs a per-source iterative Gaussian fit (the
approach of askap-vast/forced_phot) vs just reading the FITS file, on one 4096x4096 image.

    python benchmarks/photometry.py [--sources 1500] [--size 4096] [--fit-subset 200]

The per-source fits are timed on --fit-subset sources and extrapolated to all (labelled as such); the FITS read
and the kernel are the best of three runs (the first run also pays for imports and caches).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

from eselake.ingest.photometry.fitsimage import read_image
from eselake.ingest.photometry.kernel import FWHM_TO_SIGMA, beam_covariance_pix, forced_photometry
from eselake.sim.images import make_wcs, point_source_image, write_image


def gaussian_fit_one(data, x, y, sigma, box):
    """One source: iterative least-squares fit of a fixed-shape Gaussian (amplitude + offset)."""
    ix, iy = int(round(x)), int(round(y))
    sub = data[iy - box:iy + box + 1, ix - box:ix + box + 1]
    yy, xx = np.mgrid[iy - box:iy + box + 1, ix - box:ix + box + 1]

    def model(_, a, c):
        return (a * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2) + c).ravel()

    popt, pcov = curve_fit(model, None, sub.ravel(), p0=[sub.max(), 0.0])
    return popt[0], np.sqrt(pcov[0, 0])


def astropy_fit_one(data, x, y, sigma, box, fitter):
    """One source: astropy.modeling Gaussian2D with fixed position and shape (as forced_phot fits)."""
    from astropy.modeling import models
    ix, iy = int(round(x)), int(round(y))
    sub = data[iy - box:iy + box + 1, ix - box:ix + box + 1]
    yy, xx = np.mgrid[iy - box:iy + box + 1, ix - box:ix + box + 1]
    g = models.Gaussian2D(sub.max(), x, y, sigma, sigma, 0.0,
                          fixed={"x_mean": True, "y_mean": True, "x_stddev": True, "y_stddev": True,
                                 "theta": True})
    return fitter(g, xx, yy, sub).amplitude.value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=1500)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--fit-subset", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.size, args.size)
    cell, fwhm_pix = 3.0 / 3600, 5.0
    x = rng.uniform(30, args.size - 30, args.sources)
    y = rng.uniform(30, args.size - 30, args.sources)
    flux = rng.uniform(0.005, 0.5, args.sources)
    data = point_source_image(shape, x, y, flux, fwhm_pix, rms=1e-3, rng=rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.fits"
        wcs = make_wcs(shape, 150.0, 40.0, cell)
        write_image(path, data, wcs, bmaj_deg=fwhm_pix * cell, bmin_deg=fwhm_pix * cell, mjd=60000.0)
        ra, dec = wcs.all_pix2world(x, y, 0)

        def best_of(n, fn):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t0)
            return min(times), out

        t_read, img = best_of(3, lambda: read_image(path))

        def ours():
            px, py = img.world_to_pixel(ra, dec)
            cov = beam_covariance_pix(img.bmaj_deg, img.bmin_deg, img.bpa_deg, img.jacobian_pix_per_deg(ra, dec))
            return px, py, forced_photometry(img.data, px, py, cov, image_rms=img.rms_jyb)

        t_ours, (px, py, res) = best_of(3, ours)

        sub = min(args.fit_subset, args.sources)
        sigma = fwhm_pix * FWHM_TO_SIGMA
        t0 = time.perf_counter()
        fitted = np.array([gaussian_fit_one(img.data, px[i], py[i], sigma, int(3 * fwhm_pix))[0] for i in range(sub)])
        t_fit = (time.perf_counter() - t0) * args.sources / sub

        from astropy.modeling import fitting
        fitter = fitting.LevMarLSQFitter()
        t0 = time.perf_counter()
        fitted_ap = np.array([astropy_fit_one(img.data, px[i], py[i], sigma, int(3 * fwhm_pix), fitter)
                              for i in range(sub)])
        t_ap = (time.perf_counter() - t0) * args.sources / sub

    ok = (res.flags & 4) == 0
    print(f"forced photometry, {args.sources} sources on a {args.size}x{args.size} image")
    print(f"  read FITS + metadata (rms)        : {t_read:8.3f} s")
    print(f"  eselake kernel (all sources)      : {t_ours:8.3f} s   median |dF/F| = "
          f"{np.median(np.abs(res.peak_jyb[ok] - flux[ok]) / flux[ok]):.4f}")
    print(f"  per-source Gaussian fit (curve_fit, timed on {sub}, extrapolated): {t_fit:8.3f} s   "
          f"median |dF/F| = {np.median(np.abs(fitted - flux[:sub]) / flux[:sub]):.4f}")
    print(f"  per-source astropy.modeling fit (LevMarLSQ, as forced_phot; timed on {sub}, extrapolated): "
          f"{t_ap:8.3f} s   median |dF/F| = {np.median(np.abs(fitted_ap - flux[:sub]) / flux[:sub]):.4f}")
    print(f"  ratio curve_fit / eselake         : {t_fit / t_ours:8.1f} x")
    print(f"  ratio astropy fit / eselake       : {t_ap / t_ours:8.1f} x")
    print(f"  ratio eselake / FITS read         : {t_ours / t_read:8.2f} x")


if __name__ == "__main__":
    main()
