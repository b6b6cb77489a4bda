"""Template bank for the ESE search: Clegg, Fey & Lazio (1998) Gaussian plasma-lens gain curves and
flat-bottomed dips, tabulated in units of the dip's duration.

Every template is a flux-ratio deviation ``s(v) = (g(v) - 1) / depth0`` of a gain curve ``g``, where
``v = (t - center) / duration`` and ``duration`` (days) is the dip's full width at half depth: the time
between the two points where the central dip crosses 1 - depth0/2. ``s(0) = -1``, so a fitted amplitude A
(Jy) on a baseline a (Jy) is a fractional central depth A/a. Caustic brightenings (alpha > 2.24) and the
weaker edge brightenings of any diverging lens are positive parts of ``s``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CAUSTIC_ALPHA = 2.24          # a Gaussian lens forms caustics for alpha > 1 / max|(1-2x^2)exp(-x^2)| = 2.24
DURATIONS_DAYS = tuple(float(round(14.0 * 2 ** (j / 2), 1)) for j in range(9))   # 14 ... 224 d (sqrt 2 steps)
# (alpha, source size / lens size); alpha = None is the flat-bottomed dip
SHAPES = ((None, 0.0), (0.3, 0.1), (1.0, 0.1), (2.5, 0.05), (2.5, 0.3), (5.0, 0.1), (10.0, 0.05), (10.0, 0.3))
# the coarse scan's shapes (the refinement then tries the flat dip and every ALPHAS_FINE x SIZES_FINE lens)
SCAN_SHAPES = ((None, 0.0), (0.3, 0.1), (1.0, 0.1), (2.5, 0.3), (10.0, 0.05))
ALPHAS_FINE = (0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.0, 3.5, 4.2, 5.0, 6.0, 7.0, 8.5, 10.0, 12.0, 14.0)
SIZES_FINE = (0.05, 0.1, 0.2, 0.35, 0.6)
DV = 1.0 / 400                # tabulation step in units of the duration
V_MAX = 3.0                   # tables cover |v| <= V_MAX durations


def lens_gain(u, alpha: float, size: float) -> np.ndarray:
    """Gain of a 1-D Gaussian plasma lens at lens-plane offset ``u`` (lens widths), Clegg et al. 1998.

    Rays from x arrive at u = x + alpha x exp(-x^2); the gain is the ray density, smoothed by a Gaussian
    source of ``size`` lens widths (the source/lens size ratio).
    """
    return np.interp(np.asarray(u, float), *_gain_table(float(alpha), float(size)), left=1.0, right=1.0)


@lru_cache(maxsize=64)
def _ray_density(alpha: float):
    """Unsmoothed gain of a point source on 8000 bins of u in [-10, 10] lens widths (bin centres, gain)."""
    x = np.linspace(-14, 14, 280001)
    u = x + alpha * x * np.exp(-x * x)
    counts, edges = np.histogram(u, bins=8000, range=(-10.0, 10.0))        # equal bins: no sort of u
    return 0.5 * (edges[1:] + edges[:-1]), counts * (x[1] - x[0]) / np.diff(edges)


@lru_cache(maxsize=256)
def _gain_table(alpha: float, size: float):
    centers, gain = _ray_density(alpha)
    du = centers[1] - centers[0]
    sig = max(size, 0.01)
    half = int(np.ceil(5 * sig / du))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) * du / sig) ** 2)
    padded = np.concatenate([np.ones(half), gain, np.ones(half)])
    return centers, np.convolve(padded, k / k.sum(), mode="valid")


def flat_dip(v, edge: float = 1.0 / 12) -> np.ndarray:
    """Flat-bottomed dip deviation (-1 inside, 0 outside) of unit duration at half depth, tanh edges."""
    v = np.asarray(v, float)
    return -0.5 * (np.tanh((v + 0.5) / edge) - np.tanh((v - 0.5) / edge))


@dataclass(frozen=True)
class Shape:
    """One template shape: ``table`` holds s(v) on ``V_GRID``; ``width_lens`` = duration in lens widths."""
    alpha: float | None
    size: float
    table: np.ndarray
    width_lens: float
    depth0: float
    support: float          # |s| < 1e-3 beyond |v| > support (durations)

    @property
    def name(self) -> str:
        return "dip" if self.alpha is None else f"lens a={self.alpha:g} r={self.size:g}"

    @property
    def caustics(self) -> bool:
        return self.alpha is not None and self.alpha > CAUSTIC_ALPHA

    def __call__(self, v) -> np.ndarray:
        return np.interp(np.asarray(v, float), V_GRID, self.table, left=0.0, right=0.0)


V_GRID = np.arange(-V_MAX, V_MAX + DV / 2, DV)


@lru_cache(maxsize=256)
def make_shape(alpha: float | None, size: float) -> Shape:
    """The tabulated template of a lens (alpha, size ratio) or, for alpha None, of the flat-bottomed dip."""
    if alpha is None:
        s = flat_dip(V_GRID)
        return Shape(None, 0.0, s, 0.0, 1.0, _support(s))
    u = np.linspace(0, 8, 16001)
    g = lens_gain(u, alpha, size)
    depth0 = 1.0 - g[0]
    # first crossing of the half-depth level going outwards from the centre
    above = np.nonzero(g >= 1.0 - depth0 / 2)[0]
    i = above[0]
    u_half = np.interp(1.0 - depth0 / 2, [g[i - 1], g[i]], [u[i - 1], u[i]])
    width = 2.0 * u_half
    s = (lens_gain(V_GRID * width, alpha, size) - 1.0) / depth0
    return Shape(float(alpha), float(size), s, float(width), float(depth0), _support(s))


def _support(s: np.ndarray) -> float:
    big = np.nonzero(np.abs(s) > 1e-3)[0]
    return float(min(V_MAX, max(abs(V_GRID[big[0]]), abs(V_GRID[big[-1]])) + 0.02))


def bank(shapes=SHAPES) -> list[Shape]:
    """The search's template shapes (lens gain curves with and without caustics, and the flat dip)."""
    return [make_shape(a, r) for a, r in shapes]


def bin_days(duration_days: float) -> int:
    """Time resolution (days) of the coarse scan for templates of this duration: about duration / 8."""
    return max(1, int(round(duration_days / 8.0)))


def binned_template(shape: Shape, duration_days: float, b: int, sub: int = 16) -> tuple[np.ndarray, int]:
    """Template averaged over bins of ``b`` days, centred on bin 0: (values for bins -K..K, K)."""
    k_half = int(np.ceil(shape.support * duration_days / b)) + 1
    k = np.arange(-k_half, k_half + 1)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    t = (k[:, None] + offs[None, :]) * b
    return shape(t / duration_days).mean(axis=1), k_half


def evaluate(shape_tables: np.ndarray, shape_idx, t, center, duration) -> np.ndarray:
    """s at times ``t`` (days) for per-row shape index, centre (days) and duration (days), vectorised.

    ``shape_tables`` is (n_shapes, len(V_GRID)); ``t`` is (n, m), ``shape_idx`` (n,), ``center`` and
    ``duration`` broadcast against (n, m). Nearest tabulated value (the table step is duration / 400).
    """
    nv = V_GRID.size
    pos = (np.asarray(t, float) - center) * (1.0 / DV / np.asarray(duration, float)) + (V_MAX / DV)
    idx = np.rint(pos)
    np.clip(idx, 0, nv - 1, out=idx)
    flat = idx.astype(np.int64)
    flat += np.asarray(shape_idx, np.int64).reshape(-1, 1) * nv
    out = np.take(shape_tables.ravel(), flat)
    out[(pos < 0) | (pos > nv - 1)] = 0.0
    return out
