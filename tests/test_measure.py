"""measure_image and the photometry CLI on FITS images with known truth."""
import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from click.testing import CliRunner

from eselake.cli import main
from eselake.errors import InputError
from eselake.ingest.catalogs.catalog import iau_names
from eselake.ingest.photometry.measure import is_sky_image, measure_image
from eselake.sim.images import make_wcs, point_source_image, write_image
from tests.conftest import shared_file

CELL = 10.0 / 3600        # 10 arcsec pixels
BEAM = 40.0 / 3600        # 40 arcsec beam (4 pixels)


def make_field(tmp_path, name="img.fits", *, proj="SIN", four_d=False, n=30, mjd=60500.3, seed=0,
               ra0=150.0, dec0=40.0, header_beam=True, scale=1.0, shape=(400, 400)):
    rng = np.random.default_rng(seed)
    wcs = make_wcs(shape, ra0, dec0, CELL, proj)
    x = rng.uniform(25, shape[1] - 25, n)
    y = rng.uniform(25, shape[0] - 25, n)
    ra, dec = wcs.all_pix2world(x, y, 0)
    flux = rng.uniform(0.02, 0.5, n)
    data = point_source_image(shape, x, y, flux * scale, BEAM / CELL, rms=1e-3, rng=rng)
    path = tmp_path / name
    write_image(path, data, wcs, bmaj_deg=BEAM, bmin_deg=BEAM, mjd=mjd, four_d=four_d, exptime_s=300.0)
    if not header_beam:
        with fits.open(path, mode="update") as h:
            for k in ("BMAJ", "BMIN", "BPA"):
                del h[0].header[k]
    cat = pa.table({"source_id": iau_names("NVSS", ra, dec).tolist(), "ra_deg": ra, "dec_deg": dec,
                    "flux_mjy": flux * 1000, "name": iau_names("NVSS", ra, dec).tolist()})
    return path, cat, flux


@pytest.mark.parametrize("proj,four_d", [("SIN", False), ("TAN", True)])
def test_measure_image_recovers_fluxes(lake, tmp_path, proj, four_d):
    path, cat, flux = make_field(tmp_path, proj=proj, four_d=four_d)
    lake.write_catalog("nvss", cat)
    res = measure_image(lake, path, catalog="nvss")
    assert res.n_sources == 30
    df = lake.sql("SELECT p.source_id, p.peak_jyb, p.peak_err_jyb, p.mjd, c.flux_mjy, p.flags "
                  "FROM photometry p JOIN catalog_sources c USING (source_id)")
    assert df.height == 30
    good = df.filter(df["flags"] == 0)
    rel = (good["peak_jyb"] - good["flux_mjy"] / 1000) / (good["flux_mjy"] / 1000)
    assert rel.abs().max() < 0.05 and abs(rel.median()) < 0.01
    # mid-time: DATE-OBS + half of EXPTIME
    assert np.isclose(df["mjd"][0], 60500.3 + 150.0 / 86400, atol=1e-7)
    # re-measuring replaces the rows
    measure_image(lake, path, catalog="nvss")
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 30


def test_min_flux_and_mosaic_radius(lake, tmp_path):
    path, cat, flux = make_field(tmp_path)
    lake.write_catalog("nvss", cat)
    assert measure_image(lake, path, min_flux_mjy=250).n_sources == int((flux * 1000 >= 250).sum())
    r = measure_image(lake, path, radius_deg=0.2, kind="mosaic", write=False)
    sep = r.measurements["sep_from_center_deg"]
    assert r.n_sources > 0 and sep.max() <= 0.2


def test_missing_beam_is_a_clear_error(lake, tmp_path):
    path, cat, flux = make_field(tmp_path, header_beam=False)
    lake.write_catalog("nvss", cat)
    with pytest.raises(InputError, match="no restoring beam"):
        measure_image(lake, path)
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 0
    assert measure_image(lake, path, beam=(BEAM, BEAM, 0.0)).n_sources == 30


def test_catalogue_not_loaded(lake, tmp_path):
    path, _, _ = make_field(tmp_path)
    with pytest.raises(Exception, match="not loaded"):
        measure_image(lake, path)


def test_sky_image_filter():
    from pathlib import Path
    good = ["2025-01-01T00:00:00.pbcor.fits", "tile-image.fits", "x.image.fits", "mosaic_v2.fits"]
    bad = ["x.psf.fits", "x-residual.fits", "x.model.fits", "x.pb.fits", "x-psf.fits", "x.sumwt.fits",
           "x.txt"]
    assert all(is_sky_image(Path(n)) for n in good)
    assert not any(is_sky_image(Path(n)) for n in bad)


def test_cli_nvss_batch_and_bad_image(lake, tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    cat = None
    for k in range(4):
        path, cat, _ = make_field(imgs, f"epoch{k}.fits", mjd=60500.3 + k, scale=1.0 + 0.01 * k)
    (imgs / "epoch0.psf.fits").write_bytes((imgs / "epoch0.fits").read_bytes())
    (imgs / "broken.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    src = tmp_path / "sources.csv"
    src.write_text("name,ra,dec\n" + "\n".join(f"{s},{r},{d}" for s, r, d in zip(
        cat.column("source_id").to_pylist(), cat.column("ra_deg").to_pylist(), cat.column("dec_deg").to_pylist())))
    runner = CliRunner()
    out_csv = tmp_path / "out.csv"
    res = runner.invoke(main, ["--lake", str(lake.path), "photometry", "batch", "--source-list", str(src),
                               "--image-dir", str(imgs), "--workers", "2", "-o", str(out_csv)])
    assert res.exit_code == 1, res.output                 # one image failed...
    assert "broken.fits" in res.output.replace("\n", "") and "4 images measured" in res.output
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 4   # ...the others are all in
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 120
    assert out_csv.read_text().count("\n") == 121
    res = runner.invoke(main, ["--lake", str(lake.path), "photometry", "batch", "--source-list", str(src),
                               "--image-dir", str(imgs)])
    assert "0 images measured, 4 already in the lake" in res.output
    # single image with the NVSS catalogue
    lake.write_catalog("nvss", cat)
    res = runner.invoke(main, ["--lake", str(lake.path), "photometry", "nvss", "--fits",
                               str(imgs / "epoch1.fits"), "--min-mjy", "10"])
    assert res.exit_code == 0 and "measured 30 sources" in res.output
    res = runner.invoke(main, ["--lake", str(lake.path), "photometry", "nvss", "--fits", str(imgs / "broken.fits")])
    assert res.exit_code == 2 and "not a readable FITS" in res.output


def test_aegean_synthetic_grid(lake):
    """Aegean's synthetic image: a 10x10 grid of point sources with peaks (k+1)*0.5 Jy/beam."""
    from eselake.ingest.photometry.fitsimage import read_image
    path = shared_file("images/aegean/synthetic_test.fits")
    img = read_image(path, mjd=60000.0)
    # locate the grid: quadratic peak positions of the bright sources, then a regular grid fitted to them
    r, c = np.divmod(np.arange(100), 10)
    x0 = 45.989 + 45.008 * c
    y0 = 26.134 + 18.670 * r
    d = img.data
    xs, ys = [], []
    for xi, yi in zip(np.rint(x0).astype(int), np.rint(y0).astype(int)):
        sub = d[yi - 2:yi + 3, xi - 2:xi + 3]
        j, i = np.unravel_index(np.argmax(sub), sub.shape)
        yy, xx = yi - 2 + j, xi - 2 + i
        fx, fy = d[yy, xx - 1:xx + 2], d[yy - 1:yy + 2, xx]
        xs.append(xx + 0.5 * (fx[0] - fx[2]) / (fx[0] - 2 * fx[1] + fx[2]))
        ys.append(yy + 0.5 * (fy[0] - fy[2]) / (fy[0] - 2 * fy[1] + fy[2]))
    # the grid's first row (r = 0) is empty: source k = 10 c + r - 1 has peak (k + 1) * 0.5 Jy/beam, on the
    # image's 0.25 Jy/beam pedestal (which the reading subtracts: unsubtracted it would add 2 x 0.25 Jy)
    truth = (c * 10 + r) * 0.5
    bright = (truth >= 5.0) & (r >= 1)
    ra, dec = img.wcs.all_pix2world(np.array(xs)[bright], np.array(ys)[bright], 0)
    sources = pa.table({"source_id": [f"G{k:02d}" for k in np.flatnonzero(bright)], "ra_deg": ra, "dec_deg": dec})
    res = measure_image(lake, path, sources=sources, mjd=60000.0)
    got = res.measurements.sort("source_id")["peak_jyb"].to_numpy()
    rel = (got - truth[bright]) / truth[bright]
    assert bright.sum() > 70
    assert np.median(np.abs(rel)) < 0.005 and np.abs(rel).max() < 0.03


def test_vast_epochs_with_noise_maps(lake):
    """Four ASKAP-like epochs (4-D CASA images) measured with their noise maps."""
    from eselake.ingest.photometry.fitsimage import read_image
    paths = [shared_file(f"images/vast-pipeline/epoch0{k}.fits") for k in range(1, 5)]
    img = read_image(paths[0])
    d = np.where(np.isfinite(img.data), img.data, -np.inf)
    j, i = np.unravel_index(np.argmax(d), d.shape)
    ra, dec = img.wcs.all_pix2world([i], [j], 0)
    src = pa.table({"source_id": ["brightest"], "ra_deg": ra, "dec_deg": dec})
    fluxes = []
    for p in paths:
        noise = p.with_name(p.name.replace(".fits", ".noiseMap.fits"))
        r = measure_image(lake, p, sources=src, noise_map=noise)
        fluxes.append(r.measurements["peak_jyb"][0])
        assert r.measurements["local_rms_jyb"][0] > 0
    assert lake.sql("SELECT count(DISTINCT mjd) AS n FROM photometry")["n"][0] == 4
    assert all(f > 5 * lake.sql("SELECT max(local_rms_jyb) m FROM photometry")["m"][0] for f in fluxes)


def test_same_observation_from_another_folder_replaces_its_rows(lake, tmp_path):
    """The image id comes from the observation (header), not the path: a moved, copied or symlinked image
    replaces its rows instead of adding them twice."""
    import shutil

    path, cat, _ = make_field(tmp_path)
    lake.write_catalog("nvss", cat)
    first = measure_image(lake, path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    copy = other / "renamed.fits"
    shutil.copy(path, copy)
    link = other / "link.fits"
    link.symlink_to(path)
    assert measure_image(lake, copy).image_id == first.image_id
    assert measure_image(lake, link, skip_existing=True).image_id == first.image_id
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 1
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 30
    # another observation (a different time) is another image
    later, _, _ = make_field(tmp_path, "later.fits", mjd=60501.3)
    assert measure_image(lake, later).image_id != first.image_id
    assert lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 2


def test_product_names_one_measurement_per_observation(lake, tmp_path):
    """WSClean (-image-pb = pb-corrected) and CASA (.pbcor) products: the pb-corrected image of an
    observation is measured, its flat-noise .image / -image twin and the by-products are not."""
    from eselake.ingest.photometry.measure import find_images, product_kind

    kinds = {"obs-image-pb.fits": "pbcor", "obs-MFS-image-pb.fits": "pbcor", "obs-image.fits": "image",
             "t.image.fits": "image", "t.pbcor.fits": "pbcor", "t.image.pbcor.fits": "pbcor",
             "t.image.tt0.fits": "image", "mosaic.fits": "sky", "obs-residual.fits": None,
             "obs-residual-pb.fits": None, "obs-model.fits": None, "obs-psf.fits": None, "obs-dirty.fits": None,
             "obs-beam-0.fits": None, "obs-beam-I.fits": None, "t.pb.fits": None, "t.rms.fits": None,
             "t.image.tt1.fits": None, "t.alpha.fits": None, "t.sumwt.fits": None}
    assert {n: product_kind(n) for n in kinds} == kinds
    products = tmp_path / "products"
    for tile, mjd in (("a", 60500.3), ("b", 60501.3)):
        (products / tile).mkdir(parents=True)
        path, cat, _ = make_field(products / tile, "tile.image.fits", mjd=mjd, seed=1)
        make_field(products / tile, "tile.pbcor.fits", mjd=mjd, seed=1, scale=1.1)
    wsc = tmp_path / "products" / "w"
    wsc.mkdir()
    make_field(wsc, "obs-image.fits", mjd=60502.3, seed=1)
    make_field(wsc, "obs-image-pb.fits", mjd=60502.3, seed=1, scale=1.1)
    make_field(wsc, "obs-psf.fits", mjd=60502.3, seed=1)
    # the same observation under an unrelated name (a copy) is still one observation
    make_field(wsc, "copy_of_tile_a.fits", mjd=60500.3, seed=1)
    found = [p.relative_to(products).as_posix() for p in find_images(products)]
    assert found == ["a/tile.pbcor.fits", "b/tile.pbcor.fits", "w/obs-image-pb.fits"]
    lake.write_catalog("nvss", cat)
    from eselake.ingest.photometry.measure import measure_batch
    done, errors = measure_batch(lake, find_images(products))
    assert not errors and lake.sql("SELECT count(*) AS n FROM images")["n"][0] == 3


def _die_on_two(k):
    import os
    if k == 2:
        os._exit(9)          # a worker killed mid-job (SIGKILL, out of memory)
    return k


def test_dead_worker_does_not_abort_the_batch():
    from eselake.ingest.parallel import run_jobs

    got, failed = [], []
    run_jobs(_die_on_two, [(k,) for k in range(5)], 2, got.append,
             on_failure=lambda job, exc: failed.append((job, type(exc).__name__)) or -1)
    assert sorted(k for k in got if k >= 0) == [0, 1, 3, 4]
    assert failed == [((2,), "BrokenProcessPool")]
