"""The BoundedField interface: a smooth real function on a pixel bounding box.

Every spatially varying quantity in photocalib (pixel area, flats, calibrations, backgrounds)
is a BoundedField; this base class is the whole interface and its documentation.
"""

from __future__ import annotations

import abc
import numbers
import os
from typing import Any, ClassVar

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import InputError
from ..geom import Box

__all__ = ["BoundedField", "register_field", "field_from_table", "read_field"]

#: Registry of persistable field classes, keyed by the name written to the ``FIELD`` keyword.
_REGISTRY: dict[str, type[BoundedField]] = {}

#: Rows per block when a field is filled or applied block by block (bounds temporary memory).
_BLOCK_ROWS = 256


def register_field(cls: type[BoundedField]) -> type[BoundedField]:
    """Class decorator: make a field class readable from a FITS table by its ``FIELD`` name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _as_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    try:
        return np.broadcast_arrays(x, y)
    except ValueError as exc:
        raise InputError(f"x and y cannot be broadcast together: shapes {x.shape} and {y.shape}") from exc


class BoundedField(abc.ABC):
    r"""A real function :math:`f(x, y)` of pixel position on a bounding box.

    Coordinates are pixel positions, 0-based with pixel centres on integers; images are
    indexed ``[y, x]``. The box ``bbox`` covers the continuous region
    :math:`[x_0-\tfrac12, x_0+w-\tfrac12] \times [y_0-\tfrac12, y_0+h-\tfrac12]`, the pixel
    *edges*, so :meth:`integrate` is the integral of the function over the area of the pixels
    and :meth:`mean` is that integral divided by :math:`w h`. :meth:`fill` samples the function
    at pixel *centres*; the sum of a filled image differs from :meth:`integrate` by about
    :math:`\tfrac{1}{24}\sum\nabla^2 f`, negligible for smooth fields.

    Fields are immutable value objects. ``*`` and ``/`` with another field or a scalar give a
    new field (:class:`ProductField`, :class:`QuotientField`); nothing is evaluated until
    asked. Every field persists to and from a FITS binary table (:meth:`to_table`,
    :meth:`write`, :func:`read_field`) without pickle.

    Subclasses supply ``_evaluate(x, y)`` (float64 arrays of one shape) and, where they can do
    better than point-by-point evaluation, ``_fill_rows``, ``mean`` and ``integrate``; to be
    persistable they supply ``_to_table`` and ``_from_table`` and are decorated with
    :func:`register_field`.
    """

    #: Whether the field is the same constant everywhere (lets products fold scalars).
    is_constant: ClassVar[bool] = False

    # -- interface -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def bbox(self) -> Box | None:
        """The pixel bounding box on which the field is defined (``None``: everywhere)."""

    @abc.abstractmethod
    def _evaluate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Evaluate at float64 arrays of one shape; return float64 of that shape."""

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, x, y) -> np.ndarray:
        """Evaluate the field at pixel positions.

        Parameters
        ----------
        x, y : array_like
            Pixel coordinates (0-based, pixel centres on integers); any broadcastable shapes.

        Returns
        -------
        numpy.ndarray
            float64 values with the broadcast shape of ``x`` and ``y``.
        """
        xx, yy = _as_xy(x, y)
        return np.asarray(self._evaluate(xx, yy), dtype=np.float64)

    def __call__(self, x, y) -> np.ndarray:
        """Same as :meth:`evaluate`."""
        return self.evaluate(x, y)

    def _require_bbox(self, what: str) -> Box:
        if self.bbox is None:
            raise InputError(
                f"{type(self).__name__} has no bounding box, so {what} is undefined; "
                "multiply it by a bounded field or give it a bbox"
            )
        return self.bbox

    def _fill_rows(self, y0: int, y1: int) -> np.ndarray:
        """Values at pixel centres of rows ``y0 <= y < y1`` (absolute), float64 ``(y1-y0, w)``."""
        box = self._require_bbox("fill()")
        xs = np.arange(box.x0, box.x0 + box.width, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)
        xx, yy = np.meshgrid(xs, ys)
        return self._evaluate(xx, yy)

    def fill(self, dtype=np.float64, out: np.ndarray | None = None) -> np.ndarray:
        """Sample the field at every pixel centre of its box.

        Parameters
        ----------
        dtype : numpy dtype, optional
            dtype of the image returned (float64 by default; float32 halves the memory).
        out : numpy.ndarray, optional
            Array of shape ``bbox.shape`` to fill in place.

        Returns
        -------
        numpy.ndarray
            Image of shape ``(bbox.height, bbox.width)``.
        """
        box = self._require_bbox("fill()")
        if out is None:
            out = np.empty(box.shape, dtype=dtype)
        elif out.shape != box.shape:
            raise InputError(f"fill(out=...) needs shape {box.shape}, got {out.shape}")
        for r0 in range(0, box.height, _BLOCK_ROWS):
            r1 = min(box.height, r0 + _BLOCK_ROWS)
            out[r0:r1] = self._fill_rows(box.y0 + r0, box.y0 + r1)
        return out

    def _apply(self, image: np.ndarray, op, out: np.ndarray | None) -> np.ndarray:
        box = self._require_bbox("applying the field to an image")
        image = np.asarray(image)
        if image.shape != box.shape:
            raise InputError(
                f"image shape {image.shape} does not match the field's box {box} "
                f"(shape {box.shape})"
            )
        if out is None:
            out = np.empty(image.shape, dtype=np.result_type(image.dtype, np.float32))
        for r0 in range(0, box.height, _BLOCK_ROWS):
            r1 = min(box.height, r0 + _BLOCK_ROWS)
            values = self._fill_rows(box.y0 + r0, box.y0 + r1)
            op(image[r0:r1], values, out=out[r0:r1], casting="unsafe")
        return out

    def multiply_image(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``image * field`` sampled at pixel centres, block by block.

        Parameters
        ----------
        image : numpy.ndarray
            Array of shape ``bbox.shape``.
        out : numpy.ndarray, optional
            Where to write the result; pass ``out=image`` to work in place.
        """
        return self._apply(image, np.multiply, out)

    def divide_image(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``image / field`` sampled at pixel centres (see :meth:`multiply_image`)."""
        return self._apply(image, np.divide, out)

    # -- integrals -----------------------------------------------------------------------------
    def integrate(self) -> float:
        """Integral of the field over the area of its box, in (field unit) × pixel².

        The default uses 8-point Gauss–Legendre quadrature on a grid of 64×64 cells, exact to
        machine precision for smooth fields; subclasses with a closed form override it.
        """
        box = self._require_bbox("integrate()")
        xmin, xmax, ymin, ymax = box.extent
        nodes, weights = np.polynomial.legendre.leggauss(8)
        ncell_x = min(64, box.width)
        ncell_y = min(64, box.height)
        ex = np.linspace(xmin, xmax, ncell_x + 1)
        ey = np.linspace(ymin, ymax, ncell_y + 1)
        hx = 0.5 * np.diff(ex)
        hy = 0.5 * np.diff(ey)
        xs = ((ex[:-1] + ex[1:]) / 2)[:, None] + hx[:, None] * nodes[None, :]
        ys = ((ey[:-1] + ey[1:]) / 2)[:, None] + hy[:, None] * nodes[None, :]
        wx = (hx[:, None] * weights[None, :]).ravel()
        wy = (hy[:, None] * weights[None, :]).ravel()
        values = self.evaluate(xs.ravel()[None, :], ys.ravel()[:, None])
        return float(wy @ values @ wx)

    def mean(self) -> float:
        """Mean of the field over the area of its box (``integrate() / area``)."""
        box = self._require_bbox("mean()")
        return self.integrate() / box.area

    # -- algebra -------------------------------------------------------------------------------
    def __mul__(self, other) -> BoundedField:
        from .composite import ProductField
        from .constant import ConstantField

        if isinstance(other, numbers.Real):
            other = ConstantField(float(other))
        if not isinstance(other, BoundedField):
            return NotImplemented
        return ProductField(self, other)

    def __rmul__(self, other) -> BoundedField:
        from .composite import ProductField
        from .constant import ConstantField

        if isinstance(other, numbers.Real):
            return ProductField(ConstantField(float(other)), self)
        return NotImplemented

    def __truediv__(self, other) -> BoundedField:
        from .composite import QuotientField
        from .constant import ConstantField

        if isinstance(other, numbers.Real):
            other = ConstantField(float(other))
        if not isinstance(other, BoundedField):
            return NotImplemented
        return QuotientField(self, other)

    def __rtruediv__(self, other) -> BoundedField:
        from .composite import QuotientField
        from .constant import ConstantField

        if isinstance(other, numbers.Real):
            return QuotientField(ConstantField(float(other)), self)
        return NotImplemented

    # -- persistence ---------------------------------------------------------------------------
    def _to_table(self) -> Table:
        raise InputError(f"{type(self).__name__} cannot be written to a FITS table")

    @classmethod
    def _from_table(cls, table: Table) -> BoundedField:
        raise InputError(f"{cls.__name__} cannot be read from a FITS table")

    def to_table(self) -> Table:
        """This field as an astropy Table; ``meta['FIELD']`` names the class, plus the bbox."""
        table = self._to_table()
        table.meta["FIELD"] = type(self).__name__
        if self.bbox is not None:
            box = self.bbox
            table.meta.update(BBOX_X0=box.x0, BBOX_Y0=box.y0, BBOX_W=box.width, BBOX_H=box.height)
        return table

    def to_hdu(self, name: str = "FIELD") -> fits.BinTableHDU:
        """This field as a FITS binary table HDU."""
        hdu = fits.table_to_hdu(self.to_table())
        hdu.name = name
        return hdu

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the field to a FITS file (atomically: a temporary file renamed into place)."""
        from .._io import atomic_write_hdulist

        atomic_write_hdulist(fits.HDUList([fits.PrimaryHDU(), self.to_hdu()]), path, overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike) -> BoundedField:
        """Read a field written by :meth:`write`."""
        field = read_field(path)
        if not isinstance(field, cls):
            raise InputError(f"{path}: holds a {type(field).__name__}, not a {cls.__name__}")
        return field

    def __eq__(self, other: Any) -> bool:  # value semantics through the persisted form
        if type(self) is not type(other):
            return NotImplemented
        return _tables_equal(self.to_table(), other.to_table())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.bbox))


def _tables_equal(a: Table, b: Table) -> bool:
    if a.colnames != b.colnames or len(a) != len(b):
        return False
    skip = {"COMMENT", "HISTORY"}
    ma = {k: v for k, v in a.meta.items() if k not in skip}
    mb = {k: v for k, v in b.meta.items() if k not in skip}
    if ma.keys() != mb.keys():
        return False
    for k in ma:
        va, vb = ma[k], mb[k]
        if isinstance(va, float) or isinstance(vb, float):
            if not (va == vb or (np.isnan(va) and np.isnan(vb))):
                return False
        elif va != vb:
            return False
    return all(np.array_equal(np.asarray(a[c]), np.asarray(b[c])) for c in a.colnames)


def bbox_from_meta(meta) -> Box | None:
    """The bbox written by :meth:`BoundedField.to_table`, or ``None`` if there is none."""
    if "BBOX_W" not in meta:
        return None
    try:
        return Box(int(meta["BBOX_X0"]), int(meta["BBOX_Y0"]), int(meta["BBOX_W"]), int(meta["BBOX_H"]))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"field table has a malformed bounding box: {exc}") from exc


def require_bbox_from_meta(meta, field_name: str) -> Box:
    """The bbox written by :meth:`BoundedField.to_table`; InputError naming the field if absent."""
    bbox = bbox_from_meta(meta)
    if bbox is None:
        raise InputError(f"{field_name} table lacks its bounding box (BBOX_* keywords)")
    return bbox


def field_from_table(table: Table) -> BoundedField:
    """Rebuild a field from :meth:`BoundedField.to_table` output; never executes code."""
    name = table.meta.get("FIELD")
    if name is None:
        raise InputError("table has no FIELD keyword, so it is not a photocalib field")
    cls = _REGISTRY.get(str(name))
    if cls is None:
        raise InputError(
            f"unknown field type FIELD={name!r}; known: {', '.join(sorted(_REGISTRY))}"
        )
    return cls._from_table(table)


def read_field(path: str | os.PathLike, hdu: int | str = 1) -> BoundedField:
    """Read a field from a FITS file written by :meth:`BoundedField.write`.

    Raises
    ------
    InputError
        A missing, truncated or non-FITS file, no such HDU, not a field table, or a damaged one
        (the message names the path and HDU).
    """
    from .._io import open_fits

    with open_fits(path) as hdul:
        try:
            table = Table.read(hdul[hdu])
        except (KeyError, IndexError) as exc:
            raise InputError(f"{path}: no HDU {hdu!r} holding a field") from exc
        except Exception as exc:  # astropy raises many types for a non-table HDU
            raise InputError(f"{path}: HDU {hdu!r} is not a field table ({exc})") from exc
    try:
        return field_from_table(table)
    except InputError as exc:
        raise InputError(f"{path}[{hdu}]: {exc}") from exc
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
        # A damaged table (a keyword of the wrong type, a column of the wrong shape) cannot be
        # rebuilt; say which file and HDU rather than letting a NumPy error through.
        raise InputError(f"{path}[{hdu}]: damaged field table ({type(exc).__name__}: {exc}); "
                         "write the field again") from exc
