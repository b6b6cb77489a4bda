"""ESE candidate detection: a thin Python face over the ``ese_candidates_for`` SQL macro."""
from __future__ import annotations

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
                          use_composite_scoring: bool = False, source_id: str | None = None,
                          status: str | None = None, products_db=None, recompute: bool = True) -> pl.DataFrame:
    """ESE candidates as a polars DataFrame, best first (composite score, then significance).

    Always computed fresh from the measurements (``recompute`` is accepted for the seed's API and ignored).
    ``min_sigma`` overrides the preset's sigma_deviation threshold; ``use_composite_scoring`` selects by the
    composite score instead of all thresholds; ``status`` keeps one review status (e.g. 'active').
    """
    if preset not in PRESETS:
        raise EselakeError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if status is not None and status not in REVIEW_STATUSES:
        raise EselakeError(f"unknown status {status!r}; choose one of {', '.join(REVIEW_STATUSES)}")
    lk = as_lake(lake, products_db)
    q = "SELECT * FROM ese_candidates_for(?, ?, ?) WHERE (? IS NULL OR source_id = ?) AND (? IS NULL OR status = ?) " \
        "ORDER BY composite_score DESC, significance DESC, source_id"
    return lk.sql(q, [preset, min_sigma, bool(use_composite_scoring), source_id, source_id, status, status])


def review(lake: Lake, source_id: str, status: str, notes: str = "", reviewer: str | None = None) -> None:
    """Record a review (status active/investigated/dismissed) of a source; appends, never rewrites."""
    if status not in REVIEW_STATUSES:
        raise EselakeError(f"unknown status {status!r}; choose one of {', '.join(REVIEW_STATUSES)}")
    if lake.sql("SELECT count(*) AS n FROM measurements WHERE source_id = ?", [source_id])["n"][0] == 0:
        raise EselakeError(f"no measurements of source {source_id!r} in {lake.path}")
    import getpass
    lake.add_reviews([{"source_id": source_id, "status": status, "notes": notes,
                       "reviewer": reviewer or getpass.getuser()}])
