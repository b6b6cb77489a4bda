"""A real AMI-LA image (casacore-written, 4-D with a VOPT spectral axis and ALTRVAL): frequency, time,
identity, and fluxes and errors of sources injected into its real noise."""
import shutil

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from eselake.ingest.photometry.fitsimage import read_image
from eselake.ingest.photometry.kernel import FWHM_TO_SIGMA, beam_covariance_pix
from eselake.ingest.photometry.measure import measure_image
from tests.conftest import shared_file

AMI = "images/real/AMI-LA_GRB120422A-120429.fits"


def test_ami_header():
    img = read_image(shared_file(AMI))
    assert img.freq_hz == pytest.approx(16.505187505e9)            # VOPT axis at 0 with RESTFRQ/ALTRVAL
    assert img.telescope == "AMI-LA" and img.n_blank == 0
    assert img.mjd == pytest.approx(56046.7218, abs=1e-4)            # 2012-04-29T17:19:23
    assert 0.7 * img.rms_jyb < img.noise_floor_jyb <= img.rms_jyb < 2e-4


def test_injected_sources_in_real_noise(lake, tmp_path):
    """30 sources of 20 sigma injected into the real image with its (elliptical) beam: fluxes recovered
    and pulls of unit width on the image's real correlated noise."""
    src = shared_file(AMI)
    img = read_image(src)
    rng = np.random.default_rng(3)
    ny, nx = img.shape
    gx, gy = np.meshgrid(np.linspace(70, nx - 70, 6), np.linspace(70, ny - 70, 5))
    x, y = gx.ravel() + rng.uniform(-3, 3, 30), gy.ravel() + rng.uniform(-3, 3, 30)
    ra, dec = img.wcs.all_pix2world(x, y, 0)
    cov = beam_covariance_pix(img.bmaj_deg, img.bmin_deg, img.bpa_deg, img.jacobian_pix_per_deg(ra, dec))
    flux = 20 * img.rms_jyb * rng.uniform(0.8, 1.2, 30)
    with fits.open(src) as h:
        data = h[0].data.astype(np.float64)
        header = h[0].header.copy()
    yy, xx = np.mgrid[0:ny, 0:nx]
    added = np.zeros((ny, nx))
    for k in range(30):
        ci = np.linalg.inv(cov[k])
        dx, dy = xx - x[k], yy - y[k]
        added += flux[k] * np.exp(-0.5 * (ci[0, 0] * dx * dx + 2 * ci[0, 1] * dx * dy + ci[1, 1] * dy * dy))
    data[0, 0] += added
    path = tmp_path / "ami_injected.fits"
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path)
    sources = pa.table({"source_id": [f"S{k:02d}" for k in range(30)], "ra_deg": ra, "dec_deg": dec})
    base = measure_image(lake, src, sources=sources, write=False).measurements["peak_jyb"].to_numpy()
    res = measure_image(lake, path, sources=sources).measurements.sort("source_id")
    got, err = res["peak_jyb"].to_numpy(), res["peak_err_jyb"].to_numpy()
    # linear: the measured difference is the injected flux exactly; the totals scatter by the real noise
    assert np.allclose(got - base, flux, rtol=2e-3)
    pulls = (got - flux) / err
    print(f"AMI-LA, 30 injected sources: pull std {pulls.std():.2f}")
    assert abs(np.median(pulls)) < 0.5 and 0.7 < pulls.std() < 1.3, pulls.std()
    assert (res["flags"].to_numpy() == 0).all()
    # the same observation copied elsewhere is the same image
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(path, other / "x.fits")
    measure_image(lake, other / "x.fits", sources=sources)
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 1
    assert lake.sql("SELECT image_id FROM images")["image_id"][0].startswith("ami-la-20120429T")
