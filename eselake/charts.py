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


MJD_UNIX_EPOCH = 40587.0        # MJD of 1970-01-01, for calendar-date axis labels
DATE_LABEL = "timeFormat(toDate((datum.value - 40587) * 86400000), '%Y-%m-%d')"
SERIES = ("measurement", "baseline", "dip", "fitted model")
SERIES_COLORS = ("#1f4e79", "#2ca02c", "#f4a6a6", "#b2182b")


def _padded(lo: float, hi: float, frac: float = 0.03) -> list[float]:
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    return [lo - frac * span, hi + frac * span]


def model_curve(source, event: dict, t: np.ndarray, df: pl.DataFrame) -> tuple[np.ndarray, str] | None:
    """The fitted ESE model at times ``t`` in the units of ``df.flux_mjy``, and its legend label.

    Uses ``eselake.detection.search.model_curve(row, mjd)`` when the detection provides it (the fitted lens
    of the template search); otherwise a robust step fit over the dip's extent (median flux outside and
    inside, smooth edges)."""
    try:
        from eselake.detection import search
    except ImportError:
        search = None
    if search is not None and hasattr(search, "model_curve"):
        try:
            curve = np.asarray(search.model_curve(event, t), float)
        except Exception:          # the row lacks the fit (e.g. not a candidate of the search): fall back
            curve = None
        if curve is not None and np.isfinite(curve).any():
            data_med = float(df["flux_mjy"].median())
            med = float(np.nanmedian(curve))
            if med > 0 and data_med > 0:
                # the curve may be a flux ratio, Jy or mJy: take the scale that matches the data
                factors = [1.0, 1000.0, data_med]
                best = min(factors, key=lambda f: abs(np.log(med * f / data_med)))
                return curve * best, "fitted lens model"
    start, end = event.get("dip_start_mjd"), event.get("dip_end_mjd")
    if start is None or end is None:
        return None
    from eselake.detection.lens import smooth_dip
    inside = (df["mjd"] >= start) & (df["mjd"] <= end)
    if not inside.sum() or not (~inside).sum():
        return None
    base_level = float(df.filter(~inside)["flux_mjy"].median())
    depth = 1.0 - float(df.filter(inside)["flux_mjy"].median()) / base_level
    return base_level * smooth_dip(t, start, end - start, depth, edge_days=1.0), "dip model (step fit)"


def _event_window(event: dict) -> tuple[float, float] | None:
    """(start, end) MJD of the dip: the detection's dip extent, else centre +/- duration/2 of the lens fit."""
    if event.get("dip_start_mjd") is not None and event.get("dip_end_mjd") is not None:
        return float(event["dip_start_mjd"]), float(event["dip_end_mjd"])
    if event.get("center_mjd") is not None and event.get("duration_days") is not None:
        c, d = float(event["center_mjd"]), float(event["duration_days"])
        return c - d / 2, c + d / 2
    return None


def lightcurve_chart(source, use_normalized: bool = True, highlight_ese_period: bool | None = None,
                     highlight_baseline: bool | None = None, show_fit: bool | None = None, width: int = 720,
                     height: int = 300, title: str | None = None) -> alt.LayerChart:
    """Lightcurve with visible error bars, MJD below and calendar dates above, frequency in the title.

    The dip shading (``highlight_ese_period``), the baseline level (``highlight_baseline``) and the fitted
    model (``show_fit``) are drawn for ESE candidates of the default detection when left at None, always when
    True, never when False. A legend names every layer."""
    df, what = lightcurve_data(source, use_normalized)
    if df.height == 0:
        raise EselakeError(f"source {source.source_id!r} has no finite fluxes to plot")
    df = df.with_columns((pl.col("flux_mjy") - pl.col("err_mjy")).alias("lo"),
                         (pl.col("flux_mjy") + pl.col("err_mjy")).alias("hi"),
                         pl.lit("measurement").alias("series"))
    from eselake.output import with_iso_dates
    df = with_iso_dates(df)
    flags = (highlight_ese_period, highlight_baseline, show_fit)
    candidate = source.candidate if any(f is None for f in flags) or any(flags) else None
    event = dict(source.ese or {}) if any(flags) or candidate else {}
    if candidate:
        event.update({k: v for k, v in candidate.items() if v is not None})
    shade, base_line, fit = [(f if f is not None else candidate is not None) for f in flags]
    window = _event_window(event) if event else None
    t0, t1 = float(df["mjd"].min()), float(df["mjd"].max())
    xdom = _padded(t0, t1)
    ylo = float(df["lo"].drop_nulls().min() if df["lo"].drop_nulls().len() else df["flux_mjy"].min())
    yhi = float(df["hi"].drop_nulls().max() if df["hi"].drop_nulls().len() else df["flux_mjy"].max())
    ydom = _padded(ylo, yhi, 0.06)
    x = alt.X("mjd:Q", title="MJD", scale=alt.Scale(domain=xdom, nice=False, zero=False),
              axis=alt.Axis(format="d", tickCount=8))
    y = alt.Y("flux_mjy:Q", title=f"{what} (mJy)", scale=alt.Scale(domain=ydom, zero=False, nice=False))
    present = ["measurement"]
    layers = []
    if shade and window is not None:
        label = "dip"
        depth = event.get("depth", event.get("dip_depth"))
        info = f"{depth * 100:.0f}% over {window[1] - window[0]:.0f} d" if depth is not None else ""
        band = pl.DataFrame({"start": [max(window[0], xdom[0])], "end": [min(window[1], xdom[1])],
                             "series": [label], "info": [info]})
        layers.append(alt.Chart(_values(band)).mark_rect(opacity=0.45).encode(
            x=alt.X("start:Q", scale=alt.Scale(domain=xdom), axis=None), x2="end:Q",
            color=alt.Color("series:N"), tooltip=["series:N", "info:N"]))
        present.append(label)
    # error bars on top of the points, in a contrasting colour, so that they stay visible
    layers.append(alt.Chart(_values(df)).mark_point(size=14, filled=True, opacity=0.85).encode(
        x=x, y=y, color=alt.Color("series:N"),
        tooltip=[alt.Tooltip("mjd:Q", format=".4f"), alt.Tooltip("date_utc:N", title="date (UTC)"),
                 alt.Tooltip("flux_mjy:Q", format=".3f", title="flux (mJy)"),
                 alt.Tooltip("err_mjy:Q", format=".3f", title="error (mJy)")]))
    layers.append(alt.Chart(_values(df)).mark_rule(color="#7f9cba", strokeWidth=1.2).encode(
        x=alt.X("mjd:Q", axis=None), y=alt.Y("lo:Q", axis=None), y2="hi:Q"))
    if base_line and window is not None:
        inside = (df["mjd"] >= window[0]) & (df["mjd"] <= window[1])
        if (~inside).sum():
            level = float(df.filter(~inside)["flux_mjy"].median())
            layers.append(alt.Chart(_values(pl.DataFrame({"level": [level], "series": ["baseline"]})))
                          .mark_rule(strokeDash=[6, 4], strokeWidth=1.2, clip=True)
                          .encode(y=alt.Y("level:Q", axis=None), color=alt.Color("series:N"),
                                  tooltip=["series:N", alt.Tooltip("level:Q", format=".3f", title="mJy")]))
            present.append("baseline")
    if fit and event:
        t = np.linspace(t0, t1, 800)
        curve = model_curve(source, event, t, df)
        if curve is not None:
            model, label = curve
            fitdf = pl.DataFrame({"mjd": t, "model_mjy": model, "series": ["fitted model"] * len(t), "what": label})
            layers.append(alt.Chart(_values(fitdf)).mark_line(strokeWidth=2).encode(
                x=alt.X("mjd:Q", axis=None), y=alt.Y("model_mjy:Q", axis=None), color=alt.Color("series:N"), tooltip=["what:N"]))
            present.append("fitted model")
    # calendar dates on the top axis: an invisible layer with the same x scale and its own axis
    layers.append(alt.Chart(_values(df.head(1))).mark_point(opacity=0).encode(
        y=alt.Y("flux_mjy:Q", axis=None), x=alt.X("mjd:Q", scale=alt.Scale(domain=xdom, nice=False, zero=False),
                axis=alt.Axis(orient="top", title="date (UTC)", labelExpr=DATE_LABEL, tickCount=6))))
    domain = [s for s in SERIES if s in present]
    colors = [SERIES_COLORS[SERIES.index(s)] for s in domain]
    color_scale = alt.Scale(domain=domain, range=colors)
    for layer in layers:
        enc = layer.encoding
        if enc is not alt.Undefined and getattr(enc, "color", alt.Undefined) is not alt.Undefined \
                and not isinstance(enc.color, alt.ColorValue):
            enc.color = alt.Color("series:N", scale=color_scale,
                                  legend=alt.Legend(title=None, orient="bottom", direction="horizontal", symbolOpacity=0.9))
    info = source.info if hasattr(source, "info") else {}
    freq = info.get("freq_hz")
    freq_text = f" at {freq / 1e9:.3f} GHz" if freq else ""
    sub = []
    if info.get("ra_deg") is not None:
        sub.append(f"RA {info['ra_deg']:.5f}, Dec {info['dec_deg']:+.5f} deg")
    if info.get("catalog_flux_mjy") is not None:
        cat = (info.get("catalog") or "catalogue").upper() if info.get("catalog") else "catalogue"
        sub.append(f"{cat} {info['catalog_flux_mjy']:.1f} mJy")
    sub.append("ESE candidate" if candidate else "not an ESE candidate")
    chart = alt.layer(*layers).resolve_axis(x="independent", y="independent").properties(
        width=width, height=height,
        title=alt.TitleParams(title or f"{source.source_id}: {what}{freq_text}", subtitle=" | ".join(sub),
                              anchor="start"))
    return chart.configure_axis(grid=True, gridOpacity=0.3)


def _threshold_lines(stats: pl.DataFrame, lake, preset: str | None) -> list[dict]:
    """Threshold lines of the eta-V plane: the VAST-style 2-sigma cuts of the log-eta and log-V
    distributions, and the eta threshold of the preset when the presets define one."""
    lines = []
    for col, axis, label in (("eta_metric", "x", "eta"), ("v_metric", "y", "V")):
        logs = np.log10(stats[col].to_numpy())
        logs = logs[np.isfinite(logs)]
        if logs.size >= 3:
            value = 10 ** (np.median(logs) + 2 * 1.4826 * np.median(np.abs(logs - np.median(logs))))
            lines.append({"axis": axis, "value": float(value), "label": f"{label} 2-sigma"})
    try:
        presets = lake.sql("SELECT * FROM ese_presets")
    except Exception:
        presets = pl.DataFrame()
    if presets.height and "min_eta" in presets.columns:
        from eselake.faces import detection_defaults
        name = preset or detection_defaults().get("preset")
        row = presets.filter(pl.col("preset") == name)
        if row.height and row["min_eta"][0] is not None:
            lines.append({"axis": "x", "value": float(row["min_eta"][0]), "label": f"eta >= {row['min_eta'][0]:g} ({name})"})
    return lines


def variability_chart(lake, preset: str | None = None, use_composite_scoring: bool | None = None,
                      min_sigma: float | None = None, width: int = 560, height: int = 420,
                      link: str | None = None) -> alt.LayerChart:
    """eta-V diagram of every source (log axes), candidates of the default detection (or ``preset``...)
    highlighted, threshold lines drawn. ``link``: a URL prefix; clicking a point opens link + quoted id."""
    from eselake.faces import describe, detect

    stats = lake.sql("SELECT source_id, eta_metric, v_metric, n_obs, mean_flux_mjy FROM variability_stats "
                     "WHERE eta_metric > 0 AND v_metric > 0")
    if stats.height == 0:
        raise EselakeError("no variability statistics yet: the lake has no usable measurements")
    opts = dict(preset=preset, use_composite_scoring=use_composite_scoring, min_sigma=min_sigma)
    cands = detect(lake, **opts)["source_id"]
    df = stats.with_columns(pl.col("source_id").is_in(cands.to_list()).alias("candidate"))
    df = df.sort("candidate").with_columns(          # candidates drawn last, on top
        pl.when(pl.col("candidate")).then(pl.lit("candidate")).otherwise(pl.lit("other source")).alias("kind"))
    enc = dict(
        x=alt.X("eta_metric:Q", scale=alt.Scale(type="log"), title="eta (weighted reduced chi2)"),
        y=alt.Y("v_metric:Q", scale=alt.Scale(type="log"), title="V = std / mean"),
        color=alt.Color("kind:N", scale=alt.Scale(domain=["other source", "candidate"], range=["#9aa7b4", "#d62728"]),
                        legend=alt.Legend(title=None, orient="top-left")),
        size=alt.condition("datum.candidate", alt.value(70), alt.value(16)),
        tooltip=["source_id:N", alt.Tooltip("eta_metric:Q", format=".2f"), alt.Tooltip("v_metric:Q", format=".3f"),
                 "n_obs:Q", alt.Tooltip("mean_flux_mjy:Q", format=".1f", title="mean flux (mJy)")],
    )
    if link is not None:
        from urllib.parse import quote
        df = df.with_columns(pl.col("source_id").map_elements(lambda s: link + quote(s, safe=""),
                                                               return_dtype=pl.Utf8).alias("url"))
        enc["href"] = "url:N"
    points = alt.Chart(_values(df)).mark_circle(cursor="pointer" if link else "default").encode(**enc)
    layers = [points]
    lines = _threshold_lines(stats, lake, preset)
    for axis in ("x", "y"):
        rows = [r for r in lines if r["axis"] == axis]
        if not rows:
            continue
        ldf = pl.DataFrame(rows).with_columns((8 + 13 * pl.int_range(pl.len())).alias("offset"))
        field = alt.X("value:Q") if axis == "x" else alt.Y("value:Q")
        layers.append(alt.Chart(_values(ldf)).mark_rule(strokeDash=[5, 4], color="#555").encode(
            **{axis: field}, tooltip=["label:N", alt.Tooltip("value:Q", format=".3g")]))
        text_pos = (dict(x=alt.X("value:Q"), y=alt.Y("offset:Q", scale=None)) if axis == "x"
                    else dict(y=alt.Y("value:Q"), x=alt.value(width - 4)))
        layers.append(alt.Chart(_values(ldf)).mark_text(align="right" if axis == "y" else "left", dx=3,
                                                        dy=-6 if axis == "y" else 0, fontSize=10, color="#555")
                      .encode(text="label:N", **text_pos))
    return alt.layer(*layers).properties(
        width=width, height=height,
        title=alt.TitleParams(f"eta-V diagram: {df.height} sources, {int(df['candidate'].sum())} candidate(s)",
                              subtitle=f"{describe(**opts)}; dashed: thresholds", anchor="start"))


def candidates_chart(lake, preset: str | None = None, use_composite_scoring: bool | None = None,
                     min_sigma: float | None = None) -> alt.Chart:
    """Candidate summary: each candidate's score (sigma, else composite score, else significance)."""
    from eselake.faces import describe, detect

    opts = dict(preset=preset, use_composite_scoring=use_composite_scoring, min_sigma=min_sigma)
    df = detect(lake, **opts)
    if df.height == 0:
        raise EselakeError(f"no ESE candidates ({describe(**opts)})")
    score = next(c for c in ("sigma", "composite_score", "significance") if c in df.columns)
    color = "confidence" if "confidence" in df.columns else "status"
    tips = [c for c in ("source_id", score, "confidence", "status", "depth", "dip_depth", "duration_days",
                        "dip_duration_days", "fap_per_source_year", "dip_significance") if c in df.columns]
    df = df.select(list(dict.fromkeys(tips + [color])))
    return alt.Chart(_values(df)).mark_bar().encode(
        y=alt.Y("source_id:N", sort="-x", title=None),
        x=alt.X(f"{score}:Q", title=score.replace("_", " ")),
        color=alt.Color(f"{color}:N"),
        tooltip=[alt.Tooltip(f"{c}:{'N' if df[c].dtype == pl.Utf8 else 'Q'}") for c in tips],
    ).properties(width=480, height=max(60, 22 * df.height),
                 title=alt.TitleParams(f"ESE candidates: {df.height}", subtitle=describe(**opts), anchor="start"))


def chart_bytes(chart, fmt: str) -> bytes:
    """Render a chart offline: fmt in png, svg, pdf, html (self-contained), json (Vega-Lite spec)."""
    import vl_convert as vlc

    spec = chart.to_dict(validate=False)       # built by this module; schema validation costs ~1 s
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
    from eselake.output import write_bytes_atomic
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EselakeError(f"cannot create folder {path.parent}: {exc.strerror or exc}") from exc
    write_bytes_atomic(path, data)
    return path
