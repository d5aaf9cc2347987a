"""Images that know their kind: ImageKind, Exposure, kind conversions and FITS I/O.

Layer 3 of photocalib: imports fields and astrometry, never anything above.
"""

from ..errors import ImageKindError, InputError, PhotocalibError
from .kind import ImageKind, require_kind

__all__ = ["ImageKind", "ImageKindError", "InputError", "PhotocalibError", "require_kind"]
