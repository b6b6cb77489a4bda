"""Forced photometry kernel: numpy only, no I/O, vectorised over all sources of an image.

For each source at a fixed sub-pixel position the restoring beam K (a 2-D Gaussian, peak 1) is the matched
filter (Condon 1997):  F = sum(d K / s^2) / sum(K^2 / s^2)  in Jy/beam.  Sources closer than
``blend_beams`` beam FWHM to each other are fitted jointly: with positions and shapes fixed the model is
linear in the amplitudes, so one sparse least-squares solve (normal equations A W A^T a = A W d) fits every
blend group at once; an isolated source reduces exactly to the matched filter.

Errors: ``peak_err_jyb`` = local rms x the matched-filter noise factor (plus, optionally, a fractional
per-epoch term ``frac_err`` x flux in quadrature). For images whose noise is correlated
on the scale of the restoring beam (restored interferometric images: ``noise_corr="beam"``, the default)
the factor is sqrt(K^T R K) / (K^T K) with R the beam-shaped noise correlation, close to 1.15 for a
well-sampled beam; for white pixel noise (``noise_corr="white"``) it is 1/sqrt(sum K^2).
The local rms comes from a sigma-clipped annulus of valid (finite) pixels around each source, or from a noise
map when given, and never goes below ``rms_floor`` (the image's noise floor): a pseudo-blank area cannot make
an error bar smaller than the image's real noise.

Undersampled beams (minor-axis FWHM below ``UNDERSAMPLED_FWHM_PIX`` pixels): the kernel is the beam integrated
over each pixel (supersampled), which is what an image of the sky holds when the beam is narrower than a pixel,
so fluxes do not inflate off pixel centres; such sources are flagged ``undersampled``. Blend members that the
image cannot separate (the joint fit's error inflation above ``MAX_BLEND_INFLATION``, e.g. two positions in
one pixel) get a NaN flux and the ``unresolved`` flag instead of +-1e6 Jy from a near-singular solve.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from astropy.stats import sigma_clipped_stats
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

FLAG_EDGE = 1        # the fitting box reaches past the image edge
FLAG_NAN = 2         # blanked (NaN) pixels in the fitting box; flux is NaN when the core is blanked
FLAG_BLENDED = 4     # fitted jointly with a neighbour closer than blend_beams x FWHM
FLAG_OUTSIDE = 8     # position outside the image: not measured
FLAG_LOWRMS = 16     # local rms not measurable from the annulus, or below the image's noise floor: floor used
FLAG_UNDERSAMPLED = 32   # beam narrower than UNDERSAMPLED_FWHM_PIX: pixel-integrated kernel
FLAG_UNRESOLVED = 64     # blend members the image cannot separate: flux NaN
FLAGS = {"edge": FLAG_EDGE, "nan": FLAG_NAN, "blended": FLAG_BLENDED, "outside": FLAG_OUTSIDE,
         "lowrms": FLAG_LOWRMS, "undersampled": FLAG_UNDERSAMPLED, "unresolved": FLAG_UNRESOLVED}
UNDERSAMPLED_FWHM_PIX = 2.0
MAX_BLEND_INFLATION = 10.0


@dataclass
class PhotometryResult:
    """Per-source arrays (length n, in input order)."""
    peak_jyb: np.ndarray
    peak_err_jyb: np.ndarray
    local_rms_jyb: np.ndarray
    snr: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    flags: np.ndarray
    blend_group: np.ndarray       # -1 for isolated sources, else a group number shared by the blend


def beam_covariance_pix(bmaj_deg, bmin_deg, bpa_deg, jac_pix_per_deg) -> np.ndarray:
    """Beam covariance (n, 2, 2) in pixel units.

    ``jac_pix_per_deg`` (n, 2, 2) maps (east, north) offsets in deg to (x, y) pixel offsets; the beam
    position angle is measured from north through east.
    """
    s_maj = np.asarray(bmaj_deg, float) * FWHM_TO_SIGMA
    s_min = np.asarray(bmin_deg, float) * FWHM_TO_SIGMA
    pa = np.deg2rad(np.asarray(bpa_deg, float))
    e_maj = np.stack([np.sin(pa), np.cos(pa)], -1)          # (east, north)
    e_min = np.stack([np.cos(pa), -np.sin(pa)], -1)
    cov_en = (s_maj[..., None, None] ** 2 * e_maj[..., :, None] * e_maj[..., None, :]
              + s_min[..., None, None] ** 2 * e_min[..., :, None] * e_min[..., None, :])
    jac = np.asarray(jac_pix_per_deg, float)
    return jac @ cov_en @ np.swapaxes(jac, -1, -2)


def _quad(cinv: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """d^T Cinv d for offset grids dx, dy of shape (n, ...) and Cinv (n, 2, 2)."""
    shape = (-1,) + (1,) * (dx.ndim - 1)
    a = cinv[:, 0, 0].reshape(shape)
    b = cinv[:, 0, 1].reshape(shape)
    c = cinv[:, 1, 1].reshape(shape)
    return a * dx * dx + 2 * b * dx * dy + c * dy * dy


def _annulus_rms(data, ix, iy, r_in, r_out, fallback, step=1, chunk_values=20_000_000):
    """Sigma-clipped (3 sigma, MAD) rms of the finite pixels r_in <= r < r_out around each source, sampled
    every ``step`` pixels (noise is correlated over a beam, so a sparser grid loses no independent samples).
    Fewer than 20 finite pixels: ``fallback`` and the low flag."""
    R = int(np.ceil(r_out))
    off = np.arange(-R, R + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    rr = np.hypot(ox, oy)
    ring = (rr >= r_in) & (rr < r_out) & (ox % step == 0) & (oy % step == 0)
    oyr, oxr = oy[ring], ox[ring]
    ny, nx = data.shape
    out = np.full(ix.size, np.nan)
    chunk = max(1, chunk_values // max(1, ring.sum()))
    for s in range(0, ix.size, chunk):
        py = iy[s:s + chunk, None] + oyr[None, :]
        px = ix[s:s + chunk, None] + oxr[None, :]
        inside = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
        vals = np.where(inside, data[np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1)], np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # NaN beyond the image edge is expected here
            _, _, std = sigma_clipped_stats(vals, axis=1, sigma=3.0, maxiters=5, stdfunc="mad_std")
        ngood = np.isfinite(vals).sum(axis=1)
        out[s:s + chunk] = np.where(ngood >= 20, np.asarray(std, float), np.nan)
    low = ~np.isfinite(out) | (out <= 0)
    out[low] = fallback
    return out, low


def _pixel_integrated(cinv, dx, dy, sigma_min_pix) -> np.ndarray:
    """The peak-1 beam averaged over each pixel (pixel centre offsets dx, dy), by supersampling."""
    sub = int(np.clip(np.ceil(3.0 / max(sigma_min_pix, 1e-3)), 5, 25))
    grid = (np.arange(sub) + 0.5) / sub - 0.5
    acc = np.zeros(np.broadcast(dx, dy).shape)
    for oy in grid:
        for ox in grid:
            acc += np.exp(-0.5 * _quad(cinv, dx + ox, dy + oy))
    return acc / (sub * sub)


def _correlated_noise_factor(K: np.ndarray, cinv: np.ndarray) -> np.ndarray:
    """sqrt(K^T R K) / (K^T K) with R(delta) = exp(-delta^T Cinv delta / 2), the beam-shaped correlation."""
    n, m, _ = K.shape
    size = 2 * m - 1
    f = np.fft.rfft2(K, s=(size, size))
    auto = np.fft.irfft2(f * np.conj(f), s=(size, size))       # circular autocorrelation, lags wrap
    lag = np.fft.fftfreq(size, 1.0 / size)                      # 0, 1, ..., -1 in wrapped order
    ly, lx = np.meshgrid(lag, lag, indexing="ij")
    R = np.exp(-0.5 * _quad(cinv, lx[None], ly[None]))
    ktk = (K * K).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):      # an all-blank kernel: NaN (the source is flagged)
        return np.sqrt(np.maximum((auto * R).sum(axis=(1, 2)), 0.0)) / ktk


def forced_photometry(data: np.ndarray, x: np.ndarray, y: np.ndarray, beam_cov_pix: np.ndarray, *,
                      noise_map: np.ndarray | None = None, image_rms: float | None = None,
                      rms_floor: float | None = None, frac_err: float = 0.0,
                      blend_beams: float = 1.5, noise_corr: str = "beam",
                      annulus_beams: tuple[float, float] = (2.0, 5.0)) -> PhotometryResult:
    """Measure peak fluxes (Jy/beam) of sources at pixel positions (x, y) (0-based, x along columns).

    ``beam_cov_pix`` is (2, 2) or (n, 2, 2) (see ``beam_covariance_pix``). ``noise_map`` (same shape as
    ``data``, Jy/beam) replaces the annulus rms and weights pixels by 1/rms^2. ``rms_floor`` (Jy/beam): no
    local rms below it (default: no floor); rms values far below it are flagged ``lowrms``. ``frac_err``:
    a per-epoch fractional error (flux scale, deconvolution) added in quadrature, frac_err x |flux|.
    """
    if noise_corr not in ("beam", "white"):
        raise ValueError("noise_corr must be 'beam' or 'white'")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"image data must be 2-D, got shape {data.shape}")
    if noise_map is not None and np.shape(noise_map) != data.shape:
        raise ValueError(f"noise map shape {np.shape(noise_map)} differs from image shape {data.shape}")
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    n = x.size
    cov = np.broadcast_to(np.asarray(beam_cov_pix, float), (n, 2, 2)).copy()
    ny, nx = data.shape
    flags = np.zeros(n, np.int32)
    res = PhotometryResult(*(np.full(n, np.nan) for _ in range(6)), flags, np.full(n, -1, np.int32))
    res.dof = np.zeros(n, np.int32)
    if n == 0:
        return res

    outside = ~(np.isfinite(x) & np.isfinite(y)) | (x < -0.5) | (x > nx - 0.5) | (y < -0.5) | (y > ny - 0.5)
    flags[outside] |= FLAG_OUTSIDE
    fit = np.flatnonzero(~outside)
    if fit.size == 0:
        return res

    if image_rms is None:
        finite = data[np.isfinite(data)]
        image_rms = float(sigma_clipped_stats(finite[:: max(1, finite.size // 1_000_000)],
                                              stdfunc="mad_std")[2]) if finite.size else np.nan
    xs, ys, cs = x[fit], y[fit], cov[fit]
    cinv = np.linalg.inv(cs)
    sig_max = np.sqrt(np.linalg.eigvalsh(cs)[:, 1])
    fwhm_maj = sig_max / FWHM_TO_SIGMA
    h = max(2, int(np.ceil(3.5 * sig_max.max())))
    off = np.arange(-h, h + 1)
    ix = np.rint(xs).astype(np.int64)
    iy = np.rint(ys).astype(np.int64)
    px = ix[:, None, None] + off[None, None, :]
    py = iy[:, None, None] + off[None, :, None]
    fwhm_min = np.sqrt(np.linalg.eigvalsh(cs)[:, 0]) / FWHM_TO_SIGMA
    undersampled = fwhm_min < UNDERSAMPLED_FWHM_PIX
    K = np.exp(-0.5 * _quad(cinv, px - xs[:, None, None], py - ys[:, None, None]))
    if undersampled.any():
        u = np.flatnonzero(undersampled)
        K[u] = _pixel_integrated(cinv[u], px[u] - xs[u, None, None], py[u] - ys[u, None, None],
                                 float(fwhm_min[u].min()) * FWHM_TO_SIGMA)

    inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    d = np.where(inside, data[np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1)], np.nan)
    valid = np.isfinite(d)
    if noise_map is not None:
        s_pix = np.where(inside, np.asarray(noise_map, float)[np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1)],
                         np.nan)
        valid &= np.isfinite(s_pix) & (s_pix > 0)
        w = np.where(valid, 1.0 / np.where(valid, s_pix, 1.0) ** 2, 0.0)
    else:
        w = valid.astype(float)
    sub_flags = np.zeros(fit.size, np.int32)
    sub_flags[(~inside & (K > 1e-3)).any(axis=(1, 2))] |= FLAG_EDGE
    k2 = K * K
    lost = (k2 * ~valid).sum(axis=(1, 2)) / k2.sum(axis=(1, 2))
    sub_flags[((~valid & inside) & (K > 0.01)).any(axis=(1, 2))] |= FLAG_NAN
    core_bad = ~valid[:, h, h] | (lost > 0.5)
    sub_flags[core_bad & inside[:, h, h]] |= FLAG_NAN

    # --- blend groups: connected components of pairs closer than blend_beams x FWHM (major axis)
    tree = cKDTree(np.column_stack([xs, ys]))
    pairs = tree.query_pairs(r=blend_beams * float(fwhm_maj.max()), output_type="ndarray")
    if pairs.size:
        sep = np.hypot(xs[pairs[:, 0]] - xs[pairs[:, 1]], ys[pairs[:, 0]] - ys[pairs[:, 1]])
        lim = blend_beams * np.maximum(fwhm_maj[pairs[:, 0]], fwhm_maj[pairs[:, 1]])
        pairs = pairs[sep < lim]
    m = fit.size
    adj = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else
                        (np.zeros(0), (np.zeros(0, int), np.zeros(0, int))), shape=(m, m))
    ngroups, label = connected_components(adj, directed=False)
    group_size = np.bincount(label, minlength=ngroups)[label]
    blended = group_size > 1
    sub_flags[blended] |= FLAG_BLENDED

    # --- one sparse linear least-squares solve for all amplitudes (block-diagonal by blend group)
    usable = ~core_bad
    npad = (nx + 2 * h) * (ny + 2 * h)
    flat = ((py + h) * (nx + 2 * h) + (px + h)).reshape(m, -1)
    Kv = np.where(valid, K, 0.0).reshape(m, -1)
    wv = w.reshape(m, -1)
    rows = np.repeat(np.arange(m), Kv.shape[1])
    A = sp.csr_matrix((Kv.ravel() * usable[rows], (rows, flat.ravel())), shape=(m, npad))
    Wd = sp.csr_matrix(((Kv * wv).ravel() * usable[rows], (rows, flat.ravel())), shape=(m, npad))
    M = (Wd @ A.T).tocoo()
    same = label[M.row] == label[M.col]
    M = sp.csc_matrix((M.data[same], (M.row[same], M.col[same])), shape=(m, m))
    dv = np.where(valid, d, 0.0).reshape(m, -1)
    b = ((Kv * wv) * dv).sum(axis=1)
    diag = M.diagonal()
    good = usable & (diag > 0)
    amp = np.full(m, np.nan)
    inflate = np.ones(m)
    if good.any():
        Mg = M[good][:, good]
        try:
            lu = spla.splu(Mg.tocsc())
            amp_g = lu.solve(b[good])
            if blended[good].any():                 # error inflation sqrt(M^-1_ii M_ii) for blends
                idx = np.flatnonzero(blended[good])
                e = np.zeros((Mg.shape[0], idx.size))
                e[idx, np.arange(idx.size)] = 1.0
                minv_ii = lu.solve(e)[idx, np.arange(idx.size)]
                inflate_g = np.ones(Mg.shape[0])
                inflate_g[idx] = np.sqrt(np.maximum(minv_ii * Mg.diagonal()[idx], 1.0))
                inflate[good] = inflate_g
        except RuntimeError:                        # exactly degenerate blend: isolated sources keep the
            amp_g = b[good] / diag[good]            # matched filter, the blends become unresolved below
            inflate[good & blended] = np.inf
        amp[good] = amp_g
    # members of blends the image cannot separate: no flux rather than a near-singular +-1e6 Jy
    unresolved = blended & ~(inflate <= MAX_BLEND_INFLATION)
    if unresolved.any():
        bad_groups = np.unique(label[unresolved])
        unresolved = np.isin(label, bad_groups) & blended
        amp[unresolved] = np.nan
        sub_flags[unresolved] |= FLAG_UNRESOLVED
    sub_flags[undersampled] |= FLAG_UNDERSAMPLED

    # --- errors and chi2
    if noise_map is not None:
        local = np.asarray(noise_map, float)[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)]
        low = ~np.isfinite(local) | (local <= 0)
        local = np.where(low, image_rms, local)
    else:
        r_in, r_out = (annulus_beams[0] * fwhm_maj.max(), annulus_beams[1] * fwhm_maj.max())
        local, low = _annulus_rms(data, ix, iy, max(r_in, h + 1.0), max(r_out, h + 6.0), image_rms,
                                  step=max(1, int(fwhm_maj.min() / 2.5)))
    if rms_floor is not None and np.isfinite(rms_floor) and rms_floor > 0:
        low = low | (local < 0.5 * rms_floor)       # far below the floor: pseudo-blank or fill nearby
        local = np.maximum(local, rms_floor)
    sub_flags[low] |= FLAG_LOWRMS
    if noise_corr == "beam":
        factor = _correlated_noise_factor(np.where(valid, K, 0.0), cinv)
    else:
        factor = 1.0 / np.sqrt((np.where(valid, K, 0.0) ** 2).sum(axis=(1, 2)))
    err = local * factor * inflate
    if frac_err:
        err = np.hypot(err, frac_err * np.abs(np.nan_to_num(amp)))

    model = A.T @ np.nan_to_num(amp, nan=0.0)
    resid = dv - model[flat] * valid.reshape(m, -1)
    s2 = (1.0 / np.where(wv > 0, wv, np.inf)) if noise_map is not None else local[:, None] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(valid.reshape(m, -1), resid * resid / s2, 0.0).sum(axis=1)
    dof = valid.reshape(m, -1).sum(axis=1) - 1

    res.peak_jyb[fit] = amp
    res.peak_err_jyb[fit] = np.where(np.isfinite(amp), err, np.nan)
    res.local_rms_jyb[fit] = local
    with np.errstate(divide="ignore", invalid="ignore"):
        res.snr[fit] = amp / res.peak_err_jyb[fit]
    res.chi2[fit] = np.where(np.isfinite(amp), chi2, np.nan)
    res.dof[fit] = np.maximum(dof, 0)
    flags[fit] |= sub_flags
    grp = np.where(blended, label, -1)
    res.blend_group[fit] = grp
    return res
