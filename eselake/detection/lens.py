"""Flux-ratio models of Extreme Scattering Events (for simulations and for overplotting fits)."""
from __future__ import annotations

import numpy as np


def smooth_dip(t_mjd, start_mjd: float, duration_days: float, depth: float, edge_days: float = 2.0):
    """Flux ratio of a flat-bottomed dip: 1 - depth between start and start + duration, tanh edges."""
    t = np.asarray(t_mjd, float)
    rise = 0.5 * (1 + np.tanh((t - start_mjd) / edge_days))
    fall = 0.5 * (1 - np.tanh((t - start_mjd - duration_days) / edge_days))
    return 1.0 - depth * rise * fall


def gaussian_lens(t_mjd, center_mjd: float, duration_days: float, alpha: float = 1.0,
                  source_size: float = 0.08, grid: int = 20001):
    """Flux ratio of a 1-D Gaussian plasma lens crossing a compact source (Clegg, Fey & Lazio 1998).

    Rays from lens-plane position x (in lens widths) arrive at u = x + alpha * x * exp(-x^2) (a diverging
    lens: an over-density of electrons pushes rays outwards); the gain at u is the density of arriving rays, |dx/du| summed over the images,
    smoothed by a Gaussian source of ``source_size`` lens widths. ``duration_days`` is the time taken to
    cross four lens widths (the dip plus its caustic spikes); alpha > 2.24 gives caustics at the edges.
    """
    t = np.asarray(t_mjd, float)
    u_t = (t - center_mjd) / (duration_days / 4.0)
    x = np.linspace(-8, 8, grid)
    u = x + alpha * x * np.exp(-x * x)
    edges = np.linspace(-6, 6, 2401)
    counts, _ = np.histogram(u, bins=edges)
    gain = counts * (x[1] - x[0]) / np.diff(edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    du = centers[1] - centers[0]
    k = np.exp(-0.5 * (np.arange(-400, 401) * du / source_size) ** 2)
    # pad with the unlensed gain (1), not zeros, so that the smoothing does not dim the table's ends
    smooth = np.convolve(np.concatenate([np.ones(400), gain, np.ones(400)]), k / k.sum(), mode="valid")
    return np.interp(u_t, centers, smooth, left=1.0, right=1.0)
