"""The output→input pixel mapping of a warp, evaluated exactly on a coarse adaptive grid.

Cheap to apply (a bicubic polynomial per tile) and checked: every tile's interpolation error,
measured at the mid-points of its node grid, is below the tolerance (0.001 px by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from . import _kernels

__all__ = ["PixelMapping", "DEFAULT_TOLERANCE"]

#: Largest interpolation error of the mapping allowed, in input pixels.
DEFAULT_TOLERANCE = 1e-3

# Node positions (fractions of a tile's span) of the bicubic and the check points between them.
_NODES = np.array([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0])
_CHECK_1D = np.array([0.0, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0])  # nodes and mid-points
_IS_NODE_1D = np.array([True, False, True, False, True, False, True])
# Monomial coefficients from node values: C = V^-1 F V^-T with V[a, b] = t_a^b.
_VINV = np.linalg.inv(_NODES[:, None] ** np.arange(4)[None, :])
_CHECK_POW = _CHECK_1D[:, None] ** np.arange(4)[None, :]  # (7, 4)
# The error of cubic interpolation on 4 equispaced nodes peaks in the outer node intervals at
# max|w(t)| = 1/81 for w(t) = t (t - 1/3) (t - 2/3) (t - 1), while the mid-point t = 1/6 sees
# |w(1/6)| = 5/432, 0.937 of it; tiles are accepted at tolerance * _SAFETY so that the error
# everywhere in the tile, not just at the checked mid-points, stays within tolerance.
_SAFETY = 0.9

MapFunction = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, eq=False)
class PixelMapping:
    r"""A mapping from output pixels ``(x, y)`` to input pixels, tiled and interpolated.

    The output image is cut into square root tiles. On each tile the exact mapping is
    evaluated on a 4×4 grid of nodes spanning the tile's pixel centres and interpolated by
    the bicubic tensor polynomial through them; the exact mapping is also evaluated at the 33
    mid-points between nodes (the centres and edge mid-points of the 3×3 node cells, where a
    polynomial interpolant errs most), and the tile is accepted only if the interpolant is
    within 0.9 ``tolerance`` (Euclidean, input pixels) of the exact mapping there; the factor
    covers the interpolation error between the mid-points and the nodes, at most 1/0.937 of
    the mid-point error for a smooth mapping. A tile that
    fails is cut into four and checked again, down to ``min_tile`` pixels, below which the
    exact mapping is evaluated at every pixel. A tile whose exact points are all non-finite,
    or all mapped far outside the input (``input_shape``), is dropped: its pixels get no data.

    Build with :meth:`build`; apply with :func:`photocalib.warp.warp_arrays` or
    :meth:`evaluate`.

    Attributes
    ----------
    shape : tuple of int
        Output image shape ``(ny, nx)``.
    tolerance : float
        The accepted interpolation error in input pixels.
    max_error : float
        Largest error found at the check points of the accepted polynomial tiles.
    n_exact : int
        Number of exact evaluations of the mapping that the build made.
    dropped : numpy.ndarray
        ``(n, 4)`` int64 rows ``(x0, y0, nx, ny)``: the tiles dropped as unmapped or far
        outside the input. With the tiles they partition the output image, so a warp fills
        exactly these with "no data" and need not pre-fill its whole output.
    """

    shape: tuple[int, int]
    tolerance: float
    x0: np.ndarray
    y0: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    coef_x: np.ndarray
    coef_y: np.ndarray
    exact_offset: np.ndarray
    exact_x: np.ndarray
    exact_y: np.ndarray
    max_error: float
    n_exact: int
    dropped: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))

    @classmethod
    def build(
        cls,
        func: MapFunction,
        shape: tuple[int, int],
        tolerance: float = DEFAULT_TOLERANCE,
        root_tile: int = 128,
        min_tile: int = 8,
        input_shape: tuple[int, int] | None = None,
        margin: float = 8.0,
    ) -> PixelMapping:
        """Tile the output image and fit the mapping, refining until it is within tolerance.

        Parameters
        ----------
        func : callable
            ``func(x, y) -> (x_in, y_in)``: output pixel coordinates to input pixel coordinates
            (0-based, float64 arrays of any shape); non-finite where there is no mapping.
        shape : tuple of int
            Output image shape ``(ny, nx)``.
        tolerance : float
            Largest interpolation error allowed, input pixels (default 0.001).
        root_tile, min_tile : int
            Starting and smallest tile sizes in output pixels.
        input_shape : tuple of int, optional
            Shape of the input image; tiles that map entirely beyond its edges (by more than
            ``margin`` pixels plus the spread of the tile) are dropped.
        margin : float
            Extra input pixels kept around the input when dropping tiles.

        Returns
        -------
        PixelMapping

        Raises
        ------
        InputError
            If the shape or the tolerance is not positive.
        """
        ny, nx = (int(s) for s in shape)
        if ny <= 0 or nx <= 0:
            raise InputError(f"warp output shape must be positive, got {shape}")
        if not tolerance > 0:
            raise InputError(f"mapping tolerance must be positive, got {tolerance}")
        root_tile = max(int(root_tile), 4)
        min_tile = max(int(min_tile), 4)

        gx, gy = np.meshgrid(np.arange(0, nx, root_tile), np.arange(0, ny, root_tile))
        tiles = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64)
        widths = np.minimum(root_tile, nx - tiles[:, 0])
        heights = np.minimum(root_tile, ny - tiles[:, 1])
        tiles = np.column_stack([tiles, widths, heights])

        accepted: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
        exact_tiles: list[np.ndarray] = []
        dropped: list[np.ndarray] = [np.zeros((0, 4), dtype=np.int64)]
        n_exact = 0
        max_error = 0.0
        while len(tiles):
            x0, y0, w, h = tiles.T
            sx = np.maximum(w - 1, 1).astype(np.float64)
            sy = np.maximum(h - 1, 1).astype(np.float64)
            px = x0[:, None, None] + sx[:, None, None] * _CHECK_1D[None, None, :]
            py = y0[:, None, None] + sy[:, None, None] * _CHECK_1D[None, :, None]
            px, py = np.broadcast_arrays(px, py)
            mx, my = func(px.astype(np.float64), py.astype(np.float64))
            mx = np.asarray(mx, dtype=np.float64).reshape(px.shape)
            my = np.asarray(my, dtype=np.float64).reshape(px.shape)
            n_exact += mx.size
            finite = np.isfinite(mx) & np.isfinite(my)
            all_bad = ~finite.any(axis=(1, 2))
            keep = ~all_bad
            if input_shape is not None:
                keep &= ~_far_outside(mx, my, finite, input_shape, margin)
            node = np.ix_(np.arange(len(tiles)), _IS_NODE_1D, _IS_NODE_1D)
            cx = np.einsum("ab,tbc,dc->tad", _VINV, mx[node], _VINV)
            cy = np.einsum("ab,tbc,dc->tad", _VINV, my[node], _VINV)
            # the interpolant at all 7x7 check points (its nodes reproduce exactly)
            ix = np.einsum("pa,tab,qb->tpq", _CHECK_POW, cx, _CHECK_POW)
            iy = np.einsum("pa,tab,qb->tpq", _CHECK_POW, cy, _CHECK_POW)
            with np.errstate(invalid="ignore"):
                err = np.hypot(ix - mx, iy - my)
                err = np.where(finite, err, np.inf).max(axis=(1, 2))
            dropped.append(tiles[~keep])
            good = keep & (err <= tolerance * _SAFETY)
            if good.any():
                accepted.append((tiles[good], cx[good], cy[good], float(err[good].max())))
                max_error = max(max_error, float(err[good].max()))
            bad = keep & ~good
            small = bad & ((w <= min_tile) | (h <= min_tile))
            if small.any():
                exact_tiles.append(tiles[small])
            split = bad & ~small
            tiles = _split(tiles[split])

        return cls._assemble((ny, nx), tolerance, accepted, exact_tiles, func, n_exact, max_error, dropped)

    @classmethod
    def _assemble(cls, shape, tolerance, accepted, exact_tiles, func, n_exact, max_error, dropped):
        parts = [a[0] for a in accepted]
        cxs = [a[1] for a in accepted]
        cys = [a[2] for a in accepted]
        offsets = [np.full(len(a[0]), -1, dtype=np.int64) for a in accepted]
        ex = np.empty(0)
        ey = np.empty(0)
        if exact_tiles:
            et = np.concatenate(exact_tiles)
            sizes = et[:, 2] * et[:, 3]
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            # every pixel of every exact tile, row-major within the tile
            tile_of = np.repeat(np.arange(len(et)), sizes)
            local = np.arange(sizes.sum()) - np.repeat(starts, sizes)
            px = et[tile_of, 0] + local % et[tile_of, 2]
            py = et[tile_of, 1] + local // et[tile_of, 2]
            ex, ey = func(px.astype(np.float64), py.astype(np.float64))
            ex = np.ascontiguousarray(ex, dtype=np.float64)
            ey = np.ascontiguousarray(ey, dtype=np.float64)
            n_exact += px.size
            parts.append(et)
            cxs.append(np.zeros((len(et), 4, 4)))
            cys.append(np.zeros((len(et), 4, 4)))
            offsets.append(starts)
        if parts:
            tiles = np.concatenate(parts)
            cx = np.ascontiguousarray(np.concatenate(cxs))
            cy = np.ascontiguousarray(np.concatenate(cys))
            off = np.concatenate(offsets)
        else:
            tiles = np.zeros((0, 4), dtype=np.int64)
            cx = cy = np.zeros((0, 4, 4))
            off = np.zeros(0, dtype=np.int64)
        tiles = tiles.astype(np.int64)
        return cls(
            shape=shape,
            tolerance=float(tolerance),
            x0=np.ascontiguousarray(tiles[:, 0]),
            y0=np.ascontiguousarray(tiles[:, 1]),
            nx=np.ascontiguousarray(tiles[:, 2]),
            ny=np.ascontiguousarray(tiles[:, 3]),
            sx=np.maximum(tiles[:, 2] - 1, 1).astype(np.float64),
            sy=np.maximum(tiles[:, 3] - 1, 1).astype(np.float64),
            coef_x=cx,
            coef_y=cy,
            exact_offset=off,
            exact_x=ex,
            exact_y=ey,
            max_error=max_error,
            n_exact=int(n_exact),
            dropped=np.ascontiguousarray(np.concatenate(dropped), dtype=np.int64),
        )

    @property
    def n_tiles(self) -> int:
        """Number of tiles (polynomial and exact) that cover output pixels."""
        return int(self.x0.size)

    def kernel_args(self) -> tuple:
        """The tile arrays in the order the Numba kernels take them."""
        return (
            self.x0, self.y0, self.nx, self.ny, self.sx, self.sy,
            self.coef_x, self.coef_y, self.exact_offset, self.exact_x, self.exact_y,
        )

    def evaluate(self) -> tuple[np.ndarray, np.ndarray]:
        """The mapped input coordinates of every output pixel (NaN where no tile covers it).

        Returns
        -------
        x_in, y_in : numpy.ndarray
            float64 arrays of the output shape.
        """
        out_x = np.full(self.shape, np.nan)
        out_y = np.full(self.shape, np.nan)
        _kernels.eval_mapping(*self.kernel_args(), out_x, out_y)
        return out_x, out_y


def _far_outside(mx, my, finite, input_shape, margin) -> np.ndarray:
    """Tiles whose check points all lie beyond the input by more than their own spread."""
    ny_in, nx_in = input_shape
    big = np.float64(1e30)
    lox = np.where(finite, mx, big).min(axis=(1, 2))
    hix = np.where(finite, mx, -big).max(axis=(1, 2))
    loy = np.where(finite, my, big).min(axis=(1, 2))
    hiy = np.where(finite, my, -big).max(axis=(1, 2))
    # a cubic through the points cannot stray further than a fraction of their spread; allow all
    pad_x = (hix - lox) + margin
    pad_y = (hiy - loy) + margin
    return (
        (hix < -0.5 - pad_x)
        | (lox > nx_in - 0.5 + pad_x)
        | (hiy < -0.5 - pad_y)
        | (loy > ny_in - 0.5 + pad_y)
    )


def _split(tiles: np.ndarray) -> np.ndarray:
    """Cut tiles ``(x0, y0, w, h)`` into four (two where one side is a single pixel)."""
    if len(tiles) == 0:
        return tiles.reshape(0, 4)
    x0, y0, w, h = tiles.T
    w1 = (w + 1) // 2
    h1 = (h + 1) // 2
    quads = [
        np.column_stack([x0, y0, w1, h1]),
        np.column_stack([x0 + w1, y0, w - w1, h1]),
        np.column_stack([x0, y0 + h1, w1, h - h1]),
        np.column_stack([x0 + w1, y0 + h1, w - w1, h - h1]),
    ]
    out = np.concatenate(quads)
    return out[(out[:, 2] > 0) & (out[:, 3] > 0)]
