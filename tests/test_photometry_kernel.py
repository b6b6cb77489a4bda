"""The forced-photometry kernel on images with known truth."""
import numpy as np
import pytest

from eselake.ingest.photometry.kernel import (FLAG_BLENDED, FLAG_EDGE, FLAG_NAN, FLAG_OUTSIDE, FWHM_TO_SIGMA,
                                       forced_photometry)
from eselake.sim.images import point_source_image

FWHM = 5.0
COV = np.eye(2) * (FWHM * FWHM_TO_SIGMA) ** 2


def _field(n, shape=(1024, 1024), lo=0.005, hi=0.2, seed=1, margin=30, min_sep=20.0):
    rng = np.random.default_rng(seed)
    xy = []
    while len(xy) < n:
        p = rng.uniform(margin, shape[0] - margin, 2)
        if all(np.hypot(*(p - q)) > min_sep for q in xy):
            xy.append(p)
    xy = np.array(xy)
    flux = rng.uniform(lo, hi, n)
    return xy[:, 0], xy[:, 1], flux, point_source_image(shape, xy[:, 0], xy[:, 1], flux, FWHM, rms=1e-3, rng=rng)


def test_high_snr_flux_unbiased():
    x, y, f, img = _field(150, lo=0.1, hi=0.5)
    r = forced_photometry(img, x, y, COV)
    bias = np.median((r.peak_jyb - f) / f)
    assert abs(bias) < 0.01
    assert np.all(np.abs(r.peak_jyb - f) / f < 0.05)
    assert (r.flags == 0).all()


def test_pull_distribution_in_correlated_noise():
    pulls = []
    for seed in range(3):
        x, y, f, img = _field(250, lo=0.002, hi=0.05, seed=seed)
        r = forced_photometry(img, x, y, COV)
        pulls.append((r.peak_jyb - f) / r.peak_err_jyb)
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 0.15
    assert abs(pulls.std() - 1.0) < 0.15
    # the white-noise error would be far too small for this noise: its pulls must be much wider
    r_white = forced_photometry(img, x, y, COV, noise_corr="white")
    assert ((r_white.peak_jyb - f) / r_white.peak_err_jyb).std() > 1.5


def test_blended_pair_fitted_jointly():
    rng = np.random.default_rng(7)
    shape = (256, 256)
    x = np.array([100.0, 105.0, 180.0])      # 1 FWHM apart: a blend, plus an isolated source
    y = np.array([120.0, 121.0, 60.0])
    f = np.array([0.10, 0.05, 0.08])
    pulls = []
    for _ in range(30):
        img = point_source_image(shape, x, y, f, FWHM, rms=1e-3, rng=rng)
        r = forced_photometry(img, x, y, COV)
        assert (r.flags[:2] & FLAG_BLENDED).all() and not r.flags[2] & FLAG_BLENDED
        assert r.blend_group[0] == r.blend_group[1] >= 0 and r.blend_group[2] == -1
        pulls.append((r.peak_jyb - f) / r.peak_err_jyb)
        # a blend's errors are inflated over the isolated source's
        assert r.peak_err_jyb[0] / r.local_rms_jyb[0] > r.peak_err_jyb[2] / r.local_rms_jyb[2]
    pulls = np.array(pulls)
    assert np.all(np.abs(pulls.mean(axis=0)) < 0.6)
    assert np.all(np.abs(pulls.std(axis=0) - 1.0) < 0.4)
    img = point_source_image(shape, x, y, f, FWHM, rms=0.0)
    r = forced_photometry(img, x, y, COV)
    np.testing.assert_allclose(r.peak_jyb, f, rtol=1e-3)
    # the matched filter alone would add the neighbour's light
    single = forced_photometry(img, x[:1], y[:1], COV)
    assert single.peak_jyb[0] > 0.105


def test_edge_nan_and_outside_flags():
    shape = (200, 200)
    x = np.array([1.0, 100.0, 150.0, 250.0])
    y = np.array([100.0, 100.0, 50.0, 100.0])
    f = np.array([0.1, 0.1, 0.1, 0.1])
    img = point_source_image(shape, x[:3], y[:3], f[:3], FWHM, rms=0.0)
    img[98:103, 97:104] = np.nan          # blank the core of source 1
    img[52:60, 150:160] = np.nan          # blank part of the wing of source 2
    r = forced_photometry(img, x, y, COV, image_rms=1e-3)
    assert r.flags[0] & FLAG_EDGE and np.isclose(r.peak_jyb[0], 0.1, rtol=0.02)
    assert r.flags[1] & FLAG_NAN and np.isnan(r.peak_jyb[1])
    assert r.flags[2] & FLAG_NAN and np.isclose(r.peak_jyb[2], 0.1, rtol=0.02)
    assert r.flags[3] & FLAG_OUTSIDE and np.isnan(r.peak_jyb[3])


def test_elliptical_rotated_beam_and_noise_map():
    from eselake.ingest.photometry.kernel import beam_covariance_pix
    shape = (300, 300)
    rng = np.random.default_rng(3)
    x = rng.uniform(30, 270, 40)
    y = rng.uniform(30, 270, 40)
    f = rng.uniform(0.05, 0.3, 40)
    img = point_source_image(shape, x, y, f, 8.0, bmin_fwhm_pix=4.0, bpa_deg=35.0, rms=0.0)
    # standard image: x grows westwards, so east is -x; 1 pixel = 1 unit
    jac = np.array([[-1.0, 0.0], [0.0, 1.0]])
    cov = beam_covariance_pix(8.0, 4.0, 35.0, jac)
    r = forced_photometry(img, x, y, cov, noise_map=np.full(shape, 2e-3))
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) + np.eye(x.size) * 1e9
    alone = d.min(axis=1) > 3 * 8.0          # no neighbour within 3 beams: the matched filter is exact
    assert alone.sum() >= 10
    np.testing.assert_allclose(r.peak_jyb[alone], f[alone], rtol=2e-3)
    assert np.allclose(r.local_rms_jyb, 2e-3)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        forced_photometry(np.zeros((3, 3, 3)), [1.0], [1.0], COV)
    with pytest.raises(ValueError):
        forced_photometry(np.zeros((30, 30)), [1.0], [1.0], COV, noise_map=np.ones((10, 10)))
