"""`eselake sql` and `eselake lake info` as a user runs them."""
import json

import pyarrow as pa
from click.testing import CliRunner

from eselake.cli import main


def _seed(lake):
    lake.commit_image({"image_id": "a", "path": "/x/a.fits", "mjd": 60000.5},
                      pa.table({"source_id": ["NVSS J123456+420312", "S2"], "image_id": ["a", "a"], "mjd": [60000.5] * 2,
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
    _seed(lake)
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "sql", "SELECT nope FROM photometry"])
    assert res.exit_code == 2
    assert "error:" in res.output and "nope" in res.output and "Traceback" not in res.output


def test_lake_info_and_env(lake, monkeypatch):
    _seed(lake)
    monkeypatch.setenv("ESELAKE_LAKE", str(lake.path))
    res = CliRunner().invoke(main, ["lake", "info"])
    assert res.exit_code == 0, res.output
    assert "photometry" in res.output and str(lake.path) in res.output.replace("\n", "")


# ------------------------------------------------------------------------------ errors and exit codes
def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_read_commands_on_a_missing_lake_name_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "no" / "such" / "lake"
    for args in (["sql", "SELECT 1"], ["ese-detect"], ["export", "--source-id", "x"], ["plot", "variability", "-o",
                 str(tmp_path / "v.png")], ["serve", "--port", "8999"], ["review", "x", "--status", "dismissed"]):
        res = _run("--lake", missing, *args)
        assert res.exit_code == 2, (args, res.output)
        assert "error:" in res.output and str(missing) in res.output.replace("\n", ""), (args, res.output)
        assert "Traceback" not in res.output
    monkeypatch.setenv("ESELAKE_LAKE", str(missing))
    res = _run("ese-detect")
    assert res.exit_code == 2 and str(missing) in res.output.replace("\n", "")
    assert not missing.exists()


def test_init_creates_an_empty_lake(tmp_path):
    path = tmp_path / "new"
    res = _run("--lake", path, "init")
    assert res.exit_code == 0, res.output
    assert "created" in res.output and path.is_dir()
    res = _run("--lake", path, "ese-detect", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == []
    assert "already" in _run("--lake", path, "init").output


def test_usage_and_io_errors_are_one_line_exit_2(lake, tmp_path):
    _seed(lake)
    cases = [
        ["sql", "SELECT * FROM photometry", "--format", "csv", "-o", "/no/such/dir/x.csv"],
        ["sql", "SELECT * FROM photometry", "-o", str(tmp_path / "x.unknown")],
        ["serve", "--port", "99999"],
        ["ese-detect", "--preset", "bogus"],
        ["ese-detect", "--no-such-option"],
        ["export", "--source-id", "nope"],
        ["export", "--source-id", "S2", "--format", "parquet"],
        ["export", "--source-id", "S2", "-o", str(tmp_path / "lc.unknown")],     # not silently CSV
    ]
    for args in cases:
        res = _run("--lake", lake.path, *args)
        assert res.exit_code == 2, (args, res.output)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert lines and lines[0].startswith("error:"), (args, res.output)
        assert "Traceback" not in res.output and "Error:" not in res.output, (args, res.output)
    assert "/no/such/dir" in _run("--lake", lake.path, *cases[0]).output


def test_port_in_use_is_an_error(lake):
    import socket
    _seed(lake)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        res = _run("--lake", lake.path, "serve", "--port", s.getsockname()[1])
    finally:
        s.close()
    assert res.exit_code == 2 and "cannot listen" in res.output


def test_internal_errors_exit_3_without_traceback(lake, monkeypatch):
    _seed(lake)
    import eselake.faces

    def boom(*a, **k):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(eselake.faces, "detect", boom)
    res = _run("--lake", lake.path, "ese-detect")
    assert res.exit_code == 3 and "internal error" in res.output and "kaboom" in res.output
    assert "Traceback" not in res.output


def test_help_documents_exit_codes():
    res = _run("--help")
    assert res.exit_code == 0 and "Exit status" in res.output and "2 usage or input error" in res.output


def test_source_unknown_raises(lake):
    import pytest

    from eselake import Source
    from eselake.errors import EselakeError
    _seed(lake)
    for attr in ("variability", "ese", "measurements", "info"):
        with pytest.raises(EselakeError, match="nope"):
            getattr(Source("nope", lake), attr)
    assert Source("S2", lake).info["source_id"] == "S2"


def test_export_to_stdout_with_units(lake):
    _seed(lake)
    res = _run("--lake", lake.path, "export", "--source-id", "NVSS J123456+420312", "--format", "votable")
    assert res.exit_code == 0, res.output
    assert "<VOTABLE" in res.output and 'ucd="time.epoch"' in res.output and 'unit="d"' in res.output
    assert 'unit="Jy.beam**-1"' in res.output or 'unit="Jy/beam"' in res.output
    assert '<PARAM' in res.output and 'NVSS J123456+420312' in res.output
    res = _run("--lake", lake.path, "export", "--source-id", "NVSS J123456+420312", "--format", "csv")
    header = res.output.splitlines()[0].split(",")
    assert {"source_id", "mjd", "date_utc", "peak_jyb"} <= set(header)
    assert "2023-02-25T12:00:00" in res.output
    doc = json.loads(_run("--lake", lake.path, "export", "--source-id", "S2", "--format", "json").output)
    assert doc["source_id"] == "S2" and doc["rows"][0]["date_utc"] == "2023-02-25T12:00:00"
    assert next(c for c in doc["columns"] if c["name"] == "mjd")["unit"] == "d"
