"""Sky background estimation, always modelled on surface-brightness images (rule 3).

Layer 5 (processing).
"""

from .config import BackgroundConfig
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
    "BackgroundConfig",
    "DEFAULT_BACKGROUND_MASK",
    "MeshGrid",
    "MeshSplineField",
    "background_image",
    "estimate",
    "mesh_statistics",
    "subtract",
]
