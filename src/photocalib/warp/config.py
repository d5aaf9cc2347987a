"""Options of the warps onto a sky grid and of the coadd."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._config import LayerConfig

__all__ = ["WarpConfig"]


class WarpConfig(LayerConfig):
    """Warps onto a sky grid and the coadd (rule 2: fluence images)."""

    enabled: bool = True
    kernel: Literal["lanczos3", "bilinear"] = "lanczos3"
    pixel_scale_arcsec: float | None = Field(
        None, gt=0, description="coadd pixel scale (None: the median input pixel scale)"
    )
    coadd_size: int = Field(
        512, ge=16, le=20000, description="pixels along each side of the coadd around the survey centre"
    )
    clip: bool = Field(False, description="clipped mean against transients")
