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

import sys

import numpy as np

SF_LAGS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])           # days
TAU_GRID = np.array([3.0, 7.0, 15.0, 30.0, 60.0, 120.0, 250.0, 500.0])        # days
RED_DETECT = 0.0                          # sigma of red-noise amplitude required to keep it (0: any; see below)
_ABS_MEAN = np.sqrt(2 / np.pi)            # E|z| of a unit normal
_CAPPED_ABS_MEAN = 0.7971                 # E min(|z|, 3) of a unit normal


def _robust_sd(d: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robust standard deviation of each row of ``d`` over ``ok``: mean |d| capped at 3 sigma; and counts."""
    a = np.where(ok, np.abs(d), 0.0)
    n = ok.sum(axis=1)
    nn = np.maximum(n, 1)
    s1 = a.sum(axis=1) / nn / _ABS_MEAN
    s2 = np.minimum(a, 3 * s1[:, None]).sum(axis=1) / nn / _CAPPED_ABS_MEAN
    return s2, n


def error_scale(y: np.ndarray, e: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Robust white-noise scale factor k0 (>= 0.5) from consecutive-day differences in units of their errors."""
    ok = present[:, 1:] & present[:, :-1]
    d = (y[:, 1:] - y[:, :-1]) / np.sqrt(e[:, 1:] ** 2 + e[:, :-1] ** 2)
    k, n = _robust_sd(d, ok)
    return np.where(n >= 5, np.maximum(k, 0.5), 1.0)


def running_median(y: np.ndarray, present: np.ndarray, half: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Median of the observed days within +-half days of each day (NaN-aware), and their number."""
    n, m = y.shape
    pad = np.full((n, m + 2 * half), np.nan, dtype=np.float32)
    pad[:, half:half + m] = np.where(present, y, np.nan)
    win = np.sort(np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1, axis=1), axis=-1)
    cnt = np.sum(~np.isnan(win), axis=-1)
    lo = np.clip((cnt - 1) // 2, 0, 2 * half)
    hi = np.clip(cnt // 2, 0, 2 * half)
    med = 0.5 * (np.take_along_axis(win, lo[..., None], -1)[..., 0] + np.take_along_axis(win, hi[..., None], -1)[..., 0])
    return med.astype(float), cnt


def despike(y: np.ndarray, sigma: np.ndarray, present: np.ndarray, cap: float = 4.0, half: int = 4):
    """Cap every night's deviation from the running median of its neighbours at ``cap`` sigma (Jy).

    Days with fewer than 3 observed days in their +-``half``-day window are left alone. Returns the capped
    flux and a boolean array of the nights that were capped.
    """
    med, cnt = running_median(y, present, half)
    dev = y - med
    lim = cap * sigma
    clipped = present & (cnt >= 3) & (np.abs(dev) > lim)
    out = np.where(clipped, med + np.clip(dev, -lim, lim), y)
    return out, clipped


def structure_function(y, e, present, lags=SF_LAGS):
    """Robust structure function of each row: (sd of y_{t+L} - y_t (Jy), rms pair error (Jy), n pairs) per lag."""
    n = y.shape[0]
    sd = np.zeros((n, len(lags)))
    ew = np.zeros((n, len(lags)))
    npairs = np.zeros((n, len(lags)), dtype=np.int64)
    for i, lag in enumerate(lags):
        if lag >= y.shape[1]:
            continue
        ok = present[:, lag:] & present[:, :-lag]
        sd[:, i], npairs[:, i] = _robust_sd(y[:, lag:] - y[:, :-lag], ok)
        e2 = np.where(ok, e[:, lag:] ** 2 + e[:, :-lag] ** 2, 0.0)
        ew[:, i] = np.sqrt(e2.sum(axis=1) / np.maximum(npairs[:, i], 1))
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


def ar1_filter(x: np.ndarray, rho: float) -> np.ndarray:
    """y_j = x_j + rho y_(j-1) along the last axis, i.e. scipy.signal.lfilter([1], [1, -rho], x): lfilter itself
    where scipy.signal is imported (see search.LFILTER_SOURCES), else the same arithmetic in a loop over days
    (importing scipy.signal takes 1-1.7 s, more than the loop costs a search of a few thousand sources)."""
    lfilter = getattr(sys.modules.get("scipy.signal"), "lfilter", None)
    if lfilter is not None:
        return lfilter([1.0], [1.0, -rho], x, axis=-1)
    return ar1_loop(x, rho)


def ar1_loop(x: np.ndarray, rho: float) -> np.ndarray:
    """ar1_filter without scipy: lfilter's arithmetic, bit for bit."""
    y = np.array(np.moveaxis(np.asarray(x, dtype=float), -1, 0), order="C")      # time first: rows contiguous
    tmp = np.empty_like(y[0])
    for j in range(1, y.shape[0]):
        np.multiply(y[j - 1], rho, out=tmp)
        np.add(y[j], tmp, out=y[j])
    return np.moveaxis(y, 0, -1)


def drw_apply(u: np.ndarray, tau_days: np.ndarray) -> np.ndarray:
    """K u for each row u of a daily grid, K_tt' = exp(-|t - t'| / tau), tau per row (values of TAU_GRID)."""
    out = np.empty_like(u, dtype=float)
    for tau in np.unique(tau_days):
        rows = tau_days == tau
        rho = np.exp(-1.0 / tau)
        x = u[rows]
        fwd = ar1_filter(x, rho)
        bwd = ar1_filter(x[:, ::-1], rho)[:, ::-1]
        out[rows] = fwd + bwd - x
    return out


def drw_quadratic(u: np.ndarray, tau_days: np.ndarray) -> np.ndarray:
    """u^T K u for each row u of a daily grid, K_tt' = exp(-|t - t'| / tau) (tau per row; O(n) IIR filters)."""
    return np.sum(u * drw_apply(u, np.asarray(tau_days)), axis=-1)
