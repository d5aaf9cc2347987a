"""Two-dimensional Chebyshev polynomial fields: fitting, approximation, fast filling."""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from numpy.polynomial import chebyshev as C

from ..errors import InputError
from ..geom import Box
from .base import BoundedField, register_field, require_bbox_from_meta

__all__ = ["ChebyshevField"]


def _norm_order(order) -> tuple[int, int]:
    """``order`` as ``(order_x, order_y)`` from an int or a pair."""
    if np.ndim(order) == 0:
        ox = oy = int(order)
    else:
        ox, oy = (int(o) for o in order)
    if ox < 0 or oy < 0:
        raise InputError(f"Chebyshev order must be non-negative, got {order!r}")
    return ox, oy


def _cheb_integrals(n: int) -> np.ndarray:
    """∫_{-1}^{1} T_k(u) du for k = 0..n: 2/(1-k²) for even k, 0 for odd k."""
    k = np.arange(n + 1, dtype=np.float64)
    out = np.zeros(n + 1)
    even = (k % 2) == 0
    out[even] = 2.0 / (1.0 - k[even] ** 2)
    return out


@register_field
class ChebyshevField(BoundedField):
    r"""A tensor-product Chebyshev polynomial on a box.

    .. math:: f(x, y) = \sum_{j=0}^{o_y} \sum_{i=0}^{o_x} c_{ji} \, T_j(v)\, T_i(u),

    with ``u`` and ``v`` the pixel coordinates mapped linearly from the box's edges
    (:attr:`Box.extent`) onto ``[-1, 1]``. ``coefficients`` has shape ``(o_y + 1, o_x + 1)``
    (rows follow y, as images do). A *triangular* field has ``c_ji = 0`` for ``i + j`` above its
    order, as fitted by :meth:`fit` by default.

    :meth:`fill` costs two small matrix products, so filling a 4k×4k image takes about as long
    as one pass of NumPy over it; :meth:`mean` and :meth:`integrate` are exact.

    Parameters
    ----------
    coefficients : array_like, shape (o_y + 1, o_x + 1)
        Chebyshev coefficients ``c[j, i]`` of ``T_j(v) T_i(u)``.
    bbox : Box
        The box whose edges map onto ``[-1, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> from photocalib import Box, ChebyshevField
    >>> f = ChebyshevField([[1.0, 0.5], [0.2, 0.0]], Box(0, 0, 100, 50))
    >>> round(f.mean(), 12)
    1.0
    """

    def __init__(self, coefficients, bbox: Box) -> None:
        c = np.array(coefficients, dtype=np.float64, ndmin=2)
        if c.ndim != 2:
            raise InputError(f"ChebyshevField coefficients must be 2-D, got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise InputError("ChebyshevField coefficients must be finite")
        if not isinstance(bbox, Box):
            raise InputError(f"ChebyshevField needs a Box, got {bbox!r}")
        c.setflags(write=False)
        self._c = c
        self._bbox = bbox
        xmin, xmax, ymin, ymax = bbox.extent
        self._sx = 2.0 / (xmax - xmin)
        self._sy = 2.0 / (ymax - ymin)
        self._ox = xmin
        self._oy = ymin

    # -- properties ----------------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        return self._bbox

    @property
    def coefficients(self) -> np.ndarray:
        """Read-only coefficients ``c[j, i]`` of ``T_j(v) T_i(u)``."""
        return self._c

    @property
    def order(self) -> tuple[int, int]:
        """``(order_x, order_y)``."""
        return self._c.shape[1] - 1, self._c.shape[0] - 1

    def _u(self, x):
        return (np.asarray(x, dtype=np.float64) - self._ox) * self._sx - 1.0

    def _v(self, y):
        return (np.asarray(y, dtype=np.float64) - self._oy) * self._sy - 1.0

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, x, y):
        # chebval2d(a, b, c) sums c[i, j] T_i(a) T_j(b): rows of c follow v.
        return C.chebval2d(self._v(y), self._u(x), self._c)

    def _basis_x(self, dtype=np.float64) -> np.ndarray:
        xs = np.arange(self._bbox.x0, self._bbox.x0 + self._bbox.width, dtype=np.float64)
        return C.chebvander(self._u(xs), self._c.shape[1] - 1).astype(dtype, copy=False)

    def _basis_y(self, y0: int, y1: int) -> np.ndarray:
        ys = np.arange(y0, y1, dtype=np.float64)
        return C.chebvander(self._v(ys), self._c.shape[0] - 1)

    def _fill_rows(self, y0, y1):
        return (self._basis_y(y0, y1) @ self._c) @ self._basis_x().T

    def fill(self, dtype=np.float64, out=None) -> np.ndarray:
        box = self._bbox
        dtype = np.dtype(dtype if out is None else out.dtype)
        if out is not None and out.shape != box.shape:
            raise InputError(f"fill(out=...) needs shape {box.shape}, got {out.shape}")
        # (ny, oy+1) @ (oy+1, ox+1) is tiny; the one big product writes straight into the output.
        left = (self._basis_y(box.y0, box.y0 + box.height) @ self._c).astype(dtype)
        right = np.ascontiguousarray(self._basis_x(dtype).T)
        if out is None:
            return left @ right
        np.matmul(left, right, out=out)
        return out

    def _apply(self, image, op, out):
        box = self._bbox
        image = np.asarray(image)
        if image.shape != box.shape:
            raise InputError(
                f"image shape {image.shape} does not match the field's box {box} (shape {box.shape})"
            )
        if out is None:
            out = np.empty(image.shape, dtype=np.result_type(image.dtype, np.float32))
        right = self._basis_x().T
        for r0 in range(0, box.height, 256):
            r1 = min(box.height, r0 + 256)
            values = (self._basis_y(box.y0 + r0, box.y0 + r1) @ self._c) @ right
            op(image[r0:r1], values, out=out[r0:r1], casting="unsafe")
        return out

    # -- integrals -----------------------------------------------------------------------------
    def integrate(self) -> float:
        oy, ox = self._c.shape
        iu = _cheb_integrals(ox - 1)
        iv = _cheb_integrals(oy - 1)
        # du dv = (sx sy) dx dy
        return float(iv @ self._c @ iu) / (self._sx * self._sy)

    def mean(self) -> float:
        return self.integrate() / self._bbox.area

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        x,
        y,
        z,
        weights=None,
        order=3,
        bbox: Box | None = None,
        triangular: bool = True,
    ) -> ChebyshevField:
        """Least-squares fit to scattered values.

        Parameters
        ----------
        x, y, z : array_like
            Pixel positions and values (1-D, same length).
        weights : array_like, optional
            Weights of the squared residuals (inverse variances), default all 1.
        order : int or (int, int)
            Polynomial order, or ``(order_x, order_y)``.
        bbox : Box
            The box of the field; the points should lie inside it.
        triangular : bool
            Keep only terms with ``i + j <= max(order)`` (default), as jointcal does; otherwise
            the full tensor product.

        Raises
        ------
        InputError
            Fewer finite points than free coefficients, non-finite input, or no bbox.
        """
        if bbox is None:
            raise InputError("ChebyshevField.fit needs bbox=Box(...)")
        ox, oy = _norm_order(order)
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        z = np.asarray(z, dtype=np.float64).ravel()
        w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if not (x.size == y.size == z.size == w.size):
            raise InputError("ChebyshevField.fit: x, y, z and weights must have the same length")
        good = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & np.isfinite(w) & (w > 0)
        x, y, z, w = x[good], y[good], z[good], w[good]
        field0 = cls(np.zeros((oy + 1, ox + 1)), bbox)
        jj, ii = np.meshgrid(np.arange(oy + 1), np.arange(ox + 1), indexing="ij")
        keep = (ii + jj <= max(ox, oy)) if triangular else np.ones_like(ii, dtype=bool)
        nterm = int(keep.sum())
        if x.size < nterm:
            raise InputError(
                f"ChebyshevField.fit: {x.size} usable points for {nterm} coefficients; "
                "lower the order or supply more points"
            )
        vu = C.chebvander(field0._u(x), ox)
        vv = C.chebvander(field0._v(y), oy)
        design = (vv[:, :, None] * vu[:, None, :])[:, keep]
        sw = np.sqrt(w)
        sol, *_ = np.linalg.lstsq(design * sw[:, None], z * sw, rcond=None)
        c = np.zeros((oy + 1, ox + 1))
        c[keep] = sol
        return cls(c, bbox)

    @classmethod
    def approximate(cls, field: BoundedField, order=8, bbox: Box | None = None) -> ChebyshevField:
        """Interpolate another field at Chebyshev nodes (full tensor product).

        Parameters
        ----------
        field : BoundedField
            The field to approximate (only :meth:`BoundedField.evaluate` is used).
        order : int or (int, int)
            Order of the approximation.
        bbox : Box, optional
            Defaults to ``field.bbox``.
        """
        bbox = bbox if bbox is not None else field.bbox
        if bbox is None:
            raise InputError("ChebyshevField.approximate needs a bounded field or bbox=")
        ox, oy = _norm_order(order)
        proto = cls(np.zeros((1, 1)), bbox)
        nu = C.chebpts1(ox + 1)
        nv = C.chebpts1(oy + 1)
        xs = (nu + 1.0) / proto._sx + proto._ox
        ys = (nv + 1.0) / proto._sy + proto._oy
        values = field.evaluate(xs[None, :], ys[:, None])  # (oy+1, ox+1)
        # Discrete Chebyshev transform at first-kind nodes, separably along each axis.
        vu = C.chebvander(nu, ox)
        vv = C.chebvander(nv, oy)
        c = np.linalg.solve(vv, np.linalg.solve(vu, values.T).T)
        return cls(c, bbox)

    # -- persistence ---------------------------------------------------------------------------
    def _to_table(self) -> Table:
        oy, ox = self._c.shape
        t = Table({"coefficients": self._c.reshape(1, oy, ox)})
        t.meta.update(ORDER_X=ox - 1, ORDER_Y=oy - 1)
        return t

    @classmethod
    def _from_table(cls, table: Table) -> ChebyshevField:
        bbox = require_bbox_from_meta(table.meta, "ChebyshevField")
        try:
            c = np.asarray(table["coefficients"][0], dtype=np.float64)
        except (KeyError, IndexError) as exc:
            raise InputError("ChebyshevField table needs a 'coefficients' column") from exc
        return cls(np.atleast_2d(c), bbox)

    def __repr__(self) -> str:
        ox, oy = self.order
        return f"ChebyshevField(order=({ox}, {oy}), bbox={self._bbox!r}, mean={self.mean():.6g})"
