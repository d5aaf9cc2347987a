"""The two kinds of calibrated image: fluence (per pixel) and surface brightness (per arcsec²)."""

from __future__ import annotations

import enum

from ..errors import ImageKindError, InputError

__all__ = ["ImageKind", "require_kind"]


class ImageKind(enum.Enum):
    """What a pixel value means.

    ``FLUENCE``: the flux that fell on the pixel (counts or nJy per pixel); sums over pixels are
    fluxes. ``SURFACE_BRIGHTNESS``: flux per unit solid angle (counts or nJy per arcsec²); a
    uniform sky is flat. They differ by the pixel area A(x, y) = ``|det J|`` in arcsec²:
    fluence = surface brightness × A.
    """

    FLUENCE = "FLUENCE"
    SURFACE_BRIGHTNESS = "SURFACE_BRIGHTNESS"

    @classmethod
    def parse(cls, value: ImageKind | str) -> ImageKind:
        """An ImageKind from itself or its name (case-insensitive; ``SB`` is accepted)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_").replace(" ", "_")
            if key == "SB":
                key = "SURFACE_BRIGHTNESS"
            if key in cls.__members__:
                return cls[key]
        raise InputError(
            f"unknown image kind {value!r}; use 'FLUENCE' or 'SURFACE_BRIGHTNESS'"
        )

    @property
    def conversion(self) -> str:
        """The Exposure method that produces this kind."""
        return "to_fluence()" if self is ImageKind.FLUENCE else "to_surface_brightness()"


def require_kind(actual: ImageKind, needed: ImageKind, operation: str, what: str = "exposure") -> None:
    """Raise :class:`ImageKindError` unless ``actual`` is ``needed``, saying what to call."""
    if actual is not needed:
        raise ImageKindError(
            f"{operation} needs a {needed.value} image but got {actual.value}; "
            f"call {what}.{needed.conversion} first."
        )
