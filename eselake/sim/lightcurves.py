"""Simulated photometry straight into the lake (no images): many sources x many epochs, with per-image
calibration errors, white noise and injected dips. For tests, benchmarks and quick experiments."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from eselake.detection.lens import smooth_dip


@dataclass
class Dip:
    source_index: int
    start_mjd: float
    duration_days: float
    depth: float


@dataclass
class SimulatedPhotometry:
    images: pa.Table          # one row per epoch (IMAGES_SCHEMA columns)
    photometry: pa.Table      # one row per source per epoch
    true_flux_jy: np.ndarray  # (n_epochs, n_sources) before noise and gains
    gains: np.ndarray         # (n_epochs,) multiplicative calibration error of each image
    source_ids: list[str] = field(default_factory=list)


def simulate_photometry(n_sources: int, n_epochs: int, *, start_mjd: float = 60000.0, cadence_days: float = 1.0,
                        flux_range_jy=(0.05, 1.0), noise_jy: float = 1e-3, frac_noise: float = 0.0,
                        gain_sigma: float = 0.0, dips: list[Dip] | None = None, seed: int = 0,
                        id_prefix: str = "SIM J", base_flux_jy: np.ndarray | None = None) -> SimulatedPhotometry:
    """Lightcurves of ``n_sources`` constant sources observed once per ``cadence_days``.

    measured = true * gain_image + N(0, sqrt(noise_jy^2 + (frac_noise * true)^2)); gains ~ 1 + N(0, gain_sigma)
    are shared by all sources of an epoch (calibration errors); ``dips`` multiply a source by a smooth dip.
    ``base_flux_jy`` fixes the sources' fluxes (to continue a simulation in chunks), else they are drawn.
    """
    rng = np.random.default_rng(seed)
    mjd = start_mjd + np.arange(n_epochs) * cadence_days + rng.uniform(-0.01, 0.01, n_epochs)
    base = np.exp(rng.uniform(np.log(flux_range_jy[0]), np.log(flux_range_jy[1]), n_sources))
    if base_flux_jy is not None:
        base = np.asarray(base_flux_jy, float)
    true = np.tile(base, (n_epochs, 1))
    for d in dips or []:
        true[:, d.source_index] *= smooth_dip(mjd, d.start_mjd, d.duration_days, d.depth)
    gains = 1.0 + gain_sigma * rng.standard_normal(n_epochs)
    err = np.sqrt(noise_jy**2 + (frac_noise * true) ** 2)
    meas = true * gains[:, None] + err * rng.standard_normal(true.shape)
    ids = [f"{id_prefix}{i:06d}" for i in range(n_sources)]
    image_ids = [f"sim-{k:06d}" for k in range(n_epochs)]
    images = pa.table({
        "image_id": image_ids, "path": [f"/sim/{i}.fits" for i in image_ids], "kind": ["image"] * n_epochs,
        "mjd": mjd, "freq_hz": np.full(n_epochs, 1.405e9), "rms_jyb": np.full(n_epochs, noise_jy),
        "bmaj_deg": np.full(n_epochs, 0.01), "bmin_deg": np.full(n_epochs, 0.01), "bpa_deg": np.zeros(n_epochs),
    })
    photometry = pa.table({
        "source_id": pa.array(np.tile(np.array(ids, dtype=object), n_epochs), pa.string()),
        "image_id": pa.array(np.repeat(np.array(image_ids, dtype=object), n_sources), pa.string()),
        "mjd": np.repeat(mjd, n_sources),
        "peak_jyb": meas.ravel(), "peak_err_jyb": err.ravel(), "local_rms_jyb": err.ravel(),
        "snr": (meas / err).ravel(), "flags": np.zeros(meas.size, np.int32),
        "catalog_flux_mjy": np.tile(base * 1000, n_epochs),
    })
    return SimulatedPhotometry(images, photometry, true, gains, ids)
