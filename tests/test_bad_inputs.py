"""A table of bad inputs: each gives one clear error and writes nothing."""
import contextlib
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from eselake import Lake
from eselake.cli import main
from tests.test_measure import BEAM, make_field


@pytest.fixture
def env(tmp_path):
    """A lake with a catalogue loaded and one good image already measured."""
    path, cat, _ = make_field(tmp_path, "good.fits", n=10, shape=(200, 200))
    lake = Lake(tmp_path / "lake")
    lake.write_catalog("nvss", cat)
    from eselake.ingest.photometry.measure import measure_image
    measure_image(lake, path)
    return tmp_path, lake, path


def _fits_variant(tmp, good, name, edit):
    with fits.open(good) as h:
        data, hdr = h[0].data.copy(), h[0].header.copy()
    data, hdr = edit(data, hdr)
    out = tmp / name
    fits.PrimaryHDU(data, header=hdr).writeto(out, overwrite=True)
    return out


def _del(hdr, *keys):
    for k in keys:
        if k in hdr:
            del hdr[k]
    return hdr


def _no_wcs(data, hdr):
    h = fits.Header()
    h["BMAJ"], h["BMIN"], h["BPA"], h["DATE-OBS"], h["BUNIT"] = BEAM, BEAM, 0.0, "2025-01-01T00:00:00", "Jy/beam"
    return data, h


FITS_CASES = [
    ("corrupt", lambda tmp, good: (tmp / "c.fits", (tmp / "c.fits").write_bytes(b"not a fits file" * 100))[0],
     "not a readable FITS"),
    ("truncated", lambda tmp, good: (tmp / "t.fits", (tmp / "t.fits").write_bytes(good.read_bytes()[:4000]))[0],
     "not a readable FITS"),
    ("no beam", lambda tmp, good: _fits_variant(tmp, good, "nb.fits", lambda d, h: (d, _del(h, "BMAJ", "BMIN", "BPA"))),
     "no restoring beam"),
    ("all NaN", lambda tmp, good: _fits_variant(tmp, good, "nan.fits", lambda d, h: (d * np.nan, h)),
     "no finite pixels"),
    ("no WCS", lambda tmp, good: _fits_variant(tmp, good, "nowcs.fits", _no_wcs), "no celestial WCS"),
    ("wrong BUNIT", lambda tmp, good: _fits_variant(tmp, good, "k.fits", lambda d, h: (d, h.set("BUNIT", "K") or h)),
     "BUNIT is 'K'"),
    ("zero rms", lambda tmp, good: _fits_variant(tmp, good, "flat.fits", lambda d, h: (d * 0 + 1, h)), "rms"),
    ("no time", lambda tmp, good: _fits_variant(tmp, good, "nt.fits", lambda d, h: (d, _del(h, "DATE-OBS", "MJD-OBS"))),
     "no observation time"),
    ("bad DATE-OBS", lambda tmp, good: _fits_variant(tmp, good, "bd.fits", lambda d, h: (d, h.set("DATE-OBS", "yesterday") or h)),
     "cannot parse DATE-OBS"),
    ("missing file", lambda tmp, good: tmp / "nope.fits", "no such file"),
]


@pytest.mark.parametrize("name,make,message", FITS_CASES, ids=[c[0] for c in FITS_CASES])
def test_bad_images(env, name, make, message):
    tmp, lake, good = env
    bad = make(tmp, good)
    before = lake.sql("SELECT count(*) AS n FROM photometry")["n"][0]
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "photometry", "nvss", "--fits", str(bad)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == before
    from eselake.lake import maintain
    assert not [f for f in maintain.check(lake) if f.kind == "unreferenced file"]


def test_zero_or_negative_noise_map(env):
    tmp, lake, good = env
    noise = _fits_variant(tmp, good, "rms.fits", lambda d, h: (d * 0 - 1, h))
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "photometry", "nvss", "--fits", str(good),
                                    "--noise-map", str(noise)])
    assert res.exit_code == 2 and "no positive rms" in res.output


def test_non_positive_beam_option(env):
    tmp, lake, good = env
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "photometry", "nvss", "--fits", str(good),
                                    "--beam", "0", "0", "0"])
    assert res.exit_code == 2 and "beam must be positive" in res.output


CATALOG_CASES = [
    ("missing columns", "name,flux\na,1\n", "RA and Dec"),
    ("bad coordinates", "name,ra,dec\na,10,-95\n", "invalid coordinates"),
    ("duplicate ids", "name,ra,dec\na,1,2\na,1,3\n", "duplicate source ids"),
    ("empty source list", "name,ra,dec\n", "empty"),
    ("long id", "name,ra,dec\n" + "x" * 300 + ",1,2\n", "1-200 characters"),
]


@pytest.mark.parametrize("name,text,message", CATALOG_CASES, ids=[c[0] for c in CATALOG_CASES])
def test_bad_catalogues(env, name, text, message):
    tmp, lake, _ = env
    f = tmp / "cat.csv"
    f.write_text(text)
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "catalog", "load", "sources", str(f)])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "sources" not in lake.sql("SELECT DISTINCT catalog FROM catalog_sources")["catalog"].to_list()


def test_non_utf8_catalogue(env):
    tmp, lake, _ = env
    f = tmp / "cat.csv"
    f.write_bytes(b"name,ra,dec\nK\xf6ln,1,2\n")
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "catalog", "load", "sources", str(f)])
    assert res.exit_code == 2 and "UTF-8" in res.output


def test_empty_image_folder(env):
    tmp, lake, _ = env
    (tmp / "empty").mkdir()
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "photometry", "batch", "--image-dir", str(tmp / "empty")])
    assert res.exit_code != 0 and "no sky images" in res.output


def test_lake_path_is_a_file(tmp_path):
    f = tmp_path / "lakefile"
    f.write_text("x")
    res = CliRunner().invoke(main, ["--lake", str(f), "lake", "info"])
    assert res.exit_code == 2 and "is a file" in res.output


def test_odd_source_ids_round_trip(tmp_path):
    """Quotes, slashes, unicode, SQL fragments and spaces are just names."""
    import pyarrow as pa
    from fastapi.testclient import TestClient
    from urllib.parse import quote

    from eselake.api import create_app
    ids = ["O'Brien's source", "a/b\\c", "Köln – Δ 1", "x'; DROP VIEW photometry; --", "NVSS J000000+000000 "]
    lake = Lake(tmp_path / "lake")
    lake.commit_image({"image_id": "i1", "path": "/x/i1.fits", "mjd": 60000.5},
                      pa.table({"source_id": ids, "peak_jyb": [1.0] * 5, "peak_err_jyb": [0.1] * 5}))
    client = TestClient(create_app(lake))
    for sid in ids:
        assert lake.sql("SELECT count(*) AS n FROM photometry WHERE source_id = ?", [sid])["n"][0] == 1
        r = client.get(f"/api/v1/sources/{quote(sid, safe='')}/lightcurve")
        assert r.status_code == 200 and r.json()["n"] == 1, (sid, r.text)
    assert lake.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 5


@contextlib.contextmanager
def _tmpfs(path, size, ro=False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_full_disk(env, tmp_path):
    """A write that runs out of space fails clearly, leaves no temp file and commits nothing."""
    import pyarrow as pa

    from eselake.errors import LakeError
    with _tmpfs(tmp_path / "small", "256k") as mnt:
        small = Lake(mnt / "lake")
        small.commit_image({"image_id": "tiny", "path": "/x/tiny.fits", "mjd": 60000.5},
                           pa.table({"source_id": ["a"], "peak_jyb": [1.0], "peak_err_jyb": [0.1]}))
        rows = pa.table({"source_id": [f"S{i:06d}" for i in range(200_000)],
                         "peak_jyb": np.random.default_rng(0).random(200_000), "peak_err_jyb": [0.1] * 200_000})
        with pytest.raises(LakeError, match="disk is full"):
            small.commit_image({"image_id": "huge", "path": "/x/huge.fits", "mjd": 60000.5}, rows)
        assert small.sql("SELECT count(*) AS n FROM images WHERE image_id = 'huge'")["n"][0] == 0
        assert small.sql("SELECT count(*) AS n FROM photometry")["n"][0] == 1
        from eselake.lake import maintain
        assert not [f for f in maintain.check(small) if f.severity == "error"]


def test_read_only_lake(env, tmp_path):
    tmp, lake, good = env
    with _tmpfs(tmp_path / "ro", "1m", ro=True) as mnt:
        cat = tmp / "cat.csv"
        cat.write_text("name,ra,dec\na,1,2\n")
        res = CliRunner().invoke(main, ["--lake", str(mnt), "catalog", "load", "sources", str(cat)])
        assert res.exit_code == 2 and "not writable" in res.output, res.output
