"""Spatially varying fields on pixel boxes: the BoundedField family.

Layer 1 of photocalib: pure NumPy, imports nothing above :mod:`photocalib.geom`.
"""

from .base import BoundedField, field_from_table, read_field, register_field
from .chebyshev import ChebyshevField
from .composite import ProductField, QuotientField
from .constant import ConstantField
from .pixel_area import PixelAreaField
from .robust import RobustFit, robust_field_fit
from .spline import SplineField

__all__ = [
    "BoundedField",
    "ChebyshevField",
    "ConstantField",
    "PixelAreaField",
    "ProductField",
    "QuotientField",
    "RobustFit",
    "SplineField",
    "field_from_table",
    "read_field",
    "register_field",
    "robust_field_fit",
]
