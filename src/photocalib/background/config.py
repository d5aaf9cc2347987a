"""Options of the sky-background model (see :func:`photocalib.background.estimate`)."""

from __future__ import annotations

from pydantic import Field

from .._config import LayerConfig

__all__ = ["BackgroundConfig"]


class BackgroundConfig(LayerConfig):
    """Sky background, always modelled on the surface-brightness image (rule 3)."""

    enabled: bool = True
    mesh_size: int = Field(64, ge=8, description="background mesh cell in pixels")
    order: int = Field(
        4, ge=0, le=12,
        description="Chebyshev order of the sky model (lowered when a small image has too few meshes)",
    )

    def order_for(self, shape: tuple[int, int]) -> int:
        """The configured order, lowered until the meshes of an image of ``shape`` constrain it
        twice over.

        Examples
        --------
        >>> BackgroundConfig(mesh_size=64, order=4).order_for((128, 128))
        0
        >>> BackgroundConfig(mesh_size=64, order=4).order_for((512, 512))
        4
        """
        n_mesh = -(-shape[0] // self.mesh_size) * -(-shape[1] // self.mesh_size)
        order = self.order
        while order > 0 and (order + 1) * (order + 2) > n_mesh:
            order -= 1
        return order
