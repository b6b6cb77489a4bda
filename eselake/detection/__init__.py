"""ESE candidate detection: a thin Python face over the ``ese_candidates_for`` SQL macro."""
from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl

from eselake.errors import EselakeError
from eselake.lake import Lake

PRESETS = ("conservative", "moderate", "sensitive")
REVIEW_STATUSES = ("active", "investigated", "dismissed")


def as_lake(lake=None, products_db=None) -> Lake:
    """A Lake from a Lake, a path, or the seed's ``products_db=`` keyword (a lake folder here)."""
    target = lake if lake is not None else products_db
    if isinstance(target, Lake):
        return target
    return Lake(Path(target) if target is not None else None)


def detect_ese_candidates(lake=None, *, preset: str = "moderate", min_sigma: float | None = None,
                          use_composite_scoring: bool | None = None, source_id: str | None = None,
                          status: str | None = None, products_db=None, recompute: bool = True) -> pl.DataFrame:
    """ESE candidates as a polars DataFrame, best first (false-alarm rate, then likelihood ratio).

    The default, ``preset='moderate'`` (<= 1e-3 false candidates per source-year), is the list of every face:
    ``eselake ese-detect``, the ``ese_candidates`` view, the API and the page. ``min_sigma`` also requires
    that Gaussian-equivalent significance; ``status`` keeps one review status (e.g. 'active'). Results come
    from the derived search results, kept current by every ingest (``recompute`` is accepted for the seed's
    API: there is nothing to recompute). ``use_composite_scoring`` is retired (the composite score counted
    one statistic twice and could select sources without a dip): passing True warns and changes nothing.
    """
    if preset not in PRESETS:
        raise EselakeError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if status is not None and status not in REVIEW_STATUSES:
        raise EselakeError(f"unknown status {status!r}; choose one of {', '.join(REVIEW_STATUSES)}")
    if min_sigma is not None and not (min_sigma == min_sigma and min_sigma >= 0):
        raise EselakeError(f"min_sigma must be a non-negative number, got {min_sigma!r}")
    if use_composite_scoring:
        warnings.warn("use_composite_scoring / --use-composite-scoring is retired: candidates are selected by "
                      "false-alarm rate per source-year (presets conservative 1e-4, moderate 1e-3, sensitive "
                      "1e-2); the option changes nothing", RetiredOption, stacklevel=2)
    lk = as_lake(lake, products_db)
    q = "SELECT * FROM ese_candidates_for(?, ?) WHERE (? IS NULL OR source_id = ?) AND (? IS NULL OR status = ?) " \
        "ORDER BY fap_per_source_year, lr DESC, source_id"
    return lk.sql(q, [preset, min_sigma, source_id, source_id, status, status])


class RetiredOption(UserWarning):
    """An option of eselake 0.1 that no longer changes anything."""


def review(lake: Lake, source_id: str, status: str, notes: str = "", reviewer: str | None = None) -> None:
    """Record a review (status active/investigated/dismissed) of a source; appends, never rewrites."""
    if status not in REVIEW_STATUSES:
        raise EselakeError(f"unknown status {status!r}; choose one of {', '.join(REVIEW_STATUSES)}")
    if lake.sql("SELECT count(*) AS n FROM measurements WHERE source_id = ?", [source_id],
                source_id=source_id)["n"][0] == 0:
        raise EselakeError(f"no measurements of source {source_id!r} in {lake.path}")
    import getpass
    lake.add_reviews([{"source_id": source_id, "status": status, "notes": notes,
                       "reviewer": reviewer or getpass.getuser()}])
