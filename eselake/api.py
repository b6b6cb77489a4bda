"""REST API and web pages (FastAPI), read-only by default: ``eselake serve`` or ``create_app(lake)``.

Source ids contain spaces and '+': URL-encode them (``NVSS%20J123456%2B420312``). All SQL is parameterised.
Everything the pages and /docs need is served from the package (Vega from vl-convert, Swagger UI and ReDoc
from fastapi-offline): nothing loads from the network. Requests whose Host header is not on the allow-list
(default 127.0.0.1, localhost, ::1) are refused, which stops DNS-rebinding pages from reaching the API.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import polars as pl
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from eselake import __version__
from eselake.errors import EselakeError
from eselake.lake import Lake
from eselake.output import EXTENSIONS, MEDIA_TYPES, _json_ready, frame_bytes, json_frame, json_value, with_iso_dates

Preset = Literal["conservative", "moderate", "sensitive"]
Status = Literal["active", "investigated", "dismissed"]
ExportFormat = Literal["csv", "json", "votable", "parquet"]
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
PAGES = ("index", "search", "source", "eta-v", "images")


# ------------------------------------------------------------------------------------------ models
class _Open(BaseModel):
    """Rows keep every column the lake returns (new detection fields flow through)."""
    model_config = ConfigDict(extra="allow")


class Health(BaseModel):
    status: str = Field(description="'ok'")
    version: str
    lake: str = Field(description="path of the lake served")
    writable: bool = Field(description="whether reviews can be posted")
    detection: str = Field(description="the default ESE detection settings in force")


class SourceRow(_Open):
    source_id: str = Field(description="catalogue source name")
    ra_deg: float | None = Field(None, description="right ascension J2000 (deg)")
    dec_deg: float | None = Field(None, description="declination J2000 (deg)")
    sep_deg: float | None = Field(None, description="distance from the cone centre (deg), cone searches only")
    n_obs: int | None = Field(None, description="number of measurements")
    mean_flux_mjy: float | None = Field(None, description="mean flux density (mJy)")
    chi2_nu: float | None = None
    eta_metric: float | None = None
    v_metric: float | None = None


class SourcesPage(BaseModel):
    total: int = Field(description="number of sources matching the search")
    limit: int
    offset: int
    sources: list[SourceRow]


class SourceInfo(BaseModel):
    source_id: str
    ra_deg: float | None = Field(None, description="right ascension J2000 (deg): the catalogue's, else measured")
    dec_deg: float | None = Field(None, description="declination J2000 (deg)")
    catalog: str | None = Field(None, description="catalogue the position and flux come from")
    catalog_flux_mjy: float | None = Field(None, description="catalogue flux density (mJy)")
    freq_hz: float | None = Field(None, description="median observing frequency (Hz)")
    n_images: int = Field(description="measurements of the source")
    first_mjd: float
    last_mjd: float
    first_date: str | None = Field(None, description="first observation, ISO 8601 UTC")
    last_date: str | None = Field(None, description="last observation, ISO 8601 UTC")
    variability: dict[str, Any] | None = Field(None, description="row of variability_stats")
    candidate: dict[str, Any] | None = Field(None, description="row of the default ESE detection, or null")
    review: dict[str, Any] | None = Field(None, description="latest review, or null")
    links: dict[str, str] = Field(description="SIMBAD, NED and VizieR queries around the position")


class Measurement(_Open):
    mjd: float = Field(description="observation mid-time, MJD (UTC)")
    date_utc: str | None = Field(None, description="observation mid-time, ISO 8601 UTC")
    peak_jyb: float | None = Field(None, description="peak flux density (Jy/beam)")
    peak_err_jyb: float | None = Field(None, description="1-sigma error (Jy/beam)")
    normalized_flux_jy: float | None = Field(None, description="ensemble-normalised flux (Jy)")
    normalized_err_jy: float | None = None
    image_id: str | None = None


class Lightcurve(BaseModel):
    source_id: str
    n: int = Field(description="number of measurements")
    measurements: list[Measurement]


class Variability(BaseModel):
    source_id: str
    variability: dict[str, Any] | None = Field(description="row of variability_stats")
    ese: dict[str, Any] | None = Field(description="row of ese_scores (dip scan, scores)")


class RelativeLightcurve(BaseModel):
    source_id: str
    points: list[dict[str, Any]]


class CandidateRow(_Open):
    source_id: str
    status: str | None = Field(None, description="review status (active when never reviewed)")
    significance: float | None = None


class CandidatesPage(BaseModel):
    detection: str = Field(description="the detection settings used")
    notes: list[str] = Field([], description="what the detection said about the options (e.g. a retired one)")
    preset: str | None = None
    composite: bool | None = None
    total: int
    limit: int
    offset: int
    candidates: list[CandidateRow]


class CandidateDetail(BaseModel):
    source_id: str
    is_candidate: bool = Field(description="a candidate of the default detection")
    candidate: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    candidate_of: dict[str, Any] = Field(description="per preset, whether the source is a candidate of it")
    review: dict[str, Any] | None = None


class ReviewIn(BaseModel):
    status: Status = Field(description="active, investigated or dismissed")
    notes: str = Field("", max_length=5000)
    reviewer: str | None = Field(None, max_length=200)


class ReviewOut(BaseModel):
    source_id: str
    status: Status


class Cutout(BaseModel):
    image_id: str
    mjd: float
    date_utc: str | None
    in_dip: bool = Field(description="observed inside the dip of the candidate / best dip")
    flux_mjy: float | None = None
    url: str = Field(description="PNG of the cutout")


class Cutouts(BaseModel):
    source_id: str
    dip: list[float] | None = Field(None, description="[start, end] MJD of the dip, if any")
    dip_from: str | None = Field(None, description="'candidate', or the search's best fit when not a candidate")
    n_images: int = Field(description="images of the source")
    n_available: int = Field(description="of those, image files present on this machine")
    cutouts: list[Cutout]


class ImagesPage(BaseModel):
    total: int
    limit: int
    offset: int
    images: list[dict[str, Any]]


class Views(BaseModel):
    views: list[dict[str, Any]]


# ------------------------------------------------------------------------------------------ helpers
def _rows(df: pl.DataFrame) -> list[dict]:
    return _json_ready(df)


def _row(d: dict | None) -> dict | None:
    return {k: json_value(v) for k, v in d.items()} if d else None


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script (from vl-convert: no CDN, works offline). The bundle's
    minified top-level names (``el``, ``$``...) are kept out of the page's global scope by a function wrapper;
    it exports window.vegaEmbed, window.vega and window.vegaLite."""
    import vl_convert as vlc
    return "(function () {\n" + vlc.javascript_bundle() + "\n})();\n"


def _docs_asset(name: str) -> bytes:
    """Swagger UI / ReDoc files shipped by the fastapi-offline package."""
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def _web(name: str) -> str:
    return resources.files("eselake.web").joinpath(name).read_text()


def external_links(ra: float | None, dec: float | None, radius_arcsec: float = 30.0) -> dict[str, str]:
    """SIMBAD, NED and VizieR queries around a position (opened by the user's browser, not by the server)."""
    if ra is None or dec is None or not (math.isfinite(ra) and math.isfinite(dec)):
        return {}
    from urllib.parse import urlencode
    r_arcmin = radius_arcsec / 60.0
    return {
        "SIMBAD": "https://simbad.cds.unistra.fr/simbad/sim-coo?" + urlencode(
            {"Coord": f"{ra:.6f} {dec:+.6f}", "CooFrame": "ICRS", "Radius": f"{radius_arcsec:g}",
             "Radius.unit": "arcsec"}),
        "NED": "https://ned.ipac.caltech.edu/conesearch?" + urlencode(
            {"search_type": "Near Position Search", "coordinates": f"{ra:.6f}d {dec:+.6f}d",
             "radius": f"{r_arcmin:.3f}", "in_csys": "Equatorial", "in_equinox": "J2000"}),
        "VizieR": "https://vizier.cds.unistra.fr/viz-bin/VizieR-4?" + urlencode(
            {"-c": f"{ra:.6f} {dec:+.6f}", "-c.rs": f"{radius_arcsec:g}"}),
    }


def _png_gray(a) -> bytes:
    """8-bit greyscale PNG of a 2-D uint8 array (first row at the top)."""
    import struct
    import zlib

    import numpy as np

    a = np.ascontiguousarray(a, dtype=np.uint8)
    h, w = a.shape
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def cutout_png(path: str, ra: float, dec: float, size_deg: float, scale: int = 4,
               vmax: float | None = None) -> bytes:
    """A postage stamp (PNG) of the image at ``path`` around (ra, dec): north up, east left, linear grey
    scale from -2 rms to ``vmax`` (Jy/beam; default the brightest pixel), a cross-hair gap marking the
    position."""
    import numpy as np
    from astropy.nddata import Cutout2D
    import astropy.units as u

    from eselake.ingest.photometry.fitsimage import read_sky_plane, sky_to_pixel

    data, wcs, frame = read_sky_plane(path)           # Stokes I, any axis order and sky frame
    x, y = sky_to_pixel(wcs, frame, ra, dec)
    cut = Cutout2D(data, (float(x), float(y)), size_deg * u.deg, wcs=wcs, mode="partial", fill_value=np.nan)
    img = cut.data
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        raise EselakeError("the cutout holds no finite pixels")
    med = np.median(finite)
    rms = 1.4826 * np.median(np.abs(finite - med)) or (finite.std() or 1.0)
    lo = med - 2 * rms
    hi = vmax if vmax is not None and vmax > lo else max(finite.max(), med + 5 * rms)
    scaled = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo), 0, 1)
    out = (255 * scaled).astype(np.uint8)[::-1]          # FITS row 0 is the bottom
    out = np.kron(out, np.ones((scale, scale), dtype=np.uint8))
    cy, cx = out.shape[0] // 2, out.shape[1] // 2
    n = out.shape[0]
    gap, arm = max(3, n // 12), max(4, n // 8)
    for d in range(gap, gap + arm):            # cross-hair ticks that leave the source itself visible
        for yy, xx in ((cy - d, cx), (cy + d, cx), (cy, cx - d), (cy, cx + d)):
            if 0 <= yy < out.shape[0] and 0 <= xx < out.shape[1]:
                out[yy, xx] = 255 if out[yy, xx] < 128 else 0
    return _png_gray(out)


def _download(data: bytes, fmt: str, stem: str) -> Response:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem).strip("_") or "export"
    return Response(data, media_type=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{safe}.{EXTENSIONS[fmt]}"'})


class HostCheck:
    """ASGI middleware: refuse requests whose Host header is not allowed (DNS rebinding), and POSTs whose
    Origin is another site. In-process test clients (client 'testclient') are not checked."""

    def __init__(self, app, allowed: list[str]):
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed}

    def _ok(self, hostport: str) -> bool:
        if not hostport:
            return False
        host = hostport.rsplit(":", 1)[0] if not hostport.endswith("]") and hostport.count(":") == 1 else hostport
        return host.lower().strip("[]") in self.allowed or "*" in self.allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and (scope.get("client") or ("",))[0] != "testclient":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            reason = None
            if not self._ok(headers.get("host", "")):
                reason = "Host header not allowed (start the server with --allow-host NAME to accept it)"
            elif scope.get("method") not in ("GET", "HEAD", "OPTIONS") and headers.get("origin") \
                    and not self._ok(urlsplit(headers["origin"]).netloc):
                reason = "cross-site request refused"
            if reason:
                response = PlainTextResponse(reason, status_code=400 if "Host" in reason else 403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------ app
def create_app(lake: Lake, *, writable: bool = False, allowed_hosts: list[str] | tuple[str, ...] | None = None
               ) -> FastAPI:
    """The API and pages over ``lake``. With ``writable`` reviews can be posted. ``allowed_hosts``: Host
    header names accepted (default 127.0.0.1, localhost, ::1; '*' accepts any)."""
    from eselake import faces

    app = FastAPI(
        title="eselake", version=__version__, docs_url=None, redoc_url=None,
        description="DSA-110 lightcurves and Extreme Scattering Event (ESE) candidates. Fluxes in Jy or mJy as "
                    "named, times in MJD (UTC) with ISO dates beside them, positions J2000 in degrees. Source "
                    "ids are URL-encoded in paths. Candidates come from the default detection unless a "
                    "preset or mode is given, the same list as the CLI, Python and the ese_candidates view.",
        openapi_tags=[{"name": "sources", "description": "search, positions, lightcurves, statistics"},
                      {"name": "candidates", "description": "ESE candidates and their review"},
                      {"name": "images", "description": "images and cutouts"},
                      {"name": "meta", "description": "server and lake"}])
    app.add_middleware(HostCheck, allowed=list(allowed_hosts or DEFAULT_HOSTS))

    def source_or_404(source_id: str, *, measurements: bool = True):
        """The source, its measurements loaded (most endpoints use them); ``measurements=False``: only checked
        to exist, on its statistics row (Source.check_known)."""
        from eselake.source import Source
        src = Source(source_id, lake)
        try:
            _ = src.measurements if measurements else src.check_known()
        except EselakeError as exc:
            raise HTTPException(404, str(exc)) from exc
        return src

    @app.exception_handler(EselakeError)
    async def _user_error(_, exc: EselakeError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    # ---------------------------------------------------------------- pages and static files
    def page(name: str):
        def handler() -> HTMLResponse:
            return HTMLResponse(_web(f"{name}.html"), headers={"Cache-Control": "no-cache"})
        return handler

    for name, route in (("index", "/"), ("search", "/search"), ("source", "/source"), ("etav", "/eta-v"),
                        ("images", "/images")):
        app.add_api_route(route, page(name), methods=["GET"], include_in_schema=False,
                          response_class=HTMLResponse, name=f"page_{name}")

    @app.get("/static/vega.js", include_in_schema=False)
    @app.get("/static/vega-bundle.js", include_in_schema=False)
    def bundle() -> Response:
        return Response(vega_bundle(), media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: Literal["app.js", "style.css"]) -> Response:
        media = "application/javascript" if name.endswith(".js") else "text/css"
        return Response(_web(name), media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/static/docs/{name}", include_in_schema=False)
    def docs_static(name: Literal["swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js",
                                  "favicon.png"]) -> Response:
        media = {"js": "application/javascript", "css": "text/css", "png": "image/png"}[name.rsplit(".", 1)[1]]
        return Response(_docs_asset(name), media_type=media, headers={"Cache-Control": "max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(_docs_asset("favicon.png"), media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html
        return get_swagger_ui_html(openapi_url="/openapi.json", title="eselake API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        from fastapi.openapi.docs import get_redoc_html
        return get_redoc_html(openapi_url="/openapi.json", title="eselake API",
                              redoc_js_url="/static/docs/redoc.standalone.js",
                              redoc_favicon_url="/static/docs/favicon.png", with_google_fonts=False)

    # ---------------------------------------------------------------- meta
    @app.get("/api/v1/health", response_model=Health, tags=["meta"], summary="Server, lake and mode")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "lake": str(lake.path), "writable": writable,
                "detection": faces.describe()}

    @app.get("/api/v1/views", response_model=Views, tags=["meta"], summary="The SQL views and their versions")
    def views() -> dict:
        return {"views": _rows(lake.sql("SELECT * FROM eselake_views"))}

    # ---------------------------------------------------------------- sources
    POSITIONS = """
        WITH cat AS (SELECT source_id, any_value(ra_deg) AS ra_deg, any_value(dec_deg) AS dec_deg
                     FROM catalog_sources GROUP BY source_id),
        meas AS (SELECT source_id, median(ra_deg) AS ra_deg, median(dec_deg) AS dec_deg
                 FROM measurements GROUP BY source_id)
        SELECT v.source_id, coalesce(c.ra_deg, m.ra_deg) AS ra_deg, coalesce(c.dec_deg, m.dec_deg) AS dec_deg,
               v.n_obs, v.first_mjd, v.last_mjd, v.mean_flux_mjy, v.std_flux_mjy, v.chi2_nu, v.eta_metric,
               v.v_metric, v.sigma_deviation
        FROM variability_stats v LEFT JOIN cat c USING (source_id) LEFT JOIN meas m USING (source_id)"""

    @app.get("/api/v1/sources", response_model=SourcesPage, tags=["sources"],
             summary="Search sources by name or position (cone search)")
    def sources(search: str | None = Query(None, max_length=200, description="substring of the source id "
                                                                              "(case-insensitive)"),
                ra: float | None = Query(None, ge=0, lt=360, description="cone centre RA J2000 (deg)"),
                dec: float | None = Query(None, ge=-90, le=90, description="cone centre Dec J2000 (deg)"),
                radius_deg: float = Query(0.1, gt=0, le=180, description="cone radius (deg)"),
                limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
                order: Literal["source_id", "n_obs", "chi2_nu", "mean_flux_mjy", "eta_metric", "distance"] =
                Query("source_id", description="sort key (numbers descending; distance for cone searches)")
                ) -> dict:
        if (ra is None) != (dec is None):
            raise HTTPException(422, "a cone search needs both ra and dec")
        cone = ra is not None
        sep = ("degrees(2 * asin(sqrt(pow(sin(radians(dec_deg - $dec) / 2), 2) + cos(radians(dec_deg)) * "
               "cos(radians($dec)) * pow(sin(radians(ra_deg - $ra) / 2), 2))))") if cone else "NULL::DOUBLE"
        where = ["($search IS NULL OR contains(lower(source_id), lower($search)))"]
        if cone:
            where.append("sep_deg <= $radius")
        params = {"search": search, "limit": limit, "offset": offset}
        if cone:
            params.update(ra=float(ra), dec=float(dec), radius=float(radius_deg))
        base = f"SELECT *, {sep} AS sep_deg FROM ({POSITIONS})"
        filt = f"FROM ({base}) WHERE {' AND '.join(where)}"
        count_params = {k: v for k, v in params.items() if k not in ("limit", "offset")}
        total = lake.sql(f"SELECT count(*) AS n {filt}", count_params)["n"][0]
        if order == "distance":
            key = "sep_deg" if cone else "source_id"
        else:
            key = order + (" DESC" if order != "source_id" else "")
        df = lake.sql(f"SELECT * {filt} ORDER BY {key} NULLS LAST, source_id LIMIT $limit OFFSET $offset", params)
        return {"total": int(total), "limit": limit, "offset": offset, "sources": _rows(df)}

    @app.get("/api/v1/sources/{source_id:path}/lightcurve", response_model=Lightcurve, tags=["sources"],
             summary="All measurements of a source (with ISO dates and normalisation)")
    def lightcurve(source_id: str) -> Response:
        src = source_or_404(source_id)
        m = json_frame(with_iso_dates(src.measurements))
        # serialised by polars (10k measurements: ~10 ms; dicts through the response model: ~200 ms)
        return Response(f'{{"source_id": {json.dumps(source_id)}, "n": {m.height}, "measurements": {m.write_json()}}}',
                        media_type="application/json")

    @app.get("/api/v1/sources/{source_id:path}/variability", response_model=Variability, tags=["sources"],
             summary="Variability statistics and ESE scores")
    def variability(source_id: str) -> dict:
        src = source_or_404(source_id, measurements=False)
        return {"source_id": source_id, "variability": _row(src.variability), "ese": _row(src.ese)}

    @app.get("/api/v1/sources/{source_id:path}/relative_lightcurve", response_model=RelativeLightcurve,
             tags=["sources"], summary="Flux relative to stable neighbours")
    def relative(source_id: str, radius_deg: float = Query(0.5, gt=0, le=10),
                 max_eta: float = Query(1.5, gt=0, le=1e6), min_neighbors: int = Query(3, ge=1, le=1000)) -> dict:
        src = source_or_404(source_id)
        try:
            df = src.relative_lightcurve(radius_deg=radius_deg, max_eta=max_eta, min_neighbors=min_neighbors)
        except EselakeError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"source_id": source_id, "points": _rows(df)}

    @app.get("/api/v1/sources/{source_id:path}/chart.{fmt}", tags=["sources"],
             summary="Lightcurve chart (Vega-Lite JSON, PNG or SVG)",
             responses={200: {"content": {"application/json": {}, "image/png": {}, "image/svg+xml": {}}}})
    def source_chart(source_id: str, fmt: Literal["json", "png", "svg"], normalized: bool = True,
                     dip: bool | None = Query(None, description="shade the dip and draw the model: default "
                                                                 "only for candidates")) -> Response:
        from eselake.charts import chart_bytes, lightcurve_chart
        src = source_or_404(source_id)
        data = chart_bytes(lightcurve_chart(src, use_normalized=normalized, highlight_ese_period=dip,
                                            highlight_baseline=dip, show_fit=dip, width=640, height=260), fmt)
        media = {"json": "application/json", "png": "image/png", "svg": "image/svg+xml"}[fmt]
        return Response(data, media_type=media)

    @app.get("/api/v1/sources/{source_id:path}/export", tags=["sources"],
             summary="Download the lightcurve (csv, json, votable, parquet) with units and the source's position",
             responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}})
    def export(source_id: str, format: ExportFormat = "csv") -> Response:
        return _download(source_or_404(source_id).export(format), format, f"{source_id}_lightcurve")

    @app.get("/api/v1/sources/{source_id:path}/cutouts", response_model=Cutouts, tags=["images"],
             summary="Postage stamps of the source in its images, those inside the dip first")
    def cutouts(source_id: str, limit: int = Query(12, ge=1, le=200)) -> dict:
        src = source_or_404(source_id)
        m = src.measurements
        cand = src.candidate
        ese = src.ese or {}
        from eselake.charts import _event_window
        if cand:
            window, dip_from = _event_window({**ese, **{k: v for k, v in cand.items() if v is not None}}), "candidate"
        elif ese.get("is_dip") or (ese.get("depth") or ese.get("dip_depth") or 0) > 0:
            window, dip_from = _event_window(ese), "best fit (not a candidate)"     # still worth a look
        else:
            window, dip_from = None, None
        if window is None:
            dip_from = None
        paths = m.select("image_id", "mjd", "image_path",
                         (pl.coalesce("normalized_flux_jy", "peak_jyb") * 1000).alias("flux_mjy"))
        exists = [bool(p) and Path(p).is_file() for p in paths["image_path"].to_list()]
        paths = paths.with_columns(pl.Series("exists", exists))
        avail = paths.filter(pl.col("exists"))
        if window is not None:
            avail = avail.with_columns(((pl.col("mjd") >= window[0]) & (pl.col("mjd") <= window[1])).alias("in_dip"))
        else:
            avail = avail.with_columns(pl.lit(False).alias("in_dip"))
        inside = avail.filter(pl.col("in_dip"))
        outside = avail.filter(~pl.col("in_dip"))
        k_out = min(outside.height, max(2, limit // 3)) if inside.height else min(outside.height, limit)
        n_in = min(inside.height, limit - k_out)
        pick_in = _spread(inside, n_in)
        pick_out = _spread(outside, limit - pick_in.height)
        chosen = pl.concat([pick_in, pick_out]).head(limit).sort("mjd")
        from urllib.parse import quote
        enc = quote(source_id, safe="")
        out = [{"image_id": r["image_id"], "mjd": r["mjd"], "date_utc": _iso(r["mjd"]), "in_dip": r["in_dip"],
                "flux_mjy": json_value(r["flux_mjy"]),
                "url": f"/api/v1/sources/{enc}/cutout.png?image_id={quote(r['image_id'], safe='')}"}
               for r in chosen.iter_rows(named=True)]
        return {"source_id": source_id, "dip": list(window) if window else None, "dip_from": dip_from,
                "n_images": m.height,
                "n_available": avail.height, "cutouts": out}

    @app.get("/api/v1/sources/{source_id:path}/cutout.png", tags=["images"],
             summary="PNG postage stamp of the source in one of its images",
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "image file not on this machine"}})
    def cutout(source_id: str, image_id: str = Query(..., max_length=500),
               size_arcmin: float = Query(12.0, gt=0.1, le=120),
               scale: Literal["source", "image"] = Query("source", description="grey scale: 'source' is the "
                                                         "same for all of the source's stamps (so a dip looks "
                                                         "fainter), 'image' stretches each stamp")) -> Response:
        src = source_or_404(source_id)
        row = src.measurements.filter(pl.col("image_id") == image_id)
        if row.height == 0:
            raise HTTPException(404, f"source {source_id!r} has no measurement in image {image_id!r}")
        path = row["image_path"][0]
        if not path or not Path(path).is_file():
            raise HTTPException(404, f"image file {path!r} is not available on this machine")
        info = src.info
        try:
            vmax = None
            if scale == "source":
                peaks = src.measurements["peak_jyb"].drop_nulls()
                vmax = 1.6 * float(peaks.median()) if peaks.len() and peaks.median() > 0 else None
            png = cutout_png(path, info["ra_deg"], info["dec_deg"], size_arcmin / 60.0, vmax=vmax)
        except Exception as exc:            # unreadable or WCS-less image, source outside it
            raise HTTPException(404, f"no cutout from {path}: {exc}") from exc
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/v1/sources/{source_id:path}", response_model=SourceInfo, tags=["sources"],
             summary="One source: position, catalogue flux, statistics, candidate verdict, review, links")
    def source_info(source_id: str) -> dict:
        src = source_or_404(source_id)
        info = src.info
        review = lake.sql("SELECT * FROM reviews WHERE source_id = ?", [source_id])
        return {**{k: json_value(v) for k, v in info.items()},
                "first_date": _iso(info["first_mjd"]), "last_date": _iso(info["last_mjd"]),
                "variability": _row(src.variability), "candidate": _row(src.candidate),
                "review": _rows(review)[0] if review.height else None,
                "links": external_links(info["ra_deg"], info["dec_deg"])}

    # ---------------------------------------------------------------- candidates
    def _candidates(preset, composite, min_sigma, status, search, order=None, descending=True, notes=None):
        df = faces.detect(lake, notes=notes if notes is not None else [], preset=preset, min_sigma=min_sigma,
                          use_composite_scoring=composite or None, status=status)
        if search:
            df = df.filter(pl.col("source_id").str.to_lowercase().str.contains(search.lower(), literal=True))
        if df.height and not {"ra_deg", "dec_deg"} <= set(df.columns):
            pos = lake.sql(f"SELECT source_id, ra_deg, dec_deg FROM ({POSITIONS}) WHERE source_id IN "
                           "(SELECT unnest($ids))", {"ids": df["source_id"].to_list()})
            df = faces.order_candidates(df.join(pos, on="source_id", how="left"))
        if order is not None:
            if order not in df.columns:
                raise HTTPException(422, f"order: no column {order!r}; columns: {', '.join(df.columns)}")
            df = df.sort(order, descending=descending, nulls_last=True)
        return df

    cand_params = dict(
        preset=Query(None, description="detection preset [default: the detection's]"),
        composite=Query(None, deprecated=True, description="the seed's composite scoring: passed to the "
                                                             "detection, which notes what it does"),
        min_sigma=Query(None, ge=0, le=1000, description="minimum significance"),
        status=Query(None, description="only this review status"),
        search=Query(None, max_length=200, description="substring of the source id"))

    @app.get("/api/ese/candidates", response_model=CandidatesPage, tags=["candidates"],
             summary="ESE candidates, best first (the default detection unless preset/composite are given)")
    def candidates(preset: Preset | None = cand_params["preset"], composite: bool | None = cand_params["composite"],
                   min_sigma: float | None = cand_params["min_sigma"], status: Status | None = cand_params["status"],
                   search: str | None = cand_params["search"],
                   order: str | None = Query(None, max_length=64, description="sort by this column "
                                                                                "[default: best first]"),
                   descending: bool = True,
                   limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000)) -> dict:
        notes: list[str] = []
        df = _candidates(preset, composite, min_sigma, status, search, order, descending, notes)
        return {"detection": faces.describe(preset=preset, use_composite_scoring=composite or None,
                                            min_sigma=min_sigma, status=status),
                "notes": list(dict.fromkeys(notes)),
                "preset": preset, "composite": composite, "total": df.height, "limit": limit, "offset": offset,
                "candidates": _rows(df.slice(offset, limit))}

    @app.get("/api/ese/candidates.{format}", tags=["candidates"],
             summary="Download the candidate list (csv, json, votable, parquet) with units",
             responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}})
    def candidates_export(format: ExportFormat, preset: Preset | None = cand_params["preset"],
                          composite: bool | None = cand_params["composite"],
                          min_sigma: float | None = cand_params["min_sigma"],
                          status: Status | None = cand_params["status"],
                          search: str | None = cand_params["search"]) -> Response:
        df = _candidates(preset, composite, min_sigma, status, search)
        meta = {"detection": faces.describe(preset=preset, use_composite_scoring=composite or None,
                                            min_sigma=min_sigma, status=status), "lake": str(lake.path)}
        return _download(frame_bytes(df, format, meta if format != "csv" else None), format, "ese_candidates")

    @app.get("/api/ese/candidates/{source_id:path}", response_model=CandidateDetail, tags=["candidates"],
             summary="One source's verdict under the default detection, its scores and review")
    def candidate(source_id: str) -> dict:
        src = source_or_404(source_id, measurements=False)
        try:
            flags = lake.sql("SELECT * FROM ese_preset_flags WHERE source_id = ?", [source_id])
            keys = [c for c in flags.columns if c.startswith("passes")]
            member = {r["preset"]: (bool(r[keys[0]]) if len(keys) == 1 else {k: bool(r[k]) for k in keys})
                      for r in flags.iter_rows(named=True)}
        except Exception:              # the detection has no per-preset flags
            member = {}
        review = lake.sql("SELECT * FROM reviews WHERE source_id = ?", [source_id])
        cand = src.candidate
        return {"source_id": source_id, "is_candidate": cand is not None, "candidate": _row(cand),
                "scores": _row(src.ese), "candidate_of": member,
                "review": _rows(review)[0] if review.height else None}

    @app.post("/api/ese/candidates/{source_id:path}/review", status_code=201, response_model=ReviewOut,
              tags=["candidates"], summary="Record a review (only when served with --writable)",
              responses={403: {"description": "the server is read-only"}})
    def post_review(source_id: str, body: ReviewIn) -> dict:
        if not writable:
            raise HTTPException(403, "this server is read-only; start it with `eselake serve --writable`")
        source_or_404(source_id, measurements=False)
        from eselake.detection import review
        review(lake, source_id, body.status, body.notes, body.reviewer or "web")
        return {"source_id": source_id, "status": body.status}

    # ---------------------------------------------------------------- images and charts
    @app.get("/api/v1/images", response_model=ImagesPage, tags=["images"], summary="Images in the lake, by time")
    def images(limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
               night: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD"),
               order: Literal["mjd", "-mjd"] = "mjd") -> dict:
        where = "WHERE ($night IS NULL OR CAST(night AS VARCHAR) = $night)"
        total = lake.sql(f"SELECT count(*) AS n FROM images {where}", {"night": night})["n"][0]
        cols = lake.sql("SELECT * FROM images LIMIT 0").columns
        want = [c for c in ("image_id", "path", "kind", "mjd", "night", "freq_hz", "bmaj_deg", "bmin_deg",
                            "rms_jyb", "ra_center_deg", "dec_center_deg", "n_sources", "ingested_at") if c in cols]
        df = lake.sql(f"SELECT {', '.join(want)} FROM images {where} ORDER BY mjd {'DESC' if order == '-mjd' else ''} "
                      "LIMIT $limit OFFSET $offset", {"night": night, "limit": limit, "offset": offset})
        df = with_iso_dates(df)
        if "path" in df.columns:
            df = df.with_columns(pl.Series("file_present", [bool(p) and Path(p).is_file()
                                                             for p in df["path"].to_list()], dtype=pl.Boolean))
        return {"total": int(total), "limit": limit, "offset": offset, "images": _rows(df)}

    @app.get("/api/v1/charts/variability.{fmt}", tags=["sources"],
             summary="eta-V diagram (Vega-Lite JSON, PNG or SVG); points link to source pages",
             responses={200: {"content": {"application/json": {}, "image/png": {}, "image/svg+xml": {}}}})
    def variability_chart(fmt: Literal["json", "png", "svg"], preset: Preset | None = cand_params["preset"],
                          composite: bool | None = cand_params["composite"],
                          min_sigma: float | None = cand_params["min_sigma"]) -> Response:
        from eselake.charts import chart_bytes, variability_chart as vchart
        media = {"json": "application/json", "png": "image/png", "svg": "image/svg+xml"}[fmt]
        chart = vchart(lake, preset=preset, use_composite_scoring=composite, min_sigma=min_sigma,
                       link="/source?id=" if fmt == "json" else None)
        return Response(chart_bytes(chart, fmt), media_type=media)

    return app


def _spread(df: pl.DataFrame, n: int) -> pl.DataFrame:
    """``n`` rows spread evenly over ``df``."""
    if n <= 0 or df.height == 0:
        return df.head(0)
    if df.height <= n:
        return df
    import numpy as np
    return df[np.unique(np.linspace(0, df.height - 1, n).round().astype(int)).tolist()]


def _iso(mjd) -> str | None:
    from eselake.output import mjd_to_iso
    return mjd_to_iso(mjd)
