"""Fluence-conserving warps and coadds (rule 2).

Layer 5 (processing).
"""

from .mapping import PixelMapping
from .warp import WarpResult, pixel_mapping, warp_arrays, warp_exposure

__all__ = ["PixelMapping", "WarpResult", "pixel_mapping", "warp_arrays", "warp_exposure"]
