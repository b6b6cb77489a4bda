"""The ingest job: UVH5 tiles -> Measurement Set -> calibration -> image -> photometry -> lake.

Every stage writes its product atomically under ``products/<tile id>/``; a tile whose pbcor image is already
committed to the lake is skipped, so a crashed or interrupted run is resumed by running it again. Calibrator
tiles (a calibrator within 0.5 deg of the phase centre) are solved first; the other tiles of the same UTC date
get the solutions of the nearest calibrator tile. A tile that fails is reported and skipped.

Early checks, before any expensive stage: the catalogue to measure is loaded in the lake, the calibrator list
is readable and not empty, the input folder holds DSA-110 subband files (``<ISO time>_sbNN.hdf5``), each tile's
files are readable DSA-110 UVH5 of one observation (header-only, see ``convert.check_tile``), and a Measurement
Set comes from DSA-110 or is explicitly entered with ``telescope`` (then without the DSA-110 primary-beam
correction, ``pbcor=False``, and, for calibrated data, ``skip_calibration=True``).
"""
from __future__ import annotations

import contextlib
import shutil
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from astropy import units as u
from astropy.time import Time

from eselake.errors import EselakeError, InputError
from eselake.ingest.radio.convert import Tile, check_tile, convert_tile, group_tiles, is_dsa110
from eselake.ingest.parallel import dask_client, run_jobs


@dataclass
class TilePlan:
    tile: Tile | None                          # None when the chain is entered with a Measurement Set
    mid: Time
    dec_deg: float
    ra_center_deg: float
    dec_center_deg: float
    calibrator: object | None = None           # Calibrator in the field, if any
    ms_source: Path | None = None              # an existing MS (copied into the products, never modified)
    telescope: str = "DSA-110"
    pbcor: bool = True                         # divide by the DSA-110 primary beam
    skip_calibration: bool = False             # image the data as they are (already calibrated)

    @property
    def tile_id(self) -> str:
        return self.tile.tile_id if self.tile is not None else self.ms_source.name.removesuffix(".ms")

    @property
    def folder_name(self) -> str:
        return self.tile_id.replace(":", "")

    @property
    def product_name(self) -> str:
        """The image the tile's photometry is measured on."""
        return "tile.pbcor.fits" if self.pbcor else "tile.image.fits"


@dataclass
class TileResult:
    tile_id: str
    stage: str = "done"                        # done | skipped | failed
    image: Path | None = None
    n_sources: int = 0
    seconds: dict = field(default_factory=dict)
    error: str | None = None


def tile_plan(tile: Tile, dec_deg: float | None, calibrators) -> TilePlan:
    """Mid-time, pointing and phase centre of a tile from one file's header (no data read)."""
    from pyuvdata import UVData

    from eselake.ingest.radio.calibrate import calibrator_in_field
    from eselake.sim.visibilities import meridian_icrs

    if not tile.complete:
        raise InputError("missing subband(s) " + ", ".join(f"sb{s:02d}" for s in tile.missing))
    check_tile(tile)
    first = tile.files[min(tile.files)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = UVData.from_file(str(first), file_type="uvh5", read_data=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{first}: unreadable UVH5 ({type(exc).__name__}: {exc})") from exc
    if dec_deg is None:
        if "phase_center_dec" not in meta.extra_keywords:
            raise InputError(f"{first}: no phase_center_dec keyword; give the pointing with --dec-deg")
        dec_deg = float(np.rad2deg(meta.extra_keywords["phase_center_dec"]))
    mid = Time(np.mean(np.unique(meta.time_array)), format="jd", scale="utc")
    c = meridian_icrs(mid, dec_deg)
    return TilePlan(tile, mid, dec_deg, float(c.ra.deg), float(c.dec.deg), calibrator_in_field(c, calibrators))


def process_tile(lake_path: str, plan: TilePlan, products: str, cal_tables: list[str] | None, catalog: str,
                 imager: str, fov_deg: float, niter: int, min_flux_mjy: float | None) -> TileResult:
    """Run one tile through the chain (in a worker process). Calibrator tiles solve, others apply
    ``cal_tables``."""
    import time

    from eselake.ingest.radio import calibrate
    from eselake.ingest.radio.image import image_tile
    from eselake.ingest.photometry.measure import measure_image
    from eselake.lake import Lake

    res = TileResult(plan.tile_id)
    folder = Path(products) / plan.folder_name
    folder.mkdir(parents=True, exist_ok=True)
    ms = folder / "tile.ms"
    try:
        t = time.perf_counter()
        res.stage = "convert"
        if not ms.exists():
            if plan.ms_source is not None:
                tmp = folder / f".tile.ms.{uuid.uuid4().hex[:6]}.tmp"
                shutil.copytree(plan.ms_source, tmp)
                tmp.rename(ms)
            else:
                convert_tile(plan.tile, ms, dec_deg=plan.dec_deg)
        res.seconds["convert"] = time.perf_counter() - t
        t = time.perf_counter()
        res.stage = "calibrate"
        if plan.skip_calibration:
            datacolumn = "corrected" if _has_column(ms, "CORRECTED_DATA") else "data"
        else:
            if plan.calibrator is not None:
                tables = calibrate.solve(ms, plan.calibrator, plan.dec_deg)
            elif cal_tables:
                tables = [Path(p) for p in cal_tables]
            else:
                raise EselakeError("no calibrator tile on this date: no solutions to apply")
            calibrate.apply(ms, tables)
            datacolumn = "corrected"
        res.seconds["calibrate"] = time.perf_counter() - t
        t = time.perf_counter()
        res.stage = "image"
        pbcor = image_tile(ms, folder / "tile", plan.dec_deg, fov_deg=fov_deg, niter=niter, imager=imager,
                           pbcor=plan.pbcor, datacolumn=datacolumn)
        res.seconds["image"] = time.perf_counter() - t
        t = time.perf_counter()
        res.stage = "photometry"
        m = measure_image(Lake(lake_path), pbcor, catalog=catalog, min_flux_mjy=min_flux_mjy)
        res.seconds["photometry"] = time.perf_counter() - t
        res.stage, res.image, res.n_sources = "done", pbcor, m.n_sources
    except EselakeError as exc:
        res.error = f"{res.stage}: {exc}"
        res.stage = "failed"
    except Exception as exc:  # noqa: BLE001 - a bad tile must not stop the run
        res.error = f"{res.stage}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        res.stage = "failed"
    return res


def _has_column(ms, name: str) -> bool:
    from eselake.ingest.radio.casa import tools

    tb = tools().table()
    tb.open(str(ms))
    try:
        return name in tb.colnames()
    finally:
        tb.close()


def _done(lake, products: Path, plan: TilePlan) -> bool:
    from eselake.ingest.photometry.measure import image_id_of
    pbcor = products / plan.folder_name / plan.product_name
    if not pbcor.exists():
        return False
    try:
        return lake.committed_image(image_id_of(pbcor)) is not None
    except EselakeError:                    # unreadable product of an interrupted run: redo the tile
        return False


def ingest_uvh5(lake, uvh5_dir, products, *, calibrators, catalog: str = "nvss", dec_deg: float | None = None,
                workers: int = 1, imager: str = "auto", fov_deg: float = 3.0, niter: int = 2000,
                min_flux_mjy: float | None = None, force: bool = False,
                on_result: Callable[[TileResult, int, int], None] | None = None, scheduler=None) -> list[TileResult]:
    """Ingest every complete tile of ``uvh5_dir`` not yet in the lake. Returns one result per tile.
    ``scheduler``: run the tiles as tasks on a Dask cluster (see :func:`eselake.ingest.parallel.run_jobs`)."""
    if calibrators is None:
        raise InputError("--calibrators is needed: the chain calibrates every tile (CSV or the VLA calibrator list)")
    tiles = group_tiles(uvh5_dir)
    if not tiles:
        others = sum(1 for p in Path(uvh5_dir).iterdir() if p.is_file())
        raise InputError(f"{uvh5_dir}: no DSA-110 subband files (<YYYY-MM-DDTHH:MM:SS>_sbNN.hdf5)"
                         + (f"; {others} other file(s) there" if others else "; the folder is empty"))
    return _ingest(lake, tiles, lambda t, cals: tile_plan(t, dec_deg, cals), lambda t: t.tile_id,
                   products, calibrators, workers, (catalog, imager, fov_deg, niter, min_flux_mjy), force, on_result,
                   scheduler)


def _ingest(lake, items, plan_for, name_of, products, calibrators, workers: int, common: tuple, force: bool,
            on_result, scheduler=None) -> list[TileResult]:
    """Plan every item (a tile or an MS; one that cannot be planned is reported as failed), then run them."""
    from eselake.ingest.radio.calibrate import read_calibrators

    products = Path(products).absolute()
    check_catalog_loaded(lake, common[0])
    cals = calibrators if isinstance(calibrators, list) else \
        [] if calibrators is None else read_calibrators(calibrators)
    if not cals and calibrators is not None:
        raise InputError(f"{calibrators}: no calibrators in the list")
    results: list[TileResult] = []

    def report(r: TileResult):
        results.append(r)
        if on_result:
            on_result(r, len(results), len(items))

    plans: list[TilePlan] = []
    for item in items:
        try:
            plans.append(plan_for(item, cals))
        except EselakeError as exc:
            report(TileResult(name_of(item), "failed", error=str(exc)))
    _run_plans(lake, plans, products, workers, common, report, force, scheduler)
    return results


def check_catalog_loaded(lake, catalog: str) -> None:
    """The catalogue the chain will measure must be in the lake before any tile is converted or imaged."""
    n = lake.sql("SELECT count(*) AS n FROM catalog_sources WHERE catalog = ?", [catalog.lower()])["n"][0]
    if not n:
        raise EselakeError(f"catalogue {catalog!r} is not loaded in {lake.path}; run: eselake catalog load "
                           f"{catalog} FILE (nothing was processed)")


def _run_plans(lake, plans, products: Path, workers: int, common: tuple, report, force: bool,
               scheduler=None) -> None:
    """Skip what the lake already has (unless ``force``), then process calibrator tiles first and the others
    with their day's solutions."""
    todo = []
    for p in plans:
        if not force and _done(lake, products, p):
            report(TileResult(p.tile_id, "skipped"))
        else:
            todo.append(p)
    cal_plans = [p for p in plans if p.calibrator is not None]

    def tables_for(p: TilePlan) -> list[str] | None:
        same_day = [c for c in cal_plans if c.mid.datetime.date() == p.mid.datetime.date()]
        for c in sorted(same_day, key=lambda c: abs((c.mid - p.mid).to_value(u.s))):
            ms = products / c.folder_name / "tile.ms"
            tabs = [ms.with_suffix(".bcal"), ms.with_suffix(".gcal")]
            if all(t.exists() for t in tabs):
                return [str(t) for t in tabs]
        return None

    def run(batch: list[TilePlan], client):
        if not batch:
            return
        run_jobs(process_tile, [(str(lake.path), p, str(products), None if p.calibrator is not None
                                 else tables_for(p), *common) for p in batch], workers, report, scheduler=client,
                 on_failure=lambda job, exc: TileResult(job[1].tile_id, "failed", error=f"{type(exc).__name__}: {exc}"))

    # calibrator tiles first: their solutions are transferred to the other tiles of the day
    with dask_client(scheduler, workers) if scheduler and todo else contextlib.nullcontext() as client:
        run([p for p in todo if p.calibrator is not None], client)
        run([p for p in todo if p.calibrator is None], client)


def ms_plan(ms, dec_deg: float | None, calibrators, telescope: str | None = None, pbcor: bool = True,
            skip_calibration: bool = False) -> TilePlan:
    """Plan for an existing Measurement Set: its telescope, phase centre and mid-time from the MS itself.

    A Measurement Set of another telescope is refused unless ``telescope`` names it: the chain models DSA-110
    (the primary beam of its 4.65 m dishes over a meridian drift scan, calibrator transfer), so such data are
    imaged without primary-beam correction (``pbcor`` must be False) and, when already calibrated, with
    ``skip_calibration``."""
    from astropy.coordinates import SkyCoord

    from eselake.ingest.radio.calibrate import calibrator_in_field, ms_times_freqs
    from eselake.ingest.radio.casa import tools

    ms = Path(ms).absolute()
    if not (ms / "table.dat").exists():
        raise InputError(f"{ms}: not a Measurement Set")
    tb = tools().table()
    try:
        tb.open(f"{ms}/OBSERVATION")
        names = [str(n) for n in tb.getcol("TELESCOPE_NAME")] if tb.nrows() else []
        tb.close()
        tb.open(f"{ms}/FIELD")
        ra, dec = tb.getcol("PHASE_DIR")[:, 0, 0]
        tb.close()
    except RuntimeError as exc:
        raise InputError(f"{ms}: unreadable Measurement Set ({exc})") from exc
    found = names[0] if names else "an unknown telescope"
    if not (names and is_dsa110(found)):
        if telescope is None:
            raise InputError(f"{ms}: a Measurement Set of {found} (OBSERVATION/TELESCOPE_NAME), not DSA-110; the "
                             "chain applies the DSA-110 primary beam and drift-scan model. To image it anyway give "
                             f"--telescope {found.replace(' ', '_')} --no-pbcor (and --skip-calibration for "
                             "calibrated data)")
        if pbcor:
            raise InputError(f"{ms}: --telescope {telescope}: only the DSA-110 primary beam is modelled; add "
                             "--no-pbcor to image without primary-beam correction")
    t, _ = ms_times_freqs(ms)
    mid = Time(float(np.mean(t)), format="mjd", scale="utc")
    c = SkyCoord(np.rad2deg(ra) % 360, np.rad2deg(dec), unit="deg")
    return TilePlan(None, mid, float(dec_deg if dec_deg is not None else c.dec.deg), float(c.ra.deg),
                    float(c.dec.deg), None if skip_calibration else calibrator_in_field(c, calibrators),
                    ms_source=ms, telescope=telescope or found, pbcor=pbcor, skip_calibration=skip_calibration)


def ingest_ms(lake, ms_paths, products, *, calibrators=None, catalog: str = "nvss", dec_deg: float | None = None,
              workers: int = 1, imager: str = "auto", fov_deg: float = 3.0, niter: int = 2000,
              min_flux_mjy: float | None = None, force: bool = False, on_result=None,
              scheduler=None, telescope: str | None = None, pbcor: bool = True,
              skip_calibration: bool = False) -> list[TileResult]:
    """Enter the chain with Measurement Sets (copied into ``products``, then calibrated, imaged, measured).
    ``telescope``, ``pbcor``, ``skip_calibration``: see :func:`ms_plan`."""
    if calibrators is None and not skip_calibration:
        raise InputError("--calibrators is needed to calibrate (or give --skip-calibration for calibrated data)")
    return _ingest(lake, list(ms_paths),
                   lambda ms, cals: ms_plan(ms, dec_deg, cals, telescope, pbcor, skip_calibration),
                   lambda ms: Path(ms).name, products, calibrators, workers,
                   (catalog, imager, fov_deg, niter, min_flux_mjy), force, on_result, scheduler)
