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
    background_matching: bool = Field(
        False,
        description="match every visit's sky to a reference visit's on the coadd grid before stacking "
        "(fluence differences fitted as surface brightness); pair it with [background] order = 0 or "
        "enabled = false so the per-detector backgrounds keep extended light",
    )
    match_order: int = Field(2, ge=0, le=8, description="Chebyshev order of each visit's matched background")
    match_per: Literal["visit", "detector"] = Field("visit", description="one matched field per visit or per detector")
    coadd_background_order: int | None = Field(
        None, ge=0, le=8, description="order of one background fitted to the whole coadd and subtracted (None: none)"
    )

    def coadd_options(self) -> dict:
        """Keyword arguments of :func:`photocalib.warp.coadd` that this section sets."""
        return {"clip": self.clip, "kernel": self.kernel, "background_matching": self.background_matching,
                "match_order": self.match_order, "match_per": self.match_per,
                "coadd_background_order": self.coadd_background_order}
