"""Fluence-conserving warps and coadds (rule 2).

Layer 5 (processing).
"""

from .coadd import DEFAULT_BAD_MASK, CoaddResult, coadd
from .config import WarpConfig
from .mapping import PixelMapping
from .reprojection import reproject
from .skygrid import SkyGrid
from .warp import WarpResult, area_metadata, pixel_mapping, warp_arrays, warp_exposure

__all__ = [
    "WarpConfig",
    "DEFAULT_BAD_MASK",
    "CoaddResult",
    "PixelMapping",
    "SkyGrid",
    "WarpResult",
    "area_metadata",
    "coadd",
    "pixel_mapping",
    "reproject",
    "warp_arrays",
    "warp_exposure",
]
