"""Per-source noise model of daily lightcurves, for all sources at once.

Arrays are dense (n_sources, n_days): row i, column j is day first_day[i] + j; ``present`` marks observed days
(flux y and error e in Jy elsewhere ignored). The model is

    y_t = baseline + white_t + red_t,   white_t ~ N(0, (k e_t)^2),   red = damped random walk (DRW):
    cov(red_t, red_t') = sigma_r^2 exp(-|t - t'| / tau_r)

with k >= ~1 an error-scale factor (residual calibration errors, underestimated errors). k, sigma_r and tau_r are
fitted to the source's robust structure function, computed on the days outside a masked window (the candidate
event), so that an isolated dip does not pass for red noise while persistent variability does. Isolated bad
nights are capped: each night may deviate from the running median of its neighbours by at most ``cap`` white
sigmas (a cap on one night's contribution, a Huber-type robust likelihood).
"""
from __future__ import annotations

import numpy as np

from eselake.detection.jit import jit, pairwise_sum

SF_LAGS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])           # days
TAU_GRID = np.array([3.0, 7.0, 15.0, 30.0, 60.0, 120.0, 250.0, 500.0])        # days
RED_DETECT = 0.0                          # sigma of red-noise amplitude required to keep it (0: any; see below)
_ABS_MEAN = np.sqrt(2 / np.pi)            # E|z| of a unit normal
_CAPPED_ABS_MEAN = 0.7971                 # E min(|z|, 3) of a unit normal


@jit
def _robust_sd_lag(y, e, present, lag, in_errors):
    """Per row: robust standard deviation of y_(t+lag) - y_t over pairs of observed days (mean |d| capped at 3
    sigma; d in units of the pair's error when ``in_errors``), the number of pairs and their rms error. Sums run
    as numpy's (``pairwise_sum``), so the figures are numpy's to the last bit."""
    n, m = y.shape
    sd = np.zeros(n)
    count = np.zeros(n, np.int64)
    ew = np.zeros(n)
    k = max(m - lag, 0)
    a = np.zeros(k)             # |d| of the row's pairs (0 where a day is missing)
    e2 = np.zeros(k)            # their squared errors
    for i in range(n):
        c = 0
        for j in range(k):
            a[j] = 0.0
            e2[j] = 0.0
            if present[i, j] and present[i, j + lag]:
                e2[j] = e[i, j + lag] ** 2 + e[i, j] ** 2
                d = y[i, j + lag] - y[i, j]
                if in_errors:
                    d = d / np.sqrt(e2[j])
                a[j] = abs(d)
                c += 1
        nn = max(c, 1)
        cap = 3 * (pairwise_sum(a, 0, k) / nn / _ABS_MEAN)
        for j in range(k):
            a[j] = np.minimum(a[j], cap)
        sd[i] = pairwise_sum(a, 0, k) / nn / _CAPPED_ABS_MEAN
        count[i] = c
        ew[i] = np.sqrt(pairwise_sum(e2, 0, k) / nn)
    return sd, count, ew


def error_scale(y: np.ndarray, e: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Robust white-noise scale factor k0 (>= 0.5) from consecutive-day differences in units of their errors."""
    k, n, _ = _robust_sd_lag(y, e, present, 1, True)
    return np.where(n >= 5, np.maximum(k, 0.5), 1.0)


@jit
def _despike_rows(y, sigma, present, cap, half, out, capped):
    """``despike`` of every row into ``out`` (Jy) and ``capped``: the window's observed fluxes (not NaN) kept
    sorted (float32) as it slides, one day in and one out."""
    n, m = y.shape
    buf = np.empty(2 * half + 1, np.float32)
    for i in range(n):
        c = 0
        for k in range(min(half, m)):              # the window of day 0 without its last day
            if present[i, k] and y[i, k] == y[i, k]:
                c = _insert(buf, c, np.float32(y[i, k]))
        for j in range(m):
            if j + half < m and present[i, j + half] and y[i, j + half] == y[i, j + half]:
                c = _insert(buf, c, np.float32(y[i, j + half]))
            if j - half - 1 >= 0 and present[i, j - half - 1] and y[i, j - half - 1] == y[i, j - half - 1]:
                c = _remove(buf, c, np.float32(y[i, j - half - 1]))
            out[i, j] = y[i, j]
            capped[i, j] = False
            if present[i, j] and c >= 3:
                med = np.float64(np.float32(0.5) * (buf[(c - 1) // 2] + buf[c // 2]))
                dev = y[i, j] - med
                lim = cap * sigma[i, j]
                if abs(dev) > lim:
                    capped[i, j] = True
                    out[i, j] = med + min(max(dev, -lim), lim)


@jit
def _insert(buf, c, v):
    """Insert v into the sorted buf[:c]; returns the new count."""
    p = c
    while p > 0 and buf[p - 1] > v:
        buf[p] = buf[p - 1]
        p -= 1
    buf[p] = v
    return c + 1


@jit
def _remove(buf, c, v):
    """Remove one value equal to v from the sorted buf[:c]; returns the new count."""
    p = 0
    while buf[p] != v:
        p += 1
    for q in range(p, c - 1):
        buf[q] = buf[q + 1]
    return c - 1


def despike(y: np.ndarray, sigma: np.ndarray, present: np.ndarray, cap: float = 4.0, half: int = 4):
    """Cap every night's deviation from the median of the observed days within +-``half`` days at ``cap``
    sigma (Jy).

    Days with fewer than 3 observed days in their window are left alone. Returns the capped flux and a boolean
    array of the nights that were capped.
    """
    y = np.ascontiguousarray(y, float)
    sigma = np.ascontiguousarray(np.broadcast_to(np.asarray(sigma, float), y.shape))
    present = np.ascontiguousarray(np.broadcast_to(np.asarray(present, bool), y.shape))
    out = np.empty(y.shape)
    capped = np.empty(y.shape, bool)
    _despike_rows(y, sigma, present, float(cap), int(half), out, capped)
    return out, capped


def structure_function(y, e, present, lags=SF_LAGS):
    """Robust structure function of each row: (sd of y_{t+L} - y_t (Jy), rms pair error (Jy), n pairs) per lag."""
    n = y.shape[0]
    sd = np.zeros((n, len(lags)))
    ew = np.zeros((n, len(lags)))
    npairs = np.zeros((n, len(lags)), dtype=np.int64)
    y, e, present = (np.ascontiguousarray(a) for a in (y, e, present))
    for i, lag in enumerate(lags):
        if 0 < lag < y.shape[1]:
            sd[:, i], npairs[:, i], ew[:, i] = _robust_sd_lag(y, e, present, int(lag), False)
    return sd, ew, npairs


def fit_drw(sd, ew, npairs, lags=SF_LAGS, min_pairs: int = 12, tau_min=None):
    """Fit SF(L)^2 = k^2 ew(L)^2 + 2 sigma_r^2 (1 - exp(-L/tau_r)) to each row, tau_r on ``TAU_GRID``.

    k (the error scale) comes from the shortest lag, where a red process adds little; sigma_r^2 >= 0 by
    weighted least squares over all lags (weights n_pairs / SF^4: relative errors of the variance estimates)
    for every tau_r of the grid that is >= ``tau_min`` (days, per row; the largest grid value at least),
    keeping the best. Returns k, sigma_r (Jy) and tau_r (days) per row (k NaN where lag 1 has too few pairs).
    """
    tmin = np.zeros(sd.shape[0]) if tau_min is None else np.minimum(np.asarray(tau_min, float), TAU_GRID[-1])
    sf2 = sd ** 2
    wgt = np.where(npairs >= min_pairs, npairs / np.maximum(sf2, 1e-30) ** 2, 0.0)
    x1 = ew ** 2
    ok1 = npairs[:, 0] >= min_pairs
    k2 = np.where(ok1, sf2[:, 0] / np.maximum(x1[:, 0], 1e-30), np.nan)
    for _ in range(2):          # second pass: remove the red process's share of the lag-1 variance from k^2
        excess = sf2 - np.nan_to_num(k2)[:, None] * x1
        best = np.full(sd.shape[0], np.inf)
        s2_b = np.zeros(sd.shape[0])
        tau_b = np.full(sd.shape[0], TAU_GRID[-1])
        for tau in TAU_GRID:
            x2 = 2 * (1 - np.exp(-lags / tau))[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                info = (wgt * x2 * x2).sum(1)
                s2 = np.maximum((wgt * x2 * excess).sum(1) / info, 0.0)
            s2 = np.nan_to_num(s2)
            resid = (wgt * (excess - s2[:, None] * x2) ** 2).sum(1)
            # optionally keep only red noise detected at RED_DETECT sigma (var(SF^2) ~ 2 SF^4 / n_pairs). On the
            # simulated survey any positive estimate (RED_DETECT = 0) gives the better completeness at a fixed
            # false-alarm rate: the penalty it puts on quiet sources costs less than the red-noise sources it
            # lets through at 1 or 2 sigma (benchmark: 78 % vs 56 % at SNR 8-12)
            se = np.sqrt(2.0 / np.where(info > 0, info, np.inf))
            s2 = np.maximum(s2 - RED_DETECT * se, 0.0)
            better = (resid < best) & (tau >= tmin)
            best = np.where(better, resid, best)
            s2_b = np.where(better, s2, s2_b)
            tau_b = np.where(better, tau, tau_b)
        red1 = 2 * s2_b * (1 - np.exp(-lags[0] / tau_b))
        k2 = np.where(ok1, np.maximum(sf2[:, 0] - red1, 0.25 * sf2[:, 0]) / np.maximum(x1[:, 0], 1e-30), np.nan)
    return np.sqrt(k2), np.where(ok1, np.sqrt(s2_b), 0.0), tau_b


def ar1_filter(x: np.ndarray, rho) -> np.ndarray:
    """y_j = x_j + rho y_(j-1) along the last axis: scipy.signal.lfilter([1], [1, -rho], x), bit for bit; ``rho``
    one value, or one per row of a 2-D ``x``."""
    x = np.asarray(x, dtype=float)
    y = np.array(x.reshape(-1, x.shape[-1]), order="C") if x.ndim else x.reshape(1, 1).copy()
    _ar1_rows(y, np.broadcast_to(np.asarray(rho, float), y.shape[:1]))
    return y.reshape(x.shape)


@jit
def _ar1_rows(y, rho):
    """ar1_filter of every row of ``y`` in place, rho[i] for row i."""
    for i in range(y.shape[0]):
        for j in range(1, y.shape[1]):
            y[i, j] = y[i, j] + rho[i] * y[i, j - 1]


def drw_apply(u: np.ndarray, tau_days: np.ndarray) -> np.ndarray:
    """K u for each row u of a daily grid, K_tt' = exp(-|t - t'| / tau), tau per row (days): the forward and
    backward first-order filters of u, less u (counted by both)."""
    u = np.asarray(u, dtype=float)
    rho = np.exp(-1.0 / np.asarray(tau_days, float))
    return ar1_filter(u, rho) + ar1_filter(u[:, ::-1], rho)[:, ::-1] - u


def drw_quadratic(u: np.ndarray, tau_days: np.ndarray) -> np.ndarray:
    """u^T K u for each row u of a daily grid, K_tt' = exp(-|t - t'| / tau) (tau per row; O(n) IIR filters)."""
    return np.sum(u * drw_apply(u, np.asarray(tau_days)), axis=-1)
