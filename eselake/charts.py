"""Altair charts: lightcurves, the eta-V diagram and a candidate summary; saved offline with vl-convert
(PNG, SVG, PDF, self-contained HTML or the Vega-Lite JSON), never touching the network."""
from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl

from eselake.errors import EselakeError

MAX_POINTS = 3000          # above this many measurements a lightcurve is drawn from daily bins
CHART_FORMATS = (".png", ".svg", ".pdf", ".html", ".json")


def _values(df: pl.DataFrame) -> alt.Data:
    """Inline data (JSON-safe: NaN/inf become null) without Altair's 5000-row limit."""
    rows = df.to_dicts()
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and not np.isfinite(v):
                r[k] = None
    return alt.Data(values=rows)


def lightcurve_data(source, use_normalized: bool = True) -> tuple[pl.DataFrame, str]:
    """Points to draw (mjd, flux_mjy, err_mjy) and a label saying what they are."""
    m = source.measurements
    binned = m.height > MAX_POINTS
    if binned:
        df = source.lake.sql("SELECT mjd, flux_jy * 1000 AS flux_mjy, err_jy * 1000 AS err_mjy, n_points "
                             "FROM daily_lightcurves WHERE source_id = ? ORDER BY day", [source.source_id])
        return df, "daily bins of the normalised flux"
    if use_normalized and m["normalized_flux_jy"].is_not_null().any():
        df = m.select(pl.col("mjd"), (pl.col("normalized_flux_jy") * 1000).alias("flux_mjy"),
                      (pl.col("normalized_err_jy") * 1000).alias("err_mjy"), pl.col("image_id"))
        return df.drop_nulls("flux_mjy"), "normalised flux"
    df = m.select(pl.col("mjd"), (pl.col("peak_jyb") * 1000).alias("flux_mjy"),
                  (pl.col("peak_err_jyb") * 1000).alias("err_mjy"), pl.col("image_id"))
    return df.drop_nulls("flux_mjy"), "raw peak flux"


def lightcurve_chart(source, use_normalized: bool = True, highlight_ese_period: bool = True,
                     highlight_baseline: bool = True, show_fit: bool = True, width: int = 720,
                     height: int = 300, title: str | None = None) -> alt.LayerChart:
    """Lightcurve with error bars; shading of the baseline epochs and the detected dip; the dip model."""
    df, what = lightcurve_data(source, use_normalized)
    if df.height == 0:
        raise EselakeError(f"source {source.source_id!r} has no finite fluxes to plot")
    df = df.with_columns((pl.col("flux_mjy") - pl.col("err_mjy")).alias("lo"),
                         (pl.col("flux_mjy") + pl.col("err_mjy")).alias("hi"))
    ese = source.ese if (highlight_ese_period or highlight_baseline or show_fit) else {}
    x = alt.X("mjd:Q", title="MJD", scale=alt.Scale(zero=False, nice=False))
    y = alt.Y("flux_mjy:Q", title=f"{what} (mJy)", scale=alt.Scale(zero=False))
    base = alt.Chart(_values(df))
    layers = []
    has_dip = bool(ese) and ese.get("dip_start_mjd") is not None
    if has_dip and highlight_baseline:
        spans = pl.DataFrame({"start": [float(df["mjd"].min()), ese["dip_end_mjd"]],
                              "end": [ese["dip_start_mjd"], float(df["mjd"].max())],
                              "region": ["baseline", "baseline"]})
        layers.append(alt.Chart(_values(spans)).mark_rect(opacity=0.08, color="#1f77b4")
                      .encode(x="start:Q", x2="end:Q"))
    if has_dip and highlight_ese_period:
        dip = pl.DataFrame({"start": [ese["dip_start_mjd"]], "end": [ese["dip_end_mjd"]],
                            "label": [f"dip {ese['dip_depth'] * 100:.0f}% over {ese['dip_duration_days']:.0f} d "
                                      f"(significance {ese['dip_significance']:.1f})"]})
        layers.append(alt.Chart(_values(dip)).mark_rect(opacity=0.18, color="#d62728")
                      .encode(x="start:Q", x2="end:Q", tooltip=["label:N"]))
    layers.append(base.mark_rule(opacity=0.5, color="#555").encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q"))
    layers.append(base.mark_circle(size=22, color="#1f4e79").encode(
        x=x, y=y, tooltip=[alt.Tooltip("mjd:Q", format=".4f"), alt.Tooltip("flux_mjy:Q", format=".3f"),
                           alt.Tooltip("err_mjy:Q", format=".3f")]))
    if has_dip and show_fit:
        # a robust step fit: median flux outside and inside the dip's extent (caustic spikes at the edges
        # would pull a mean baseline up)
        from eselake.detection.lens import smooth_dip
        inside = (df["mjd"] >= ese["dip_start_mjd"]) & (df["mjd"] <= ese["dip_end_mjd"])
        if inside.sum() and (~inside).sum():
            base_level = float(df.filter(~inside)["flux_mjy"].median())
            depth = 1.0 - float(df.filter(inside)["flux_mjy"].median()) / base_level
            t = np.linspace(float(df["mjd"].min()), float(df["mjd"].max()), 600)
            model = base_level * smooth_dip(t, ese["dip_start_mjd"], ese["dip_duration_days"], depth, edge_days=1.0)
            fit = pl.DataFrame({"mjd": t, "model_mjy": model})
            layers.append(alt.Chart(_values(fit)).mark_line(color="#d62728", strokeWidth=1.5)
                          .encode(x="mjd:Q", y="model_mjy:Q"))
    chart = alt.layer(*layers).properties(width=width, height=height,
                                          title=title or f"{source.source_id}  ({what})")
    return chart.configure_axis(grid=True, gridOpacity=0.3)


def variability_chart(lake, preset: str = "moderate", use_composite_scoring: bool = True,
                      width: int = 560, height: int = 420) -> alt.Chart:
    """eta-V diagram of every source (log axes), candidates of ``preset`` highlighted."""
    from eselake.detection import detect_ese_candidates

    stats = lake.sql("SELECT source_id, eta_metric, v_metric, n_obs, mean_flux_mjy FROM variability_stats "
                     "WHERE eta_metric > 0 AND v_metric > 0")
    if stats.height == 0:
        raise EselakeError("no variability statistics yet: the lake has no usable measurements")
    cands = detect_ese_candidates(lake, preset=preset, use_composite_scoring=use_composite_scoring)["source_id"]
    df = stats.with_columns(pl.col("source_id").is_in(cands.to_list()).alias("candidate"))
    chart = alt.Chart(_values(df)).mark_circle().encode(
        x=alt.X("eta_metric:Q", scale=alt.Scale(type="log"), title="eta (weighted reduced chi2)"),
        y=alt.Y("v_metric:Q", scale=alt.Scale(type="log"), title="V = std / mean"),
        color=alt.Color("candidate:N", scale=alt.Scale(domain=[False, True], range=["#9aa7b4", "#d62728"]),
                        title=f"ESE candidate ({preset})"),
        size=alt.condition("datum.candidate", alt.value(60), alt.value(12)),
        tooltip=["source_id:N", alt.Tooltip("eta_metric:Q", format=".2f"), alt.Tooltip("v_metric:Q", format=".3f"),
                 "n_obs:Q", alt.Tooltip("mean_flux_mjy:Q", format=".1f")],
    )
    return chart.properties(width=width, height=height, title=f"eta-V diagram: {df.height} sources")


def candidates_chart(lake, preset: str = "moderate", use_composite_scoring: bool = True) -> alt.Chart:
    """Candidate summary: composite score of each candidate, coloured by confidence."""
    from eselake.detection import detect_ese_candidates

    df = detect_ese_candidates(lake, preset=preset, use_composite_scoring=use_composite_scoring)
    if df.height == 0:
        raise EselakeError(f"no ESE candidates under preset {preset!r}")
    df = df.select("source_id", "composite_score", "confidence", "dip_depth", "dip_duration_days",
                   "dip_significance", "status")
    return alt.Chart(_values(df)).mark_bar().encode(
        y=alt.Y("source_id:N", sort="-x", title=None),
        x=alt.X("composite_score:Q", scale=alt.Scale(domain=[0, 10]), title="composite score (0-10)"),
        color=alt.Color("confidence:N", scale=alt.Scale(domain=["high", "medium", "low"],
                                                        range=["#d62728", "#ff7f0e", "#9aa7b4"])),
        tooltip=["source_id:N", alt.Tooltip("composite_score:Q", format=".2f"),
                 alt.Tooltip("dip_depth:Q", format=".2f"), alt.Tooltip("dip_duration_days:Q", format=".0f"),
                 alt.Tooltip("dip_significance:Q", format=".1f"), "status:N"],
    ).properties(width=480, height=max(60, 22 * df.height), title=f"ESE candidates ({preset})")


def chart_bytes(chart, fmt: str) -> bytes:
    """Render a chart offline: fmt in png, svg, pdf, html (self-contained), json (Vega-Lite spec)."""
    import vl_convert as vlc

    spec = chart.to_dict()
    if fmt == "png":
        return vlc.vegalite_to_png(spec, scale=2)
    if fmt == "svg":
        return vlc.vegalite_to_svg(spec).encode()
    if fmt == "pdf":
        return vlc.vegalite_to_pdf(spec)
    if fmt == "html":
        return vlc.vegalite_to_html(spec, bundle=True).encode()
    if fmt == "json":
        return json.dumps(spec).encode()
    raise EselakeError(f"unknown chart format {fmt!r}; use png, svg, pdf, html or json")


def save_chart(chart, outfile) -> Path:
    """Save by extension (.png .svg .pdf .html .json)."""
    path = Path(outfile)
    if path.suffix.lower() not in CHART_FORMATS:
        raise EselakeError(f"{path}: chart files end in {', '.join(CHART_FORMATS)}")
    data = chart_bytes(chart, path.suffix.lower().lstrip("."))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
