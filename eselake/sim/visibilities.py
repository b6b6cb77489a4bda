"""Simulated DSA-110 tiles: 16 subband UVH5 files per 5-minute tile, as the correlator writes them.

Meridian drift scan at a fixed declination; visibilities computed exactly (direct Fourier sum) from a sky of
point sources attenuated by the Airy primary beam of the 4.65 m dishes, with per-antenna complex gains,
thermal noise and per-source flux histories (stable sources, injected ESEs, a calibrator).

Conventions: uvw = (ant2 - ant1) in ENU metres for unprojected (drift) data, as pyuvdata defines them, and
  V_12 = g_1 conj(g_2) * sum_s S_s A_s exp(+2 pi i (u l + v m + w (n - 1)) / lambda)
with (l, m, n) the east, north, up direction cosines of the source.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
from astropy import units as u
from astropy.coordinates import AltAz, SkyCoord
from astropy.time import Time

from eselake.errors import InputError
from eselake.ingest.radio import dsa110
from eselake.ingest.catalogs.catalog import iau_names
from eselake.detection.lens import gaussian_lens


@dataclass
class SimConfig:
    """What to simulate. Defaults make a small, fast strip (the demo's)."""
    out: Path
    start: str = "2025-06-01T04:00:00"       # UTC start of the first tile
    days: int = 60
    tiles_per_day: int = 1
    dec_deg: float = 45.0
    n_antennas: int = 32                     # core stations (the full array has ~96 active)
    nchan: int = 4                           # channels per subband (48 at full resolution)
    n_integrations: int = 12                 # per tile (24 at full length)
    sefd_jy: float = 5000.0
    n_sources: int = 14
    flux_range_jy: tuple[float, float] = (0.15, 1.5)
    field_radius_deg: float = 1.1
    calibrator_flux_jy: float = 8.0
    calibrator_error: float = 0.05           # daily calibrator flux error (shared calibration error)
    gain_amp_sigma: float = 0.1
    ese: bool = True                         # inject one ESE (Gaussian plasma lens)
    ese_alpha: float = 0.8                   # lens strength: a ~40% dip with mild caustic brightening
    seed: int = 1
    antennas: list[str] = field(default_factory=list)

    @property
    def tile_seconds(self) -> float:
        return self.n_integrations * dsa110.INTEGRATION_S


@dataclass
class SimSource:
    source_id: str
    ra_deg: float
    dec_deg: float
    flux_jy: float
    kind: str                                # stable | ese | calibrator
    ese_center_mjd: float | None = None
    ese_duration_days: float | None = None


def _tile_starts(cfg: SimConfig) -> list[Time]:
    t0 = Time(cfg.start, scale="utc")
    out = []
    for d in range(cfg.days):
        for k in range(cfg.tiles_per_day):
            out.append(t0 + (d * dsa110.SIDEREAL_DAY_S + k * cfg.tile_seconds) * u.s)
    return out


def meridian_icrs(time: Time, dec_deg: float) -> SkyCoord:
    """ICRS direction of the meridian pointing at ``dec_deg`` at ``time``."""
    alt, az = dsa110.pointing_altaz_deg(dec_deg)
    return SkyCoord(AltAz(alt=alt * u.deg, az=az * u.deg, obstime=time, location=dsa110.site())).icrs


def make_sky(cfg: SimConfig, rng) -> list[SimSource]:
    """Calibrator at the centre of each day's first tile, field sources along the strip, one ESE source."""
    starts = _tile_starts(cfg)[: cfg.tiles_per_day]
    centers = [meridian_icrs(t + cfg.tile_seconds / 2 * u.s, cfg.dec_deg) for t in starts]
    sky = [SimSource("CAL " + iau_names("J", np.array([centers[0].ra.deg]), np.array([centers[0].dec.deg]))[0][2:],
                     float(centers[0].ra.deg), float(centers[0].dec.deg), cfg.calibrator_flux_jy, "calibrator")]
    ras, decs = [], []
    while len(ras) < cfg.n_sources:
        c = centers[rng.integers(len(centers))]
        r = cfg.field_radius_deg * np.sqrt(rng.uniform(0.04, 1.0))
        pa = rng.uniform(0, 2 * np.pi)
        p = c.directional_offset_by(pa * u.rad, r * u.deg)
        if all(p.separation(SkyCoord(a, b, unit="deg")).deg > 0.25 for a, b in zip(ras, decs)) and \
                p.separation(SkyCoord(sky[0].ra_deg, sky[0].dec_deg, unit="deg")).deg > 0.3:
            ras.append(p.ra.deg)
            decs.append(p.dec.deg)
    ids = iau_names("NVSS", np.array(ras), np.array(decs))
    fluxes = np.exp(rng.uniform(*np.log(cfg.flux_range_jy), cfg.n_sources))
    t_first = Time(cfg.start).mjd
    for i, (sid, ra, dec, f) in enumerate(zip(ids, ras, decs, fluxes)):
        src = SimSource(str(sid), float(ra), float(dec), float(f), "stable")
        if cfg.ese and i == 0:
            src.kind = "ese"
            src.flux_jy = float(max(f, 0.6))
            src.ese_center_mjd = t_first + 0.55 * cfg.days
            src.ese_duration_days = max(16.0, cfg.days / 3.0)
        sky.append(src)
    return sky


def flux_on(src: SimSource, mjd: float, cfg: SimConfig) -> float:
    """True flux density (Jy) of a source at ``mjd``."""
    if src.kind == "ese":
        return src.flux_jy * float(gaussian_lens(mjd, src.ese_center_mjd, src.ese_duration_days, cfg.ese_alpha))
    return src.flux_jy


def _gains(n_ant: int, freqs_hz: np.ndarray, rng, sigma: float) -> np.ndarray:
    """(n_ant, n_freq, 2) complex gains: amplitude and phase per antenna and pol, a smooth bandpass."""
    amp = 1.0 + sigma * rng.standard_normal((n_ant, 1, 2))
    phase = rng.uniform(-np.pi, np.pi, (n_ant, 1, 2))
    x = (freqs_hz[None, :, None] - freqs_hz.mean()) / np.ptp(freqs_hz)
    ripple = 1.0 + 0.05 * rng.standard_normal((n_ant, 1, 2)) * np.cos(2 * np.pi * x * rng.uniform(0.5, 2.0, (n_ant, 1, 2)))
    slope = np.exp(1j * rng.uniform(-0.5, 0.5, (n_ant, 1, 2)) * x)
    return amp * ripple * np.exp(1j * phase) * slope


def _telescope(names, xyz):
    from pyuvdata import Telescope
    loc = dsa110.site()
    rel = xyz - np.array([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)])
    numbers = [int(n.split("-")[1]) for n in names]
    return Telescope.new(name="DSA-110", location=loc, antenna_positions=rel, antenna_names=names,
                         antenna_numbers=numbers, instrument="DSA-110", antenna_diameters=[dsa110.DISH_DIAMETER_M] * len(names),
                         mount_type="alt-az", feeds=["x", "y"], x_orientation="east", update_from_known=False)


def write_tile(cfg: SimConfig, start: Time, sky: list[SimSource], gains: np.ndarray, rng,
               telescope, subbands: list[int] | None = None, flux_scale: float = 1.0) -> list[Path]:
    """Write the subband files of one tile; returns their paths."""
    from pyuvdata.uvdata.initializers import new_uvdata

    freqs = dsa110.subband_frequencies_hz(cfg.nchan)
    times = start + (np.arange(cfg.n_integrations) + 0.5) * dsa110.INTEGRATION_S * u.s
    n_ant = len(telescope.antenna_names)
    nums = np.asarray(telescope.antenna_numbers)
    pairs = [(nums[i], nums[j]) for i in range(n_ant) for j in range(i + 1, n_ant)]
    index = {n: i for i, n in enumerate(nums)}
    mid_mjd = (start + cfg.tile_seconds / 2 * u.s).mjd
    # the calibrator's true flux departs from its catalogue value by flux_scale: calibrating on the catalogue
    # value then scales every other source of the day by 1 / flux_scale (a calibration error shared by all)
    fluxes = np.array([flux_on(s, mid_mjd, cfg) * (flux_scale if s.kind == "calibrator" else 1.0) for s in sky])
    coords = SkyCoord([s.ra_deg for s in sky], [s.dec_deg for s in sky], unit="deg")
    frame = AltAz(obstime=times[:, None], location=dsa110.site())
    aa = coords[None, :].transform_to(frame)
    alt, az = aa.alt.rad, aa.az.rad                                       # (nt, nsrc)
    enu = np.stack([np.cos(alt) * np.sin(az), np.cos(alt) * np.cos(az), np.sin(alt)], -1)
    p_alt, p_az = np.deg2rad(dsa110.pointing_altaz_deg(cfg.dec_deg))
    point = np.array([np.cos(p_alt) * np.sin(p_az), np.cos(p_alt) * np.cos(p_az), np.sin(p_alt)])
    theta = np.arccos(np.clip(enu @ point, -1, 1))                         # (nt, nsrc)
    paths = []
    stamp_base = start.datetime
    for sb in (subbands if subbands is not None else range(dsa110.N_SUBBANDS)):
        f = freqs[sb]
        uv = new_uvdata(freq_array=f, polarization_array=["xx", "yy"], times=times.jd, telescope=telescope,
                        antpairs=pairs, do_blt_outer=True, integration_time=dsa110.INTEGRATION_S,
                        channel_width=float(abs(f[0] - f[1])) if f.size > 1 else float(np.ptp(freqs) / freqs.size),
                        vis_units="Jy", empty=True,
                        phase_center_catalog={0: {"cat_name": "zenith", "cat_type": "unprojected"}},
                        phase_center_id_array=None)
        uvw = uv.uvw_array                                                 # (nblt, 3) ENU metres, ant2 - ant1
        t_idx = np.searchsorted(np.unique(uv.time_array), uv.time_array)
        delay = np.einsum("bk,bsk->bs", uvw, enu[t_idx] - np.array([0, 0, 1.0]))   # (nblt, nsrc) metres
        beam = dsa110.airy_power(theta[t_idx][:, :, None], f[None, None, :])       # (nblt, nsrc, nf)
        vis = np.einsum("bsf,bsf->bf", (fluxes[None, :, None] * beam).astype(np.complex128),
                        np.exp(2j * np.pi * delay[:, :, None] * f[None, None, :] / dsa110.C_M_S))
        a1 = np.array([index[a] for a in uv.ant_1_array])
        a2 = np.array([index[a] for a in uv.ant_2_array])
        g = gains[:, sb * cfg.nchan:(sb + 1) * cfg.nchan, :]              # (nant, nf, 2)
        data = vis[:, :, None] * g[a1] * np.conj(g[a2])
        width = abs(float(uv.channel_width[0]))
        sigma = cfg.sefd_jy / np.sqrt(2 * width * dsa110.INTEGRATION_S)
        data = data + sigma * (rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape))
        uv.data_array = data.astype(np.complex64)
        uv.nsample_array[:] = 1.0
        uv.flag_array[:] = False
        uv.history = "eselake simulated DSA-110 subband"
        uv.extra_keywords["phase_center_dec"] = float(np.deg2rad(cfg.dec_deg))   # as the correlator records it
        jitter = int(rng.integers(0, 4))                                   # the correlator's files differ by seconds
        name = (stamp_base.replace(microsecond=0) + timedelta(seconds=jitter)).strftime(
            "%Y-%m-%dT%H:%M:%S") + f"_sb{sb:02d}.hdf5"
        path = cfg.out / "uvh5" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        uv.write_uvh5(str(path), clobber=True)
        paths.append(path)
    return paths


def simulate(cfg: SimConfig, progress: Callable[[int, int], None] | None = None) -> dict:
    """Simulate the strip: UVH5 tiles under out/uvh5, plus catalog.csv, calibrators.csv and truth.csv."""
    if cfg.days < 1 or cfg.tiles_per_day < 1 or cfg.n_antennas < 4:
        raise InputError("need at least 1 day, 1 tile per day and 4 antennas")
    rng = np.random.default_rng(cfg.seed)
    cfg.out = Path(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    names = cfg.antennas or dsa110.core_stations(cfg.n_antennas)
    names, xyz = dsa110.station_ecef(names)
    telescope = _telescope(names, xyz)
    sky = make_sky(cfg, rng)
    freqs = dsa110.subband_frequencies_hz(cfg.nchan).ravel()
    starts = _tile_starts(cfg)
    truth = []
    for k, start in enumerate(starts):
        day = k // cfg.tiles_per_day
        day_rng = np.random.default_rng([cfg.seed, day])
        gains = _gains(len(names), freqs, day_rng, cfg.gain_amp_sigma)     # the same all day
        cal_true = 1.0 + cfg.calibrator_error * day_rng.standard_normal()
        cal_scale = 1.0 / cal_true
        write_tile(cfg, start, sky, gains, rng, telescope, flux_scale=cal_true)
        mid = (start + cfg.tile_seconds / 2 * u.s).mjd
        truth += [(s.source_id, day, k, mid, flux_on(s, mid, cfg), 1.0 if s.kind == "calibrator" else cal_scale)
                  for s in sky]
        if k % cfg.tiles_per_day == 0:
            np.save(cfg.out / "uvh5" / f".gains_day{day:03d}.npy", gains)   # channels as written: sb00 (highest) first
        if progress:
            progress(k + 1, len(starts))
    with open(cfg.out / "catalog.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source_id", "ra_deg", "dec_deg", "flux_mjy", "major_arcsec"])
        for s in sky:
            if s.kind != "calibrator":          # calibrators are listed in calibrators.csv
                w.writerow([s.source_id, f"{s.ra_deg:.7f}", f"{s.dec_deg:.7f}", f"{s.flux_jy * 1000:.3f}", 0.0])
    with open(cfg.out / "calibrators.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["name", "ra_deg", "dec_deg", "flux_jy"])
        for s in sky:
            if s.kind == "calibrator":
                w.writerow([s.source_id, f"{s.ra_deg:.7f}", f"{s.dec_deg:.7f}", s.flux_jy])
    with open(cfg.out / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        # calibration_scale: the day's calibrator error; the other sources' images that day are scaled by it
        w.writerow(["source_id", "day", "tile", "mjd", "flux_jy", "calibration_scale"])
        w.writerows(truth)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    meta["antennas"] = names
    meta["sources"] = [asdict(s) for s in sky]
    (cfg.out / "simulation.json").write_text(json.dumps(meta, indent=1))
    return meta
