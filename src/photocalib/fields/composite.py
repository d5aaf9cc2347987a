"""Products and quotients of fields, built by ``*`` and ``/``."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import InputError
from ..geom import Box
from .base import BoundedField, field_from_table, register_field

__all__ = ["ProductField", "QuotientField"]


def _common_bbox(fields: list[BoundedField]) -> Box | None:
    boxes = {f.bbox for f in fields if f.bbox is not None}
    if len(boxes) > 1:
        raise InputError(
            "cannot combine fields on different boxes: " + ", ".join(str(b) for b in boxes)
        )
    return boxes.pop() if boxes else None


def _pack(fields: list[BoundedField]) -> Table:
    """Nest child tables as serialised FITS bytes in one column (no pickle)."""
    import io

    blobs = []
    for f in fields:
        buf = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), f.to_hdu()]).writeto(buf)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    length = max(len(b) for b in blobs)
    data = np.zeros((len(blobs), length), dtype=np.uint8)
    for i, b in enumerate(blobs):
        data[i, : len(b)] = b
    return Table({"child_fits": data, "child_nbytes": [len(b) for b in blobs]})


def _unpack(table: Table) -> list[BoundedField]:
    import io

    try:
        data = np.asarray(table["child_fits"])
        nbytes = np.asarray(table["child_nbytes"])
    except KeyError as exc:
        raise InputError(f"composite field table lacks column {exc}") from exc
    fields = []
    for row, n in zip(data, nbytes, strict=True):
        try:
            with fits.open(io.BytesIO(row[: int(n)].tobytes())) as hdul:
                fields.append(field_from_table(Table.read(hdul[1])))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt nested bytes
            raise InputError(f"composite field table has a corrupt child: {exc}") from exc
    return fields


@register_field
class ProductField(BoundedField):
    """The product of several fields, ``f1 * f2 * ...``, on their common box.

    Constant factors are folded into one scalar, so ``2 * field * 3`` costs one multiply per
    pixel on top of evaluating ``field``.
    """

    def __init__(self, *factors: BoundedField) -> None:
        flat: list[BoundedField] = []
        for f in factors:
            if not isinstance(f, BoundedField):
                raise InputError(f"ProductField factors must be BoundedFields, got {type(f).__name__}")
            flat.extend(f.factors if isinstance(f, ProductField) else [f])
        if not flat:
            raise InputError("ProductField needs at least one factor")
        self._bbox = _common_bbox(flat)
        scale = 1.0
        rest = []
        for f in flat:
            if f.is_constant:
                scale *= f.value  # type: ignore[attr-defined]
            else:
                rest.append(f)
        self._scale = scale
        self._rest = tuple(rest)
        self._factors = tuple(flat)

    @property
    def bbox(self) -> Box | None:
        return self._bbox

    @property
    def factors(self) -> tuple[BoundedField, ...]:
        """The factors, as given (nested products flattened)."""
        return self._factors

    @property
    def is_constant(self) -> bool:  # type: ignore[override]
        return not self._rest

    @property
    def value(self) -> float:
        """The product's value when every factor is constant."""
        if self._rest:
            raise InputError("ProductField.value is defined only when every factor is constant")
        return self._scale

    def _evaluate(self, x, y):
        out = np.full(x.shape, self._scale)
        for f in self._rest:
            out *= f._evaluate(x, y)
        return out

    def _fill_rows(self, y0, y1):
        box = self._require_bbox("fill()")
        out = np.full((y1 - y0, box.width), self._scale)
        for f in self._rest:
            out *= f._fill_rows(y0, y1)
        return out

    def integrate(self) -> float:
        if len(self._rest) == 0:
            return self._scale * self._require_bbox("integrate()").area
        if len(self._rest) == 1:
            return self._scale * self._rest[0].integrate()
        return super().integrate()

    def _to_table(self) -> Table:
        return _pack(list(self._factors))

    @classmethod
    def _from_table(cls, table: Table) -> ProductField:
        return cls(*_unpack(table))

    def __repr__(self) -> str:
        return "ProductField(" + ", ".join(repr(f) for f in self._factors) + ")"


@register_field
class QuotientField(BoundedField):
    """The quotient ``numerator / denominator`` of two fields on their common box."""

    def __init__(self, numerator: BoundedField, denominator: BoundedField) -> None:
        for f in (numerator, denominator):
            if not isinstance(f, BoundedField):
                raise InputError(f"QuotientField needs BoundedFields, got {type(f).__name__}")
        if denominator.is_constant and denominator.value == 0.0:  # type: ignore[attr-defined]
            raise InputError("QuotientField: division by a constant zero field")
        self._num = numerator
        self._den = denominator
        self._bbox = _common_bbox([numerator, denominator])

    @property
    def bbox(self) -> Box | None:
        return self._bbox

    @property
    def numerator(self) -> BoundedField:
        return self._num

    @property
    def denominator(self) -> BoundedField:
        return self._den

    @property
    def is_constant(self) -> bool:  # type: ignore[override]
        return self._num.is_constant and self._den.is_constant

    @property
    def value(self) -> float:
        return self._num.value / self._den.value  # type: ignore[attr-defined]

    def _evaluate(self, x, y):
        return self._num._evaluate(x, y) / self._den._evaluate(x, y)

    def _fill_rows(self, y0, y1):
        return self._rows(self._num, y0, y1) / self._rows(self._den, y0, y1)

    def _rows(self, f: BoundedField, y0: int, y1: int):
        # A child without a box (an unbounded constant) cannot fill rows itself; the quotient's
        # box supplies the width, and a constant broadcasts.
        if f.bbox is None and f.is_constant:
            return f.value  # type: ignore[attr-defined]
        return f._fill_rows(y0, y1)

    def integrate(self) -> float:
        if self._den.is_constant:
            return self._num.integrate() / self._den.value  # type: ignore[attr-defined]
        return super().integrate()

    def _to_table(self) -> Table:
        return _pack([self._num, self._den])

    @classmethod
    def _from_table(cls, table: Table) -> QuotientField:
        children = _unpack(table)
        if len(children) != 2:
            raise InputError(f"QuotientField table needs 2 children, got {len(children)}")
        return cls(*children)

    def __repr__(self) -> str:
        return f"QuotientField({self._num!r}, {self._den!r})"
