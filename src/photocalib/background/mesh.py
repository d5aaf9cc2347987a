"""Sky background on surface-brightness images: clipped mesh statistics and smooth fields.

Rule 3 of docs/design.md: a uniform sky is flat only in surface brightness, so the model is always
fitted to image / M (M = pixel area, or the exposure's background_mapping) and subtracted exactly
from either kind of image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from astropy.table import Table
from scipy.interpolate import BSpline, RectBivariateSpline
from scipy.ndimage import median_filter

from ..errors import InputError
from ..fields import BoundedField, register_field
from ..fields.base import require_bbox_from_meta
from ..fields.robust import robust_field_fit
from ..geom import Box
from ..image.kind import ImageKind
from ..image.mask import MaskPlane
from . import _kernels

__all__ = [
    "MeshGrid",
    "MeshSplineField",
    "DEFAULT_BACKGROUND_MASK",
    "estimate",
    "mesh_statistics",
    "subtract",
    "background_image",
]

#: Mask bits excluded from background statistics.
DEFAULT_BACKGROUND_MASK = int(
    MaskPlane.BAD | MaskPlane.SAT | MaskPlane.NO_DATA | MaskPlane.CR | MaskPlane.DETECTED
)


@register_field
class MeshSplineField(BoundedField):
    """An interpolating bicubic spline through values on a rectangular grid of nodes.

    Used for backgrounds: the nodes are mesh centres, the values the clipped mesh levels. The
    spline passes through every node and extends smoothly (cubic extrapolation) to the edges
    of ``bbox``.

    Parameters
    ----------
    x_nodes, y_nodes : array_like
        Strictly increasing node coordinates in pixels.
    values : array_like, shape (len(y_nodes), len(x_nodes))
        Values at the nodes (rows follow y).
    bbox : Box
        The field's box.
    """

    def __init__(self, x_nodes, y_nodes, values, bbox: Box) -> None:
        xn = np.array(x_nodes, dtype=np.float64)
        yn = np.array(y_nodes, dtype=np.float64)
        v = np.array(values, dtype=np.float64)
        if xn.ndim != 1 or yn.ndim != 1 or v.shape != (yn.size, xn.size):
            raise InputError(
                f"MeshSplineField: values must have shape (len(y_nodes), len(x_nodes)) = "
                f"({yn.size}, {xn.size}), got {v.shape}"
            )
        if np.any(np.diff(xn) <= 0) or np.any(np.diff(yn) <= 0):
            raise InputError("MeshSplineField: node coordinates must be strictly increasing")
        if not np.all(np.isfinite(v)):
            raise InputError("MeshSplineField: node values must be finite")
        if not isinstance(bbox, Box):
            raise InputError(f"MeshSplineField needs a Box, got {bbox!r}")
        for a in (xn, yn, v):
            a.setflags(write=False)
        self._xn, self._yn, self._v, self._bbox = xn, yn, v, bbox
        self._basis = None  # cache of the basis matrices for fill(); not part of the value
        xmin, xmax, ymin, ymax = bbox.extent
        kx = min(3, xn.size - 1)
        ky = min(3, yn.size - 1)
        if kx == 0 or ky == 0:
            self._spline = None  # one node along an axis: constant along it
            self._const = v
        else:
            # FITPACK's first variable is the row coordinate y, the second x.
            self._spline = RectBivariateSpline(
                yn,
                xn,
                v,
                bbox=[min(ymin, yn[0]), max(ymax, yn[-1]), min(xmin, xn[0]), max(xmax, xn[-1])],
                kx=ky,
                ky=kx,
                s=0,
            )

    @property
    def bbox(self) -> Box:
        return self._bbox

    @property
    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x_nodes, y_nodes, values)`` (read-only arrays)."""
        return self._xn, self._yn, self._v

    def _evaluate(self, x, y):
        if self._spline is None:
            if self._v.size == 1:
                return np.full(x.shape, self._v.ravel()[0])
            if self._xn.size == 1:
                return np.interp(y, self._yn, self._v[:, 0])
            return np.interp(x, self._xn, self._v[0, :])
        return self._spline.ev(y, x)

    def _fill_rows(self, y0, y1):
        box = self._bbox
        xs = np.arange(box.x0, box.x0 + box.width, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)
        if self._spline is None:
            return self._evaluate(*np.meshgrid(xs, ys))
        # Tensor-product B-splines: values = B_y · C · B_xᵀ, two dense matrix products with
        # the basis matrices of the whole box built once (scipy's per-call set-up dominates).
        if self._basis is None:
            ty, tx, c = self._spline.tck
            ky, kx = self._spline.degrees
            cmat = c.reshape(ty.size - ky - 1, tx.size - kx - 1)
            all_y = np.arange(box.y0, box.y0 + box.height, dtype=np.float64)
            by_all = BSpline.design_matrix(all_y, ty, ky).toarray()
            bx_t = np.ascontiguousarray(BSpline.design_matrix(xs, tx, kx).toarray().T)
            self._basis = (by_all @ cmat, bx_t)
        left, bx_t = self._basis
        return left[y0 - box.y0 : y1 - box.y0] @ bx_t

    def _to_table(self) -> Table:
        t = Table({"values": self._v.reshape(1, *self._v.shape)})
        t.meta["NX_NODES"] = self._xn.size
        t.meta["NY_NODES"] = self._yn.size
        # Node coordinates as extra columns of one row each keep the table single-row.
        t["x_nodes"] = self._xn.reshape(1, -1)
        t["y_nodes"] = self._yn.reshape(1, -1)
        return t

    @classmethod
    def _from_table(cls, table: Table) -> MeshSplineField:
        bbox = require_bbox_from_meta(table.meta, "MeshSplineField")
        try:
            return cls(
                np.atleast_1d(np.asarray(table["x_nodes"][0])),
                np.atleast_1d(np.asarray(table["y_nodes"][0])),
                np.atleast_2d(np.asarray(table["values"][0])),
                bbox,
            )
        except KeyError as exc:
            raise InputError(f"MeshSplineField table lacks column {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"MeshSplineField({self._xn.size}x{self._yn.size} nodes, bbox={self._bbox!r}, "
            f"median={np.median(self._v):.6g})"
        )


@dataclass(frozen=True)
class MeshGrid:
    """Clipped statistics on a grid of meshes.

    Attributes
    ----------
    x_edges, y_edges : numpy.ndarray
        Mesh boundaries in pixels (``x_edges[0] = 0``, ``x_edges[-1] = nx``).
    x_centers, y_centers : numpy.ndarray
        Mesh centres in pixel coordinates.
    level, sigma : numpy.ndarray
        Clipped mode and standard deviation per mesh, shape (n_y, n_x).
    count : numpy.ndarray
        Pixels used per mesh.
    """

    x_edges: np.ndarray
    y_edges: np.ndarray
    x_centers: np.ndarray
    y_centers: np.ndarray
    level: np.ndarray
    sigma: np.ndarray
    count: np.ndarray


_STATISTICS = {"mean": 0, "median": 1, "mode": 2}


def _edges(n: int, mesh: int) -> np.ndarray:
    nmesh = max(1, int(round(n / mesh)))
    return np.round(np.linspace(0, n, nmesh + 1)).astype(np.int64)


def mesh_statistics(
    image: np.ndarray,
    bad: np.ndarray | None = None,
    mesh_size: int | tuple[int, int] = 128,
    nsigma: float = 3.0,
    max_iter: int = 10,
    statistic: str = "mean",
    *,
    start: MeshGrid | None = None,
) -> MeshGrid:
    """Sigma-clipped level and standard deviation of every mesh.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image.
    bad : numpy.ndarray of bool, optional
        Pixels to ignore.
    mesh_size : int or (int, int)
        Mesh size in pixels (x, y); the image is cut into meshes as equal as possible.
    nsigma, max_iter : float, int
        Clipping threshold and iterations.
    statistic : {"mean", "median", "mode"}
        The level of the clipped pixels: mean (least noisy; right once sources are masked),
        median, or SExtractor's mode 2.5·median − 1.5·mean (robust in crowded fields, about
        twice as noisy).
    start : MeshGrid, optional
        A previous estimate on the same meshes: each mesh's clipping starts from its
        level ± nsigma·sigma instead of from all pixels (fewer iterations once sources are
        masked; the clipped result is the same fixed point).

    Returns
    -------
    MeshGrid
    """
    if statistic not in _STATISTICS:
        raise InputError(f"statistic must be one of {sorted(_STATISTICS)}, got {statistic!r}")
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"mesh_statistics needs a 2-D image, got shape {image.shape}")
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float64)
    mx, my = (mesh_size, mesh_size) if np.ndim(mesh_size) == 0 else mesh_size
    if mx < 4 or my < 4:
        raise InputError(f"mesh_size must be at least 4 pixels, got {mesh_size!r}")
    ny, nx = image.shape
    xe = _edges(nx, int(mx))
    ye = _edges(ny, int(my))
    if bad is not None:
        bad = np.asarray(bad, dtype=bool)
        if bad.shape != image.shape:
            raise InputError(f"mesh_statistics: bad has shape {bad.shape}, the image {image.shape}")
        if bad.any():
            image = np.where(bad, np.nan, image).astype(image.dtype, copy=False)
    return _mesh_grid(image, xe, ye, nsigma, max_iter, statistic, start)


def _mesh_grid(image, xe, ye, nsigma, max_iter, statistic, start) -> MeshGrid:
    """:func:`mesh_statistics` on an image whose ignored pixels are NaN."""
    if start is not None and start.level.shape == (ye.size - 1, xe.size - 1):
        start_level, start_sigma = start.level, start.sigma
    else:
        start_level = start_sigma = np.zeros((0, 0))
    if not image.dtype.isnative:
        image = image.astype(image.dtype.newbyteorder("="))
    big = np.finfo(image.dtype).max
    level, sigma, count = _kernels.mesh_statistics(
        image, xe, ye, float(nsigma), int(max_iter), _STATISTICS[statistic], start_level, start_sigma, big
    )
    return MeshGrid(
        x_edges=xe,
        y_edges=ye,
        x_centers=0.5 * (xe[:-1] + xe[1:] - 1),
        y_centers=0.5 * (ye[:-1] + ye[1:] - 1),
        level=level,
        sigma=sigma,
        count=count,
    )


def _clean_grid(grid: MeshGrid, min_fraction: float, filter_size: int) -> np.ndarray:
    """Mesh levels with empty or outlying meshes replaced by the median of their neighbours."""
    level = grid.level.copy()
    npix = np.diff(grid.y_edges)[:, None] * np.diff(grid.x_edges)[None, :]
    invalid = (grid.count < min_fraction * npix) | ~np.isfinite(level)
    if invalid.all():
        raise InputError(
            "background: every mesh is masked or empty; check the mask plane or lower min_fraction"
        )
    if invalid.any():
        # Fill invalid meshes from valid neighbours, growing outward until all are filled.
        fill = np.where(invalid, np.nan, level)
        while np.isnan(fill).any():
            padded = np.pad(fill, 1, mode="edge")
            stack = np.stack(
                [padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
                 for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            )
            with np.errstate(all="ignore"):
                neighbour = np.nanmedian(stack, axis=0) if np.isfinite(stack).any(axis=0).any() else None
            if neighbour is None:
                break
            fill = np.where(np.isnan(fill), neighbour, fill)
        level = fill
    if filter_size > 1 and min(level.shape) >= filter_size:
        # Only meshes far off their neighbours' median, relative to the spread of such
        # deviations and to their own noise, are replaced: a smooth sky's curvature must not be.
        med = median_filter(level, size=filter_size, mode="nearest")
        dev = level - med
        scale = 1.4826 * np.median(np.abs(dev - np.median(dev)))
        noise = grid.sigma / np.sqrt(np.maximum(grid.count, 1))
        outlier = (np.abs(dev) > 5.0 * scale) & (np.abs(dev) > 10.0 * np.nan_to_num(noise, nan=np.inf))
        level = np.where(outlier | invalid, med, level)
    return level


def _background_sb_image(exp) -> tuple[np.ndarray, ImageKind]:
    """The exposure's image in background surface-brightness units (image / M for fluence)."""
    kind = exp.kind
    mapping = getattr(exp, "background_mapping", None)
    image = np.asarray(exp.image)
    if kind is ImageKind.SURFACE_BRIGHTNESS:
        if mapping is None:
            return image, kind
        # SB = fluence / A; background SB = fluence / M = SB * A / M.
        return image * (exp.pixel_area_image() / mapping.fill()), kind
    denom = mapping.fill() if mapping is not None else exp.pixel_area_image()
    return image / denom, kind


def estimate(
    exp,
    *,
    mesh_size: int | tuple[int, int] = 128,
    nsigma: float = 3.0,
    statistic: str = "mean",
    mask_sources: bool = True,
    source_threshold: float = 3.0,
    grow: int = 8,
    bad_mask: int = DEFAULT_BACKGROUND_MASK,
    min_fraction: float = 0.25,
    filter_size: int = 3,
    interpolation: str = "chebyshev",
    order: int = 6,
) -> BoundedField:
    """Model the sky of an exposure, always on its surface-brightness version.

    A FLUENCE exposure is divided by M first (M = ``exp.background_mapping`` if set, else the
    pixel area), so the model is fitted where a uniform sky is flat; the field returned is in
    those surface-brightness units (e.g. count/arcsec²) whichever kind was given.

    Parameters
    ----------
    exp : photocalib.Exposure
        Either kind; needs a WCS (or a background_mapping) when FLUENCE.
    mesh_size : int or (int, int)
        Mesh size in pixels.
    nsigma : float
        Clipping threshold of the per-mesh statistics.
    statistic : {"mean", "median", "mode"}
        Per-mesh level (see :func:`mesh_statistics`).
    mask_sources : bool
        Run a first pass, mask pixels above ``source_threshold`` × the mesh noise (grown by
        ``grow`` pixels), and measure again.
    source_threshold, grow : float, int
        Source masking parameters.
    bad_mask : int
        Mask-plane bits excluded (default BAD, SAT, NO_DATA, CR, DETECTED).
    min_fraction : float
        Meshes with fewer usable pixels than this fraction are filled from their neighbours.
    filter_size : int
        With ``interpolation="spline"``, the size of the median filter used to reject outlying
        meshes (1: none). The Chebyshev fit clips outlying meshes against itself instead.
    interpolation : {"chebyshev", "spline"}
        A Chebyshev polynomial of ``order`` fitted to the mesh levels (weights from the mesh
        noise; the default: it averages the mesh noise down, which an interpolant cannot, and a
        sky on a surface-brightness image is smooth), or a bicubic spline through the mesh
        centres (:class:`MeshSplineField`) for structure on the mesh scale.
    order : int
        Chebyshev order when ``interpolation="chebyshev"``; lowered to a third of the number of
        meshes along the shorter axis when there are fewer (8 meshes: order 2).

    Returns
    -------
    BoundedField
        The background in surface-brightness units on the exposure's box.
    """
    if interpolation not in ("spline", "chebyshev"):
        raise InputError(f"background.estimate: interpolation must be 'spline' or 'chebyshev', got {interpolation!r}")
    sb, _ = _background_sb_image(exp)
    if sb.dtype not in (np.float32, np.float64):
        sb = sb.astype(np.float64)
    if not sb.dtype.isnative:
        sb = sb.astype(sb.dtype.newbyteorder("="))
    if exp.mask is not None:
        # Most masks have none of the bits: one fused scan, and a copy only when needed.
        mask = np.asarray(exp.mask)
        if mask.dtype != np.uint32:
            mask = mask.astype(np.uint32)
        if _kernels.any_bits(mask, int(bad_mask)):
            sb = _kernels.nan_where_bits(sb, mask, int(bad_mask))
    mx, my = (mesh_size, mesh_size) if np.ndim(mesh_size) == 0 else mesh_size
    if mx < 4 or my < 4:
        raise InputError(f"mesh_size must be at least 4 pixels, got {mesh_size!r}")
    if statistic not in _STATISTICS:
        raise InputError(f"statistic must be one of {sorted(_STATISTICS)}, got {statistic!r}")
    xe = _edges(sb.shape[1], int(mx))
    ye = _edges(sb.shape[0], int(my))
    grid = _mesh_grid(sb, xe, ye, nsigma, 10, statistic, None)
    if mask_sources:
        level = _clean_grid(grid, min_fraction, 1)
        sigma = np.where(np.isfinite(grid.sigma), grid.sigma, np.nanmedian(grid.sigma))
        # The second pass runs fused with the source masking, band by band (no masked copy).
        lv2, sg2, ct2 = _kernels.masked_mesh_statistics(
            sb, level, sigma, xe, ye, float(source_threshold), int(grow), float(nsigma), 10,
            _STATISTICS[statistic], np.finfo(sb.dtype).max)
        grid = replace(grid, level=lv2, sigma=sg2, count=ct2)
    box = Box.from_shape(sb.shape)
    level = _clean_grid(grid, min_fraction, filter_size if interpolation == "spline" else 1)
    if interpolation == "spline":
        return MeshSplineField(grid.x_centers, grid.y_centers, level, box)
    xx, yy = np.meshgrid(grid.x_centers, grid.y_centers)
    err = grid.sigma / np.sqrt(np.maximum(grid.count, 1))
    # A mesh without a usable scatter takes the typical one; if no mesh has one (a noiseless
    # image: every clipped scatter is exactly 0) all meshes weigh the same, which is what any
    # common positive error gives in a weighted least-squares fit.
    usable = np.isfinite(err) & (err > 0)
    err = np.where(usable, err, np.median(err[usable]) if usable.any() else 1.0)
    # The polynomial must be well over-determined along each axis, or its extrapolation to
    # the outer half-mesh amplifies the mesh noise: at most a third of the meshes per axis.
    order = int(min(order, min(level.shape) // 3))
    # Meshes spoiled by unmasked sources are clipped against the smooth model itself.
    return robust_field_fit(xx, yy, level, err, order=order, bbox=box, nsigma=5.0).field


def background_image(exp, field: BoundedField, dtype=None) -> np.ndarray:
    """The background ``field`` (background SB units) expressed in the exposure's own units.

    FLUENCE: field × M; SURFACE_BRIGHTNESS: field × M / A (just the field when M is the area).
    ``dtype`` defaults to the image's floating dtype (float32 images get a float32 model).
    """
    if dtype is None:
        dtype = np.result_type(exp.image.dtype, np.float32)
    model = field.fill(dtype=dtype)
    mapping = getattr(exp, "background_mapping", None)
    if exp.kind is ImageKind.FLUENCE:
        if mapping is not None:
            model *= mapping.fill(dtype=dtype)
        else:
            model *= exp.pixel_area_image(dtype=dtype)
    elif mapping is not None:
        model *= mapping.fill(dtype=dtype)
        model /= exp.pixel_area_image(dtype=dtype)
    return model


def subtract(exp, field: BoundedField):
    """Subtract a background field from an exposure of either kind, exactly.

    Parameters
    ----------
    exp : photocalib.Exposure
        FLUENCE or SURFACE_BRIGHTNESS exposure.
    field : BoundedField
        Background in background-SB units, as returned by :func:`estimate`.

    Returns
    -------
    photocalib.Exposure
        A new exposure of the same kind with the background removed (variance unchanged).
    """
    if field.bbox is not None and field.bbox.shape != tuple(exp.image.shape):
        raise InputError(
            f"background.subtract: field box {field.bbox} does not match the image shape {exp.image.shape}"
        )
    image = np.asarray(exp.image)
    model = background_image(exp, field)
    # The model array becomes the result: one full-size temporary, not three.
    np.subtract(image, model, out=model)
    return exp.replace(image=model)
