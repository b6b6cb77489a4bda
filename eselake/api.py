"""REST API and web page (FastAPI), read-only by default: ``eselake serve`` or ``create_app(lake)``.

Source ids contain spaces and '+': URL-encode them (``NVSS%20J123456%2B420312``). All SQL is parameterised.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal

import polars as pl
from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from eselake import __version__
from eselake.errors import EselakeError
from eselake.lake import Lake
from eselake.output import MEDIA_TYPES, _json_ready, frame_bytes

Preset = Literal["conservative", "moderate", "sensitive"]
Status = Literal["active", "investigated", "dismissed"]


class ReviewIn(BaseModel):
    status: Status
    notes: str = Field("", max_length=5000)
    reviewer: str | None = Field(None, max_length=200)


def _rows(df: pl.DataFrame) -> list[dict]:
    return _json_ready(df)


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script (from vl-convert: no CDN, works offline)."""
    import vl_convert as vlc
    return vlc.javascript_bundle()


def create_app(lake: Lake, *, writable: bool = False) -> FastAPI:
    """The API over ``lake``. With ``writable`` the review endpoint accepts POSTs."""
    app = FastAPI(title="eselake", version=__version__,
                  description="DSA-110 lightcurves and Extreme Scattering Event candidates")

    def source_or_404(source_id: str):
        from eselake.source import Source
        src = Source(source_id, lake)
        try:
            _ = src.measurements
        except EselakeError as exc:
            raise HTTPException(404, str(exc)) from exc
        return src

    @app.exception_handler(EselakeError)
    async def _user_error(_, exc: EselakeError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return resources.files("eselake.web").joinpath("index.html").read_text()

    @app.get("/static/vega-bundle.js", include_in_schema=False)
    def bundle() -> Response:
        return Response(vega_bundle(), media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/v1/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "lake": str(lake.path), "writable": writable}

    @app.get("/api/v1/sources")
    def sources(search: str | None = Query(None, max_length=200, description="substring of the source id"),
                limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
                order: Literal["source_id", "n_obs", "chi2_nu", "mean_flux_mjy"] = "source_id") -> dict:
        where = "WHERE (? IS NULL OR contains(lower(source_id), lower(?)))"
        total = lake.sql(f"SELECT count(*) AS n FROM variability_stats {where}", [search, search])["n"][0]
        desc = " DESC" if order != "source_id" else ""
        df = lake.sql(f"SELECT source_id, n_obs, first_mjd, last_mjd, mean_flux_mjy, std_flux_mjy, chi2_nu, "
                      f"eta_metric, v_metric, sigma_deviation FROM variability_stats {where} "
                      f"ORDER BY {order}{desc} NULLS LAST, source_id LIMIT ? OFFSET ?",
                      [search, search, limit, offset])
        return {"total": int(total), "limit": limit, "offset": offset, "sources": _rows(df)}

    @app.get("/api/v1/sources/{source_id:path}/lightcurve")
    def lightcurve(source_id: str) -> dict:
        src = source_or_404(source_id)
        return {"source_id": source_id, "n": src.measurements.height, "measurements": _rows(src.measurements)}

    @app.get("/api/v1/sources/{source_id:path}/variability")
    def variability(source_id: str) -> dict:
        src = source_or_404(source_id)
        return {"source_id": source_id, "variability": _rows(pl.DataFrame([src.variability]))[0]
                if src.variability else None, "ese": _rows(pl.DataFrame([src.ese]))[0] if src.ese else None}

    @app.get("/api/v1/sources/{source_id:path}/relative_lightcurve")
    def relative(source_id: str, radius_deg: float = Query(0.5, gt=0, le=10),
                 max_eta: float = Query(1.5, gt=0, le=1e6), min_neighbors: int = Query(3, ge=1, le=1000)) -> dict:
        src = source_or_404(source_id)
        try:
            df = src.relative_lightcurve(radius_deg=radius_deg, max_eta=max_eta, min_neighbors=min_neighbors)
        except EselakeError as exc:
            raise HTTPException(404, str(exc)) from exc
        return {"source_id": source_id, "points": _rows(df)}

    @app.get("/api/v1/sources/{source_id:path}/chart.{fmt}")
    def source_chart(source_id: str, fmt: Literal["json", "png", "svg"], normalized: bool = True) -> Response:
        from eselake.charts import chart_bytes, lightcurve_chart
        src = source_or_404(source_id)
        data = chart_bytes(lightcurve_chart(src, use_normalized=normalized, width=640, height=260), fmt)
        media = {"json": "application/json", "png": "image/png", "svg": "image/svg+xml"}[fmt]
        return Response(data, media_type=media)

    @app.get("/api/v1/sources/{source_id:path}/export")
    def export(source_id: str, format: Literal["csv", "json", "votable", "parquet"] = "csv") -> Response:
        return Response(frame_bytes(source_or_404(source_id).measurements, format), media_type=MEDIA_TYPES[format])

    @app.get("/api/ese/candidates")
    def candidates(preset: Preset = "moderate", composite: bool = True,
                   min_sigma: float | None = Query(None, ge=0, le=1000), status: Status | None = None,
                   limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000)) -> dict:
        from eselake.detection import detect_ese_candidates
        df = detect_ese_candidates(lake, preset=preset, min_sigma=min_sigma, use_composite_scoring=composite,
                                   status=status)
        return {"preset": preset, "composite": composite, "total": df.height, "limit": limit, "offset": offset,
                "candidates": _rows(df.slice(offset, limit))}

    @app.get("/api/ese/candidates/{source_id:path}")
    def candidate(source_id: str) -> dict:
        src = source_or_404(source_id)
        flags = lake.sql("SELECT preset, passes_thresholds, passes_composite FROM ese_preset_flags "
                         "WHERE source_id = ?", [source_id])
        member = {r["preset"]: {"thresholds": bool(r["passes_thresholds"]), "composite": bool(r["passes_composite"])}
                  for r in flags.iter_rows(named=True)}
        review = lake.sql("SELECT * FROM reviews WHERE source_id = ?", [source_id])
        return {"source_id": source_id, "scores": _rows(pl.DataFrame([src.ese]))[0] if src.ese else None,
                "candidate_of": member, "review": _rows(review)[0] if review.height else None}

    @app.post("/api/ese/candidates/{source_id:path}/review", status_code=201)
    def post_review(source_id: str, body: ReviewIn) -> dict:
        if not writable:
            raise HTTPException(403, "this server is read-only; start it with `eselake serve --writable`")
        source_or_404(source_id)
        from eselake.detection import review
        review(lake, source_id, body.status, body.notes, body.reviewer or "api")
        return {"source_id": source_id, "status": body.status}

    @app.get("/api/v1/images")
    def images(limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000)) -> dict:
        total = lake.sql("SELECT count(*) AS n FROM images")["n"][0]
        df = lake.sql("SELECT image_id, path, kind, mjd, night, freq_hz, bmaj_deg, bmin_deg, rms_jyb, "
                      "ra_center_deg, dec_center_deg, n_sources, ingested_at FROM images ORDER BY mjd "
                      "LIMIT ? OFFSET ?", [limit, offset])
        return {"total": int(total), "limit": limit, "offset": offset, "images": _rows(df)}

    @app.get("/api/v1/charts/variability.{fmt}")
    def variability_chart(fmt: Literal["json", "png", "svg"], preset: Preset = "moderate") -> Response:
        from eselake.charts import chart_bytes, variability_chart as vchart
        media = {"json": "application/json", "png": "image/png", "svg": "image/svg+xml"}[fmt]
        return Response(chart_bytes(vchart(lake, preset=preset), fmt), media_type=media)

    @app.get("/api/v1/views")
    def views() -> dict:
        return {"views": _rows(lake.sql("SELECT * FROM eselake_views"))}

    return app
