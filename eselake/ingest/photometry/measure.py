"""Forced photometry of catalogue sources on FITS images, written to the lake (one commit per image)."""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import polars as pl
import pyarrow as pa

from eselake import __version__
from eselake.errors import EselakeError, InputError
from eselake.ingest.catalogs.catalog import cone_mask, separation_deg
from eselake.ingest.photometry.fitsimage import image_identity, read_header, read_image, read_noise_map
from eselake.ingest.parallel import run_jobs
from eselake.ingest.photometry.kernel import beam_covariance_pix, forced_photometry
from eselake.lake import Lake
from eselake.lake.layout import observation_id

PIPELINE_VERSION = f"eselake-{__version__}"

# Product names of the imagers (see the README, "Forced photometry"):
#   WSClean  <name>[-MFS|-NNNN][-I]-image.fits       restored image (flat noise, not primary-beam corrected)
#            <name>...-image-pb.fits                 restored image, primary-beam corrected  <- preferred
#            -residual[-pb], -model[-pb], -psf, -dirty, -beam-N / -beam-I  by-products (skipped)
#   CASA     <name>.image.fits / .image.tt0.fits     restored image (flat noise)
#            <name>.pbcor.fits / .image.pbcor.fits   primary-beam corrected                  <- preferred
#            .pb, .psf, .residual, .model, .sumwt, .weight, .mask, .alpha, .image.tt1/tt2  by-products
#   eselake  tile.image.fits, tile.pbcor.fits (preferred), tile.pb.fits
_WSCLEAN_PB = re.compile(r"-image-pb$", re.I)
_PBCOR = re.compile(r"([._-])(image[._-])?pbcor(\.tt0)?$|-image-pb$", re.I)
_IMAGE = re.compile(r"([._-])image(\.tt0)?$", re.I)
_NOT_SKY = re.compile(r"(^|[._-])(psf|residual|model|pb|sumwt|weight|weights|beam|mask|dirty|alpha|spix|"
                      r"tt[1-9]|rms|noise|bkg|background|flux|pbcoverage|avgpb)([._-]|$)", re.I)
_RANK = {"pbcor": 0, "sky": 1, "image": 2}
_FITS_NAME = re.compile(r"(.+)\.(?:fits|fit|fts)(?:\.(?:gz|fz|bz2))?", re.I)


def product_kind(path) -> str | None:
    """'pbcor' (primary-beam corrected), 'image' (restored, flat noise, not pb-corrected), 'sky' (any other
    FITS image), or None for imager by-products (psf, residual, model, pb, beam, dirty, weights, ...)."""
    stem = _fits_stem(path)
    if stem is None:
        return None
    if _PBCOR.search(stem):
        return "pbcor"
    if _IMAGE.search(stem):
        return "image"
    if _NOT_SKY.search(stem):
        return None
    return "sky"


def _fits_stem(path) -> str | None:
    """The file name without its FITS suffix (.fits, .fit, .fts, each optionally .gz/.fz/.bz2), or None."""
    m = _FITS_NAME.fullmatch(Path(path).name)
    return m.group(1) if m else None


def observation_stem(path) -> str:
    """The name an imager's products of one observation share: 'tile' for tile.image.fits/tile.pbcor.fits,
    'obs' for obs-image.fits/obs-image-pb.fits."""
    stem = _fits_stem(path) or Path(path).name.rsplit(".", 1)[0]
    for pat in (_PBCOR, _IMAGE):
        stem = pat.sub("", stem)
    return stem


def is_sky_image(path: Path) -> bool:
    """True for FITS sky images (restored or primary-beam corrected); False for psf/residual/model/pb/beam/
    dirty/sumwt/weight by-products."""
    return product_kind(path) is not None


@dataclass
class MeasureResult:
    image_id: str
    path: Path
    n_sources: int = 0
    n_flagged: int = 0
    mjd: float | None = None
    skipped: bool = False
    measurements: pl.DataFrame | None = field(default=None, repr=False)


def _sources_from_lake(lake: Lake, catalog: str, dec_lo: float, dec_hi: float,
                       min_flux_mjy: float | None) -> pa.Table:
    q = ("SELECT source_id, ra_deg, dec_deg, flux_mjy FROM catalog_sources "
         "WHERE catalog = ? AND dec_deg BETWEEN ? AND ?")
    params: list = [catalog.lower(), dec_lo, dec_hi]
    if min_flux_mjy is not None:
        q += " AND flux_mjy >= ?"
        params.append(float(min_flux_mjy))
    table = lake.arrow(q, params)
    if table.num_rows == 0 and lake.sql("SELECT count(*) AS n FROM catalog_sources WHERE catalog = ?",
                                        [catalog.lower()])["n"][0] == 0:
        raise EselakeError(f"catalogue {catalog!r} is not loaded in {lake.path}; "
                           f"run: eselake catalog load {catalog} FILE")
    return table


def _as_sources(sources) -> pa.Table:
    if isinstance(sources, pl.DataFrame):
        sources = sources.to_arrow()
    if not isinstance(sources, pa.Table):
        raise TypeError("sources must be a pyarrow Table or polars DataFrame (source_id, ra_deg, dec_deg)")
    if "flux_mjy" not in sources.column_names:
        sources = sources.append_column("flux_mjy", pa.nulls(sources.num_rows, pa.float64()))
    return sources.select(["source_id", "ra_deg", "dec_deg", "flux_mjy"])


def measure_image(lake: Lake, fits_path, *, catalog: str = "nvss", sources=None,
                  min_flux_mjy: float | None = None, radius_deg: float | None = None,
                  beam: tuple[float, float, float] | None = None, mjd: float | None = None, noise_map=None, kind: str = "image",
                  noise_corr: str = "beam", skip_existing: bool = False, write: bool = True,
                  plane: int | None = None, frac_err: float | None = None) -> MeasureResult:
    """Measure every catalogue source in the field of ``fits_path`` and commit the rows to ``lake``.

    Sources come from ``sources`` (table with source_id, ra_deg, dec_deg[, flux_mjy]) or from the lake's
    ``catalog`` (NVSS by default), optionally brighter than ``min_flux_mjy`` and within ``radius_deg`` of the
    image centre (mosaics). ``beam`` = (bmaj_deg, bmin_deg, bpa_deg) for images without beam keywords,
    ``mjd`` for images without an observation time.
    ``plane`` selects one plane of a cube (cubes with several planes are refused without it).
    Errors: the noise map ``noise_map``, else the one the header declares (NOISEMAP / NOISE, written by the
    radio chain from its thermal-noise image), else the local annulus rms; ``frac_err`` (default: the
    header's FLUXSYS, else 0) adds frac_err x |flux| in quadrature (per-epoch flux-scale error).
    The image is identified by its observation (telescope, field centre, mid-time, frequency, kind; see
    ``eselake.lake.layout.observation_id``), read from the header: re-measuring it, from this or any other
    folder, replaces its earlier rows; with ``skip_existing`` an unchanged image already in the lake is
    skipped after reading only its header.
    """
    path = Path(fits_path).absolute()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    header = read_header(path)
    image_id = observation_id(*image_identity(header, path, beam=beam, mjd=mjd, kind=kind, plane=plane), kind)
    # with skip_existing, one process measures an image at a time; the others wait, then find it done
    guard = lake.lock(f"measure-{image_id}") if skip_existing and write else contextlib.nullcontext()
    with guard:
        stat = path.stat()
        if skip_existing:
            done = lake.committed_image(image_id)
            if done and done.get("file_size") == stat.st_size and done.get("file_mtime") == stat.st_mtime \
                    and done.get("pipeline_version") == PIPELINE_VERSION:
                return MeasureResult(image_id, path, done.get("n_sources") or 0, mjd=done.get("mjd"), skipped=True)

        img = read_image(path, beam=beam, mjd=mjd, plane=plane)
        floor = img.noise_floor_jyb
        if noise_map is None:
            noise, declared = declared_noise(path, header, img.shape)
            floor = declared if declared is not None else floor
        else:
            noise = read_noise_map(noise_map, img.shape)
            floor = 0.1 * floor if floor else None      # the user's map may know better; only absurd values
        search = radius_deg if radius_deg is not None else img.footprint_radius_deg()
        if sources is None:
            dec_lo, dec_hi = img.dec_center_deg - search, img.dec_center_deg + search
            cand = _sources_from_lake(lake, catalog, dec_lo, dec_hi, min_flux_mjy)
        else:
            cand = _as_sources(sources)
            if min_flux_mjy is not None:
                flux = cand.column("flux_mjy").to_numpy(zero_copy_only=False)
                cand = cand.filter(pa.array(np.nan_to_num(flux, nan=np.inf) >= min_flux_mjy))
        ra = cand.column("ra_deg").to_numpy(zero_copy_only=False).astype(float)
        dec = cand.column("dec_deg").to_numpy(zero_copy_only=False).astype(float)
        keep = cone_mask(ra, dec, img.ra_center_deg, img.dec_center_deg, search)
        x, y = img.world_to_pixel(ra[keep], dec[keep])
        ny, nx = img.shape
        infield = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
        idx = np.flatnonzero(keep)[infield]
        x, y = x[infield], y[infield]
        ra, dec = ra[idx], dec[idx]

        jac = img.jacobian_pix_per_deg(ra, dec)
        cov = beam_covariance_pix(img.bmaj_deg, img.bmin_deg, img.bpa_deg, jac)
        res = forced_photometry(img.data, x, y, cov, noise_map=noise, image_rms=img.rms_jyb,
                                rms_floor=floor, noise_corr=noise_corr,
                                frac_err=_frac_err(header) if frac_err is None else float(frac_err))
        n = idx.size
        table = pa.table({
            "source_id": cand.column("source_id").take(pa.array(idx, pa.int64())),
            "mjd": np.full(n, img.mjd),
            "ra_deg": ra, "dec_deg": dec,
            "peak_jyb": res.peak_jyb, "peak_err_jyb": res.peak_err_jyb, "local_rms_jyb": res.local_rms_jyb,
            "snr": res.snr, "chi2": res.chi2, "dof": res.dof.astype(np.int32), "flags": res.flags,
            "blend_group": res.blend_group,
            "catalog_flux_mjy": cand.column("flux_mjy").take(pa.array(idx, pa.int64())).cast(pa.float64()),
            "sep_from_center_deg": separation_deg(ra, dec, img.ra_center_deg, img.dec_center_deg),
            "freq_hz": np.full(n, img.freq_hz if img.freq_hz is not None else np.nan),
            "image_path": pa.array([str(path)] * n, pa.string()),
        })
        image_row = {
            "image_id": image_id, "path": str(path), "kind": kind, "mjd": img.mjd, "exposure_s": img.exposure_s,
            "freq_hz": img.freq_hz, "bmaj_deg": img.bmaj_deg, "bmin_deg": img.bmin_deg, "bpa_deg": img.bpa_deg,
            "rms_jyb": img.rms_jyb, "ra_center_deg": img.ra_center_deg, "dec_center_deg": img.dec_center_deg,
            "file_size": stat.st_size, "file_mtime": stat.st_mtime, "pipeline_version": PIPELINE_VERSION,
        }
        if write:
            lake.commit_image(image_row, table)
        return MeasureResult(image_id, path, n, int((res.flags != 0).sum()), img.mjd,
                             measurements=pl.from_arrow(table))


def _frac_err(header) -> float:
    try:
        v = float(header.get("FLUXSYS", 0.0))
    except (TypeError, ValueError):
        return 0.0
    return v if np.isfinite(v) and 0 <= v < 1 else 0.0


def declared_noise(path: Path, header, shape) -> tuple[np.ndarray | None, float | None]:
    """The noise the image's header declares: NOISEMAP (a noise-map file beside the image, as the radio chain
    writes for its .pbcor images), else a uniform NOISE (Jy/beam, thermal rms of a flat-noise image).
    Returns (noise map or None, noise level at the pointing centre or None)."""
    level = header.get("NOISE")
    try:
        level = float(level) if level is not None else None
    except (TypeError, ValueError):
        level = None
    level = level if level is not None and np.isfinite(level) and level > 0 else None
    name = str(header.get("NOISEMAP", "")).strip()
    if name:
        mp = path.parent / name
        if mp.is_file():
            return read_noise_map(mp, shape), level
    if level is not None:
        return np.full(shape, level), level
    return None, None


def image_id_of(path, *, beam=None, mjd=None, kind: str = "image", plane: int | None = None) -> str:
    """The observation id of a FITS image, from its header alone."""
    header = read_header(path)
    tel, ra, dec, t, f = image_identity(header, path, beam=beam, mjd=mjd, kind=kind, plane=plane)
    return observation_id(tel, ra, dec, t, f, kind)


def _measure_worker(lake_path: str, fits_path: str, kwargs: dict):
    try:
        r = measure_image(Lake(lake_path), fits_path, **kwargs)
        r.measurements = None
        return fits_path, r, None
    except EselakeError as exc:
        return fits_path, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop a batch
        return fits_path, None, f"{type(exc).__name__}: {exc}"


def find_images(image_dir, pattern: str = "*") -> list[Path]:
    """Sky images under ``image_dir`` (recursively), one per observation: imager by-products (psf, residual,
    model, pb, beam, ...) are skipped, and of the products of one observation (same folder and product stem,
    or the same observation id in the header) the primary-beam-corrected image is kept
    (``*.pbcor.fits``, ``*-image-pb.fits``) rather than the flat-noise ``*.image.fits`` / ``*-image.fits``.
    Files named ``pattern`` (default: any name) ending in .fits, .fit or .fts, optionally compressed
    (.gz, .fz, .bz2)."""
    root = Path(image_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    return one_per_observation(p for p in root.rglob(pattern) if p.is_file() and is_sky_image(p))


def one_per_observation(paths: Iterable[Path]) -> list[Path]:
    """Keep one image per observation, preferring pbcor > other sky images > flat-noise restored images.
    Observations are matched by folder + product stem, then by the header's observation id (files whose
    header cannot be read are kept, so that they are reported when measured)."""
    best: dict[tuple, Path] = {}
    for p in sorted(Path(x) for x in paths):
        kind = product_kind(p) or "sky"
        key = ("stem", str(p.parent), observation_stem(p)) if kind != "sky" else ("file", str(p))
        if key not in best or _RANK[kind] < _RANK[product_kind(best[key]) or "sky"]:
            best[key] = p
    by_id: dict[str, Path] = {}
    out = []
    for p in sorted(best.values()):
        try:
            oid = image_id_of(p)
        except EselakeError:
            out.append(p)
            continue
        if oid not in by_id or _RANK[product_kind(p) or "sky"] < _RANK[product_kind(by_id[oid]) or "sky"]:
            by_id[oid] = p
    return sorted(out + list(by_id.values()))


def measure_batch(lake: Lake, paths: Iterable[Path], *, workers: int = 1,
                  on_done: Callable[[str, MeasureResult | None, str | None], None] | None = None,
                  scheduler=None, **kwargs) -> tuple[list[MeasureResult], dict[str, str]]:
    """Measure many images (in ``workers`` processes, or as tasks on the Dask ``scheduler``, see
    :func:`eselake.ingest.parallel.run_jobs`). A failing image is reported in the returned
    ``errors`` dict (path -> message) and does not stop or affect the others."""
    paths = [str(Path(p).absolute()) for p in paths]
    done, errors = [], {}

    def record(item):
        path, result, err = item
        if err is not None:
            errors[path] = err
        else:
            done.append(result)
        if on_done:
            on_done(path, result, err)

    run_jobs(_measure_worker, [(str(lake.path), p, kwargs) for p in paths], workers, record, scheduler=scheduler,
             on_failure=lambda job, exc: (job[1], None, f"{type(exc).__name__}: {exc}"))
    return done, errors

