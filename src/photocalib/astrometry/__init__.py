"""World coordinate systems with exact Jacobians: SkyWcs, pixel areas, tangent planes.

Layer 2 of photocalib: imports fields, never anything above.
"""

from .skywcs import SkyWcs
from .tangent import mean_pointing, sky_to_tangent, tangent_to_sky, unit_vectors, vectors_to_sky

__all__ = [
    "SkyWcs",
    "mean_pointing",
    "sky_to_tangent",
    "tangent_to_sky",
    "unit_vectors",
    "vectors_to_sky",
]
