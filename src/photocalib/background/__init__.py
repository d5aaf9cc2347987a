"""Sky background estimation, always modelled on surface-brightness images (rule 3).

Layer 5 (processing).
"""

from .mesh import (
    DEFAULT_BACKGROUND_MASK,
    MeshGrid,
    MeshSplineField,
    background_image,
    estimate,
    mesh_statistics,
    subtract,
)

__all__ = [
    "DEFAULT_BACKGROUND_MASK",
    "MeshGrid",
    "MeshSplineField",
    "background_image",
    "estimate",
    "mesh_statistics",
    "subtract",
]
