"""Images that know their kind: ImageKind, Exposure, kind conversions and FITS I/O.

Layer 3 of photocalib: imports fields and astrometry, never anything above.
"""

from ..errors import ImageKindError, InputError, PhotocalibError
from .exposure import Exposure, clear_area_cache, pixel_area_image
from .fitsio import ARCSEC2_TO_SR, read_exposure, write_exposure
from .kind import ImageKind, require_kind
from .mask import MaskPlane

__all__ = [
    "ARCSEC2_TO_SR",
    "Exposure",
    "ImageKind",
    "ImageKindError",
    "InputError",
    "MaskPlane",
    "PhotocalibError",
    "clear_area_cache",
    "pixel_area_image",
    "read_exposure",
    "require_kind",
    "write_exposure",
]
