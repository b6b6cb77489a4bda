"""Charts, the REST API and the web page over a small lake (ids with spaces and '+')."""
import os
import shutil
import socket
import threading
import time
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from eselake import Lake, Source
from eselake.api import create_app
from eselake.cli import main
from eselake.sim.lightcurves import simulate_photometry
from tests.conftest import simulated_lake


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    return simulated_lake(tmp_path_factory.mktemp("faces") / "lake", 30, 150, dip=(4, 60100, 30, 0.4))


@pytest.mark.parametrize("ext,magic", [(".png", b"\x89PNG"), (".svg", b"<svg"), (".pdf", b"%PDF"),
                                       (".html", b"<!DOCTYPE html>"), (".json", b"{")])
def test_lightcurve_chart_files(small_lake, tmp_path, ext, magic):
    lake, sim = small_lake
    out = tmp_path / f"lc{ext}"
    chart = Source(sim.source_ids[4], lake).plot_lightcurve(outfile=out)
    assert out.read_bytes()[:len(magic)].lower() == magic.lower()
    assert out.stat().st_size > 2000
    spec = chart.to_dict()
    assert len(spec["layer"]) >= 4      # baseline and dip shading, error bars, points, model


def test_html_chart_is_self_contained(small_lake, tmp_path):
    lake, sim = small_lake
    out = tmp_path / "lc.html"
    Source(sim.source_ids[4], lake).plot_lightcurve(outfile=out)
    text = out.read_text()
    assert "cdn.jsdelivr" not in text and "https://" not in text.split("<script")[1][:200]


def test_plot_cli(small_lake, tmp_path):
    from click.testing import CliRunner
    lake, sim = small_lake
    for args, name in [(["lightcurve", sim.source_ids[4]], "a.png"), (["variability"], "b.svg"),
                       (["candidates"], "c.pdf")]:
        out = tmp_path / name
        res = CliRunner().invoke(main, ["--lake", str(lake.path), "plot", *args, "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 1000
    res = CliRunner().invoke(main, ["--lake", str(lake.path), "plot", "variability", "-o", str(tmp_path / "x.gif")])
    assert res.exit_code == 2 and "chart files end in" in res.output


def test_api(small_lake):
    lake, sim = small_lake
    client = TestClient(create_app(lake))
    sid = sim.source_ids[4]
    enc = quote(sid, safe="")
    assert "+" in sid and " " in sid
    r = client.get(f"/api/v1/sources/{enc}/lightcurve")
    assert r.status_code == 200 and r.json()["n"] == 150
    assert {"mjd", "peak_jyb", "peak_err_jyb", "normalized_flux_jy"} <= set(r.json()["measurements"][0])
    r = client.get(f"/api/v1/sources/{enc}/variability")
    assert r.json()["variability"]["n_obs"] == 150 and r.json()["ese"]["dip_depth"] > 0.3
    r = client.get("/api/ese/candidates")
    assert [c["source_id"] for c in r.json()["candidates"]] == [sid]
    assert client.get(f"/api/ese/candidates/{enc}").json()["candidate_of"]["moderate"]["composite"] is True
    assert client.get("/api/v1/sources/NVSS%20nope/lightcurve").status_code == 404
    assert client.get("/api/ese/candidates/nope").status_code == 404
    # paging
    page = client.get("/api/v1/sources", params={"limit": 7, "offset": 28}).json()
    assert page["total"] == 30 and len(page["sources"]) == 2
    assert client.get("/api/v1/sources", params={"search": "+42 0000"}).json()["total"] == 30
    for bad in ({"limit": 0}, {"limit": 100000}, {"offset": -1}, {"order": "x; DROP"}):
        assert client.get("/api/v1/sources", params=bad).status_code == 422
    assert client.get("/api/ese/candidates", params={"preset": "bogus"}).status_code == 422
    # SQL injection attempts are just strings
    r = client.get("/api/v1/sources", params={"search": "' OR 1=1; --"})
    assert r.status_code == 200 and r.json()["total"] == 0
    assert client.get("/api/v1/sources/%27%3B%20DROP%20VIEW%20photometry%3B--/lightcurve").status_code == 404
    # charts and export
    r = client.get(f"/api/v1/sources/{enc}/chart.png")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert "layer" in client.get(f"/api/v1/sources/{enc}/chart.json").json()
    assert client.get(f"/api/v1/sources/{enc}/export", params={"format": "csv"}).text.count("\n") == 151
    assert client.get("/api/v1/images", params={"limit": 10}).json()["total"] == 150
    assert client.get("/api/v1/charts/variability.json").status_code == 200
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
    assert client.get("/api/ese/candidates", params={"status": "active"}).json()["total"] == 0
    assert client.post(f"/api/ese/candidates/{enc}/review", json={"status": "bogus"}).status_code == 422


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.browser
def test_page_in_headless_chromium(small_lake, tmp_path):
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian chromium and chromium-driver are not installed (make system-deps)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    import uvicorn

    lake, sim = small_lake
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lake), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900"):
        opts.add_argument(flag)
    from selenium.webdriver.chrome.service import Service
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60)
        row = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "tr.cand")))
        assert sim.source_ids[4] in row.text
        row.click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#chart[data-rendered='yes'] svg, "
                                                                     "#chart[data-rendered='yes'] canvas")))
        marks = driver.find_elements(By.CSS_SELECTOR, "#chart .mark-symbol path, #chart canvas")
        assert marks, "lightcurve chart drew nothing"
        assert "chi2_nu" in driver.find_element(By.ID, "stats").text
        shot = os.environ.get("ESELAKE_SCREENSHOT") or str(tmp_path / "page.png")
        driver.save_screenshot(shot)
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)


def test_long_lightcurves_are_binned(tmp_path):
    """4000 measurements (several per day) are drawn as daily bins: the chart stays small and readable."""
    sim = simulate_photometry(6, 4000, cadence_days=0.1, noise_jy=2e-3, frac_noise=0.02, seed=1)
    lake = Lake(tmp_path / "lake")
    lake.commit_batch(sim.images, sim.photometry)
    src = Source(sim.source_ids[0], lake)
    assert src.measurements.height == 4000
    spec = src.plot_lightcurve(outfile=tmp_path / "lc.png").to_dict()
    points = next(layer for layer in spec["layer"] if str(layer["mark"]).find("circle") >= 0)
    data = points.get("data") or spec.get("data")
    n_drawn = len(data["values"]) if "values" in data else len(spec["datasets"][data["name"]])
    title = spec["title"]["text"] if isinstance(spec["title"], dict) else spec["title"]
    assert n_drawn <= 401 and "daily bins" in title
    assert (tmp_path / "lc.png").stat().st_size > 2000
