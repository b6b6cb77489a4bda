"""eselake: DSA-110 continuum lightcurves and Extreme Scattering Event detection over a Parquet lake."""
from eselake import offline as _offline

_offline.apply()

__version__ = "0.1.0"

from eselake.lake import Lake  # noqa: E402
from eselake.detection import detect_ese_candidates  # noqa: E402
from eselake.source import Source  # noqa: E402


def measure_image(lake, fits_path, **kwargs):
    """Forced photometry of catalogue sources on one FITS image into ``lake`` (see eselake.ingest.photometry.measure)."""
    from eselake.ingest.photometry.measure import measure_image as _measure

    return _measure(lake if isinstance(lake, Lake) else Lake(lake), fits_path, **kwargs)


__all__ = ["Lake", "Source", "detect_ese_candidates", "measure_image", "__version__"]
