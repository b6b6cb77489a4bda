"""Imaging a calibrated tile: WSClean when on PATH, else casatasks.tclean; primary-beam correction;
FITS images (.image.fits, .pb.fits, .pbcor.fits, .rms.fits) with BMAJ/BMIN/BPA and the observation time.

Noise: a restored drift-scan snapshot is limited by deconvolution residuals of the sources (the sky drifts
through the primary beam during the tile, so no fixed model fits it), not by thermal noise; those residuals
are the same every day (same sky, same uv coverage) and do not scatter a lightcurve. The rms that does, the
thermal noise, is measured on a dirty image of a source-free polarisation (Stokes V, or Q = (XX - YY) / 2
for linear feeds without cross-hands) made with the same weighting; it is written as NOISE (Jy/beam at the
pointing centre) into the image headers, and ``<prefix>.rms.fits`` (NOISE / primary beam) is the noise map of
the .pbcor image (header keyword NOISEMAP), which forced photometry uses, with the per-epoch fractional
error FLUXSYS (``FLUX_SYS``) in quadrature.
"""
from __future__ import annotations

import shutil
import subprocess
import uuid
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from eselake.errors import EselakeError
from eselake.ingest.radio import dsa110
from eselake.ingest.radio.calibrate import mean_beam, ms_times_freqs
from eselake.ingest.radio.casa import in_folder, tasks, tools
from eselake.ingest.photometry.fitsimage import robust_rms

PB_LIMIT = 0.1           # pixels with a mean primary-beam response below this are blanked in .pbcor
# Per-epoch fractional flux error of a tile image beyond thermal noise (residual calibration and drift-scan
# deconvolution errors), written as FLUXSYS: measured through the chain on simulated tiles, where stable
# sources of 0.15-1.1 Jy then have pulls of std 1.0 (faint and bright alike); see the README.
FLUX_SYS = 0.0045


def image_geometry(ms, fov_deg: float, pixels_per_beam: float = 4.0) -> tuple[int, float]:
    """(imsize, cell_arcsec): cells sample the synthesized beam ``pixels_per_beam`` times across ``fov_deg``."""
    tb = tools().table()
    tb.open(str(ms))
    uvw = tb.getcol("UVW")
    tb.close()
    _, f = ms_times_freqs(ms)
    bmax = float(np.hypot(uvw[0], uvw[1]).max())
    beam_arcsec = np.rad2deg(dsa110.C_M_S / f.max() / bmax) * 3600.0
    cell = beam_arcsec / pixels_per_beam
    size = int(np.ceil(fov_deg * 3600.0 / cell))
    nice = [n for n in range(size, size + 200) if n % 2 == 0 and max(_factors(n)) <= 5]   # FFT-friendly for CASA
    return nice[0], float(cell)


def _factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def wsclean_available() -> bool:
    return shutil.which("wsclean") is not None


MAX_IMSIZE = 16384


def run_wsclean(ms, prefix: Path, imsize: int, cell_arcsec: float, niter: int, datacolumn: str = "corrected") -> Path:
    """WSClean, Stokes I from CORRECTED_DATA (or DATA); returns the restored FITS image."""
    cmd = ["wsclean", "-quiet", "-name", str(prefix), "-size", str(imsize), str(imsize),
           "-scale", f"{cell_arcsec}asec", "-niter", str(niter), "-mgain", "0.8", "-auto-threshold", "3",
           "-clean-border", "5", "-weight", "briggs", "0", "-pol", "I", "-data-column", _COLUMN[datacolumn],
           "-no-update-model-required", "-j", "1", str(ms)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    out = Path(f"{prefix}-image.fits")
    if res.returncode != 0 or not out.exists():
        raise EselakeError(f"wsclean failed ({res.returncode}): {res.stderr[-2000:] or res.stdout[-2000:]}")
    for extra in ("-dirty.fits", "-model.fits", "-residual.fits", "-psf.fits"):
        Path(f"{prefix}{extra}").unlink(missing_ok=True)
    return out


_COLUMN = {"corrected": "CORRECTED_DATA", "data": "DATA"}


def run_tclean(ms, prefix: Path, imsize: int, cell_arcsec: float, niter: int, datacolumn: str = "corrected") -> Path:
    """casatasks.tclean (hogbom, Briggs 0), exported to FITS; returns the restored FITS image."""
    ct = tasks()
    with in_folder(prefix.parent):
        for ext in (".image", ".model", ".residual", ".psf", ".pb", ".sumwt", ".mask"):
            shutil.rmtree(f"{prefix}{ext}", ignore_errors=True)
        ct.tclean(vis=str(ms), imagename=str(prefix), imsize=imsize, cell=f"{cell_arcsec}arcsec", specmode="mfs",
                  deconvolver="hogbom", weighting="briggs", robust=0.0, niter=niter, gain=0.1,
                  threshold="0Jy", nsigma=3.0, pblimit=-1e-6, datacolumn=datacolumn, stokes="I")
        out = Path(f"{prefix}-image.fits")
        ct.exportfits(imagename=f"{prefix}.image", fitsimage=str(out), overwrite=True, history=False)
        for ext in (".image", ".model", ".residual", ".psf", ".pb", ".sumwt", ".mask"):
            shutil.rmtree(f"{prefix}{ext}", ignore_errors=True)
    if not out.exists():
        raise EselakeError(f"tclean/exportfits wrote no image for {ms}")
    return out


def _source_free_stokes(ms) -> list[str]:
    """Stokes parameters that hold (almost) no sky signal and can be formed from the MS's correlations:
    V from RR/LL or from XY/YX, Q = (XX - YY) / 2 from linear feeds."""
    tb = tools().table()
    try:
        tb.open(f"{ms}/POLARIZATION")
        corr = set(int(c) for c in np.ravel(tb.getcol("CORR_TYPE")))
        tb.close()
    except RuntimeError:
        return ["V", "Q"]
    out = []
    if {5, 8} <= corr or {10, 11} <= corr:
        out.append("V")
    if {9, 12} <= corr:
        out.append("Q")
    return out


def matched_filter_noise(data: np.ndarray, beam_deg: tuple[float, float, float], cell_arcsec: float) -> float:
    """The noise level that, times the kernel's correlated-noise factor, gives the real scatter of forced
    photometry on a source-free image ``data``: the matched filter is applied on a grid of positions 2.5 beams
    apart over the inner half of the image, and the robust std of those amplitudes is divided by the factor
    the kernel assumes (beam-shaped correlation). The noise of a dirty image is correlated like its PSF, whose
    sidelobes make the real factor differ from the Gaussian model's by 10-20%."""
    from eselake.ingest.photometry.kernel import FWHM_TO_SIGMA, beam_covariance_pix, forced_photometry

    d = np.asarray(data, float).squeeze()
    ny, nx = d.shape
    cell = cell_arcsec / 3600.0
    jac = np.array([[-1.0 / cell, 0.0], [0.0, 1.0 / cell]])
    cov = beam_covariance_pix(beam_deg[0], beam_deg[1], beam_deg[2], jac)
    step = max(3.0, 2.5 * beam_deg[0] / cell)
    gx = np.arange(nx * 0.25, nx * 0.75, step)
    gy = np.arange(ny * 0.25, ny * 0.75, step)
    x, y = (a.ravel() for a in np.meshgrid(gx, gy))
    rms = robust_rms(d)
    if x.size < 30 or not rms > 0:
        return rms
    r = forced_photometry(d, x, y, cov, image_rms=rms, noise_map=np.full(d.shape, rms))
    amp = r.peak_jyb[np.isfinite(r.peak_jyb)]
    factor = np.nanmedian(r.peak_err_jyb / rms)
    mad = np.median(np.abs(amp - np.median(amp))) * 1.4826
    return float(mad / factor) if mad > 0 and factor > 0 else rms


def thermal_noise(ms, prefix: Path, imsize: int, cell_arcsec: float, use_wsclean: bool,
                  datacolumn: str = "corrected", beam_deg: tuple[float, float, float] | None = None) -> float | None:
    """Thermal rms (Jy/beam) of the tile: from a dirty Stokes V (else Q) image with the Stokes I imaging
    weights, the robust rms or, with the restoring beam ``beam_deg``, the matched-filter level
    (``matched_filter_noise``). None when neither Stokes can be formed (a single polarisation)."""
    for stokes in _source_free_stokes(ms):
        try:
            if use_wsclean:
                cmd = ["wsclean", "-quiet", "-name", str(prefix), "-size", str(imsize), str(imsize),
                       "-scale", f"{cell_arcsec}asec", "-niter", "0", "-weight", "briggs", "0", "-pol", stokes,
                       "-data-column", _COLUMN[datacolumn], "-no-update-model-required", "-no-dirty", "-j", "1",
                       str(ms)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                out = Path(f"{prefix}-image.fits")
                if res.returncode != 0 or not out.exists():
                    continue
                data = fits.getdata(out)
            else:
                ct = tasks()
                with in_folder(prefix.parent):
                    ct.tclean(vis=str(ms), imagename=str(prefix), imsize=imsize, cell=f"{cell_arcsec}arcsec",
                              specmode="mfs", weighting="briggs", robust=0.0, niter=0, pblimit=-1e-6,
                              datacolumn=datacolumn, stokes=stokes)
                    out = Path(f"{prefix}-noise.fits")
                    ct.exportfits(imagename=f"{prefix}.image", fitsimage=str(out), overwrite=True, history=False)
                data = fits.getdata(out)
        except Exception:  # noqa: BLE001 - CASA raises RuntimeError/AssertionError for an unavailable Stokes
            continue
        finally:
            for extra in ("-image.fits", "-dirty.fits", "-psf.fits", "-noise.fits"):
                Path(f"{prefix}{extra}").unlink(missing_ok=True)
            for ext in (".image", ".model", ".residual", ".psf", ".pb", ".sumwt", ".mask"):
                shutil.rmtree(f"{prefix}{ext}", ignore_errors=True)
        rms = robust_rms(np.asarray(data, float).squeeze())
        if beam_deg is not None and np.isfinite(rms) and rms > 0:
            rms = matched_filter_noise(data, beam_deg, cell_arcsec)
        if np.isfinite(rms) and rms > 0:
            return rms
    return None


def pb_correct(image_fits: Path, pbcor_fits: Path, pb_fits: Path, times_mjd, freqs_hz, dec_pointing_deg: float,
               exposure_s: float, noise_jyb: float | None = None) -> Path:
    """Divide by the tile's mean primary beam (blanking below PB_LIMIT); write .pb and .pbcor FITS with
    EXPTIME so that readers take DATE-OBS + EXPTIME/2 as the observation mid-time."""
    with fits.open(image_fits) as hdul:
        hdr = hdul[0].header.copy()
        data = hdul[0].data.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(hdr).celestial
    ny, nx = data.shape[-2:]
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = w.all_pix2world(xx, yy, 0)
    pb = mean_beam(ra, dec, times_mjd, freqs_hz, dec_pointing_deg).astype(np.float32)
    t0 = float(np.min(times_mjd)) - dsa110.INTEGRATION_S / 2 / 86400.0
    from astropy.time import Time
    hdr["DATE-OBS"] = Time(t0, format="mjd", scale="utc").isot
    hdr["MJD-OBS"] = t0
    hdr["EXPTIME"] = (exposure_s, "[s] duration; mid-time = DATE-OBS + EXPTIME/2")
    hdr["TIMESYS"] = "UTC"
    hdr["BUNIT"] = "Jy/beam"
    pbh = hdr.copy()
    pbh["BUNIT"] = ""
    cor = np.where(pb >= PB_LIMIT, data / np.where(pb > 0, pb, 1), np.nan).astype(np.float32)
    products = [(pb_fits, np.broadcast_to(pb, data.shape), pbh)]
    keys = ["DATE-OBS", "MJD-OBS", "EXPTIME", "TIMESYS"]
    if noise_jyb is not None:
        rms_fits = pbcor_fits.with_name(pbcor_fits.name.removesuffix(".pbcor.fits") + ".rms.fits")
        hdr["NOISE"] = (float(noise_jyb), "[Jy/beam] thermal rms, pointing centre")
        hdr["NOISEMAP"] = (rms_fits.name, "noise map of this image: NOISE / pb")
        rms_map = np.where(pb >= PB_LIMIT, noise_jyb / np.where(pb > 0, pb, 1), np.nan).astype(np.float32)
        rmsh = hdr.copy()
        del rmsh["NOISEMAP"]
        products.append((rms_fits, np.broadcast_to(rms_map, data.shape), rmsh))
        hdr["FLUXSYS"] = (FLUX_SYS, "per-epoch fractional flux error")
        keys += ["NOISE", "FLUXSYS"]
    products.append((pbcor_fits, cor, hdr))       # last: its presence means the tile's products are complete
    for path, arr, h in products:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
        fits.PrimaryHDU(np.ascontiguousarray(arr), header=h).writeto(tmp, overwrite=True)
        tmp.replace(path)
    hdr_img = hdr.copy()
    with fits.open(image_fits, mode="update") as hdul:
        hdul[0].header.update({k: hdr_img[k] for k in keys})
    return pbcor_fits


def stamp_image(image_fits: Path, times_mjd, exposure_s: float, noise_jyb: float | None,
                integration_s: float = dsa110.INTEGRATION_S) -> Path:
    """Observation time (DATE-OBS, MJD-OBS, EXPTIME) and thermal NOISE into an image without primary-beam
    correction (``image_tile(pbcor=False)``, other telescopes)."""
    from astropy.time import Time

    t0 = float(np.min(times_mjd)) - integration_s / 2 / 86400.0
    cards = {"DATE-OBS": Time(t0, format="mjd", scale="utc").isot, "MJD-OBS": t0,
             "EXPTIME": (exposure_s, "[s] mid-time = DATE-OBS + EXPTIME/2"), "TIMESYS": "UTC",
             "BUNIT": "Jy/beam"}
    if noise_jyb is not None:
        cards["NOISE"] = (float(noise_jyb), "[Jy/beam] thermal rms (Stokes V/Q)")
        cards["FLUXSYS"] = (FLUX_SYS, "per-epoch fractional flux error")
    with fits.open(image_fits, mode="update") as hdul:
        hdul[0].header.update(cards)
    return image_fits


def image_tile(ms, out_prefix, dec_pointing_deg: float, *, fov_deg: float = 3.0, niter: int = 2000,
               imager: str = "auto", noise_image: bool = True, pbcor: bool = True,
               datacolumn: str = "corrected") -> Path:
    """Image a calibrated MS; returns <prefix>.pbcor.fits (also writes <prefix>.image.fits, .pb.fits and,
    with ``noise_image``, the thermal noise map .rms.fits). With ``pbcor=False`` (data of another telescope)
    no DSA-110 primary-beam correction: returns <prefix>.image.fits. ``datacolumn``: corrected | data."""
    ms = Path(ms)
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    use_wsclean = imager == "wsclean" or (imager == "auto" and wsclean_available())
    # WSClean leaves a 5% border uncleaned (-clean-border): widen its field so the border lies outside fov_deg
    imsize, cell = image_geometry(ms, fov_deg * (1.12 if use_wsclean else 1.0))
    if imsize > MAX_IMSIZE:
        raise EselakeError(f"{ms}: {fov_deg} deg at {cell:.3g} arcsec cells needs {imsize}^2 pixels (limit "
                           f"{MAX_IMSIZE}); give a smaller --fov-deg")
    work = prefix.with_name(f".{prefix.name}.{uuid.uuid4().hex[:6]}")
    raw = (run_wsclean if use_wsclean else run_tclean)(ms, work, imsize, cell, niter, datacolumn)
    image = prefix.with_name(prefix.name + ".image.fits")
    raw.replace(image)
    hdr = fits.getheader(image)
    beam = (float(hdr["BMAJ"]), float(hdr["BMIN"]), float(hdr.get("BPA", 0.0))) if "BMAJ" in hdr else None
    noise = thermal_noise(ms, work.with_name(work.name + "-noise"), imsize, cell, use_wsclean, datacolumn,
                          beam) if noise_image else None
    t, f = ms_times_freqs(ms)
    if not pbcor:
        dt = _integration_s(ms)
        return stamp_image(image, t, float(np.ptp(t) * 86400.0 + dt), noise, dt)
    exposure = len(t) * dsa110.INTEGRATION_S
    return pb_correct(image, prefix.with_name(prefix.name + ".pbcor.fits"), prefix.with_name(prefix.name + ".pb.fits"),
                      t, f, dec_pointing_deg, exposure_s=exposure, noise_jyb=noise)  # noqa: E501


def _integration_s(ms) -> float:
    tb = tools().table()
    tb.open(str(ms))
    try:
        return float(np.median(tb.getcol("INTERVAL")))
    finally:
        tb.close()
