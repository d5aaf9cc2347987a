"""Detection, centroids and aperture photometry on fluence images (rule 1).

Layer 5 (processing).
"""

from .apcorr import apply_aperture_correction, curve_of_growth, fit_aperture_correction
from .aperture import (
    DEFAULT_BAD_MASK,
    PhotFlag,
    aperture_photometry,
    ellipse_from_jacobian,
    sum_ellipses,
)
from .config import MeasureConfig
from .detect import centroid, detect

__all__ = [
    "MeasureConfig",
    "DEFAULT_BAD_MASK",
    "PhotFlag",
    "aperture_photometry",
    "apply_aperture_correction",
    "centroid",
    "curve_of_growth",
    "detect",
    "ellipse_from_jacobian",
    "fit_aperture_correction",
    "sum_ellipses",
]
