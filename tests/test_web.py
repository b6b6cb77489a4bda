"""The web app and API over a lake measured from real FITS images: search, cone search, source pages,
cutouts, exports, reviews, offline docs, Host checks and HTML escaping; then the pages in headless Chromium."""
import os
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from eselake.api import create_app
from tests.webfixture import DIP, EVIL, web_lake


@pytest.fixture(scope="module")
def wl(tmp_path_factory):
    return web_lake(tmp_path_factory.mktemp("web"))


def _enc(sid):
    return quote(sid, safe="")


def test_search_and_cone(wl):
    lake, ids = wl
    c = TestClient(create_app(lake))
    r = c.get("/api/v1/sources", params={"search": "j1230"}).json()
    assert r["total"] == 2 and {s["source_id"] for s in r["sources"]} == {ids[0], ids[4]}
    assert all(s["ra_deg"] is not None and s["dec_deg"] is not None for s in r["sources"])
    # cone: the field centre source is nearest; a tiny radius keeps only it
    r = c.get("/api/v1/sources", params={"ra": 188.5, "dec": 42.0, "radius_deg": 0.05, "order": "distance"}).json()
    assert [s["source_id"] for s in r["sources"]] == [ids[4]] and r["sources"][0]["sep_deg"] < 0.05
    r = c.get("/api/v1/sources", params={"ra": 188.5, "dec": 42.0, "radius_deg": 1, "order": "distance"}).json()
    seps = [s["sep_deg"] for s in r["sources"]]
    assert r["total"] == 6 and seps == sorted(seps)
    assert c.get("/api/v1/sources", params={"ra": 10}).status_code == 422          # dec missing
    assert c.get("/api/v1/sources", params={"ra": 400, "dec": 0}).status_code == 422


def test_source_page_data(wl):
    lake, ids = wl
    c = TestClient(create_app(lake))
    info = c.get(f"/api/v1/sources/{_enc(ids[0])}").json()
    assert info["catalog"] == "sources" and abs(info["catalog_flux_mjy"] - 500) < 1e-6
    assert info["n_images"] == 60 and info["first_date"].startswith("2023-02-25")
    assert abs(info["freq_hz"] - 1.405e9) < 1
    assert set(info["links"]) == {"SIMBAD", "NED", "VizieR"}
    assert f"{info['ra_deg']:.6f}" in info["links"]["SIMBAD"]
    lc = c.get(f"/api/v1/sources/{_enc(ids[0])}/lightcurve").json()
    assert lc["n"] == 60 and lc["measurements"][0]["date_utc"] == "2023-02-25T12:00:00"
    assert c.get("/api/v1/sources/nope").status_code == 404


def test_cutouts_from_image_files(wl):
    lake, ids = wl
    c = TestClient(create_app(lake))
    r = c.get(f"/api/v1/sources/{_enc(ids[0])}/cutouts", params={"limit": 6}).json()
    assert r["n_images"] == 60 and r["n_available"] == 60 and len(r["cutouts"]) == 6
    png = c.get(r["cutouts"][0]["url"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # the stamp is centred on the source: the brightest pixels are in the middle
    import struct
    import zlib
    import numpy as np
    w, h = struct.unpack(">II", png.content[16:24])
    idat = png.content[png.content.index(b"IDAT") + 4:png.content.index(b"IEND") - 8]
    img = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)[:, 1:]
    cy, cx = h // 2, w // 2
    assert img[cy - 2:cy + 3, cx - 2:cx + 3].mean() > 3 * np.median(img)
    assert c.get(f"/api/v1/sources/{_enc(ids[0])}/cutout.png", params={"image_id": "nope"}).status_code == 404
    # an image file that is gone is a 404 with a message, and is not offered
    img0 = lake.sql("SELECT image_path FROM photometry WHERE source_id = ? ORDER BY mjd LIMIT 1", [ids[1]])[0, 0]
    moved = Path(img0).with_suffix(".moved")
    os.rename(img0, moved)
    try:
        r = c.get(f"/api/v1/sources/{_enc(ids[1])}/cutouts", params={"limit": 200}).json()
        assert r["n_available"] == 59
        first = lake.sql("SELECT image_id FROM photometry WHERE source_id = ? ORDER BY mjd LIMIT 1", [ids[1]])[0, 0]
        r = c.get(f"/api/v1/sources/{_enc(ids[1])}/cutout.png", params={"image_id": first})
        assert r.status_code == 404 and "not available" in r.json()["detail"]
    finally:
        os.rename(moved, img0)


def test_exports_carry_units_and_position(wl, tmp_path):
    lake, ids = wl
    c = TestClient(create_app(lake))
    r = c.get(f"/api/v1/sources/{_enc(ids[0])}/export", params={"format": "votable"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert r.headers["content-disposition"].endswith('.vot"')
    path = tmp_path / "lc.vot"
    path.write_bytes(r.content)
    from astropy.io.votable import parse
    table = parse(str(path)).get_first_table()
    fields = {f.name: f for f in table.fields}
    assert str(fields["mjd"].unit) == "d" and fields["mjd"].ucd == "time.epoch"
    assert str(fields["peak_jyb"].unit) == "Jy / beam" and "phot.flux.density" in fields["peak_jyb"].ucd
    assert fields["ra_deg"].ucd.startswith("pos.eq.ra")
    params = {p.name: p for p in table.params}
    assert params["source_id"].value in (ids[0], ids[0].encode())
    assert abs(float(params["ra_deg"].value) - lake.sql("SELECT ra_deg FROM catalog_sources WHERE source_id = ?",
                                                         [ids[0]])[0, 0]) < 1e-9
    assert "date_utc" in fields
    csv = c.get(f"/api/v1/sources/{_enc(ids[0])}/export", params={"format": "csv"})
    header = csv.text.splitlines()[0].split(",")
    assert header[:2] == ["catalog", "catalog_flux_mjy"] or "source_id" in header
    assert {"source_id", "mjd", "date_utc", "ra_deg", "dec_deg", "peak_jyb"} <= set(header)
    js = c.get(f"/api/v1/sources/{_enc(ids[0])}/export", params={"format": "json"}).json()
    assert js["source_id"] == ids[0] and js["ra_deg"] is not None and len(js["rows"]) == 60
    assert {"name": "peak_jyb", "unit": "Jy/beam"}.items() <= next(col for col in js["columns"]
                                                                    if col["name"] == "peak_jyb").items()
    pq = c.get(f"/api/v1/sources/{_enc(ids[0])}/export", params={"format": "parquet"})
    import io
    import pyarrow.parquet as papq
    schema = papq.read_schema(io.BytesIO(pq.content))
    assert schema.field("peak_jyb").metadata[b"unit"] == b"Jy/beam"
    cands = c.get("/api/ese/candidates.csv")
    assert cands.status_code == 200 and 'filename="ese_candidates.csv"' in cands.headers["content-disposition"]


def test_docs_are_offline_and_schema_is_described(wl):
    lake, _ = wl
    c = TestClient(create_app(lake))
    for page in ("/docs", "/redoc"):
        html = c.get(page).text
        assert "cdn" not in html.lower() and "https://" not in html.split("<body")[0]
        for src in [s.split('"')[1] for s in html.split("src=")[1:]] + \
                   [s.split('"')[1] for s in html.split('href=')[1:] if s.startswith('"')]:
            assert src.startswith("/"), (page, src)
            assert c.get(src).status_code == 200, src
    schema = c.get("/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
    lc = schema["paths"]["/api/v1/sources/{source_id}/lightcurve"]["get"]["responses"]["200"]
    assert "Lightcurve" in str(lc)
    assert "description" in schema["components"]["schemas"]["SourceInfo"]["properties"]["ra_deg"]


def test_review_from_api_when_writable(wl):
    lake, ids = wl
    ro = TestClient(create_app(lake))
    assert ro.post(f"/api/ese/candidates/{_enc(ids[2])}/review", json={"status": "dismissed"}).status_code == 403
    rw = TestClient(create_app(lake, writable=True))
    r = rw.post(f"/api/ese/candidates/{_enc(ids[2])}/review", json={"status": "investigated", "notes": "<b>x</b>"})
    assert r.status_code == 201
    review = rw.get(f"/api/v1/sources/{_enc(ids[2])}").json()["review"]
    assert review["status"] == "investigated" and review["notes"] == "<b>x</b>"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def server(wl):
    import uvicorn
    lake, ids = wl
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(lake, writable=True), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", port
    srv.should_exit = True
    thread.join(timeout=10)


def _get(url, host=None, method="GET", origin=None, data=None):
    req = urllib.request.Request(url, method=method, data=data)
    if host:
        req.add_header("Host", host)
    if origin:
        req.add_header("Origin", origin)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_host_header_allow_list(server, wl):
    base, port = server
    assert _get(base + "/api/v1/health") == 200
    assert _get(base + "/api/v1/health", host=f"localhost:{port}") == 200
    assert _get(base + "/api/v1/health", host="evil.example") == 400           # DNS rebinding
    assert _get(base + "/api/v1/health", host=f"evil.example:{port}") == 400
    _, ids = wl
    body = b'{"status": "active"}'
    url = f"{base}/api/ese/candidates/{_enc(ids[3])}/review"
    assert _get(url, method="POST", origin="http://evil.example", data=body) == 403      # cross-site POST
    assert _get(url, method="POST", origin=base, data=body) == 201


@pytest.mark.browser
def test_pages_in_headless_chromium(server, wl, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian chromium and chromium-driver are not installed (make system-deps)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    lake, ids = wl
    shots = Path(os.environ.get("ESELAKE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    wait = WebDriverWait(driver, 90)
    try:
        # search by name -> results -> source page
        driver.get(base + "/search")
        box = wait.until(EC.element_to_be_clickable((By.ID, "name")))
        box.send_keys("J1230", Keys.ENTER)
        wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "2 source(s)"))
        driver.save_screenshot(str(shots / "search.png"))
        driver.find_element(By.LINK_TEXT, ids[0]).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "title"), ids[0]))
        assert "/source?id=" in driver.current_url and _enc(ids[0]) in driver.current_url
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#chart[data-rendered='yes'] svg")))
        assert driver.find_elements(By.CSS_SELECTOR, "#chart .mark-symbol path")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#stamps figure img")))
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#stamps img')].every(i => i.complete && i.naturalWidth > 0)"))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#meas table tbody tr")))
        info = driver.find_element(By.ID, "info").text
        assert "188." in info and "catalogue flux (mJy)" in info and "SIMBAD" in driver.find_element(By.ID, "links").text
        # review: status buttons post and the page shows the new status
        notes = wait.until(EC.element_to_be_clickable((By.ID, "review-notes")))
        notes.send_keys("dip seen in the stamps")
        driver.find_element(By.CSS_SELECTOR, "button.review-btn[data-status='investigated']").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "review-status"), "investigated"))
        driver.save_screenshot(str(shots / "source.png"))
        assert lake.sql("SELECT status, notes FROM reviews WHERE source_id = ?", [ids[0]]).row(0) == \
            ("investigated", "dip seen in the stamps")
        # a name with HTML in it is shown as text, never run
        driver.get(base + "/search?search=" + quote("<img"))
        wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "1 source(s)"))
        assert EVIL in driver.find_element(By.ID, "results").text
        driver.find_element(By.LINK_TEXT, EVIL).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "title"), EVIL))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#meas table tbody tr")))
        assert driver.execute_script("return window.PWNED") is None
        # cone search
        driver.get(base + "/search")
        driver.find_element(By.ID, "ra").send_keys("12:34:00")
        driver.find_element(By.ID, "dec").send_keys("+42:00:00")
        driver.find_element(By.ID, "radius").clear()
        driver.find_element(By.ID, "radius").send_keys("0.05", Keys.ENTER)
        wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "1 source(s) within 0.05 deg"))
        assert ids[4] in driver.find_element(By.ID, "results").text
        # candidates page renders (whatever the default detection finds) with its export links
        driver.get(base + "/")
        wait.until(lambda d: "candidate(s)" in d.find_element(By.ID, "summary").text)
        assert "/api/ese/candidates.votable" in driver.find_element(By.ID, "export-vot").get_attribute("href")
        driver.save_screenshot(str(shots / "candidates.png"))
        # eta-V: clicking a point opens its source page
        driver.get(base + "/eta-v")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#chart[data-rendered='yes'] .mark-symbol path")))
        driver.save_screenshot(str(shots / "eta_v.png"))
        point = driver.find_elements(By.CSS_SELECTOR, "#chart .mark-symbol path")[0]
        webdriver.ActionChains(driver).move_to_element(point).click().perform()
        wait.until(EC.url_contains("/source?id="))
        # images page
        driver.get(base + "/images")
        wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "60 image(s)"))
        driver.save_screenshot(str(shots / "images.png"))
        # API docs render offline
        driver.get(base + "/docs")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .opblock")))
        driver.save_screenshot(str(shots / "docs.png"))
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
        assert not logs, logs
    finally:
        driver.quit()
