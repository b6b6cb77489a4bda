"""`eselake sql` and `eselake lake info` as a user runs them."""
import json

import pyarrow as pa
from click.testing import CliRunner

from eselake.cli import main


def _seed(lake):
    lake.commit_image({"image_id": "a", "path": "/x/a.fits", "mjd": 60000.5},
                      pa.table({"source_id": ["NVSS J123456+420312", "S2"], "mjd": [60000.5] * 2,
                                "peak_jyb": [0.5, 0.25], "peak_err_jyb": [0.01, 0.01]}))


def test_sql_formats(lake, tmp_path):
    _seed(lake)
    run = CliRunner().invoke
    res = run(main, ["--lake", str(lake.path), "sql",
                     "SELECT source_id, peak_jyb FROM photometry ORDER BY source_id", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0] == {"source_id": "NVSS J123456+420312", "peak_jyb": 0.5}
    out = tmp_path / "r.parquet"
    res = run(main, ["--lake", str(lake.path), "sql", "SELECT * FROM photometry", "--format", "parquet",
                     "-o", str(out)])
    assert res.exit_code == 0 and out.stat().st_size > 0
    res = run(main, ["--lake", str(lake.path), "sql", "SELECT * FROM photometry", "--format", "csv"])
    assert res.output.count("\n") == 3


def test_sql_error_is_one_clear_line(lake):
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "sql", "SELECT nope FROM photometry"])
    assert res.exit_code == 2
    assert "error:" in res.output and "nope" in res.output and "Traceback" not in res.output


def test_lake_info_and_env(lake, monkeypatch):
    _seed(lake)
    monkeypatch.setenv("ESELAKE_LAKE", str(lake.path))
    res = CliRunner().invoke(main, ["lake", "info"])
    assert res.exit_code == 0, res.output
    assert "photometry" in res.output and str(lake.path) in res.output.replace("\n", "")
