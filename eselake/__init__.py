"""eselake: DSA-110 continuum lightcurves and Extreme Scattering Event detection over a Parquet lake."""
from eselake import offline as _offline

_offline.apply()

__version__ = "0.1.0"

from eselake.lake import Lake  # noqa: E402

__all__ = ["Lake", "__version__"]
