"""A simulated DSA-110 survey population of daily lightcurves, for the ESE search's tests and benchmark.

One transit per source per sidereal day (0.99727 d; about one day a year holds two transits, which are
binned together), survey-wide outages and per-source missing nights, a calibration error shared by all
sources of a night (residual after ensemble normalisation, plus occasional bad-calibration nights), thermal
noise, reported errors that omit the calibration error, and classes:

- ``stable``: constant sources;
- ``agn``: damped-random-walk (red-noise) variability, amplitude 2-20 %, timescale 20-300 d (log-uniform);
- ``flare``: constant plus one or two flares (1-5 d rise, exponential decay 5-60 d, 10-100 %);
- ``ese``: an Extreme Scattering Event of a compact component: Gaussian plasma lens (``lens.gaussian_lens``,
  an implementation independent of the search's template tables), alpha 0.3-10, source/lens size 0.05-0.5,
  half-depth duration 14-200 d, central depth 5-50 %, centres up to half a duration outside the span;

and for every source RFI-like isolated bad nights (0.2 % of nights scaled by 0.3-0.8 or 1.3-2). Each ESE's
matched-filter SNR (known template, white noise, baseline and slope projected out) is in the truth table.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from eselake.detection.lens import gaussian_lens

SIDEREAL_DAY = 0.99726957
DEFAULT_FRACTIONS = {"stable": 0.55, "agn": 0.2, "flare": 0.05, "ese": 0.2}


def simulate_survey(n_sources: int = 2000, n_days: int = 1000, *, start_mjd: float = 60000.0,
                    fractions: dict | None = None, seed: int = 0, thermal_jy: float = 1.0e-3,
                    cal_sigma: float = 0.01, flux_range_jy=(0.005, 3.0), bad_night_rate: float = 0.002,
                    outage_rate: float = 1 / 60, missing_rate: float = 0.03, chunk: int = 5000,
                    ese_flux_range_jy=None):
    """Daily lightcurves and truth of a simulated population.

    Returns (daily, truth): ``daily`` has source_id, day, mjd, flux_jy, err_jy, n_points sorted by source_id
    and day; ``truth`` one row per source: source_id, kind, flux_jy, snr (ESE matched-filter SNR, else 0),
    ese_center_mjd, ese_duration_days (half-depth width), ese_start_mjd, ese_end_mjd, ese_depth, ese_alpha,
    ese_size, agn_amp, agn_tau_days, n_bad_nights. ``ese_flux_range_jy`` (optional) redraws the fluxes of the
    ESE hosts log-uniformly in that range (to populate all SNR bins of a benchmark).
    """
    fr = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    rng = np.random.default_rng(seed)
    kinds = np.array(list(fr))
    kind = kinds[rng.choice(len(kinds), n_sources, p=np.array([fr[k] for k in kinds]) / sum(fr.values()))]
    # fluxes: N(>S) ~ S^-1 between the limits (many faint sources)
    lo, hi = flux_range_jy
    flux = lo * (hi / lo) ** rng.random(n_sources)
    ra_frac = rng.random(n_sources)
    if ese_flux_range_jy is not None:
        lo_e, hi_e = ese_flux_range_jy
        is_ese = kind == "ese"
        flux[is_ese] = lo_e * (hi_e / lo_e) ** np.random.default_rng(seed + 7919).random(is_ese.sum())
    n_tr = int(np.ceil(n_days / SIDEREAL_DAY)) + 1
    day0 = int(np.floor(start_mjd))
    # survey-wide: outages and the calibration error of each night
    outage = np.zeros(n_days + 2, bool)
    for s in np.nonzero(rng.random(n_days) < outage_rate)[0]:
        outage[s:s + 1 + rng.geometric(1 / 5)] = True
    cal = 1.0 + cal_sigma * rng.standard_normal(n_days + 2)
    bad_cal = rng.random(n_days + 2) < 0.02
    cal[bad_cal] += 0.04 * rng.standard_normal(bad_cal.sum())
    ids = np.array([f"SIM J{i:07d}" for i in range(n_sources)])
    truth_cols = {k: np.zeros(n_sources) for k in ("snr", "ese_center_mjd", "ese_duration_days", "ese_start_mjd",
                                                    "ese_end_mjd", "ese_depth", "ese_alpha", "ese_size", "agn_amp",
                                                    "agn_tau_days")}
    for k in ("ese_center_mjd", "ese_duration_days", "ese_start_mjd", "ese_end_mjd", "ese_alpha", "ese_size",
              "agn_tau_days"):
        truth_cols[k][:] = np.nan
    n_bad = np.zeros(n_sources, np.int64)
    frames = []
    for c0 in range(0, n_sources, chunk):
        sl = slice(c0, min(n_sources, c0 + chunk))
        frames.append(_chunk(rng, sl, kind[sl], flux[sl], ra_frac[sl], ids[sl], n_tr, n_days, start_mjd, day0,
                             outage, cal, thermal_jy, bad_night_rate, missing_rate, truth_cols, n_bad))
    daily = pl.concat(frames)
    truth = pl.DataFrame({"source_id": ids, "kind": kind, "flux_jy": flux, **truth_cols, "n_bad_nights": n_bad})
    return daily, truth


def _chunk(rng, sl, kind, flux, ra_frac, ids, n_tr, n_days, start_mjd, day0, outage, cal, thermal, bad_rate,
           missing_rate, truth, n_bad):
    n = len(kind)
    mjd = start_mjd + ra_frac[:, None] + SIDEREAL_DAY * np.arange(n_tr)[None, :]
    day = np.floor(mjd).astype(np.int64)
    dcol = day - day0
    keep = (mjd < start_mjd + n_days) & ~outage[np.clip(dcol, 0, outage.size - 1)] & (rng.random(mjd.shape) > missing_rate)
    true = np.repeat(flux[:, None], n_tr, 1)
    # red noise (DRW) on a daily grid
    agn = np.nonzero(kind == "agn")[0]
    if agn.size:
        amp = np.exp(rng.uniform(np.log(0.02), np.log(0.2), agn.size))
        tau = np.exp(rng.uniform(np.log(20), np.log(300), agn.size))
        rho = np.exp(-1.0 / tau)
        x = np.zeros((agn.size, n_days + 2))
        x[:, 0] = rng.standard_normal(agn.size)
        eps = rng.standard_normal(x.shape)
        for j in range(1, n_days + 2):
            x[:, j] = rho * x[:, j - 1] + np.sqrt(1 - rho ** 2) * eps[:, j]
        red = np.take_along_axis(x, np.clip(dcol[agn], 0, n_days + 1), 1)
        true[agn] *= np.maximum(1.0 + amp[:, None] * red, 0.05)
        truth["agn_amp"][sl][agn] = amp
        truth["agn_tau_days"][sl][agn] = tau
    # flares
    fl = np.nonzero(kind == "flare")[0]
    for rep in range(2):
        use = fl if rep == 0 else fl[rng.random(fl.size) < 0.4]
        if not use.size:
            continue
        t0 = start_mjd + rng.uniform(-20, n_days, use.size)
        rise = rng.uniform(1, 5, use.size); dec = rng.uniform(5, 60, use.size)
        a = rng.uniform(0.1, 1.0, use.size)
        dt = mjd[use] - t0[:, None]
        prof = np.where(dt < 0, np.exp(-(dt / rise[:, None]) ** 2), np.exp(-dt / dec[:, None]))
        true[use] *= 1.0 + a[:, None] * prof
    # ESEs
    ese = np.nonzero(kind == "ese")[0]
    gain = np.ones((ese.size, n_tr))
    for i, j in enumerate(ese):
        alpha = float(np.exp(rng.uniform(np.log(0.3), np.log(10))))
        size = float(rng.uniform(0.05, 0.5))
        dur = float(np.exp(rng.uniform(np.log(14), np.log(200))))
        depth = float(rng.uniform(0.05, 0.5))
        # the lens crossing time that gives this half-depth duration, from the gain curve itself
        u = np.linspace(0, 8, 4001)
        g = gaussian_lens(u, 0.0, 4.0, alpha, size)
        d0 = 1 - g[0]
        u_half = u[np.argmax(g >= 1 - d0 / 2)]
        cross = dur / (2 * u_half) * 4.0
        center = start_mjd + rng.uniform(-dur / 2, n_days + dur / 2)
        frac = min(1.0, depth / d0)
        gain[i] = 1.0 + frac * (gaussian_lens(mjd[j], center, cross, alpha, size) - 1.0)
        row = sl.start + j
        truth["ese_center_mjd"][row] = center; truth["ese_duration_days"][row] = dur
        truth["ese_start_mjd"][row] = center - dur / 2; truth["ese_end_mjd"][row] = center + dur / 2
        truth["ese_depth"][row] = frac * d0; truth["ese_alpha"][row] = alpha; truth["ese_size"][row] = size
    true[ese] *= gain
    # measurement: calibration error of the night, thermal noise; the reported error omits calibration
    err = np.sqrt(thermal ** 2 + (0.003 * flux[:, None]) ** 2) * np.ones((1, n_tr))
    meas = true * cal[np.clip(dcol, 0, cal.size - 1)] + err * rng.standard_normal(true.shape)
    bad = keep & (rng.random(true.shape) < bad_rate)
    scale = np.where(rng.random(true.shape) < 0.5, rng.uniform(0.3, 0.8, true.shape), rng.uniform(1.3, 2.0, true.shape))
    meas = np.where(bad, meas * scale, meas)
    n_bad[sl] = bad.sum(1)
    # daily bins (inverse-variance; two transits fall on one day about once a year)
    nd = n_days + 2
    flat = (np.arange(n)[:, None] * nd + np.clip(dcol, 0, nd - 1))[keep]
    w = 1.0 / err[keep] ** 2
    sw = np.bincount(flat, w, n * nd); swf = np.bincount(flat, w * meas[keep], n * nd)
    smjd = np.bincount(flat, mjd[keep], n * nd); cnt = np.bincount(flat, minlength=n * nd)
    has = cnt > 0
    # ESE matched-filter SNR with the true white noise (thermal + calibration), baseline and slope free
    if ese.size:
        ev = np.zeros((n, n_tr)); ev[ese] = np.repeat(flux[ese, None], n_tr, 1) * (gain - 1.0)
        var_true = err ** 2 + (0.01 * true) ** 2
        wt = 1.0 / var_true[keep]
        W = np.bincount(flat, wt, n * nd).reshape(n, nd)
        S = (np.bincount(flat, wt * ev[keep], n * nd).reshape(n, nd)) / np.where(W > 0, W, 1)
        tt = np.arange(nd)[None, :] / nd - 0.5
        s0 = W.sum(1); s1 = (W * tt).sum(1); s2 = (W * tt * tt).sum(1)
        det = s0 * s2 - s1 ** 2
        ys = (W * S).sum(1); yts = (W * S * tt).sum(1)
        a = (s2 * ys - s1 * yts) / det; b = (s0 * yts - s1 * ys) / det
        res = S - a[:, None] - b[:, None] * tt
        snr = np.sqrt((W * res * res).sum(1))
        truth["snr"][sl][ese] = snr[ese]
    rows, cols = np.divmod(np.nonzero(has)[0], nd)
    idx = rows * nd + cols
    return pl.DataFrame({"source_id": ids[rows], "day": (day0 + cols).astype(np.int64), "mjd": smjd[idx] / cnt[idx],
                         "flux_jy": swf[idx] / sw[idx], "err_jy": 1.0 / np.sqrt(sw[idx]),
                         "n_points": cnt[idx].astype(np.int64)})
