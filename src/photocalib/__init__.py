"""photocalib: photometric calibration that is correct about the astrometric Jacobian.

Images are fluence (per pixel) or surface brightness (per arcsec²); they differ by the pixel
area ``|det J|`` of the WCS. See docs/design.md for the conventions and the layers.
"""

from __future__ import annotations

from . import (
    astrometry,
    background,
    calib,
    fields,
    fit,
    image,
    instruments,
    isr,
    measure,
    refcat,
    warp,
)
from .astrometry import SkyWcs
from .calib import PhotoCalib
from .errors import ImageKindError, InputError, OutputError, PhotocalibError
from .fields import (
    BoundedField,
    ChebyshevField,
    ConstantField,
    PixelAreaField,
    ProductField,
    QuotientField,
    SplineField,
)
from .geom import Box
from .image import Exposure, ImageKind
from .instruments import read_exposures

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
    "read_exposures",
    "SplineField",
    "astrometry",
    "background",
    "calib",
    "fields",
    "fit",
    "image",
    "instruments",
    "isr",
    "measure",
    "refcat",
    "warp",
]


def __getattr__(name: str):
    # The simulator (GalSim), the pipeline (Dask, matplotlib) and the command line load on
    # first use, so `import photocalib` stays light; each is a plain import that fails loudly.
    if name == "sim":
        import photocalib.sim as sim

        return sim
    if name == "pipeline":
        import photocalib.pipeline as pipeline

        return pipeline
    if name == "cli":
        import photocalib.cli as cli

        return cli
    raise AttributeError(f"module 'photocalib' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"sim", "pipeline", "cli"})
