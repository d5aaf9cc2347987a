"""Options of instrument-signature removal (see :func:`photocalib.isr.isr_from_hdu`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .._config import LayerConfig

__all__ = ["IsrConfig"]


class IsrConfig(LayerConfig):
    """Instrument-signature removal: bias, gain, saturation and the dome flat."""

    saturation: float | None = Field(
        None, gt=0, description="saturation level in ADU (None: the SATURATE header keyword)"
    )
    flat_kind: Literal["dome", "fiducial-sed"] = "dome"
