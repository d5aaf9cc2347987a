"""photocalib: photometric calibration that is correct about the astrometric Jacobian.

Images are fluence (per pixel) or surface brightness (per arcsec²); they differ by the pixel
area |det J| of the WCS. See DESIGN.md for the conventions.
"""

from __future__ import annotations

import importlib

from .errors import ImageKindError, InputError, OutputError, PhotocalibError
from .fields import (
    BoundedField,
    ChebyshevField,
    ConstantField,
    ProductField,
    QuotientField,
)
from .geom import Box

__version__ = "0.1.0"

__all__ = [
    "Box",
    "BoundedField",
    "ChebyshevField",
    "ConstantField",
    "Exposure",
    "ImageKind",
    "ImageKindError",
    "InputError",
    "OutputError",
    "PhotoCalib",
    "PhotocalibError",
    "PixelAreaField",
    "ProductField",
    "QuotientField",
    "SkyWcs",
    "SplineField",
]

# Names that arrive with later layers; imported lazily so a partial install still imports.
_LAZY = {
    "SplineField": "photocalib.fields",
    "PixelAreaField": "photocalib.fields",
    "SkyWcs": "photocalib.astrometry",
    "ImageKind": "photocalib.image",
    "Exposure": "photocalib.image",
    "PhotoCalib": "photocalib.calib",
}
_SUBMODULES = {"fields", "astrometry", "image", "calib", "isr", "background", "measure", "warp", "fit", "sim", "pipeline", "cli"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"photocalib.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'photocalib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
