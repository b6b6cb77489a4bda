"""Template search for Extreme Scattering Events in daily-binned lightcurves, all sources at once.

``search_lightcurves(daily)`` fits every source with a bank of plasma-lens and flat-dip templates (see
``templates``) on a free baseline and slope, y = a + b (t - t_c) + A s((t - t_c) / D), and reports the best
template's likelihood ratio against no event (2 ln LR), corrected for the source's red noise (``noise``) and
calibrated to a false-alarm rate per source-year (``falsealarm``); lens/dip fits are compared with a flare
(fast rise, exponential decay) and a step. Every source's row depends only on that source's rows.

Stages (vectorised over sources; Python loops run over template shapes, durations and refinement offsets; the
loops over days of the despiking, the noise statistics, the coarse scan's binning and best centres, the
refinement's template sums and the alternatives are compiled, ``jit``, and add as numpy does):
1. dense per-source day grids; an error scale k0 from consecutive nights; every night capped at 4 sigma from
   the running median of its +-4-day neighbourhood (``noise.despike``: one bad night cannot make a dip).
2. coarse scan, white noise: per duration (14-224 d, sqrt(2) steps) the weighted data are binned to
   ~duration/8 days and cross-correlated by FFT (float32) with 5 shapes: for all centres at once
   sum w r s, sum w s, sum w tau s and sum w s^2 give z = s'Wr / sqrt(s'Ws) after projecting out baseline and
   slope (r: residual of the baseline fit). Centres run from half a dip before the span to half a dip after it;
   a centre needs >= 3 nights within the dip and the template must keep 1/4 of its energy after the projection.
   The best (duration, shape, centre) by z is kept.
3. refinement of sources with z >= 4.5: centre in 1-day steps, duration in 2^(1/16) steps, lens alpha (20 values,
   0.3-14) and source/lens size ratio (5 values) by coordinate search on windows around the event;
   uncertainties from the curvature of the 2 ln LR profile (centre, duration) and its Delta = 1 range (alpha).
4. noise model: k, sigma_r and tau_r of a damped random walk + scaled white noise fitted to the robust
   structure function of the residuals of that fit, with tau_r >= half the event's duration (a red process
   that could fake this dip); the final statistic is z / sqrt(1 + R), R = sigma_r^2 u'Ku / s'Ws the red-noise
   variance of the matched filter (u = W s_perp, computed with O(n) exponential filters), and lr is its square.
5. alternatives on the same data: the best flare (instant rise, decay 4-108 d) and step over every start day
   (IIR filters and cumulative sums), ``alt_lr`` = white 2 ln LR of the lens/dip minus the best alternative's.
   ``is_dip``: positive depth, >= 3 nights at least a quarter of the depth down and 1 sigma below the
   baseline, z without its two most contributing nights >= half of z, and alt_lr > 0.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import scipy.fft as sfft

from eselake.detection import noise, templates
from eselake.detection.jit import jit, pairwise_sum
from eselake.detection.falsealarm import fap_per_source_year, sigma_from_fap

PRESET_FAP = {"conservative": 1e-4, "moderate": 1e-3, "sensitive": 1e-2}   # false candidates per source-year
FLARE_TAUS = (4.0, 12.0, 36.0, 108.0)                                     # flare decay times (days)
MAX_DURATION = 256.0    # days (the longest refined duration)
REFINE_Z = 4.5          # refine the fit of sources whose coarse (white-noise) z reaches this
MIN_CORE_NIGHTS = 3     # nights within the dip's half-depth width for a centre to count
MIN_PERP_FRAC = 0.25    # the template must keep this fraction of its energy after removing baseline and slope
DESPIKE_CAP = 4.0       # sigma
CHUNK_SOURCES = 500     # sources per chunk of the search at least
CHUNK_CELLS = 1_250_000  # source-days per chunk at most (the memory of its dense day grids)
MIN_NIGHTS = 10         # sources with fewer observed nights are not searched (lr 0)
MIN_DIP_NIGHTS = 3      # is_dip: nights within the dip width below the baseline by more than 1 sigma
MIN_ROBUST = 0.5        # is_dip: z without the two most contributing nights / z
SUPPORT_MAX = 2.7       # template support (durations) of the widest shape
FINAL_MASK = 0.0        # the noise model ignores days within this many durations of the fitted event
SF_SOURCE = lambda ctx, res: res["y_res"]
TAU_MIN_DURATIONS = 0.5  # the red-noise timescale fitted is at least this many event durations

OUTPUT_COLUMNS = [
    "source_id", "n_days", "span_days", "first_mjd", "last_mjd", "baseline_jy", "lr", "sigma",
    "fap_per_source_year", "model", "lens_alpha", "lens_alpha_err", "duration_days", "duration_err_days",
    "center_mjd", "center_err_days", "size_ratio", "depth", "depth_err", "caustics", "slope_jy_per_day",
    "dip_start_mjd", "dip_end_mjd", "n_dip_days", "robust_frac", "alt_model", "alt_lr", "flare_lr", "step_lr",
    "lr_white", "is_dip", "error_scale", "red_noise_amp", "red_noise_tau_days", "n_capped",
]


# --------------------------------------------------------------------------------------------- input
def _prepare(daily):
    """Columns as numpy arrays grouped by source and sorted by day: (ids, starts, counts, day, mjd, flux, err).

    Input grouped by source_id and sorted by day within each source (as the persisted daily lightcurves are)
    takes a fast path; anything else is grouped first. Duplicate (source, day) rows are combined (inverse-variance).
    """
    df = daily if isinstance(daily, pl.DataFrame) else pl.from_arrow(daily)
    df = df.select(pl.col("source_id").cast(pl.Utf8), pl.col("day").cast(pl.Int64), pl.col("mjd").cast(pl.Float64),
                   pl.col("flux_jy").cast(pl.Float64), pl.col("err_jy").cast(pl.Float64))
    df = df.filter(pl.col("flux_jy").is_finite() & pl.col("err_jy").is_finite() & (pl.col("err_jy") > 0)
                   & pl.col("source_id").is_not_null() & pl.col("day").is_not_null() & pl.col("mjd").is_finite())
    if df.height == 0:
        return None
    df = df.rechunk()           # one buffer per column (a query's result comes in many)
    for attempt in range(2):
        run = df.select(pl.col("source_id").rle_id()).to_series().to_numpy()
        same = run[1:] == run[:-1]                  # row i + 1 of the same source as row i
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        ids = df["source_id"].gather(starts).to_numpy().astype(str)
        day = df["day"].to_numpy()
        step = np.diff(day)
        if len(set(ids)) == len(ids) and np.all((step >= 0) | ~same):
            break
        # grouped by source (integer codes: a string sort of millions of rows costs seconds), days in order
        code = pl.col("source_id").cast(pl.Categorical).to_physical().cast(pl.Int64)
        df = df.with_columns((code * (1 << 32) + (pl.col("day") - pl.col("day").min())).alias("_k")).sort(
            "_k").drop("_k")
    counts = np.diff(np.append(starts, df.height))
    mjd, flux, err = (df[c].to_numpy() for c in ("mjd", "flux_jy", "err_jy"))
    dup = np.flatnonzero(same & (step == 0))
    if dup.size:   # combine repeated days of a source: inverse-variance mean
        keep = np.ones(day.size, bool); keep[dup + 1] = False
        grp = np.cumsum(keep) - 1
        w = 1.0 / err ** 2
        sw = np.bincount(grp, w); swf = np.bincount(grp, w * flux); swt = np.bincount(grp, mjd)
        nn = np.bincount(grp)
        flux, err, mjd, day = swf / sw, 1.0 / np.sqrt(sw), swt / nn, day[keep]
        src = np.repeat(np.arange(len(ids)), counts)[keep]
        counts = np.bincount(src, minlength=len(ids))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return ids, starts, counts, day, mjd, flux, err


def _dense(sel, starts, counts, day, mjd, flux, err):
    """Dense day grids of sources ``sel``: row i, column j = day first[i] + j; absent days not ``present``."""
    first = day[starts[sel]]
    last = day[starts[sel] + counts[sel] - 1]
    m = int((last - first).max()) + 1
    shape = (len(sel), m)
    y = np.zeros(shape); e = np.ones(shape); present = np.zeros(shape, bool)
    t = first[:, None] + np.arange(m)[None, :] + 0.5
    _fill_dense(sel, starts, counts, day, mjd, flux, err, first, y, e, t, present)
    return first, last, y, e, t, present


@jit
def _fill_dense(sel, starts, counts, day, mjd, flux, err, first, y, e, t, present):
    """Row i of the grids: the days of source sel[i] (rows starts[sel[i]] on, counts[sel[i]] of them)."""
    for i in range(sel.size):
        s = starts[sel[i]]
        for k in range(s, s + counts[sel[i]]):
            j = day[k] - first[i]
            y[i, j] = flux[k]
            e[i, j] = err[k]
            t[i, j] = mjd[k]
            present[i, j] = True


# ------------------------------------------------------------------------------------------ linear algebra
class _Base:
    """Weighted baseline + slope fit of each row: y = a + b tau, tau = (t - t_mid) / scale (dimensionless)."""

    def __init__(self, y=None, w=None, tau=None):
        if y is None:
            return
        self.w0 = w.sum(1); self.t1 = (w * tau).sum(1); self.t2 = (w * tau * tau).sum(1)
        self.det = self.w0 * self.t2 - self.t1 ** 2
        yw = (w * y).sum(1); ytw = (w * y * tau).sum(1)
        self.a = (self.t2 * yw - self.t1 * ytw) / self.det
        self.b = (self.w0 * ytw - self.t1 * yw) / self.det

    def sub(self, rows):
        out = _Base()
        for k in ("w0", "t1", "t2", "det", "a", "b"):
            setattr(out, k, getattr(self, k)[rows])
        return out

    def project(self, A, B, C):
        """s'Ws after projecting baseline and slope out (rows first axis), and the projection coefficients."""
        ex = (slice(None),) + (None,) * (np.ndim(A) - 1)
        w0, t1, t2, det = self.w0[ex], self.t1[ex], self.t2[ex], self.det[ex]
        c0 = (t2 * A - t1 * B) / det
        c1 = (w0 * B - t1 * A) / det
        return C - (A * c0 + B * c1), c0, c1


class _Ctx:
    """A chunk of sources on dense day grids, with the noise model and the baseline fit."""

    def __init__(self, first, last, y, e, t, present):
        self.first, self.last, self.present = first, last, present
        self.n, self.m = y.shape
        self.tt = t - first[:, None]                       # days since the first day
        self.span = (last - first).astype(float)
        self.tmid = self.span / 2
        self.tscale = np.maximum(self.span, 1.0)
        self.tau = (self.tt - self.tmid[:, None]) / self.tscale[:, None]
        self.e = e
        self.k0 = noise.error_scale(y, e, present)
        yd, self.capped = noise.despike(y, self.k0[:, None] * e, present, cap=DESPIKE_CAP)
        self.yd = np.where(present, yd, 0.0)
        self.set_weights(self.k0, np.zeros(self.n), np.full(self.n, noise.TAU_GRID[0]))

    def set_weights(self, k, sig_r, tau_r):
        self.k, self.sig_r, self.tau_r = k, sig_r, tau_r
        self.w = np.where(self.present, 1.0 / (k[:, None] * self.e) ** 2, 0.0)
        self.base = _Base(self.yd, self.w, self.tau)
        self.r0 = np.where(self.present, self.yd - self.base.a[:, None] - self.base.b[:, None] * self.tau, 0.0)
        red = sig_r > 0
        self.Kw = np.zeros_like(self.w); self.Kwt = np.zeros_like(self.w)
        self.Q11, self.Q1t, self.Qtt = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
        if red.any():                     # (the rows without red noise keep K w = 0 and Q = 0)
            w, wt, Kw = self.w[red], self.w[red] * self.tau[red], noise.drw_apply(self.w[red], tau_r[red])
            Kwt = noise.drw_apply(wt, tau_r[red])
            self.Kw[red], self.Kwt[red] = Kw, Kwt
            self.Q11[red] = (w * Kw).sum(1); self.Q1t[red] = (wt * Kw).sum(1); self.Qtt[red] = (wt * Kwt).sum(1)


class _Win:
    """Windows of +-H days of the rows ``rows`` of a context around integer centres ``c_int`` (days); with
    ``half`` (days, per row) the days beyond a row's own +-half count as outside (weight 0), so that a row's
    sums do not depend on the other rows that set H."""

    def __init__(self, ctx: _Ctx, rows, c_int, H: int, half=None):
        c_int = np.asarray(c_int, np.int64)
        if 2 * H + 1 >= ctx.m:           # the whole row
            cols = np.broadcast_to(np.arange(ctx.m)[None, :], (len(rows), ctx.m))
        else:
            cols = c_int[:, None] - H + np.arange(2 * H + 1)[None, :]
        inside = (cols >= 0) & (cols < ctx.m)
        if half is not None:
            inside &= np.abs(cols - c_int[:, None]) <= np.asarray(half)[:, None]
        cc = np.clip(cols, 0, ctx.m - 1)
        r = np.asarray(rows)[:, None]
        self.ctx, self.rows, self.cols, self.inside = ctx, np.asarray(rows), cc, inside
        self.tt = ctx.tt[r, cc]
        self.w = np.where(inside, ctx.w[r, cc], 0.0)
        self.tau = ctx.tau[r, cc]; self.r0 = ctx.r0[r, cc]
        self.Kw = ctx.Kw[r, cc]; self.Kwt = ctx.Kwt[r, cc]
        self.base = ctx.base.sub(self.rows)

    def sums(self, tables, si, center, dur):
        """``fit``'s num, den and C alone (what a profile of the refinement needs), in one compiled pass: the
        same numbers as ``fit``'s, bit for bit (numpy's pairwise sums)."""
        A, B, C, num = _template_sums(tables, np.asarray(si, np.int64), self.tt, self.w, self.tau, self.r0,
                                      np.asarray(center, float), np.asarray(dur, float), 1.0 / templates.DV,
                                      templates.V_MAX / templates.DV)
        den, _, _ = self.base.project(A, B, C)
        return {"num": num, "den": den, "C": C}

    def fit(self, tables, si, center, dur, red: bool = False, sub=None):
        """Linear fit of template (tables[si], centre days, duration days); returns dict of per-row sums."""
        w, tt, tau, r0 = self.w, self.tt, self.tau, self.r0
        s = templates.evaluate(tables, si, tt, np.asarray(center, float)[:, None], np.asarray(dur, float)[:, None])
        ws = w * s
        A = ws.sum(1); B = (ws * tau).sum(1); C = (ws * s).sum(1); num = (ws * r0).sum(1)
        den, c0, c1 = self.base.project(A, B, C)
        out = {"num": num, "den": den, "C": C, "c0": c0, "c1": c1, "s": s}
        if red:
            ctx, rows = self.ctx, self.rows
            sr = ctx.sig_r[rows]
            q_ss = noise.drw_quadratic(ws, ctx.tau_r[rows])
            q_s1 = (ws * self.Kw).sum(1); q_st = (ws * self.Kwt).sum(1)
            uku = q_ss - 2 * c0 * q_s1 - 2 * c1 * q_st + c0 ** 2 * ctx.Q11[rows] + 2 * c0 * c1 * ctx.Q1t[rows] \
                + c1 ** 2 * ctx.Qtt[rows]
            out["red"] = sr ** 2 * np.maximum(uku, 0.0)
        return out


@jit
def _template_sums(tables, si, tt, w, tau, r0, center, dur, per_dv, v0):
    """Per row i: A = sum w s, B = sum w s tau, C = sum w s^2 and num = sum w s r0 over the window, s the
    template tables[si[i]] at (tt - center) / dur (nearest of the table's steps, 0 outside it), as
    ``templates.evaluate`` and numpy's row sums give them."""
    r, width = tt.shape
    nv = tables.shape[1]
    A = np.empty(r)
    B = np.empty(r)
    C = np.empty(r)
    num = np.empty(r)
    ws = np.empty(width)
    wst = np.empty(width)
    wss = np.empty(width)
    wsr = np.empty(width)
    for i in range(r):
        scale = per_dv / dur[i]
        for j in range(width):
            pos = (tt[i, j] - center[i]) * scale + v0
            s = 0.0
            if pos >= 0 and pos <= nv - 1:
                s = tables[si[i], int(np.rint(pos))]
            x = w[i, j] * s
            ws[j] = x
            wst[j] = x * tau[i, j]
            wss[j] = x * s
            wsr[j] = x * r0[i, j]
        A[i] = pairwise_sum(ws, 0, width)
        B[i] = pairwise_sum(wst, 0, width)
        C[i] = pairwise_sum(wss, 0, width)
        num[i] = pairwise_sum(wsr, 0, width)
    return A, B, C, num


def _z(fit, red=None):
    """Amplitude significance num / sqrt(den (+ red variance)); -inf where the fit is degenerate or not a dip."""
    good = (fit["den"] > MIN_PERP_FRAC * fit["C"]) & (fit["C"] > 0) & (fit["num"] > 0)
    var = fit["den"] + (fit["red"] if red else 0.0)
    return np.where(good, fit["num"] / np.sqrt(np.where(good, var, 1.0)), -np.inf)


# ----------------------------------------------------------------------------------------------- coarse scan
def _coarse_scan(ctx: _Ctx, shapes):
    """Best white z, shape index and centre (days from first) per row and duration, by FFT correlation."""
    n, m = ctx.n, ctx.m
    nd = len(templates.DURATIONS_DAYS)
    zbest = np.full((n, nd), -np.inf); sbest = np.zeros((n, nd), np.int64); cbest = np.zeros((n, nd))
    wscale = ctx.w.sum(1) / np.maximum(ctx.present.sum(1), 1)
    cum = np.empty((4, n, m + 1))
    _cumulative_sums(ctx.w, wscale, ctx.r0, ctx.tau, ctx.present, cum)
    nb_ = ctx.base.sub(np.arange(n))
    for k in ("w0", "t1", "t2"):
        setattr(nb_, k, getattr(nb_, k) / wscale)
    nb_.det = nb_.w0 * nb_.t2 - nb_.t1 ** 2
    pA = (nb_.t2 / nb_.det).astype(np.float32)
    pB = (nb_.w0 / nb_.det).astype(np.float32)
    pAB = (2 * nb_.t1 / nb_.det).astype(np.float32)
    last_col = (ctx.last - ctx.first)
    for di, dur in enumerate(templates.DURATIONS_DAYS):
        b = templates.bin_days(dur)
        tabs = [templates.binned_template(s, dur, b) for s in shapes]
        K = max(k for _, k in tabs)
        j0 = ctx.first // b
        nb_row = (ctx.first + last_col) // b - j0 + 1
        # every row's FFT length depends only on its own span, so its result does not depend on the chunk
        n_fft = np.array([sfft.next_fast_len(int(v) + 2 * K + 1, real=True) for v in nb_row])
        for N in np.unique(n_fft):
            g = np.nonzero(n_fft == N)[0]
            _scan_group(ctx, g, int(N), K, b, dur, tabs, j0[g], cum, wscale[g], pA[g], pB[g], pAB[g],
                        last_col[g], di, zbest, sbest, cbest)
    return zbest, sbest, cbest


def _scan_group(ctx, g, N, K, b, dur, tabs, j0, cum, wscale, pA, pB, pAB, last_col, di, zbest, sbest, cbest):
    """The coarse scan of rows ``g`` (one FFT length N) for one duration; updates the best arrays in place.
    ``cum``: cumulative sums over days (from 0) of w r0, w, w tau and present, w normalised, every row."""
    n = g.size
    width = N - 1
    # bin j of a row holds its days [j b - o, (j + 1) b - o), o = first mod b: differences of cumulative sums
    # at those edges (days past a row's last have zero weight), placed from column K on
    nb = min(-(-(ctx.m + b - 1) // b), width - K)
    first = ctx.first[g]
    bins = np.zeros((4, n, width), np.float32)
    ok = np.empty((n, width), bool)
    _bin_rows(cum, g, first - j0 * b, b, K, nb, bins)
    # centre of output column p: day (j0 + p - K) b + (b - 1) / 2 from the row's first bin's first day
    _centres_ok(bins[3], first - j0 * b, b, K, dur, int(round(dur / 2 / b)), last_col, MIN_CORE_NIGHTS, ok)
    fy, fw, ft = sfft.rfft(bins[:3], n=N, axis=2, workers=1)
    for si, (tv, k) in enumerate(tabs):
        circ = np.zeros(N, np.float32); circ[np.arange(-k, k + 1) % N] = tv
        fs = sfft.rfft(circ); fs2 = sfft.rfft(circ * circ)
        z2, j = _best_centres(sfft.irfft(fy * fs, n=N, axis=1, workers=1), sfft.irfft(fw * fs, n=N, axis=1, workers=1),
                              sfft.irfft(ft * fs, n=N, axis=1, workers=1), sfft.irfft(fw * fs2, n=N, axis=1, workers=1),
                              pA, pB, pAB, ok, MIN_PERP_FRAC)
        zj = np.where(z2 > 0, np.sqrt(np.maximum(z2, 0.0)) * np.sqrt(wscale), -np.inf)
        better = zj > zbest[g, di]
        zbest[g, di] = np.where(better, zj, zbest[g, di])
        sbest[g, di] = np.where(better, si, sbest[g, di])
        cbest[g, di] = np.where(better, (j0 + j - K) * b + (b - 1) / 2.0 - first, cbest[g, di])


@jit
def _cumulative_sums(w, wscale, r0, tau, present, cum):
    """cum[:, i, j] = the sums over the days before j of row i of wn r0, wn, wn tau and present (wn = w / wscale)."""
    n, m = w.shape
    for i in range(n):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        cum[0, i, 0] = cum[1, i, 0] = cum[2, i, 0] = cum[3, i, 0] = 0.0
        for j in range(m):
            wn = w[i, j] / wscale[i]
            s0 += wn * r0[i, j]
            s1 += wn
            s2 += wn * tau[i, j]
            s3 += present[i, j]
            cum[0, i, j + 1] = s0
            cum[1, i, j + 1] = s1
            cum[2, i, j + 1] = s2
            cum[3, i, j + 1] = s3


@jit
def _bin_rows(cum, g, offset, b, K, nb, bins):
    """bins[:, i, K + j] = the sums over the days [j b - offset_i, (j + 1) b - offset_i) of row g[i] (float32)."""
    m = cum.shape[2] - 1
    for i in range(g.size):
        for j in range(nb):
            lo = min(max(j * b - offset[i], 0), m)
            hi = min(max((j + 1) * b - offset[i], 0), m)
            for q in range(4):
                bins[q, i, K + j] = cum[q, g[i], hi] - cum[q, g[i], lo]


@jit
def _centres_ok(count, offset, b, K, dur, h, last_col, min_nights, ok):
    """ok[i, p]: the centre of output column p (day (p - K) b + (b - 1) / 2 - offset_i of row i) lies within half
    a duration of the row's span and the bins within +-h of it hold >= ``min_nights`` nights."""
    n, width = count.shape
    run = np.zeros(width + 1)
    for i in range(n):
        for p in range(width):
            run[p + 1] = run[p] + count[i, p]
        for p in range(width):
            cday = (p - K) * b + (b - 1) / 2.0 - offset[i]
            core = run[min(p + h + 1, width)] - run[max(p - h, 0)]
            ok[i, p] = cday >= -dur / 2 and cday <= last_col[i] + dur / 2 and core >= min_nights


@jit
def _best_centres(num, A, B, C, pA, pB, pAB, ok, min_perp):
    """Per row, the largest z^2 = num^2 / den over the columns ``ok`` where the template keeps ``min_perp`` of its
    energy (den = C - (pA A^2 + pB B^2 - pAB A B): s'Ws without baseline and slope) and num > 0 (float32; -1
    where no column qualifies), and its first column."""
    n, width = ok.shape
    z2 = np.full(n, np.float32(-1.0))
    col = np.zeros(n, np.int64)
    for i in range(n):
        for p in range(width):
            if not ok[i, p]:
                continue
            a = A[i, p]
            bb = B[i, p]
            c = C[i, p]
            d = a * a * pA[i] + bb * bb * pB[i] - a * bb * pAB[i]
            den = c - d
            x = num[i, p]
            if den > min_perp * c and c > 0 and x > 0:
                v = x * x / den
                if v > z2[i]:
                    z2[i] = v
                    col[i] = p
    return z2, col


# --------------------------------------------------------------------------------------------- alternatives
def _alternatives(ctx: _Ctx):
    """2 ln LR (white) of the best flare (instant rise, exponential decay, positive) and best step, per row.

    Sums over t >= t0 of w r0 f, w f, w tau f and w f^2 for every start day t0 are IIR filters run backwards
    in time (f = exp(-(t - t0) / tau_f)) and reversed cumulative sums (the step).
    """
    b = ctx.base
    return _alternatives_rows(ctx.w, ctx.r0, ctx.tau, ctx.present, b.w0, b.t1, b.t2, b.det,
                              np.exp(-1.0 / np.array(FLARE_TAUS)), MIN_PERP_FRAC)


@jit
def _alternatives_rows(w, r0, tau, present, w0, t1, t2, det, rhos, min_perp):
    """``_alternatives`` of every row: one backward pass over the days per flare decay and one for the step."""
    n, m = w.shape
    flare = np.zeros(n)
    step = np.zeros(n)
    for i in range(n):
        nights = 0
        for j in range(m):
            nights += present[i, j]
        # s'Ws after removing baseline and slope: C - (A^2 t2 - 2 A B t1 + B^2 w0) / det
        a2 = t2[i]
        ab = 2 * t1[i]
        b2 = w0[i]
        for rho in rhos:
            num = 0.0
            A = 0.0
            B = 0.0
            C = 0.0
            after = 0
            for j in range(m - 1, -1, -1):
                num = w[i, j] * r0[i, j] + rho * num
                A = w[i, j] + rho * A
                B = w[i, j] * tau[i, j] + rho * B
                C = w[i, j] + rho * rho * C
                if present[i, j]:
                    after += 1
                    den = C - ((A * A * a2 - A * B * ab) + B * B * b2) / det[i]
                    if den > min_perp * C and after >= 3 and num > 0:
                        flare[i] = max(flare[i], num * num / den)
        num = 0.0
        A = 0.0
        B = 0.0
        after = 0
        for j in range(m - 1, -1, -1):
            num += w[i, j] * r0[i, j]
            A += w[i, j]
            B += w[i, j] * tau[i, j]
            if present[i, j]:
                after += 1
                den = A - ((A * A * a2 - A * B * ab) + B * B * b2) / det[i]
                if after >= 3 and nights - after >= 3 and den > 1e-9 * A:
                    step[i] = max(step[i], num * num / den)
    return flare, step


# ---------------------------------------------------------------------------------------------------- search
def search_lightcurves(daily, *, chunk_size: int | None = None, workers: int = 2) -> pl.DataFrame:
    """Search daily-binned lightcurves (source_id, day, mjd, flux_jy, err_jy[, n_points]) for ESEs.

    ``daily``: polars DataFrame or pyarrow Table, many sources, any order (sorted by source_id, day is
    fastest). Returns one row per source (``OUTPUT_COLUMNS``): the best lens/dip fit with uncertainties, its
    2 ln likelihood ratio against no event (``lr``, red-noise corrected), the false-alarm rate per source-year
    and Gaussian-equivalent ``sigma``, the best alternative (flare/step) and ``is_dip``. Deterministic; a
    source's row depends only on its own rows. Chunks of ``chunk_size`` sources run on ``workers`` threads
    (default: two chunks per worker, of CHUNK_SOURCES to CHUNK_CELLS / longest span sources)."""
    prep = _prepare(daily)
    if prep is None:
        return pl.DataFrame(schema=_schema())
    ids, starts, counts, day, mjd, flux, err = prep
    span = day[starts + counts - 1] - day[starts]
    order = np.lexsort((ids, span))                   # similar spans together (less padding)
    if chunk_size is None:      # few large chunks: the refinement's small fits cost Python time per chunk
        per_worker = -(-len(ids) // (2 * max(workers, 1)))
        chunk_size = max(CHUNK_SOURCES, min(per_worker, CHUNK_CELLS // (int(span.max()) + 1)))
    chunks = [order[k:k + chunk_size] for k in range(0, len(order), chunk_size)]

    def run(sel):
        return _search_chunk(ids[sel], *_dense(sel, starts, counts, day, mjd, flux, err))
    if workers > 1 and len(chunks) > 1:     # numpy releases the GIL in the heavy array operations
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(run, chunks))
    else:
        out = [run(c) for c in chunks]
    res = pl.concat(out, how="vertical_relaxed").sort("source_id").select(OUTPUT_COLUMNS)
    # 9 significant digits: sums over a chunk's padded day grid differ in the last bits between chunkings
    return res.with_columns([_round_sig(c) for c, t in res.schema.items() if t == pl.Float64])


def load_compiled() -> None:
    """Load the search's compiled loops (from numba's disk cache: ~0.4 s; compiled the first time: ~10 s) by
    searching a short synthetic lightcurve, so that the first real search does not wait for them."""
    days = np.arange(2 * MIN_NIGHTS)
    search_lightcurves(pl.DataFrame({"source_id": "warm-up", "day": days, "mjd": days + 0.5,
                                     "flux_jy": 1.0 + 0.01 * np.sin(days), "err_jy": 0.01}), workers=1)


def _round_sig(col: str, digits: int = 9) -> pl.Expr:
    x = pl.col(col)
    mag = pl.when(x.is_finite() & (x != 0)).then(x.abs().log10().floor()).otherwise(0.0)
    scale = pl.lit(10.0).pow(pl.lit(digits - 1) - mag)
    return pl.when(x.is_finite()).then((x * scale).round(0) / scale).otherwise(x).alias(col)


def _schema():
    return {c: (pl.Utf8 if c in ("source_id", "model", "alt_model") else pl.Boolean if c in ("caustics", "is_dip")
                else pl.Int64 if c in ("n_days", "n_dip_days", "n_capped") else pl.Float64) for c in OUTPUT_COLUMNS}


def _half_width(dur) -> int:
    """Half-width (days) of windows holding the templates of durations ``dur`` (the longest of them)."""
    return int(_half_widths(np.max(dur)))


def _half_widths(dur) -> np.ndarray:
    return np.ceil(SUPPORT_MAX * 1.3 * np.asarray(dur, float)).astype(np.int64) + 4


def _search_chunk(ids, first, last, y, e, t, present) -> pl.DataFrame:
    with np.errstate(all="ignore"):       # degenerate rows (a few nights) give NaN/inf, masked below
        return _search_chunk_(ids, first, last, y, e, t, present)


def _search_chunk_(ids, first, last, y, e, t, present) -> pl.DataFrame:
    ctx = _Ctx(first, last, y, e, t, present)
    n = ctx.n
    rows = np.arange(n)
    shapes = templates.bank(templates.SCAN_SHAPES)
    durs = np.array(templates.DURATIONS_DAYS)

    # coarse scan (white noise, error scale k0)
    zc, sc, cc = _coarse_scan(ctx, shapes)

    # the best duration by white z (a red-noise correction is applied to the final fit only: choosing by the
    # corrected z would let the event's own residuals push a bright event's fit onto a shorter noise feature)
    d_idx = np.argmax(zc, 1)
    zr = zc[rows, d_idx]
    si = sc[rows, d_idx]
    fit = {"alpha": np.array([np.nan if shapes[i].alpha is None else shapes[i].alpha for i in si]),
           "size": np.array([shapes[i].size for i in si]), "center": cc[rows, d_idx].copy(),
           "dur": durs[d_idx].copy(), "R": np.zeros(n),
           "center_err": np.full(n, np.nan), "dur_err": np.full(n, np.nan), "alpha_err": np.full(n, np.nan)}

    # refinement of promising rows (grouped by duration so that windows have one width)
    for di in range(len(durs)):
        r = np.nonzero(np.isfinite(zr) & (zr >= REFINE_Z) & (d_idx == di))[0]
        if r.size:
            _refine(ctx, r, fit, durs[di])

    # final fit of every row; the noise model is refitted to the residuals of this fit (so that other
    # excursions of a red-noise source count, and a well-fitted event does not), then the fit is repeated
    keys, si = _shape_keys(fit)
    ftables = np.stack([templates.make_shape(*kk).table for kk in keys])
    res = _final_fit(ctx, fit, d_idx, ftables, si, durs, red=False)
    masked = np.isfinite(zr)[:, None] & (np.abs(ctx.tt - fit["center"][:, None]) <= FINAL_MASK * fit["dur"][:, None])
    sd, ew, npairs = noise.structure_function(SF_SOURCE(ctx, res), e, present & ~masked)
    kf, sig_r, tau_r = noise.fit_drw(sd, ew, npairs, tau_min=np.where(np.isfinite(zr), TAU_MIN_DURATIONS * fit["dur"], 0.0))
    fitted = np.isfinite(kf)
    ctx.set_weights(np.where(fitted, np.maximum(kf, 0.5), ctx.k), np.where(fitted, sig_r, ctx.sig_r),
                    np.where(fitted, tau_r, ctx.tau_r))
    res = _final_fit(ctx, fit, d_idx, ftables, si, durs)
    num, den, C, c0, c1, rv = (res[k] for k in ("num", "den", "C", "c0", "c1", "red"))
    valid = np.isfinite(zr) & (den > 0) & (num > 0) & (present.sum(1) >= MIN_NIGHTS) & np.isfinite(num + den + rv)
    dsafe = np.where(den > 0, den, 1.0)
    amp = np.where(valid, num / dsafe, 0.0)
    amp_err = np.sqrt(np.where(den > 0, den + rv, 1.0)) / dsafe

    z_white = np.where(valid, num / np.sqrt(dsafe), 0.0)
    z_final = np.where(valid, num / np.sqrt(np.where(valid, den + rv, 1.0)), 0.0)
    lr = z_final ** 2
    base = ctx.base
    a_tot = base.a - amp * c0                 # joint fit: s = s_perp + c0 + c1 tau
    b_tot = base.b - amp * c1
    baseline_c = a_tot + b_tot * (fit["center"] - ctx.tmid) / ctx.tscale
    slope = b_tot / ctx.tscale
    pos = baseline_c > 0
    depth = np.where(valid & pos, amp / np.where(pos, baseline_c, 1.0), 0.0)
    depth_err = np.where(pos, amp_err / np.where(pos, baseline_c, 1.0), np.nan)
    num_l2o = num - res["top_num"]
    den_l2o = np.maximum(den - res["top_den"], 1e-300)
    robust = np.where(valid & (z_white > 0), num_l2o / np.sqrt(den_l2o) / np.where(z_white > 0, z_white, 1.0), 0.0)

    flare_lr, step_lr = _alternatives(ctx)
    lr_white = z_white ** 2
    alt_best = np.maximum(flare_lr, step_lr)
    alt_model = np.where(alt_best <= 0, "none", np.where(flare_lr >= step_lr, "flare", "step"))
    alt_lr = lr_white - alt_best
    span_years = np.maximum(ctx.span, 30.0) / 365.25
    fap = fap_per_source_year(lr)
    sigma = sigma_from_fap(fap, span_years)
    n_dip = res["n_dip"].astype(np.int64)
    is_dip = valid & (depth > 0) & (n_dip >= MIN_DIP_NIGHTS) & (robust >= MIN_ROBUST) & (alt_lr > 0)
    is_lens = np.isfinite(fit["alpha"])
    cen_mjd = first + fit["center"]
    half = fit["dur"] / 2
    return pl.DataFrame({
        "source_id": ids, "n_days": present.sum(1).astype(np.int64), "span_days": ctx.span,
        "first_mjd": t[rows, 0], "last_mjd": t[rows, last - first],
        "baseline_jy": np.where(valid, baseline_c, base.a),
        "lr": lr, "sigma": sigma, "fap_per_source_year": fap,
        "model": np.where(is_lens, "lens", "dip"), "lens_alpha": np.where(is_lens, fit["alpha"], np.nan),
        "lens_alpha_err": np.where(is_lens, fit["alpha_err"], np.nan),
        "duration_days": fit["dur"], "duration_err_days": fit["dur_err"], "center_mjd": cen_mjd,
        "center_err_days": fit["center_err"], "size_ratio": np.where(is_lens, fit["size"], np.nan),
        "depth": depth, "depth_err": depth_err,
        "caustics": is_lens & (np.nan_to_num(fit["alpha"]) > templates.CAUSTIC_ALPHA),
        "slope_jy_per_day": slope, "dip_start_mjd": cen_mjd - half, "dip_end_mjd": cen_mjd + half,
        "n_dip_days": n_dip, "robust_frac": robust, "alt_model": alt_model, "alt_lr": alt_lr,
        "flare_lr": flare_lr, "step_lr": step_lr, "lr_white": lr_white, "is_dip": is_dip, "error_scale": ctx.k,
        "red_noise_amp": np.where(pos, ctx.sig_r / np.where(pos, baseline_c, 1.0), np.nan),
        "red_noise_tau_days": np.where(ctx.sig_r > 0, ctx.tau_r, np.nan), "n_capped": ctx.capped.sum(1).astype(np.int64),
    })


def _final_fit(ctx: _Ctx, fit, d_idx, ftables, si, durs, red: bool = True):
    """Exact fit of every row's chosen template with red-noise variance, support statistics and residuals."""
    n = ctx.n
    res = {k: np.zeros(n) for k in ("num", "den", "C", "c0", "c1", "red", "n_dip", "top_num", "top_den")}
    res["y_res"] = ctx.yd.copy()
    for di in range(len(durs)):
        r = np.nonzero(d_idx == di)[0]
        if not r.size:
            continue
        # each row's sums over its own window (the window's width is set by the group's longest duration)
        win = _Win(ctx, r, np.round(fit["center"][r]), _half_width(fit["dur"][r]), half=_half_widths(fit["dur"][r]))
        f = win.fit(ftables, si[r], fit["center"][r], fit["dur"][r], red=red)
        for k in ("num", "den", "C", "c0", "c1") + (("red",) if red else ()):
            res[k][r] = f[k]
        amp = np.where(f["den"] > 0, f["num"] / np.where(f["den"] > 0, f["den"], 1.0), 0.0)
        amp = np.maximum(amp, 0.0)
        ev = np.where(win.inside, amp[:, None] * f["s"], 0.0)
        np.subtract.at(res["y_res"], (np.repeat(r, win.cols.shape[1]), win.cols.ravel()), ev.ravel())
        s_perp = f["s"] - f["c0"][:, None] - f["c1"][:, None] * win.tau
        # (s_perp is not 0 outside the template: nights beyond the row's own window would count here)
        contrib = win.w * s_perp * win.r0
        top = np.argsort(-contrib, axis=1)[:, :2]
        res["top_num"][r] = np.take_along_axis(contrib, top, 1).sum(1)
        res["top_den"][r] = np.take_along_axis(win.w * s_perp ** 2, top, 1).sum(1)
        resid = win.r0 + amp[:, None] * (f["c0"][:, None] + f["c1"][:, None] * win.tau)
        inside = (win.w > 0) & (f["s"] <= -0.25)        # the model at least a quarter of the depth down
        sig_night = 1.0 / np.sqrt(np.where(win.w > 0, win.w, 1.0))
        res["n_dip"][r] = (inside & (resid < -sig_night)).sum(1)
    return res


# ------------------------------------------------------------------------------------------------ refinement
def _shape_keys(fit):
    """Distinct (alpha, size) keys of the rows (alpha None = flat dip) and each row's index into them."""
    raw = [(None, 0.0) if not np.isfinite(a) else (float(a), float(r)) for a, r in zip(fit["alpha"], fit["size"])]
    keys = sorted(set(raw), key=lambda x: (x[0] is not None, x[0] or 0.0, x[1]))
    idx = {kk: i for i, kk in enumerate(keys)}
    return keys, np.array([idx[kk] for kk in raw], dtype=np.int64)


def _parabola_err(lr_m, lr_0, lr_p, step):
    """1-sigma error from the 2 ln LR profile at -step, 0, +step: sqrt(2 / curvature) (NaN if not a maximum)."""
    curv = (2 * lr_0 - lr_m - lr_p) / step ** 2
    return np.where(curv > 0, np.sqrt(2.0 / np.where(curv > 0, curv, 1.0)), np.nan)


def _refine(ctx: _Ctx, r, fit, dur0):
    """Refine centre (1-day steps), duration (2^(1/16) steps) and lens shape (alpha, size ratio) of rows ``r``."""
    b = templates.bin_days(dur0)
    win = _Win(ctx, r, np.round(fit["center"][r]), _half_width(dur0 * 1.3) + b)
    sub = {k: fit[k][r].copy() for k in fit}
    keys, si = _shape_keys(sub)
    tables = np.stack([templates.make_shape(*kk).table for kk in keys])
    R = sub["R"]
    prof = lambda c, d, tab=tables, s=si: np.maximum(_z(win.sums(tab, s, c, d)), 0.0) ** 2 / (1 + R)
    c, d = sub["center"], sub["dur"]
    cands = [(None, 0.0)] + [(a, s) for a in templates.ALPHAS_FINE for s in templates.SIZES_FINE]
    ctab = np.stack([templates.make_shape(*kk).table for kk in cands])
    alphas = np.array([np.nan if a is None else a for a, _ in cands])
    facs = 2.0 ** (np.arange(-4, 5) / 16.0)
    for it in range(2):
        for step in sorted({max(1, b // 3), 1}, reverse=True):
            offs = np.arange(-b - 1, b + 2, step) if step > 1 else np.arange(-3, 4)
            P = np.stack([prof(c + o, d, tables, si) for o in offs], 1)
            c = c + offs[np.argmax(P, 1)]
            P = np.stack([prof(c, np.minimum(d * f, MAX_DURATION), tables, si) for f in facs], 1)
            d = np.minimum(d * facs[np.argmax(P, 1)], MAX_DURATION)
        # shape at the refined centre and duration: alpha (and the flat dip) at the current size ratio, then
        # the size ratio at the best alpha
        sizes = np.array(templates.SIZES_FINE)
        size_i = np.argmin(np.abs(sub["size"][:, None] - sizes[None, :]), 1)
        # (the half-depth width of a lens depends on alpha, so in the last pass each alpha is tried at three
        # durations)
        P = np.full((r.size, len(cands)), -np.inf)
        dfac = np.ones((r.size, len(cands)))
        for f in ((1.0,) if it == 0 else (0.87, 1.0, 1.15)):
            for jj in [np.zeros(r.size, np.int64)] + [1 + ai * len(sizes) + size_i
                                                      for ai in range(len(templates.ALPHAS_FINE))]:
                v = prof(c, d * f, ctab, jj)
                cur = P[np.arange(r.size), jj]
                dfac[np.arange(r.size), jj] = np.where(v > cur, f, dfac[np.arange(r.size), jj])
                P[np.arange(r.size), jj] = np.maximum(v, cur)
        j = np.argmax(P, 1)
        d = np.minimum(d * dfac[np.arange(r.size), j], MAX_DURATION)
        for zi in range(len(sizes)):
            lens = j > 0
            jj = np.where(lens, 1 + ((j - 1) // len(sizes)) * len(sizes) + zi, 0)
            if lens.any():
                P[np.arange(r.size)[lens], jj[lens]] = prof(c, d, ctab, jj)[lens]
        j = np.argmax(P, 1)
        sub["alpha"] = alphas[j]
        sub["size"] = np.array([cands[i][1] for i in j])
        keys, si = _shape_keys(sub)
        tables = np.stack([templates.make_shape(*kk).table for kk in keys])
        b = max(1, b // 2)
    best = P[np.arange(r.size), j]
    within = (P >= best[:, None] - 1.0) & np.isfinite(alphas)[None, :]
    amin = np.where(within, alphas[None, :], np.inf).min(1)
    amax = np.where(within, alphas[None, :], -np.inf).max(1)
    a_best = sub["alpha"]
    sub["alpha_err"] = np.where(np.isfinite(a_best), np.maximum(0.5 * (amax - amin), 0.1 * np.nan_to_num(a_best)), np.nan)
    keys, si = _shape_keys(sub)
    tables = np.stack([templates.make_shape(*kk).table for kk in keys])
    prof2 = lambda c_, d_: prof(c_, d_, tables, si)
    P = np.stack([prof2(c + o, d) for o in range(-2, 3)], 1)
    c = c + np.argmax(P, 1) - 2
    l0, lm, lp = prof2(c, d), prof2(c - 1, d), prof2(c + 1, d)
    curv = 2 * l0 - lm - lp
    c = c + np.where(curv > 0, np.clip(0.5 * (lp - lm) / np.where(curv > 0, curv, 1.0), -0.5, 0.5), 0.0)
    l0, lm, lp = prof2(c, d), prof2(c - 1, d), prof2(c + 1, d)
    cerr = _parabola_err(lm, l0, lp, 1.0)
    g = 2.0 ** (1 / 16)
    lm, lp = prof2(c, d / g), prof2(c, d * g)
    curv = 2 * l0 - lm - lp
    d = np.minimum(d * g ** np.where(curv > 0, np.clip(0.5 * (lp - lm) / np.where(curv > 0, curv, 1.0), -0.5, 0.5), 0.0),
                   MAX_DURATION)
    l0 = prof2(c, d)
    lerr = _parabola_err(prof2(c, d / g), l0, prof2(c, d * g), np.log(g))
    fit["center"][r] = c; fit["dur"][r] = d
    fit["center_err"][r] = np.where(np.isfinite(cerr), np.maximum(cerr, 0.29), 1.0)
    fit["dur_err"][r] = d * np.where(np.isfinite(lerr), np.maximum(lerr, np.log(g) / np.sqrt(12)), np.log(g))
    for k in ("alpha", "alpha_err", "size"):
        fit[k][r] = sub[k]


# -------------------------------------------------------------------------------------------- public helpers
def model_curve(row: dict, mjd) -> np.ndarray:
    """Fitted flux (Jy) of a result row at ``mjd``: baseline + slope (t - center) + lens/dip (for charts)."""
    t = np.asarray(mjd, float)
    base = row["baseline_jy"] + (row.get("slope_jy_per_day") or 0.0) * (t - row["center_mjd"])
    if not row.get("depth") or row.get("duration_days") is None:
        return base
    alpha = row.get("lens_alpha")
    shape = templates.make_shape(None, 0.0) if row.get("model") == "dip" or alpha is None or not np.isfinite(alpha) \
        else templates.make_shape(float(alpha), float(row.get("size_ratio") or 0.1))
    return base + row["depth"] * row["baseline_jy"] * shape((t - row["center_mjd"]) / row["duration_days"])


def select_candidates(results: pl.DataFrame, preset: str = "moderate", min_sigma: float | None = None) -> pl.DataFrame:
    """ESE candidates: is_dip and fap_per_source_year <= PRESET_FAP[preset] (and sigma >= min_sigma), best first."""
    if preset not in PRESET_FAP:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_FAP)}")
    q = results.filter(pl.col("is_dip") & (pl.col("fap_per_source_year") <= PRESET_FAP[preset]))
    if min_sigma is not None:
        q = q.filter(pl.col("sigma") >= min_sigma)
    return q.sort(["fap_per_source_year", "lr", "source_id"], descending=[False, True, False])
