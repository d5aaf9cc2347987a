"""Aperture photometry on fluence images, in pixel circles or in exact angular ellipses.

An aperture of radius r arcsec around a source is the set of pixel offsets d with ``|J d| <= r``,
J the local Jacobian of the WCS: an ellipse, summed with exact pixel-overlap weights (strip
integrals in ``_kernels``; sep's exact mode is the independent check in the tests).
"""

from __future__ import annotations

import enum

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from ..errors import InputError
from ..image.kind import ImageKind, require_kind
from ..image.mask import MaskPlane
from . import _kernels

__all__ = [
    "PhotFlag",
    "DEFAULT_BAD_MASK",
    "aperture_photometry",
    "ellipse_from_jacobian",
    "sum_ellipses",
]

#: Mask bits whose pixels are left out of an aperture sum (their share is restored by scaling
#: with the unmasked area, as sep does, and the source is flagged MASKED).
DEFAULT_BAD_MASK = int(MaskPlane.BAD | MaskPlane.NO_DATA | MaskPlane.CR)


class PhotFlag(enum.IntFlag):
    """Bits of the ``flags`` column written by :func:`aperture_photometry`.

    ``EDGE`` the aperture runs off the image; ``SATURATED`` it contains a saturated pixel;
    ``MASKED`` it contains a pixel with a bad-mask bit (its flux was restored by area scaling);
    ``ALL_MASKED`` no usable pixel; ``BLENDED`` another source lies within twice the aperture;
    ``NONFINITE`` the sum is not finite.
    """

    EDGE = 1
    SATURATED = 2
    MASKED = 4
    ALL_MASKED = 8
    BLENDED = 16
    NONFINITE = 32


def _native(a: np.ndarray, dtype=None) -> np.ndarray:
    """A C-contiguous, native-byte-order, writeable-flagged array, as sep's buffers require.

    sep never writes to its inputs, but its Cython buffers refuse read-only arrays (an
    Exposure's planes are read-only views); a writeable view of the same memory avoids a copy
    when the memory allows it.
    """
    a = np.asarray(a, dtype=dtype)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        view = a.view()
        try:
            view.flags.writeable = True
        except ValueError:
            return a.copy()
        return view
    return a


def _native_float(a) -> np.ndarray:
    """``a`` as float32 or float64 in native byte order (FITS data arrive big-endian)."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64) and a.dtype.newbyteorder("=") not in (np.float32, np.float64):
        return a.astype(np.float64)
    if not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


def ellipse_from_jacobian(jacobian: np.ndarray, radius_arcsec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The pixel ellipse ``{d : |J d| <= r}`` as sep's (a, b, theta).

    With :math:`Q = J^T J` (pixel offsets to squared arcsec), the aperture is
    :math:`d^T Q d \le r^2`: semi-axes :math:`r/\sqrt{\lambda_\pm}` along the eigenvectors of
    Q, area :math:`\pi r^2 / |\det J|` pixels.

    Parameters
    ----------
    jacobian : numpy.ndarray, shape (..., 2, 2)
        Jacobian in arcsec/pixel (rows ξ, η; columns ∂/∂x, ∂/∂y).
    radius_arcsec : float or array_like
        Aperture radius in arcsec, broadcast against the leading shape of ``jacobian``.

    Returns
    -------
    a, b, theta : numpy.ndarray
        Semi-major and semi-minor axes in pixels (a >= b) and the angle in radians from the +x
        axis to the major axis, in [-π/2, π/2].
    """
    J = np.asarray(jacobian, dtype=np.float64)
    if J.shape[-2:] != (2, 2):
        raise InputError(f"jacobian must have shape (..., 2, 2), got {J.shape}")
    r = np.asarray(radius_arcsec, dtype=np.float64)
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise InputError("radius_arcsec must be positive and finite")
    p = J[..., 0, 0] ** 2 + J[..., 1, 0] ** 2
    s = J[..., 0, 1] ** 2 + J[..., 1, 1] ** 2
    q = J[..., 0, 0] * J[..., 0, 1] + J[..., 1, 0] * J[..., 1, 1]
    mean = 0.5 * (p + s)
    half = np.hypot(0.5 * (p - s), q)
    lam_small = mean - half
    lam_large = mean + half
    # Guard the subtraction: lam_small = det(Q) / lam_large exactly, without cancellation.
    det = (J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]) ** 2
    lam_small = np.where(lam_large > 0, det / np.where(lam_large > 0, lam_large, 1.0), lam_small)
    if np.any(lam_small <= 0):
        raise InputError("jacobian is singular at some source; the WCS has no area there")
    a = r / np.sqrt(lam_small)
    b = r / np.sqrt(lam_large)
    # The largest eigenvalue's direction is the ellipse's minor axis; the major is at +90°.
    phi_large = 0.5 * np.arctan2(2.0 * q, p - s)
    theta = phi_large + 0.5 * np.pi
    theta = np.where(theta > 0.5 * np.pi, theta - np.pi, theta)
    return np.broadcast_arrays(a, b, theta)


def sum_ellipses(
    image: np.ndarray,
    x,
    y,
    a,
    b,
    theta,
    variance: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    bad_mask: int = DEFAULT_BAD_MASK,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact pixel-overlap sums of an image in ellipses (the array-level kernel).

    Parameters
    ----------
    image : numpy.ndarray
        2-D image ``[y, x]``.
    x, y, a, b, theta : array_like
        Centres (pixels, 0-based), semi-axes (pixels, a >= b) and angle (radians).
    variance : numpy.ndarray, optional
        Variance plane; errors are the square root of the overlap-weighted variance sum.
    mask : numpy.ndarray, optional
        uint mask plane; pixels with any of ``bad_mask`` bits are excluded and flagged.
    bad_mask : int
        Mask bits to exclude.

    Returns
    -------
    flux, flux_err, flags : numpy.ndarray
        ``flags`` are :class:`PhotFlag` bits (EDGE, MASKED, ALL_MASKED, SATURATED, NONFINITE).
    """
    data = _native_float(image)
    x, y, a, b, theta = (
        np.ascontiguousarray(v, dtype=np.float64)
        for v in np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, a, b, theta)))
    )
    var = None
    if variance is not None:
        var = _native_float(variance)
        if var.shape != data.shape:
            raise InputError(f"variance shape {var.shape} differs from image shape {data.shape}")
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != data.shape:
            raise InputError(f"mask shape {m.shape} differs from image shape {data.shape}")
        if m.dtype != np.uint32:
            m = m.astype(np.uint32)
    if np.any(~(a > 0)) or np.any(~(b > 0)) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("sum_ellipses: the semi-axes a and b must be positive and finite")
    # A source without a finite position or angle gets NaN and NONFINITE, not an exception.
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(theta)
    flux = np.full(x.shape, np.nan)
    err = np.full(x.shape, np.nan)
    flags = np.zeros(x.shape, dtype=np.int32)
    if ok.any():
        sel = (slice(None),) if ok.all() else (ok,)
        flux[sel], err[sel], flags[sel] = _sum_apertures(
            data, var, m, bad_mask, x[sel], y[sel], a[sel], b[sel], theta[sel], bool(np.all(a == b)))
    flags[~np.isfinite(flux)] |= PhotFlag.NONFINITE
    if variance is None:
        err = np.full(np.shape(flux), np.nan)
    return np.asarray(flux, dtype=np.float64), np.asarray(err, dtype=np.float64), flags


def _sum_apertures(data, var, mask, bad_mask, x, y, a, b, theta, circles):
    """Our exact-overlap kernels; they read only the pixels under the apertures."""
    # Row-sorted sources: consecutive apertures touch nearby memory.
    order = np.argsort(y, kind="stable")
    var_in = var if var is not None else np.zeros((1, 1), dtype=data.dtype)
    mask_in = mask if mask is not None else np.zeros((1, 1), dtype=np.uint32)
    args = (data, var_in, mask_in, int(bad_mask), int(MaskPlane.SAT), x[order], y[order], a[order])
    if circles:
        f_s, v_s, fl_s, saw_positive = _kernels.sum_circles(*args)
    else:
        f_s, v_s, fl_s, saw_positive = _kernels.sum_ellipses(*args, b[order], theta[order])
    if var is not None and not saw_positive:
        # Every summed variance was zero or unusable: refuse only if the whole plane is.
        _unusable(data[:0], var, "aperture_photometry")
    flux = np.empty_like(f_s)
    vsum = np.empty_like(v_s)
    flags = np.empty_like(fl_s)
    flux[order], vsum[order], flags[order] = f_s, v_s, fl_s
    return flux, np.sqrt(vsum), flags


def _unusable(data: np.ndarray, var: np.ndarray | None, operation: str) -> np.ndarray | None:
    """Pixels whose value or variance cannot be used, or None when every pixel is fine.

    Raises InputError when the variance plane has no positive finite value at all: errors (and
    detection thresholds) would be meaningless, and the fix is upstream.
    """
    bad = None
    if not np.isfinite(data).all():
        bad = ~np.isfinite(data)
    if var is not None:
        all_finite = bool(np.isfinite(var).all())
        with np.errstate(invalid="ignore"):
            vmin = var.min() if all_finite else np.nanmin(var) if np.isfinite(var).any() else np.nan
            vmax = var.max() if all_finite else np.nanmax(var) if np.isfinite(var).any() else np.nan
        if not vmax > 0:
            raise InputError(
                f"{operation}: the variance plane has no positive finite value; recompute it "
                "(e.g. photocalib.isr.run_isr gives Poisson + read noise) or pass an exposure "
                "without a variance plane"
            )
        if not all_finite or vmin < 0:
            bad_var = ~np.isfinite(var) | (var < 0)
            bad = bad_var if bad is None else (bad | bad_var)
    return bad


def _blended(x: np.ndarray, y: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Sources with another source closer than twice their aperture's semi-major axis."""
    if x.size < 2:
        return np.zeros(x.size, dtype=bool)
    tree = cKDTree(np.column_stack([x, y]))
    dist, _ = tree.query(np.column_stack([x, y]), k=2)
    return dist[:, 1] < 2.0 * reach


def aperture_photometry(
    exp,
    x,
    y,
    radius: float | np.ndarray | None = None,
    radius_arcsec: float | np.ndarray | None = None,
    *,
    bad_mask: int = DEFAULT_BAD_MASK,
    flag_blends: bool = True,
) -> Table:
    """Sum a FLUENCE exposure in circular pixel apertures or exact angular apertures.

    Parameters
    ----------
    exp : photocalib.Exposure
        A FLUENCE exposure (rule 1: photometry is done on fluence images).
    x, y : array_like
        Source centres in pixels (0-based, pixel centres on integers).
    radius : float or array_like, optional
        Circular aperture radius in pixels.
    radius_arcsec : float or array_like, optional
        Aperture radius in arcsec: each source gets the ellipse ``{d : |J d| <= r}`` from the
        exposure's WCS Jacobian at its position, so the aperture covers the same solid angle
        (π r² arcsec²) anywhere on the detector. Give exactly one of ``radius``,
        ``radius_arcsec``.
    bad_mask : int
        Mask bits excluded from the sums (default BAD | NO_DATA | CR).
    flag_blends : bool
        Set ``BLENDED`` where another input source lies within twice the aperture.

    Returns
    -------
    astropy.table.Table
        Columns ``x``, ``y``, ``instflux`` and ``instflux_err`` (in the exposure's units times
        pixels: counts for a count/pixel image), ``flags`` (:class:`PhotFlag`), ``area`` (the
        aperture's area in pixels), ``a``, ``b``, ``theta`` (the ellipse, pixels and radians);
        ``meta['kind'] = 'FLUENCE'``.

    Raises
    ------
    ImageKindError
        If ``exp`` is not a FLUENCE exposure.
    InputError
        If neither or both radii are given, or ``radius_arcsec`` is given without a WCS.
    """
    require_kind(exp.kind, ImageKind.FLUENCE, "aperture_photometry")
    if (radius is None) == (radius_arcsec is None):
        raise InputError("aperture_photometry: give exactly one of radius= (pixels) or radius_arcsec=")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(f"aperture_photometry: x and y must be 1-D of one length, got {x.shape}, {y.shape}")
    if radius is not None:
        r = np.broadcast_to(np.asarray(radius, dtype=np.float64), x.shape)
        if np.any(~np.isfinite(r)) or np.any(r <= 0):
            raise InputError("aperture_photometry: radius must be positive and finite")
        a = b = r
        theta = np.zeros_like(x)
    else:
        if exp.wcs is None:
            raise InputError(
                "aperture_photometry(radius_arcsec=...) needs an exposure with a WCS; "
                "attach one or use radius= in pixels"
            )
        jac = exp.wcs.jacobian(x, y)
        a, b, theta = ellipse_from_jacobian(jac, np.broadcast_to(radius_arcsec, x.shape))
    flux, err, flags = sum_ellipses(exp.image, x, y, a, b, theta, exp.variance, exp.mask, bad_mask)
    if flag_blends:
        flags[_blended(x, y, a)] |= PhotFlag.BLENDED
    table = Table(
        {
            "x": x,
            "y": y,
            "instflux": flux,
            "instflux_err": err,
            "flags": flags,
            "area": np.pi * a * b,
            "a": np.asarray(a, dtype=np.float64),
            "b": np.asarray(b, dtype=np.float64),
            "theta": np.asarray(theta, dtype=np.float64),
        }
    )
    table.meta["kind"] = ImageKind.FLUENCE.value
    table.meta["unit"] = str(getattr(exp, "unit", ""))
    if radius_arcsec is not None and np.ndim(radius_arcsec) == 0:
        table.meta["radius_arcsec"] = float(radius_arcsec)
    elif radius is not None and np.ndim(radius) == 0:
        table.meta["radius_pix"] = float(radius)
    return table
