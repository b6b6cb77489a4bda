"""Header and pixel quirks of real-world images, reproduced synthetically: pseudo-blank regions, undersampled
and absurd beams, spectral axes (VOPT/VRAD/FELO, ALTRVAL, WCSAXES > NAXIS, cubes), time keywords."""
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from eselake.errors import InputError
from eselake.ingest.photometry.fitsimage import frequency_hz, read_image
from eselake.ingest.photometry.kernel import (FLAG_LOWRMS, FLAG_NAN, FLAG_UNDERSAMPLED, FLAG_UNRESOLVED,
                                              FWHM_TO_SIGMA, forced_photometry)
from eselake.sim.images import make_wcs, point_source_image, write_image

CELL = 10.0 / 3600


def _header(**cards):
    h = fits.Header()
    for k, v in cards.items():
        h[k.replace("_", "-") if k in ("DATE_OBS", "MJD_OBS") else k] = v
    return h


def _image(tmp_path, data=None, name="q.fits", beam_pix=4.0, extra=None, mjd=60500.3, **kw):
    shape = (200, 200)
    wcs = make_wcs(shape, 150.0, 40.0, CELL)
    if data is None:
        data = point_source_image(shape, [100.0], [100.0], [0.5], beam_pix, rms=1e-3)
    path = tmp_path / name
    write_image(path, data, wcs, bmaj_deg=beam_pix * CELL, bmin_deg=beam_pix * CELL, mjd=mjd, extra=extra, **kw)
    return path


# ------------------------------------------------------------------ pseudo-blank regions
def test_pseudo_blank_region_is_not_sky(tmp_path):
    """An outer region of ~1e-7 values (neither NaN nor 0) must not give 1.31 +- 0.0000002 Jy/beam."""
    rng = np.random.default_rng(4)
    shape = (300, 300)
    xs, ys = np.array([150.0, 262.0, 60.0]), np.array([150.0, 150.0, 150.0])
    data = point_source_image(shape, xs, ys, [0.5, 1.31, 0.2], 4.0, rms=1e-3, rng=rng)
    data[:, 260:] = 1e-7 * rng.standard_normal((300, 40))        # fill beyond the mosaic's footprint
    data[:, :8] = 0.0                                             # and a zero-filled strip
    path = tmp_path / "fill.fits"
    write_image(path, data, make_wcs(shape, 150.0, 40.0, CELL), bmaj_deg=4 * CELL, bmin_deg=4 * CELL)
    img = read_image(path)
    assert img.n_blank >= 300 * 48 and np.isnan(img.data[:, 270]).all() and np.isnan(img.data[:, 3]).all()
    assert 0.8e-3 < img.rms_jyb < 1.2e-3 and img.noise_floor_jyb > 0.5e-3
    x, y = np.array([150.0, 262.0, 60.0]), np.array([150.0, 150.0, 150.0])
    cov = np.eye(2) * (4 * FWHM_TO_SIGMA) ** 2
    r = forced_photometry(img.data, x, y, cov, image_rms=img.rms_jyb, rms_floor=img.noise_floor_jyb)
    assert r.flags[1] & FLAG_NAN                         # the kernel touches the blank region
    assert np.all(r.peak_err_jyb[np.isfinite(r.peak_err_jyb)] >= 0.5e-3)   # never below the noise floor
    assert np.nanmax(r.snr) < 2000
    assert r.flags[0] == 0 and abs(r.peak_jyb[0] - 0.5) < 0.01


def test_noise_floor_protects_annulus_and_noise_map():
    rng = np.random.default_rng(5)
    data = point_source_image((200, 200), [100.0], [100.0], [0.3], 4.0, rms=1e-3, rng=rng)
    cov = np.eye(2) * (4 * FWHM_TO_SIGMA) ** 2
    bad_map = np.full(data.shape, 1e-9)
    r = forced_photometry(data, [100.0], [100.0], cov, noise_map=bad_map, rms_floor=1e-3)
    assert r.peak_err_jyb[0] >= 1e-3 and r.flags[0] & FLAG_LOWRMS


# ------------------------------------------------------------------ beams
def _integrated_image(shape, x, y, flux, fwhm_pix, sub=20):
    """Point sources through a Gaussian beam, integrated over each pixel (as a sky image holds them)."""
    s = fwhm_pix * FWHM_TO_SIGMA
    fine = np.zeros((shape[0] * sub, shape[1] * sub))
    yy, xx = np.mgrid[0:shape[0] * sub, 0:shape[1] * sub]
    cx, cy = (xx + 0.5) / sub - 0.5, (yy + 0.5) / sub - 0.5
    for xi, yi, fi in zip(x, y, flux):
        fine += fi * np.exp(-0.5 * ((cx - xi) ** 2 + (cy - yi) ** 2) / s ** 2)
    return fine.reshape(shape[0], sub, shape[1], sub).mean(axis=(1, 3))


def test_undersampled_beam_pixel_integrated_kernel():
    """FWHM 0.44 px: no flux inflation off pixel centres (was x1.17 at 0.1 px, x2.7 at 0.25, x26 at 0.5);
    positions 0.3 px apart are still separated (with inflated errors), 0.1 px apart are unresolved (NaN and
    flagged, not +-1e6 Jy)."""
    fwhm = 0.44
    x = np.array([10.0, 20.1, 30.25, 40.5, 50.0, 50.3, 10.0, 10.1])
    y = np.array([10.0, 10.0, 10.0, 10.0, 30.0, 30.1, 30.0, 30.0])
    f = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0])
    img = _integrated_image((40, 64), x, y, f, fwhm) + 1e-4 * np.random.default_rng(0).standard_normal((40, 64))
    cov = np.eye(2) * (fwhm * FWHM_TO_SIGMA) ** 2
    r = forced_photometry(img, x, y, cov)
    assert np.allclose(r.peak_jyb[:6], f[:6], rtol=0.02), r.peak_jyb
    assert (r.flags[:6] & FLAG_UNDERSAMPLED).all()
    assert (r.peak_err_jyb[4:6] > 3 * r.peak_err_jyb[0]).all()    # the close pair: honestly larger errors
    assert (r.flags[6:] & FLAG_UNRESOLVED).all() and np.isnan(r.peak_jyb[6:]).all()
    assert not (r.flags[:6] & FLAG_UNRESOLVED).any()


def test_beam_sanity_bounds(tmp_path):
    path = _image(tmp_path, beam_pix=4.0)
    with fits.open(path, mode="update") as h:
        h[0].header["BMAJ"] = h[0].header["BMIN"] = 40.0          # arcsec written where deg are expected
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"q\.fits: BMAJ/BMIN = 40 deg is .* pixels.*arcsec given"):
        read_image(path)
    assert time.perf_counter() - t0 < 5                            # refused before allocating anything
    with fits.open(path, mode="update") as h:
        h[0].header["BMAJ"] = h[0].header["BMIN"] = 0.3 * CELL    # a beam smaller than a pixel
    with pytest.raises(InputError, match=r"q\.fits: BMAJ/BMIN minor axis .* less than 0.5 pixel"):
        read_image(path)
    with pytest.raises(InputError, match="--beam"):
        read_image(path, beam=(40.0, 40.0, 0.0))


# ------------------------------------------------------------------ frequency
@pytest.mark.parametrize("ctype,crval,cunit,rest,expect", [
    ("VOPT", -35_672_000.0, "m/s", 13.882e9, 13.882e9 / (1 - 35_672_000.0 / 299_792_458.0)),
    ("FELO-HEL", -35_672.0, "km/s", 13.882e9, 13.882e9 / (1 - 35_672_000.0 / 299_792_458.0)),
    ("VRAD", 1000.0, "m/s", 1.42e9, 1.42e9 * (1 - 1000.0 / 299_792_458.0)),
    ("FREQ", 1.405e9, "Hz", None, 1.405e9),
])
def test_frequency_from_any_spectral_axis(ctype, crval, cunit, rest, expect):
    h = _header(NAXIS=4, CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CTYPE3="STOKES", CTYPE4=ctype, CRVAL4=crval,
                CRPIX4=1.0, CDELT4=1.0, CUNIT4=cunit)
    if rest:
        h["RESTFRQ"] = rest
    assert frequency_hz(h) == pytest.approx(expect, rel=1e-9)


def test_frequency_altrval_and_wcsaxes():
    # an AMI-LA-style VOPT axis without a usable RESTFRQ: ALTRVAL is the frequency of ALTRPIX
    h = _header(NAXIS=4, CTYPE4="VOPT", CRVAL4=0.0, CRPIX4=1.0, CDELT4=-2.5e7, ALTRVAL=15.756e9, ALTRPIX=1.0)
    assert frequency_hz(h) == pytest.approx(15.756e9)
    # a WSClean cutout: NAXIS = 2 but WCSAXES = 4 with the frequency on axis 3
    h = _header(NAXIS=2, WCSAXES=4, CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CTYPE3="FREQ", CRVAL3=143.65e6,
                CRPIX3=1.0, CDELT3=1e6, CTYPE4="STOKES", CRVAL4=1.0)
    assert frequency_hz(h) == pytest.approx(143.65e6)


def test_wcsaxes_cutout_reads_frequency(tmp_path):
    path = _image(tmp_path, extra={"WCSAXES": 4, "CTYPE3": "FREQ", "CRVAL3": 143.65e6, "CRPIX3": 1.0,
                                   "CDELT3": 1e6, "CUNIT3": "Hz", "CTYPE4": "STOKES", "CRVAL4": 1.0,
                                   "CRPIX4": 1.0, "CDELT4": 1.0})
    with fits.open(path, mode="update") as h:
        del h[0].header["RESTFRQ"]
    assert read_image(path).freq_hz == pytest.approx(143.65e6)


def test_cube_planes_measured_or_refused(tmp_path):
    shape = (120, 120)
    planes = np.stack([point_source_image(shape, [60.0], [60.0], [0.1 * (k + 1)], 4.0, rms=1e-3,
                                          rng=np.random.default_rng(k)) for k in range(4)])
    wcs = make_wcs(shape, 150.0, 40.0, CELL)
    hdr = wcs.to_header()
    hdr.update({"CTYPE3": "FREQ", "CRVAL3": 1.40e9, "CRPIX3": 3.0, "CDELT3": 1e7, "CUNIT3": "Hz",
                "CTYPE4": "STOKES", "CRVAL4": 1.0, "CRPIX4": 1.0, "CDELT4": 1.0, "BMAJ": 4 * CELL,
                "BMIN": 4 * CELL, "BPA": 0.0, "BUNIT": "JY/BEAM", "DATE-OBS": "2024-06-01T00:00:00"})
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(planes[None].astype(np.float32), header=hdr).writeto(path)
    with pytest.raises(InputError, match=r"cube\.fits: a cube with 4 planes on axis 3 \(FREQ\).*plane=K"):
        read_image(path)
    img = read_image(path, plane=3)
    assert img.freq_hz == pytest.approx(1.41e9)                   # CRPIX3 = 3: plane 3 is CRVAL3 + CDELT3
    assert img.data[60, 60] == pytest.approx(0.4, abs=0.01)
    assert read_image(path, plane=0).freq_hz == pytest.approx(1.38e9)
    with pytest.raises(InputError, match="plane 7 is outside"):
        read_image(path, plane=7)


# ------------------------------------------------------------------ time
def test_time_sanity(tmp_path):
    path = _image(tmp_path, mjd=Time("2090-01-01").mjd)
    with pytest.raises(InputError, match=r"q\.fits: observation time 2090-01-01.*in the future"):
        read_image(path)
    assert read_image(path, mjd=60000.0).mjd == 60000.0            # an explicit time overrides the header
    path = _image(tmp_path, mjd=60500.3, extra={"MJD-OBS": 60501.3})
    with pytest.raises(InputError, match="MJD-OBS = 60501.3 .* contradicts DATE-OBS"):
        read_image(path)
    path = _image(tmp_path, mjd=60500.3, exptime_s=300_000.0)     # 300 s written in ms
    with pytest.raises(InputError, match=r"EXPTIME = 300000.0 s .*milliseconds.*1\.74 days"):
        read_image(path)
    path = _image(tmp_path, mjd=60500.3, extra={"EXPTIME": (300_000.0, "[ms] exposure")})
    assert read_image(path).exposure_s == pytest.approx(300.0)


def test_matched_filter_noise_level():
    """The chain's thermal-noise level: on beam-correlated noise it is the rms (the kernel's factor is exact
    there); on noise correlated more broadly than the beam it is larger, so that errors still match."""
    from eselake.ingest.radio.image import matched_filter_noise
    from eselake.sim.images import correlated_noise

    rng = np.random.default_rng(8)
    beam = (4 * CELL, 4 * CELL, 0.0)
    sigma = 4 * FWHM_TO_SIGMA
    same = correlated_noise((600, 600), 1e-3, sigma, rng)
    assert matched_filter_noise(same, beam, CELL * 3600) == pytest.approx(1e-3, rel=0.08)
    broad = correlated_noise((600, 600), 1e-3, 2 * sigma, rng)
    assert matched_filter_noise(broad, beam, CELL * 3600) > 1.3e-3
