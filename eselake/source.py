"""``Source``: one catalogued source's measurements, statistics, relative lightcurve and charts."""
from __future__ import annotations

from functools import cached_property
from typing import Any

import polars as pl

from eselake.detection import as_lake
from eselake.errors import EselakeError

LIGHTCURVE_COLUMNS = ("mjd, peak_jyb, peak_err_jyb, normalized_flux_jy, normalized_err_jy, local_rms_jyb, snr, "
                      "flags, gain, n_refs, norm_flag, freq_hz, ra_deg, dec_deg, image_id, image_path")


class Source:
    """A source in the lake: ``Source("NVSS J123456+420312", lake)`` (or ``products_db=LAKE_PATH``)."""

    def __init__(self, source_id: str, lake=None, *, products_db=None):
        self.source_id = source_id
        self.lake = as_lake(lake, products_db)

    def __repr__(self) -> str:
        return f"Source({self.source_id!r}, {self.lake!r})"

    @cached_property
    def measurements(self) -> pl.DataFrame:
        """All measurements by time: mjd, peak_jyb, peak_err_jyb, normalized_flux_jy, normalized_err_jy, ..."""
        df = self.lake.sql(f"SELECT {LIGHTCURVE_COLUMNS} FROM photometry WHERE source_id = ? ORDER BY mjd",
                           [self.source_id], source_id=self.source_id)
        if df.height == 0:
            raise EselakeError(f"no measurements of source {self.source_id!r} in {self.lake.path}")
        return df

    def check_known(self) -> None:
        """Raise EselakeError for a source the lake has no measurement of (cheap: its statistics row first,
        the measurements only for a source without one)."""
        if "measurements" not in self.__dict__ and not self.lake.sql(
                "SELECT 1 AS k FROM variability_stats WHERE source_id = ? LIMIT 1", [self.source_id]).height:
            _ = self.measurements

    def refresh(self) -> "Source":
        """Forget cached results (the lake is queried afresh next time)."""
        self.__dict__.pop("measurements", None)
        return self

    @property
    def variability(self) -> dict[str, Any]:
        """This source's row of variability_stats (empty dict if it has no usable points; an unknown source
        raises EselakeError)."""
        df = self.lake.sql("SELECT * FROM variability_stats WHERE source_id = ?", [self.source_id])
        if df.height == 0:
            _ = self.measurements          # raises for a source the lake does not know
            return {}
        return df.to_dicts()[0]

    @property
    def ese(self) -> dict[str, Any]:
        """This source's row of ese_scores: statistics, best dip window and composite score (empty dict if it
        has no usable points; an unknown source raises EselakeError)."""
        df = self.lake.sql("SELECT * FROM ese_scores WHERE source_id = ?", [self.source_id])
        if df.height == 0:
            _ = self.measurements
            return {}
        return df.to_dicts()[0]

    @property
    def candidate(self) -> dict[str, Any] | None:
        """This source's row of the default ESE detection (``detect_ese_candidates``), or None when it is
        not a candidate."""
        from eselake.faces import default_candidates
        self.check_known()
        df = default_candidates(self.lake).filter(pl.col("source_id") == self.source_id)
        return df.to_dicts()[0] if df.height else None

    @property
    def info(self) -> dict[str, Any]:
        """Identity and position: source_id, ra_deg, dec_deg (the catalogue's, else the mean measured
        position), catalog, catalog_flux_mjy, freq_hz, n_images, first/last MJD."""
        m = self.measurements
        out: dict[str, Any] = {"source_id": self.source_id, "ra_deg": None, "dec_deg": None, "catalog": None,
                               "catalog_flux_mjy": None}
        try:
            cat = self.lake.sql("SELECT catalog, ra_deg, dec_deg, flux_mjy FROM catalog_sources "
                                "WHERE source_id = ? ORDER BY catalog LIMIT 1", [self.source_id])
        except Exception:       # no catalogue loaded: the view may be missing
            cat = pl.DataFrame()
        if cat.height:
            row = cat.row(0, named=True)
            out.update(ra_deg=row["ra_deg"], dec_deg=row["dec_deg"], catalog=row["catalog"],
                       catalog_flux_mjy=row["flux_mjy"])
        else:
            flux = self.lake.sql("SELECT median(catalog_flux_mjy) AS f FROM measurements WHERE source_id = ?",
                                 [self.source_id], source_id=self.source_id)["f"][0]
            out.update(ra_deg=m["ra_deg"].mean(), dec_deg=m["dec_deg"].mean(), catalog_flux_mjy=flux)
        freqs = m["freq_hz"].drop_nulls()
        freq = float(freqs.median()) if freqs.len() else None
        if freq is None:           # rows without their own frequency: the images'
            freq = self.lake.sql("SELECT median(freq_hz) AS f FROM images WHERE image_id IN "
                                 "(SELECT image_id FROM measurements WHERE source_id = ?)", [self.source_id],
                                 source_id=self.source_id)["f"][0]
        out.update(freq_hz=freq, n_images=m.height,
                   first_mjd=float(m["mjd"].min()), last_mjd=float(m["mjd"].max()))
        return out

    def export_frame(self) -> pl.DataFrame:
        """The measurements to export: source_id, mjd, date_utc (ISO 8601), fluxes, ..., ra_deg, dec_deg."""
        from eselake.output import with_iso_dates
        m = self.measurements
        return with_iso_dates(m.select(pl.lit(self.source_id).alias("source_id"), pl.all()))

    def export(self, fmt: str = "csv") -> bytes:
        """The lightcurve as csv, json, votable or parquet bytes, with the source's id, position, catalogue
        flux and every column's unit (see eselake.output)."""
        from eselake.output import frame_bytes
        info = self.info
        meta = {k: info[k] for k in ("source_id", "ra_deg", "dec_deg", "catalog", "catalog_flux_mjy", "freq_hz")}
        return frame_bytes(self.export_frame(), fmt, meta)

    def relative_lightcurve(self, radius_deg: float = 0.5, max_eta: float = 1.5,
                            min_neighbors: int = 3) -> pl.DataFrame:
        """Flux relative to stable neighbours: per image, the source's peak flux divided by the median of its
        neighbours' peak / mean flux. Neighbours lie within ``radius_deg`` and have eta <= ``max_eta``;
        images with fewer than ``min_neighbors`` measured neighbours are dropped."""
        q = """
        WITH pos AS (
            SELECT source_id, avg(ra_deg) AS ra, avg(dec_deg) AS dec FROM measurements GROUP BY source_id
        ),
        tgt AS (SELECT * FROM pos WHERE source_id = $sid),
        nb AS (
            SELECT p.source_id, v.mean_flux_mjy / 1000.0 AS mean_jy
            FROM pos p CROSS JOIN tgt t JOIN variability_stats v ON v.source_id = p.source_id
            WHERE p.source_id <> t.source_id AND v.eta_metric <= $max_eta AND v.mean_flux_mjy > 0
              AND 2 * asin(sqrt(pow(sin(radians(p.dec - t.dec) / 2), 2)
                  + cos(radians(p.dec)) * cos(radians(t.dec)) * pow(sin(radians(p.ra - t.ra) / 2), 2)))
                  <= radians($radius)
        ),
        ens AS (
            SELECT m.image_id, median(m.peak_jyb / nb.mean_jy) AS ensemble_ratio, count(*) AS n_neighbors
            FROM measurements m JOIN nb USING (source_id)
            WHERE (m.flags & 10) = 0 AND isfinite(m.peak_jyb)
            GROUP BY m.image_id
        )
        SELECT m.mjd, m.peak_jyb, m.peak_err_jyb, e.ensemble_ratio, e.n_neighbors,
               m.peak_jyb / e.ensemble_ratio AS relative_flux_jy,
               m.peak_err_jyb / e.ensemble_ratio AS relative_err_jy, m.image_id
        FROM measurements m JOIN ens e USING (image_id)
        WHERE m.source_id = $sid AND e.n_neighbors >= $min_nb
        ORDER BY m.mjd"""
        _ = self.measurements          # clear error for an unknown source
        df = self.lake.sql(q, {"sid": self.source_id, "max_eta": float(max_eta), "radius": float(radius_deg),
                               "min_nb": int(min_neighbors)})
        if df.height == 0:
            raise EselakeError(f"no image has {min_neighbors} stable neighbours (eta <= {max_eta}) within "
                               f"{radius_deg} deg of {self.source_id!r}; widen radius_deg or lower min_neighbors")
        return df

    calculate_relative_lightcurve = relative_lightcurve     # the seed's name

    def plot_lightcurve(self, use_normalized: bool = True, highlight_ese_period: bool | None = None,
                        highlight_baseline: bool | None = None, outfile=None, save: bool | None = None, **kwargs):
        """Altair lightcurve chart (error bars, MJD and calendar dates, frequency in the title); the dip
        shading, baseline level and fitted model (``show_fit``) are drawn for ESE candidates when left at None,
        always when True, never when False. Saved when ``outfile`` is given (.png, .svg, .pdf, .html, .json)."""
        from eselake.charts import lightcurve_chart, save_chart

        chart = lightcurve_chart(self, use_normalized=use_normalized, highlight_ese_period=highlight_ese_period,
                                 highlight_baseline=highlight_baseline, **kwargs)
        if outfile is not None and save is not False:
            save_chart(chart, outfile)
        return chart
