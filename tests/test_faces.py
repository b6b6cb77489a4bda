"""Charts, the CLI, Python and the REST API over a small lake (ids with spaces and '+'): one detection truth,
honest charts, narrow tables. The web pages are tested in tests/test_web.py."""
import json
import shutil
import sys
import types
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from eselake import Lake, Source, detect_ese_candidates
from eselake.api import create_app
from eselake.cli import main
from eselake.sim.lightcurves import simulate_photometry
from tests.conftest import simulated_lake


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    return simulated_lake(tmp_path_factory.mktemp("faces") / "lake", 30, 150, dip=(4, 60100, 30, 0.4))


def _cli(lake, *args):
    return CliRunner().invoke(main, ["--lake", str(lake.path), *[str(a) for a in args]])


def _layers(spec):
    return spec.get("layer", [spec])


def _marks(spec):
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in _layers(spec)]


def _as_candidate(monkeypatch, lake, source_id):
    """Make ``source_id`` the only candidate of the default detection (what the charts ask)."""
    import eselake.faces
    row = Source(source_id, lake).ese
    monkeypatch.setattr(eselake.faces, "default_candidates",
                        lambda _lake: eselake.faces.order_candidates(pl.DataFrame([{**row, "status": "active"}])))


@pytest.mark.parametrize("ext,magic", [(".png", b"\x89PNG"), (".svg", b"<svg"), (".pdf", b"%PDF"),
                                       (".html", b"<!DOCTYPE html>"), (".json", b"{")])
def test_lightcurve_chart_files(small_lake, tmp_path, ext, magic):
    lake, sim = small_lake
    out = tmp_path / f"lc{ext}"
    chart = Source(sim.source_ids[4], lake).plot_lightcurve(outfile=out, highlight_ese_period=True,
                                                           highlight_baseline=True, show_fit=True)
    assert out.read_bytes()[:len(magic)].lower() == magic.lower()
    assert out.stat().st_size > 2000
    spec = chart.to_dict()
    marks = _marks(spec)
    assert "rect" in marks and "line" in marks and "rule" in marks      # dip band, model, error bars/baseline
    legend = [layer["encoding"]["color"] for layer in _layers(spec) if "color" in layer.get("encoding", {})]
    domain = legend[0]["scale"]["domain"]
    assert domain == ["measurement", "baseline", "dip", "fitted model"]
    axes = [layer["encoding"].get("x", {}).get("axis") for layer in _layers(spec)]
    assert any(a and "timeFormat" in a.get("labelExpr", "") and a.get("orient") == "top" for a in axes)
    assert any(a and a.get("format") == "d" for a in axes)              # MJD without thousands separators


def test_flat_source_has_no_dip_unless_asked(small_lake, monkeypatch):
    lake, sim = small_lake
    flat = sim.source_ids[5]
    assert flat not in detect_ese_candidates(lake)["source_id"].to_list()
    spec = Source(flat, lake).plot_lightcurve().to_dict()
    assert "rect" not in _marks(spec) and "line" not in _marks(spec)
    assert "not an ESE candidate" in spec["title"]["subtitle"]
    assert "at 1.405 GHz" in spec["title"]["text"]
    # a candidate of the default detection gets its dip and model without asking
    _as_candidate(monkeypatch, lake, sim.source_ids[4])
    spec = Source(sim.source_ids[4], lake).plot_lightcurve().to_dict()
    assert "rect" in _marks(spec) and "line" in _marks(spec) and "ESE candidate" in spec["title"]["subtitle"]
    assert "rect" not in _marks(Source(sim.source_ids[4], lake).plot_lightcurve(highlight_ese_period=False,
                                                                                highlight_baseline=False,
                                                                                show_fit=False).to_dict())


def test_edge_points_are_inside_the_axes(small_lake):
    lake, sim = small_lake
    spec = Source(sim.source_ids[5], lake).plot_lightcurve().to_dict()
    m = Source(sim.source_ids[5], lake).measurements
    x = next(layer["encoding"]["x"] for layer in _layers(spec) if layer["mark"]["type"] == "point")
    lo, hi = x["scale"]["domain"]
    assert lo < m["mjd"].min() and hi > m["mjd"].max()


def test_fitted_model_comes_from_the_detection_search(small_lake, monkeypatch):
    """When eselake.detection.search provides model_curve(row, mjd) (Jy), the chart draws it."""
    lake, sim = small_lake
    sid = sim.source_ids[4]
    _as_candidate(monkeypatch, lake, sid)
    calls = []

    def model_curve(row, mjd):
        calls.append(row["source_id"])
        return np.full(len(mjd), 0.123)              # Jy
    fake = types.ModuleType("eselake.detection.search")
    fake.model_curve = model_curve
    monkeypatch.setitem(sys.modules, "eselake.detection.search", fake)
    import eselake.detection
    monkeypatch.setattr(eselake.detection, "search", fake, raising=False)
    spec = Source(sid, lake).plot_lightcurve().to_dict()
    line = next(layer for layer in _layers(spec) if layer["mark"]["type"] == "line")
    values = line["data"]["values"]
    assert calls == [sid] and values[0]["what"] == "fitted lens model"
    mean_mjy = Source(sid, lake).variability["mean_flux_mjy"]
    expected = 0.123 * min((1.0, 1000.0, mean_mjy), key=lambda f: abs(np.log(0.123 * f / mean_mjy)))
    assert abs(values[0]["model_mjy"] - expected) < 1e-9


def test_eta_v_chart_has_threshold_lines(small_lake, tmp_path):
    from eselake.charts import save_chart, variability_chart
    lake, _ = small_lake
    chart = variability_chart(lake)
    spec = chart.to_dict()
    rules = [layer for layer in _layers(spec) if layer["mark"]["type"] == "rule"]
    labels = [v["label"] for r in rules for v in r["data"]["values"]]
    assert any("eta" in lab for lab in labels) and any(lab.startswith("V") for lab in labels)
    save_chart(chart, tmp_path / "eta_v.png")
    assert (tmp_path / "eta_v.png").stat().st_size > 5000


def test_html_chart_is_self_contained(small_lake, tmp_path):
    lake, sim = small_lake
    out = tmp_path / "lc.html"
    Source(sim.source_ids[4], lake).plot_lightcurve(outfile=out)
    text = out.read_text()
    assert "cdn.jsdelivr" not in text and "https://" not in text.split("<script")[1][:200]


def test_plot_cli(small_lake, tmp_path, monkeypatch):
    lake, sim = small_lake
    _as_candidate(monkeypatch, lake, sim.source_ids[4])
    import eselake.faces
    monkeypatch.setattr(eselake.faces, "detect", lambda _lake, **kw: eselake.faces.default_candidates(_lake))
    for args, name in [(["lightcurve", sim.source_ids[4]], "a.png"), (["lightcurve", sim.source_ids[4], "--no-dip"],
                       "a2.png"), (["variability"], "b.svg"), (["candidates"], "c.pdf")]:
        out = tmp_path / name
        res = _cli(lake, "plot", *args, "-o", out)
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 1000
    res = _cli(lake, "plot", "variability", "-o", tmp_path / "x.gif")
    assert res.exit_code == 2 and "chart files end in" in res.output
    res = _cli(lake, "plot", "lightcurve", "nope", "-o", tmp_path / "n.png")
    assert res.exit_code == 2 and "nope" in res.output


@pytest.mark.parametrize("preset", [None, "sensitive"])
def test_one_detection_truth(small_lake, preset):
    """CLI, Python and the API give the same list; --source-id gives the list's verdict on each source."""
    lake, sim = small_lake
    kw = {"preset": preset} if preset else {}
    py = detect_ese_candidates(lake, **kw)["source_id"].to_list()
    res = _cli(lake, "ese-detect", "--format", "json", *(["--preset", preset] if preset else []))
    assert res.exit_code == 0, res.output
    cli = [r["source_id"] for r in json.loads(res.output)]
    api = TestClient(create_app(lake)).get("/api/ese/candidates", params=kw).json()
    assert cli == py == [c["source_id"] for c in api["candidates"]] and api["total"] == len(py)
    for sid in (sim.source_ids[4], sim.source_ids[5]):
        res = _cli(lake, "ese-detect", "--source-id", sid, "--format", "json", *(["--preset", preset] if preset else []))
        assert res.exit_code == 0, res.output
        row = json.loads(res.output)[0]
        assert row["source_id"] == sid and row["candidate"] is (sid in py)
        res = _cli(lake, "ese-detect", "--source-id", sid, *(["--preset", preset] if preset else []))
        assert ("is an ESE candidate" if sid in py else "is not an ESE candidate") in res.output
    assert _cli(lake, "ese-detect", "--source-id", "nope").exit_code == 2


def test_options_are_honoured_or_refused(small_lake, monkeypatch):
    lake, _ = small_lake
    import eselake.faces
    seen = {}

    def detector(lake, *, preset="moderate", source_id=None):
        seen.update(preset=preset, source_id=source_id)
        return pl.DataFrame({"source_id": []}, schema={"source_id": pl.Utf8})
    monkeypatch.setattr(eselake.faces, "_detector", lambda: detector)
    res = _cli(lake, "ese-detect", "--preset", "conservative")
    assert res.exit_code == 0 and seen["preset"] == "conservative"
    res = _cli(lake, "ese-detect", "--min-sigma", "4")
    assert res.exit_code == 2 and "--min-sigma" in res.output and "not an option" in res.output
    r = TestClient(create_app(lake)).get("/api/ese/candidates", params={"min_sigma": 4})
    assert r.status_code == 400 and "--min-sigma" in r.json()["detail"]


def test_tables_fit_80_columns(small_lake):
    lake, sim = small_lake
    for args in (["ese-detect", "--preset", "sensitive"], ["sql", "SELECT * FROM variability_stats LIMIT 5"],
                 ["ese-detect", "--source-id", sim.source_ids[4]]):
        res = _cli(lake, *args)
        assert res.exit_code == 0, res.output
        assert max(len(line) for line in res.output.splitlines()) <= 80, res.output
    res = _cli(lake, "sql", "SELECT * FROM variability_stats LIMIT 5")
    assert "more column(s)" in res.output and "source_id" in res.output


def test_api(small_lake):
    lake, sim = small_lake
    client = TestClient(create_app(lake))
    sid = sim.source_ids[4]
    enc = quote(sid, safe="")
    assert "+" in sid and " " in sid
    r = client.get(f"/api/v1/sources/{enc}/lightcurve")
    assert r.status_code == 200 and r.json()["n"] == 150
    assert {"mjd", "date_utc", "peak_jyb", "peak_err_jyb", "normalized_flux_jy"} <= set(r.json()["measurements"][0])
    r = client.get(f"/api/v1/sources/{enc}/variability")
    ese = r.json()["ese"]
    assert r.json()["variability"]["n_obs"] == 150 and (ese.get("depth") or ese.get("dip_depth")) > 0.3
    detail = client.get(f"/api/ese/candidates/{enc}").json()
    assert detail["is_candidate"] is (sid in detect_ese_candidates(lake)["source_id"].to_list())
    assert client.get("/api/v1/sources/NVSS%20nope/lightcurve").status_code == 404
    assert client.get("/api/ese/candidates/nope").status_code == 404
    # paging
    page = client.get("/api/v1/sources", params={"limit": 7, "offset": 28}).json()
    assert page["total"] == 30 and len(page["sources"]) == 2
    assert client.get("/api/v1/sources", params={"search": "+42 0000"}).json()["total"] == 30
    for bad in ({"limit": 0}, {"limit": 100000}, {"offset": -1}, {"order": "x; DROP"}):
        assert client.get("/api/v1/sources", params=bad).status_code == 422
    assert client.get("/api/ese/candidates", params={"preset": "bogus"}).status_code == 422
    assert client.get("/api/ese/candidates", params={"order": "nope"}).status_code == 422
    # SQL injection attempts are just strings
    r = client.get("/api/v1/sources", params={"search": "' OR 1=1; --"})
    assert r.status_code == 200 and r.json()["total"] == 0
    assert client.get("/api/v1/sources/%27%3B%20DROP%20VIEW%20photometry%3B--/lightcurve").status_code == 404
    # charts and export
    r = client.get(f"/api/v1/sources/{enc}/chart.png")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert "layer" in client.get(f"/api/v1/sources/{enc}/chart.json").json()
    r = client.get(f"/api/v1/sources/{enc}/export", params={"format": "csv"})
    assert r.text.count("\n") == 151 and r.headers["content-disposition"].startswith("attachment")
    assert client.get("/api/v1/images", params={"limit": 10}).json()["total"] == 150
    spec = client.get("/api/v1/charts/variability.json").json()
    assert spec["layer"][0]["encoding"]["href"]["field"] == "url"
    assert client.get("/openapi.json").json()["info"]["title"] == "eselake"
    # read-only by default
    assert client.post(f"/api/ese/candidates/{enc}/review", json={"status": "dismissed"}).status_code == 403


def test_api_writable_review(small_lake, tmp_path):
    lake, sim = small_lake
    copy = Lake(tmp_path / "copy")
    shutil.copytree(lake.path, copy.path)
    client = TestClient(create_app(copy, writable=True))
    enc = quote(sim.source_ids[4], safe="")
    r = client.post(f"/api/ese/candidates/{enc}/review", json={"status": "dismissed", "notes": "RFI"})
    assert r.status_code == 201
    assert client.get(f"/api/v1/sources/{enc}").json()["review"]["status"] == "dismissed"
    assert client.get("/api/ese/candidates", params={"status": "active", "search": "000004"}).json()["total"] == 0
    assert client.post(f"/api/ese/candidates/{enc}/review", json={"status": "bogus"}).status_code == 422


def test_long_lightcurves_are_binned(tmp_path):
    """4000 measurements (several per day) are drawn as daily bins: the chart stays small and readable."""
    sim = simulate_photometry(6, 4000, cadence_days=0.1, noise_jy=2e-3, frac_noise=0.02, seed=1)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    src = Source(sim.source_ids[0], lake)
    assert src.measurements.height == 4000
    spec = src.plot_lightcurve(outfile=tmp_path / "lc.png").to_dict()
    points = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "point")
    data = points.get("data") or spec.get("data")
    n_drawn = len(data["values"]) if "values" in data else len(spec["datasets"][data["name"]])
    assert n_drawn <= 401 and "daily bins" in spec["title"]["text"]
    assert (tmp_path / "lc.png").stat().st_size > 2000
