"""Source detection and centroids on fluence images (rule 1), through sep.

Detection thresholds use the variance plane, so they are in units of the local noise; centroids
are windowed (SExtractor XWIN/YWIN) positions.
"""

from __future__ import annotations

import numpy as np
import sep
from astropy.table import Table
from scipy.spatial import cKDTree

from ..errors import InputError
from ..image.kind import ImageKind, require_kind
from ..image.mask import MaskPlane
from . import _kernels
from .aperture import DEFAULT_BAD_MASK, _native, _unusable

__all__ = ["detect", "centroid"]

#: sep keeps all pixels of all objects above threshold on a stack; a 4k×4k detector with a few
#: thousand stars needs more than sep's default 300 000.
_PIXSTACK = 3_000_000


def _float_image(a: np.ndarray) -> np.ndarray:
    a = _native(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def centroid(exp, x, y, sigma=None, *, bad_mask: int = DEFAULT_BAD_MASK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windowed centroids (SExtractor XWIN_IMAGE) on a FLUENCE exposure.

    Parameters
    ----------
    exp : photocalib.Exposure
        FLUENCE exposure, background subtracted.
    x, y : array_like
        Initial positions in pixels.
    sigma : float or array_like, optional
        Gaussian window sigma in pixels (default 2 pixels); use ≈ FWHM / 2.35.
    bad_mask : int
        Mask bits ignored by the window.

    Returns
    -------
    x, y : numpy.ndarray
        Refined positions; where the iteration fails, the initial positions.
    flag : numpy.ndarray
        Non-zero where the refinement failed.
    """
    require_kind(exp.kind, ImageKind.FLUENCE, "centroid")
    data = _float_image(exp.image)
    bad = _unusable(data, None, "centroid")
    if bad is not None:
        data = np.where(bad, 0.0, data).astype(data.dtype)
    if exp.mask is not None:
        flagged = (np.asarray(exp.mask) & np.uint32(bad_mask)) != 0
        if flagged.any():
            bad = flagged if bad is None else (bad | flagged)
    return _centroid_arrays(data, bad, x, y, 2.0 if sigma is None else sigma)


def _centroid_arrays(data, bad, x, y, sigma):
    """Windowed centroids on a clean float image with an optional boolean mask."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    kwargs = {}
    if bad is not None:
        kwargs["mask"] = bad
    xw, yw, flag = sep.winpos(data, x, y, sig, **kwargs)
    bad = (flag != 0) | ~np.isfinite(xw) | ~np.isfinite(yw) | (np.hypot(xw - x, yw - y) > 3 * sig)
    xw = np.where(bad, x, xw)
    yw = np.where(bad, y, yw)
    return xw, yw, bad.astype(np.int32)


def detect(
    exp,
    threshold: float = 5.0,
    *,
    minarea: int = 5,
    deblend: bool = True,
    bad_mask: int = DEFAULT_BAD_MASK,
    refine_centroids: bool = True,
) -> Table:
    """Detect sources on a background-subtracted FLUENCE exposure.

    Parameters
    ----------
    exp : photocalib.Exposure
        FLUENCE exposure with its background subtracted (see :func:`photocalib.background.subtract`)
        and a variance plane (without one the threshold is absolute, in image units).
    threshold : float
        Detection threshold in units of the per-pixel noise (sqrt of the variance plane).
    minarea : int
        Minimum number of connected pixels above threshold.
    deblend : bool
        Run sep's multi-threshold deblender (``False`` is faster in sparse fields).
    bad_mask : int
        Mask bits treated as missing data.
    refine_centroids : bool
        Replace the isophotal barycentres with windowed centroids.

    Returns
    -------
    astropy.table.Table
        ``x``, ``y`` (pixels), ``flux`` (isophotal sum), ``peak``, ``npix``, ``a``, ``b``,
        ``theta`` (second moments), ``blended`` (merged or deblended by sep), ``saturated``
        (touches a SAT pixel), ``sep_flags``.

    Raises
    ------
    ImageKindError
        If ``exp`` is not FLUENCE.
    """
    require_kind(exp.kind, ImageKind.FLUENCE, "detect")
    if threshold <= 0:
        raise InputError(f"detect: threshold must be positive, got {threshold}")
    data = _float_image(exp.image)
    var = _float_image(exp.variance) if exp.variance is not None else None
    # Non-finite pixels and unusable variances are missing data; for detection a zero variance
    # is unusable too (it would make every pixel infinitely significant).
    missing = _unusable(data, var, "detect")
    if var is not None and not (var > 0).all():
        zero = ~(var > 0)
        missing = zero if missing is None else (missing | zero)
    if missing is not None:
        # Interpolate over missing pixels (as LSST's ISR does before detection) rather than
        # zero them: a hole in a star's core must not split it into a ring of detections.
        data = _kernels.fill_missing(data, missing).astype(data.dtype)
        if var is not None:
            var = _kernels.fill_missing(var, missing).astype(var.dtype)
    # 'conv' filtering: the noise varies smoothly across a detector, where it detects like
    # 'matched' at a third of the cost.
    kwargs: dict = {"minarea": int(minarea), "filter_type": "conv"}
    if var is not None:
        kwargs["var"] = var
    mask = None
    bad = None  # interpolated pixels stay usable for detection; photometry flags them
    if exp.mask is not None:
        mask = np.asarray(exp.mask)
        if mask.any():
            flagged = (mask & np.uint32(bad_mask)) != 0
            if flagged.any():
                bad = flagged if bad is None else (bad | flagged)
    if bad is not None:
        kwargs["mask"] = bad
    if not deblend:
        kwargs["deblend_cont"] = 1.0
    sep.set_extract_pixstack(max(_PIXSTACK, data.size // 8))
    sep.set_sub_object_limit(4096)
    objects = sep.extract(data, threshold, **kwargs)
    x = np.asarray(objects["x"], dtype=np.float64)
    y = np.asarray(objects["y"], dtype=np.float64)
    if refine_centroids and x.size:
        # Window sigma from each object's own size: half-light diameter / 2.35 as for XWIN.
        size = np.sqrt(np.clip(objects["a"] * objects["b"], 0.25, None))
        x, y, _ = _centroid_arrays(data, bad, x, y, np.clip(size, 0.5, 10.0))
    saturated = np.zeros(x.size, dtype=bool)
    if mask is not None and x.size:
        sy, sx = np.nonzero((mask & np.uint32(MaskPlane.SAT)) != 0)
        if sy.size:
            # SAT pixels are few and sit in star cores: give each to the nearest object and
            # keep it if it lies within that object's footprint box.
            tree = cKDTree(np.column_stack([objects["x"], objects["y"]]))
            _, owner = tree.query(np.column_stack([sx, sy]))
            inside = (
                (sx >= objects["xmin"][owner]) & (sx <= objects["xmax"][owner])
                & (sy >= objects["ymin"][owner]) & (sy <= objects["ymax"][owner])
            )
            saturated[owner[inside]] = True
    flags = np.asarray(objects["flag"], dtype=np.int32)
    table = Table(
        {
            "x": x,
            "y": y,
            "flux": np.asarray(objects["flux"], dtype=np.float64),
            "peak": np.asarray(objects["peak"], dtype=np.float64),
            "npix": np.asarray(objects["npix"], dtype=np.int64),
            "a": np.asarray(objects["a"], dtype=np.float64),
            "b": np.asarray(objects["b"], dtype=np.float64),
            "theta": np.asarray(objects["theta"], dtype=np.float64),
            "blended": (flags & sep.OBJ_MERGED) != 0,
            "saturated": saturated,
            "sep_flags": flags,
        }
    )
    table.meta["kind"] = ImageKind.FLUENCE.value
    table.meta["threshold"] = float(threshold)
    return table
