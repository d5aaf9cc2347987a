"""Tensor-product cubic-spline fields on a grid of nodes, for small-scale structure (tree rings).

Interpolating (not-a-knot) cubic splines through node values; filled separably, integrated
exactly, fitted to scattered data by linear least squares.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.interpolate import BSpline, make_interp_spline
from scipy.sparse import csr_array, diags, identity, kron
from scipy.sparse.linalg import spsolve

from ..errors import InputError
from ..geom import Box
from .base import BoundedField, register_field, require_bbox_from_meta

__all__ = ["SplineField"]

_K = 3  # cubic
_CHUNK = 1 << 16  # points per block when evaluating scattered positions (bounds temporaries)


def _check_grid(grid, name: str) -> np.ndarray:
    g = np.array(grid, dtype=np.float64).ravel()
    if g.size < _K + 1:
        raise InputError(f"SplineField {name} needs at least {_K + 1} nodes, got {g.size}")
    if not np.all(np.isfinite(g)):
        raise InputError(f"SplineField {name} must be finite")
    if not np.all(np.diff(g) > 0):
        raise InputError(f"SplineField {name} must be strictly increasing")
    g.setflags(write=False)
    return g


def _basis(t: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values ``(n, 4)`` of the four cubic B-splines non-zero at each point."""
    dm = BSpline.design_matrix(points, t, _K, extrapolate=True)
    # Each row holds exactly k + 1 stored entries (zeros included), in column order.
    return dm.indices.reshape(-1, _K + 1), dm.data.reshape(-1, _K + 1)


def _basis_integrals(t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """∫_lo^hi B_i(u) du for every B-spline of knot vector ``t`` (exact: piecewise cubics)."""
    n = len(t) - _K - 1
    return np.asarray(BSpline(t, np.eye(n), _K, extrapolate=True).integrate(lo, hi), dtype=np.float64)


def _second_differences(n: int):
    """DᵀD for the second-difference operator D on n points (sparse, n x n)."""
    d = diags([np.ones(n - 2), -2.0 * np.ones(n - 2), np.ones(n - 2)], [0, 1, 2], shape=(n - 2, n))
    return (d.T @ d).tocsr()


def _norm_nodes(nodes) -> tuple[int, int]:
    if np.ndim(nodes) == 0:
        nx = ny = int(nodes)
    else:
        nx, ny = (int(n) for n in nodes)
    if nx < _K + 1 or ny < _K + 1:
        raise InputError(f"SplineField needs at least {_K + 1} nodes per axis, got {nodes!r}")
    return nx, ny


@register_field
class SplineField(BoundedField):
    r"""A bicubic spline interpolating values on a grid of nodes.

    .. math:: f(x, y) = \sum_{j, i} C_{ji}\, B_j(y)\, B_i(x)

    where :math:`B` are cubic B-splines whose knots are the nodes with the *not-a-knot* end
    condition, and :math:`C` is chosen so that :math:`f` passes through ``values`` at every
    node. The not-a-knot spline reproduces any cubic polynomial exactly along each axis, so
    the field reproduces every bicubic polynomial :math:`\sum_{i,j \le 3} a_{ij} x^i y^j`
    exactly, and it interpolates a smooth function with error :math:`O(h^4)` for node
    spacing :math:`h`. Outside the nodes the end polynomial pieces are extended.

    :meth:`fill` is separable: the four non-zero B-splines of every column are computed once,
    so each row costs one small product with :math:`C` and four multiply-adds per pixel.
    :meth:`integrate` and :meth:`mean` are exact.

    Parameters
    ----------
    bbox : Box
        The box of the field.
    grid_x, grid_y : array_like
        Strictly increasing node positions in pixels (at least 4 each); usually a regular grid
        spanning ``bbox.extent`` (see :meth:`on_grid`).
    values : array_like, shape (len(grid_y), len(grid_x))
        Field values at the nodes, indexed ``[y, x]`` like images.

    Raises
    ------
    InputError
        Too few, unordered or non-finite nodes; values of the wrong shape or not finite.

    Examples
    --------
    >>> import numpy as np
    >>> from photocalib import Box
    >>> box = Box(0, 0, 100, 80)
    >>> gx, gy = SplineField.regular_grid(box, (6, 5))
    >>> f = SplineField(box, gx, gy, 2.0 + gx[None, :] ** 3 / 1e6 + 0 * gy[:, None])
    >>> round(float(f.evaluate(10.0, 20.0)), 12)   # cubics are reproduced exactly
    2.001
    >>> round(f.mean(), 12)                        # 2 + mean of x³/1e6 over [-0.5, 99.5]
    2.245037375
    """

    def __init__(self, bbox: Box, grid_x, grid_y, values) -> None:
        if not isinstance(bbox, Box):
            raise InputError(f"SplineField needs a Box, got {bbox!r}")
        gx = _check_grid(grid_x, "grid_x")
        gy = _check_grid(grid_y, "grid_y")
        v = np.array(values, dtype=np.float64)
        if v.shape != (gy.size, gx.size):
            raise InputError(
                f"SplineField values must have shape (len(grid_y), len(grid_x)) = "
                f"{(gy.size, gx.size)}, got {v.shape}"
            )
        if not np.all(np.isfinite(v)):
            raise InputError("SplineField values must be finite")
        v.setflags(write=False)
        self._bbox = bbox
        self._gx, self._gy, self._values = gx, gy, v
        # Interpolate along x for every node row, then along y: a tensor-product interpolant.
        sx = make_interp_spline(gx, v.T, k=_K)  # c: (ncoef_x, ny)
        sy = make_interp_spline(gy, sx.c.T, k=_K)  # c: (ncoef_y, ncoef_x)
        self._tx = np.asarray(sx.t, dtype=np.float64)
        self._ty = np.asarray(sy.t, dtype=np.float64)
        self._c = np.ascontiguousarray(sy.c, dtype=np.float64)  # (ncoef_y, ncoef_x)
        self._c.setflags(write=False)
        self._col_basis: np.ndarray | None = None

    # -- properties ----------------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        return self._bbox

    @property
    def grid_x(self) -> np.ndarray:
        """Node x positions (read-only)."""
        return self._gx

    @property
    def grid_y(self) -> np.ndarray:
        """Node y positions (read-only)."""
        return self._gy

    @property
    def values(self) -> np.ndarray:
        """Values at the nodes, ``[y, x]`` (read-only)."""
        return self._values

    @property
    def coefficients(self) -> np.ndarray:
        """B-spline coefficients ``C[j, i]`` (read-only)."""
        return self._c

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, x, y):
        shape = x.shape
        xf = x.ravel()
        yf = y.ravel()
        out = np.empty(xf.size)
        for s in range(0, xf.size, _CHUNK):
            sl = slice(s, s + _CHUNK)
            ix, wx = _basis(self._tx, xf[sl])
            iy, wy = _basis(self._ty, yf[sl])
            # 4x4 coefficients around each point, weighted by the y and x basis values.
            block = self._c[iy[:, :, None], ix[:, None, :]]
            out[sl] = np.einsum("na,nb,nab->n", wy, wx, block)
        return out.reshape(shape)

    def _columns(self) -> np.ndarray:
        """G = C Bxᵀ, ``(ncoef_y, width)``: every coefficient row's spline sampled at the columns."""
        if self._col_basis is None:
            xs = np.arange(self._bbox.x0, self._bbox.x0 + self._bbox.width, dtype=np.float64)
            bx = BSpline.design_matrix(xs, self._tx, _K, extrapolate=True)  # (width, ncoef_x)
            self._col_basis = np.ascontiguousarray((bx @ self._c.T).T)
        return self._col_basis

    def _fill_rows(self, y0, y1):
        ys = np.arange(y0, y1, dtype=np.float64)
        by = BSpline.design_matrix(ys, self._ty, _K, extrapolate=True)  # (rows, ncoef_y), 4 per row
        # Sparse × dense: four multiply-adds of a precomputed row of G per output pixel.
        return by @ self._columns()

    # -- integrals -----------------------------------------------------------------------------
    def integrate(self) -> float:
        xmin, xmax, ymin, ymax = self._bbox.extent
        ix = _basis_integrals(self._tx, xmin, xmax)
        iy = _basis_integrals(self._ty, ymin, ymax)
        return float(iy @ self._c @ ix)

    def mean(self) -> float:
        return self.integrate() / self._bbox.area

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def regular_grid(bbox: Box, nodes) -> tuple[np.ndarray, np.ndarray]:
        """``(grid_x, grid_y)``: ``nodes = n`` or ``(nx, ny)`` evenly spaced nodes from edge to
        edge of ``bbox`` (:attr:`Box.extent`)."""
        nx, ny = _norm_nodes(nodes)
        xmin, xmax, ymin, ymax = bbox.extent
        return np.linspace(xmin, xmax, nx), np.linspace(ymin, ymax, ny)

    @classmethod
    def on_grid(cls, values, bbox: Box) -> SplineField:
        """A field through ``values[y, x]`` on a regular grid spanning ``bbox`` edge to edge."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2:
            raise InputError(f"SplineField.on_grid needs 2-D values, got shape {v.shape}")
        gx, gy = cls.regular_grid(bbox, (v.shape[1], v.shape[0]))
        return cls(bbox, gx, gy, v)

    @classmethod
    def approximate(cls, field: BoundedField, nodes=16, bbox: Box | None = None) -> SplineField:
        """Interpolate another field at a regular grid of ``nodes`` (n or (nx, ny)) nodes."""
        bbox = bbox if bbox is not None else field.bbox
        if bbox is None:
            raise InputError("SplineField.approximate needs a bounded field or bbox=")
        gx, gy = cls.regular_grid(bbox, nodes)
        return cls(bbox, gx, gy, field.evaluate(gx[None, :], gy[:, None]))

    @classmethod
    def fit(cls, x, y, z, weights=None, nodes=8, bbox: Box | None = None) -> SplineField:
        """Weighted least-squares fit to scattered (or binned) values.

        Parameters
        ----------
        x, y, z : array_like
            Pixel positions and values (1-D, same length).
        weights : array_like, optional
            Weights of the squared residuals (inverse variances), default 1.
        nodes : int or (int, int)
            Number of nodes per axis on a regular grid spanning ``bbox``.
        bbox : Box
            The box of the field.

        Returns
        -------
        SplineField
            The least-squares spline, stored by its values at the nodes. Where the data leave
            a coefficient unconstrained (a gap wider than the node spacing) a faint curvature
            penalty bridges the gap smoothly.

        Raises
        ------
        InputError
            No bbox, mismatched lengths, or fewer usable points than nodes.
        """
        if bbox is None:
            raise InputError("SplineField.fit needs bbox=Box(...)")
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        z = np.asarray(z, dtype=np.float64).ravel()
        w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if not (x.size == y.size == z.size == w.size):
            raise InputError("SplineField.fit: x, y, z and weights must have the same length")
        good = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & np.isfinite(w) & (w > 0)
        x, y, z, w = x[good], y[good], z[good], w[good]
        gx, gy = cls.regular_grid(bbox, nodes)
        if x.size < gx.size * gy.size:
            raise InputError(
                f"SplineField.fit: {x.size} usable points for {gx.size * gy.size} nodes; "
                "use fewer nodes or more points"
            )
        # Same knots as the interpolant on this grid, so fitted coefficients map one-to-one
        # onto node values.
        proto = cls(bbox, gx, gy, np.zeros((gy.size, gx.size)))
        ncx = proto._c.shape[1]
        ncoef = proto._c.size
        # The normal matrix is banded (each point touches 4x4 neighbouring coefficients), so it
        # stays sparse even for the hundreds of nodes per axis that tree rings need.
        normal = csr_array((ncoef, ncoef))
        rhs = np.zeros(ncoef)
        for s in range(0, x.size, _CHUNK):
            sl = slice(s, s + _CHUNK)
            ix, wx = _basis(proto._tx, x[sl])
            iy, wy = _basis(proto._ty, y[sl])
            cols = (iy[:, :, None] * ncx + ix[:, None, :]).reshape(-1, 16)
            vals = (wy[:, :, None] * wx[:, None, :]).reshape(-1, 16)
            sw = np.sqrt(w[sl])[:, None]
            n = cols.shape[0]
            design = csr_array(
                ((vals * sw).ravel(), cols.ravel(), np.arange(0, 16 * n + 1, 16)), shape=(n, ncoef)
            )
            normal = normal + design.T @ design
            rhs += design.T @ (z[sl] * sw[:, 0])
        # A faint curvature penalty on the coefficient grid (second differences along x and
        # y, 1e-12 of the mean diagonal) decides coefficients no point constrains, bridging gaps
        # in the data smoothly, and leaves constrained ones alone (exact data fit to ~1e-10).
        ncy = proto._c.shape[0]
        penalty = kron(identity(ncy), _second_differences(ncx)) + kron(
            _second_differences(ncy), identity(ncx)
        )
        diag = normal.diagonal()
        lam = 1e-12 * float(diag.mean()) if diag.size else 0.0
        coef = spsolve((normal + lam * penalty).tocsc(), rhs)
        fitted = proto._from_coefficients(np.asarray(coef).reshape(proto._c.shape))
        return cls(bbox, gx, gy, fitted.evaluate(gx[None, :], gy[:, None]))

    def _from_coefficients(self, c: np.ndarray) -> SplineField:
        """A field with this one's knots and other coefficients (used by :meth:`fit`)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._c = np.ascontiguousarray(c, dtype=np.float64)
        new._col_basis = None
        return new

    # -- persistence ---------------------------------------------------------------------------
    def _to_table(self) -> Table:
        ny, nx = self._values.shape
        t = Table(
            {
                "grid_x": self._gx.reshape(1, nx),
                "grid_y": self._gy.reshape(1, ny),
                "values": self._values.reshape(1, ny, nx),
            }
        )
        t.meta.update(NODES_X=nx, NODES_Y=ny)
        return t

    @classmethod
    def _from_table(cls, table: Table) -> SplineField:
        bbox = require_bbox_from_meta(table.meta, "SplineField")
        try:
            gx = np.asarray(table["grid_x"][0], dtype=np.float64)
            gy = np.asarray(table["grid_y"][0], dtype=np.float64)
            v = np.asarray(table["values"][0], dtype=np.float64)
        except (KeyError, IndexError) as exc:
            raise InputError("SplineField table needs grid_x, grid_y and values columns") from exc
        return cls(bbox, gx, gy, np.atleast_2d(v))

    def __repr__(self) -> str:
        ny, nx = self._values.shape
        return f"SplineField(nodes={nx}x{ny}, bbox={self._bbox!r}, mean={self.mean():.6g})"
