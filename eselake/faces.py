"""What the CLI, API, web page and demo share about ESE candidates: one call into the detection (its own
defaults, whatever they are), a title saying what was run, and one column order for candidate tables."""
from __future__ import annotations

import inspect
from typing import Any

import polars as pl

from eselake.errors import EselakeError

# Known columns first, in this order; any other column the detection returns follows in its own order.
CANDIDATE_ORDER = (
    "source_id", "status", "sigma", "fap_per_source_year", "confidence", "model", "depth", "duration_days",
    "center_mjd", "dip_start_mjd", "dip_end_mjd", "lens_alpha", "caustics", "alt_model", "significance",
    "composite_score", "dip_depth", "dip_duration_days", "dip_significance",
    "n_obs", "n_days", "mean_flux_mjy", "ra_deg", "dec_deg", "chi2_nu", "eta_metric", "v_metric", "sigma_deviation",
)
OPTION_NAMES = {"preset": "--preset", "min_sigma": "--min-sigma", "use_composite_scoring": "--use-composite-scoring",
                "source_id": "--source-id", "status": "--status"}


def _detector():
    from eselake.detection import detect_ese_candidates
    return detect_ese_candidates


def detection_defaults() -> dict[str, Any]:
    """The detection's own defaults (the single source of truth for every face)."""
    params = inspect.signature(_detector()).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def detect(lake, notes: list[str] | None = None, **options) -> pl.DataFrame:
    """``detect_ese_candidates(lake, **options)`` with the options that were given (None = the detection's
    default); an option the detection does not take is refused with a message, never dropped. Warnings of
    the detection (e.g. a retired option that changes nothing) are appended to ``notes`` when given."""
    import warnings

    fn = _detector()
    params = inspect.signature(fn).parameters
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in params]
    if unknown:
        raise EselakeError(f"{', '.join(OPTION_NAMES.get(k, k) for k in unknown)}: not an option of this "
                           "detection; run `eselake ese-detect --help`")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = fn(lake, **given)
    for w in caught:
        if notes is not None:
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if notes is not None and getattr(lake, "stale", None):
        notes.append(stale_note(lake.stale))
    return order_candidates(df)


def stale_note(stale) -> str:
    """What every face says when derived data were stale (recomputed from their views, or the ESE search
    served as last computed)."""
    return (f"derived data stale ({', '.join(stale)}): statistics computed from the measurements, the ESE "
            "search as last computed; `eselake refresh` brings them up to date")


def describe(**options) -> str:
    """'preset moderate, min sigma 4' for the settings actually in force."""
    eff = {**detection_defaults(), **{k: v for k, v in options.items() if v is not None}}
    parts = []
    if eff.get("preset"):
        parts.append(f"preset {eff['preset']}")
    if eff.get("use_composite_scoring"):
        parts.append("composite scoring")
    if eff.get("min_sigma") is not None:
        parts.append(f"min sigma {eff['min_sigma']:g}")
    if eff.get("status"):
        parts.append(f"status {eff['status']}")
    return ", ".join(parts) or "default detection"


def order_candidates(df: pl.DataFrame) -> pl.DataFrame:
    """Known candidate columns first (CANDIDATE_ORDER), then the rest."""
    first = [c for c in CANDIDATE_ORDER if c in df.columns]
    return df.select(first + [c for c in df.columns if c not in first])


def _state(lake) -> Any:
    """A token that changes whenever the lake changes (table versions, else file fingerprints)."""
    for name in ("versions", "fingerprint"):
        fn = getattr(lake, name, None)
        if fn is not None:
            try:
                state = fn()
                return repr(sorted(state.items())) if isinstance(state, dict) else repr(state)
            except Exception:
                return None
    return None


def default_candidates(lake) -> pl.DataFrame:
    """The default detection's candidates, cached per lake until the lake changes (a source page asks
    for one verdict several times)."""
    token = _state(lake)
    cache = lake.__dict__.setdefault("_faces_candidates", {})
    if token is not None and cache.get("token") == token:
        return cache["df"]
    df = detect(lake)
    cache.update(token=token, df=df)
    return df
