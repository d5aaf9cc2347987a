"""A field with the same value everywhere."""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from ..errors import InputError
from ..geom import Box
from .base import BoundedField, bbox_from_meta, register_field

__all__ = ["ConstantField"]


@register_field
class ConstantField(BoundedField):
    """A constant ``value`` on ``bbox`` (or everywhere, when ``bbox`` is ``None``).

    Examples
    --------
    >>> from photocalib import Box, ConstantField
    >>> f = ConstantField(2.0, Box(0, 0, 4, 3))
    >>> f.fill().sum(), f.integrate(), f.mean()
    (np.float64(24.0), 24.0, 2.0)
    """

    is_constant = True

    def __init__(self, value: float, bbox: Box | None = None) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise InputError(f"ConstantField value must be finite, got {value}")
        self._value = value
        self._bbox = bbox

    @property
    def value(self) -> float:
        """The constant value."""
        return self._value

    @property
    def bbox(self) -> Box | None:
        return self._bbox

    def _evaluate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.full(x.shape, self._value)

    def _fill_rows(self, y0: int, y1: int) -> np.ndarray:
        box = self._require_bbox("fill()")
        return np.full((y1 - y0, box.width), self._value)

    def fill(self, dtype=np.float64, out=None) -> np.ndarray:
        box = self._require_bbox("fill()")
        if out is None:
            return np.full(box.shape, self._value, dtype=dtype)
        out[...] = self._value
        return out

    def integrate(self) -> float:
        return self._value * self._require_bbox("integrate()").area

    def mean(self) -> float:
        return self._value

    def with_bbox(self, bbox: Box | None) -> ConstantField:
        """The same constant on another box."""
        return ConstantField(self._value, bbox)

    def _to_table(self) -> Table:
        return Table({"value": [self._value]})

    @classmethod
    def _from_table(cls, table: Table) -> ConstantField:
        try:
            value = float(table["value"][0])
        except (KeyError, IndexError) as exc:
            raise InputError("ConstantField table needs one row with a 'value' column") from exc
        return cls(value, bbox_from_meta(table.meta))

    def __repr__(self) -> str:
        return f"ConstantField({self._value!r}, bbox={self._bbox!r})"
