"""DSA-110 facts: site, station positions (shipped with the package), band, tiles and the primary beam."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation
from scipy.special import j1

SITE_LAT_DEG = 37.2339
SITE_LON_DEG = -118.2825
SITE_HEIGHT_M = 1182.6
DISH_DIAMETER_M = 4.65
N_SUBBANDS = 16
CHANNELS_PER_SUBBAND = 48
CHANNEL_WIDTH_HZ = 244_140.625
BAND_LOW_HZ = 1311.25e6
BAND_HIGH_HZ = 1498.75e6
INTEGRATION_S = 12.884902
INTEGRATIONS_PER_TILE = 24
SIDEREAL_DAY_S = 86164.0905
C_M_S = 299_792_458.0


@dataclass(frozen=True)
class Station:
    name: str
    lat_deg: float
    lon_deg: float
    height_m: float


@lru_cache(maxsize=1)
def stations() -> tuple[Station, ...]:
    """DSA-110 stations from the packaged DSA110_Station_Coordinates.csv (WGS84; blank height = 1182.6 m)."""
    text = resources.files("eselake.data").joinpath("DSA110_Station_Coordinates.csv").read_text()
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and re.fullmatch(r"DSA-\d+", parts[1]):
            out.append(Station(parts[1], float(parts[2]), float(parts[3]),
                               float(parts[4]) if len(parts) > 4 and parts[4] else SITE_HEIGHT_M))
    return tuple(out)


def site() -> EarthLocation:
    return EarthLocation.from_geodetic(SITE_LON_DEG * u.deg, SITE_LAT_DEG * u.deg, SITE_HEIGHT_M * u.m)


def station_ecef(selection: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Station names and ECEF positions (m), optionally only the named stations."""
    st = [s for s in stations() if selection is None or s.name in selection]
    loc = EarthLocation.from_geodetic([s.lon_deg for s in st] * u.deg, [s.lat_deg for s in st] * u.deg,
                                      [s.height_m for s in st] * u.m)
    xyz = np.stack([loc.x.to_value(u.m), loc.y.to_value(u.m), loc.z.to_value(u.m)], axis=-1)
    return [s.name for s in st], xyz


def core_stations(n: int) -> list[str]:
    """``n`` stations of the T-shaped core (no outriggers), spread evenly along it."""
    core = [s.name for s in stations() if int(s.name.split("-")[1]) <= 102]
    idx = np.unique(np.linspace(0, len(core) - 1, n).round().astype(int))
    return [core[i] for i in idx]


def subband_frequencies_hz(nchan: int = CHANNELS_PER_SUBBAND) -> np.ndarray:
    """(16, nchan) channel centres; subband 0 is the highest, channels descending as the correlator writes.
    With fewer channels each is wider, so the 16 subbands still cover 1311.25-1498.75 MHz."""
    width = (BAND_HIGH_HZ - BAND_LOW_HZ) / (N_SUBBANDS * nchan)
    centres = BAND_LOW_HZ + (np.arange(N_SUBBANDS * nchan) + 0.5) * width
    return centres[::-1].reshape(N_SUBBANDS, nchan)


def airy_power(theta_rad, freq_hz, diameter_m: float = DISH_DIAMETER_M):
    """Airy power pattern (2 J1(x) / x)^2, x = pi D sin(theta) / lambda; FWHM ~ 2.7 deg at 1.4 GHz."""
    x = np.pi * diameter_m * np.sin(np.asarray(theta_rad, float)) * np.asarray(freq_hz, float) / C_M_S
    x = np.where(np.abs(x) < 1e-9, 1e-9, x)
    return (2.0 * j1(x) / x) ** 2


def pointing_altaz_deg(dec_deg: float) -> tuple[float, float]:
    """(alt, az) of a meridian pointing at declination ``dec_deg`` (az 0 = north)."""
    if dec_deg >= SITE_LAT_DEG:
        return 90.0 - (dec_deg - SITE_LAT_DEG), 0.0
    return 90.0 - (SITE_LAT_DEG - dec_deg), 180.0
