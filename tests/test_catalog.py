"""Catalogue loading, source ids and cone searches."""
import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner

from eselake.cli import main
from eselake.errors import InputError
from eselake.ingest.catalogs.catalog import cone_mask, iau_names, load_catalog_file


def test_nvss_vizier_fits_with_units(tmp_path):
    t = Table({"NVSS": ["123456+420312", "000001-010203"], "RAJ2000": [188.7337, 0.0042],
               "DEJ2000": [42.0533, -1.0342], "S1.4": [150.0, 12.5], "e_S1.4": [4.5, 0.6],
               "MajAxis": [20.0, 0.0], "MinAxis": [15.0, 0.0]})
    t["RAJ2000"].unit, t["DEJ2000"].unit, t["S1.4"].unit = "deg", "deg", "mJy"
    t["MajAxis"].unit = "arcsec"
    t.write(tmp_path / "nvss.fits")
    cat = load_catalog_file(tmp_path / "nvss.fits", "nvss")
    assert cat.column("source_id").to_pylist() == ["NVSS J123456+420312", "NVSS J000001-010203"]
    assert cat.column("flux_mjy").to_pylist() == [150.0, 12.5]


def test_votable_in_jy_and_sexagesimal(tmp_path):
    t = Table({"Component_name": ["VLASS1QLCIR J000000.00+000000.0"], "RA": ["12 34 56.0"],
               "DEC": ["+42 03 12"], "Total_flux": [0.25]})
    t["Total_flux"].unit = "Jy"
    t.write(tmp_path / "v.vot", format="votable")
    cat = load_catalog_file(tmp_path / "v.vot", "vlass")
    assert cat.column("flux_mjy").to_pylist() == [250.0]
    assert np.isclose(cat.column("ra_deg")[0].as_py(), 188.7333333, atol=1e-6)


def test_plain_csv_aliases_and_generated_ids(tmp_path):
    (tmp_path / "a.csv").write_text("name,ra,dec\n3C286,202.784,30.509\nJ1331+3030,202.785,30.509\n")
    cat = load_catalog_file(tmp_path / "a.csv", "sources")
    assert cat.column("source_id").to_pylist() == ["3C286", "J1331+3030"]
    (tmp_path / "b.csv").write_text("source_id,ra_deg,dec_deg\nx,1,2\n")
    assert load_catalog_file(tmp_path / "b.csv", "sources").num_rows == 1
    # a catalogue without names gets IAU ids from J2000 coordinates (truncated)
    (tmp_path / "c.csv").write_text("ra,dec,flux_mjy\n188.7337,42.0533,10\n")
    assert load_catalog_file(tmp_path / "c.csv", "first").column("source_id")[0].as_py() == "FIRST J123456+420311"
    assert iau_names("NVSS", np.array([359.99999]), np.array([-0.5]))[0] == "NVSS J235959-003000"


@pytest.mark.parametrize("text,message", [
    ("name,dec\na,1\n", "RA and Dec"),
    ("name,ra,dec\na,1,95\n", "invalid coordinates"),
    ("name,ra,dec\na,x,1\n", "coordinates"),
    ("name,ra,dec\na,1,2\na,3,4\n", "duplicate"),
    ("name,ra,dec\n", "empty"),
])
def test_bad_catalogues(tmp_path, text, message):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(InputError, match=message):
        load_catalog_file(f, "sources")


def test_non_utf8_catalogue(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("name,ra,dec\nM\xfcnchen,1,2\n".encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        load_catalog_file(f, "sources")


def test_cone_search_wraps_ra_and_handles_poles():
    ra = np.array([359.9, 0.1, 180.0, 10.0, 190.0, 45.0])
    dec = np.array([0.0, 0.0, 0.0, 89.9, 89.9, -89.95])
    m = cone_mask(ra, dec, 0.0, 0.0, 0.5)
    assert m.tolist() == [True, True, False, False, False, False]
    # near the pole two sources 180 deg apart in RA are 0.2 deg apart
    assert cone_mask(ra, dec, 10.0, 89.9, 0.25).tolist() == [False, False, False, True, True, False]
    assert cone_mask(ra, dec, 200.0, -90.0, 0.1).tolist() == [False] * 5 + [True]


def test_catalog_cli(lake, tmp_path):
    (tmp_path / "s.csv").write_text("ra,dec,flux_mjy\n10,20,5\n11,21,50\n")
    runner = CliRunner()
    res = runner.invoke(main, ["--lake", str(lake.path), "catalog", "load", "nvss", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["--lake", str(lake.path), "catalog", "list"])
    assert "nvss" in res.output and "2" in res.output
    # reloading replaces, never duplicates
    runner.invoke(main, ["--lake", str(lake.path), "catalog", "load", "nvss", str(tmp_path / "s.csv")])
    assert lake.sql("SELECT count(*) AS n FROM catalog_sources")["n"][0] == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("ra,dec\n1,200\n")
    res = runner.invoke(main, ["--lake", str(lake.path), "catalog", "load", "nvss", str(bad)])
    assert res.exit_code == 2 and "invalid coordinates" in res.output
    assert lake.sql("SELECT count(*) AS n FROM catalog_sources")["n"][0] == 2


def test_row_checks_with_counts(tmp_path):
    """One 'n/a' flux cell is NaN for that row only; a BOM does not break the header; an empty name is not
    id '0' (IAU name for a survey, an error for a source list); the counts are reported."""
    from eselake.ingest.catalogs.catalog import CatalogWarning, catalog_checks

    f = tmp_path / "bom.csv"
    f.write_text("name,ra,dec,flux_mjy\na,10,20,n/a\n,30,40,50\nc,50,60,70\n", encoding="utf-8-sig")
    with pytest.warns(CatalogWarning, match="1 empty_name.*1 not_a_number: flux"):
        cat = load_catalog_file(f, "nvss")
    flux = cat.column("flux_mjy").to_numpy()
    assert np.isnan(flux[0]) and flux[1:].tolist() == [50.0, 70.0]
    ids = cat.column("source_id").to_pylist()
    assert ids[0] == "NVSS a" and ids[1] == "NVSS J020000+400000" and "0" not in ids[1].split()
    checks = catalog_checks(cat)
    assert checks["rows"] == 3 and checks["empty_name"] == 1 and checks["no_flux"] == 1
    # --min-mjy selects on the numbers that are there
    assert (flux >= 60).sum() == 1
    with pytest.raises(InputError, match="1 rows have an empty 'name', first rows \\[1\\]"):
        load_catalog_file(f, "sources")
