"""Imaging a calibrated tile: WSClean when on PATH, else casatasks.tclean; primary-beam correction;
FITS images (.image.fits, .pb.fits, .pbcor.fits) with BMAJ/BMIN/BPA and the observation time."""
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

PB_LIMIT = 0.1           # pixels with a mean primary-beam response below this are blanked in .pbcor


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


def run_wsclean(ms, prefix: Path, imsize: int, cell_arcsec: float, niter: int) -> Path:
    """WSClean, Stokes I from CORRECTED_DATA; returns the restored FITS image."""
    cmd = ["wsclean", "-quiet", "-name", str(prefix), "-size", str(imsize), str(imsize),
           "-scale", f"{cell_arcsec}asec", "-niter", str(niter), "-mgain", "0.8", "-auto-threshold", "3",
           "-clean-border", "5", "-weight", "briggs", "0", "-pol", "I", "-data-column", "CORRECTED_DATA",
           "-no-update-model-required", "-j", "1", str(ms)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    out = Path(f"{prefix}-image.fits")
    if res.returncode != 0 or not out.exists():
        raise EselakeError(f"wsclean failed ({res.returncode}): {res.stderr[-2000:] or res.stdout[-2000:]}")
    for extra in ("-dirty.fits", "-model.fits", "-residual.fits", "-psf.fits"):
        Path(f"{prefix}{extra}").unlink(missing_ok=True)
    return out


def run_tclean(ms, prefix: Path, imsize: int, cell_arcsec: float, niter: int) -> Path:
    """casatasks.tclean (hogbom, Briggs 0), exported to FITS; returns the restored FITS image."""
    ct = tasks()
    with in_folder(prefix.parent):
        for ext in (".image", ".model", ".residual", ".psf", ".pb", ".sumwt", ".mask"):
            shutil.rmtree(f"{prefix}{ext}", ignore_errors=True)
        ct.tclean(vis=str(ms), imagename=str(prefix), imsize=imsize, cell=f"{cell_arcsec}arcsec", specmode="mfs",
                  deconvolver="hogbom", weighting="briggs", robust=0.0, niter=niter, gain=0.1,
                  threshold="0Jy", nsigma=3.0, pblimit=-1e-6, datacolumn="corrected", stokes="I")
        out = Path(f"{prefix}-image.fits")
        ct.exportfits(imagename=f"{prefix}.image", fitsimage=str(out), overwrite=True, history=False)
        for ext in (".image", ".model", ".residual", ".psf", ".pb", ".sumwt", ".mask"):
            shutil.rmtree(f"{prefix}{ext}", ignore_errors=True)
    if not out.exists():
        raise EselakeError(f"tclean/exportfits wrote no image for {ms}")
    return out


def pb_correct(image_fits: Path, pbcor_fits: Path, pb_fits: Path, times_mjd, freqs_hz, dec_pointing_deg: float,
               exposure_s: float) -> Path:
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
    for path, arr, h in ((pb_fits, np.broadcast_to(pb, data.shape), pbh), (pbcor_fits, cor, hdr)):
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
        fits.PrimaryHDU(np.ascontiguousarray(arr), header=h).writeto(tmp, overwrite=True)
        tmp.replace(path)
    hdr_img = hdr.copy()
    with fits.open(image_fits, mode="update") as hdul:
        hdul[0].header.update({k: hdr_img[k] for k in ("DATE-OBS", "MJD-OBS", "EXPTIME", "TIMESYS")})
    return pbcor_fits


def image_tile(ms, out_prefix, dec_pointing_deg: float, *, fov_deg: float = 3.0, niter: int = 2000,
               imager: str = "auto") -> Path:
    """Image a calibrated MS; returns <prefix>.pbcor.fits (also writes <prefix>.image.fits and .pb.fits)."""
    ms = Path(ms)
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    use_wsclean = imager == "wsclean" or (imager == "auto" and wsclean_available())
    # WSClean leaves a 5% border uncleaned (-clean-border): widen its field so the border lies outside fov_deg
    imsize, cell = image_geometry(ms, fov_deg * (1.12 if use_wsclean else 1.0))
    work = prefix.with_name(f".{prefix.name}.{uuid.uuid4().hex[:6]}")
    raw = (run_wsclean if use_wsclean else run_tclean)(ms, work, imsize, cell, niter)
    image = prefix.with_name(prefix.name + ".image.fits")
    raw.replace(image)
    t, f = ms_times_freqs(ms)
    return pb_correct(image, prefix.with_name(prefix.name + ".pbcor.fits"), prefix.with_name(prefix.name + ".pb.fits"),
                      t, f, dec_pointing_deg, exposure_s=len(t) * dsa110.INTEGRATION_S)
