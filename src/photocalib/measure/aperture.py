"""Aperture photometry on fluence images, in pixel circles or in exact angular ellipses.

An aperture of radius r arcsec around a source is the set of pixel offsets d with |J d| <= r,
J the local Jacobian of the WCS: an ellipse, summed with exact pixel-overlap weights by sep.
"""

from __future__ import annotations

import enum

import numpy as np
import sep
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


def ellipse_from_jacobian(jacobian: np.ndarray, radius_arcsec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The pixel ellipse {d : |J d| <= r} as sep's (a, b, theta).

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
    data = _native(image)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)
    # sep wants 1-D arrays of one length (scalars raise inside it).
    x, y, a, b, theta = (
        np.ascontiguousarray(v, dtype=np.float64)
        for v in np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, a, b, theta)))
    )
    kwargs: dict = {"subpix": 0}
    if variance is not None:
        var = _native(variance)
        if var.shape != data.shape:
            raise InputError(f"variance shape {var.shape} differs from image shape {data.shape}")
        if var.dtype not in (np.float32, np.float64):
            var = var.astype(np.float64)
    badpix = None
    satpix = None
    # Unusable values (non-finite pixels, non-finite or negative variances) are missing data:
    # masked like BAD pixels, and replaced in a copy so no NaN reaches the sums.
    unusable = _unusable(data, var if variance is not None else None, "aperture_photometry")
    if unusable is not None:
        badpix = unusable
        data = np.where(unusable, 0.0, data).astype(data.dtype)
        if variance is not None:
            var = np.where(unusable, 0.0, var).astype(var.dtype)
        kwargs["mask"] = badpix
    if variance is not None:
        kwargs["var"] = var
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != data.shape:
            raise InputError(f"mask shape {m.shape} differs from image shape {data.shape}")
        # One cheap scan first: most exposures have no mask bits set at all.
        if m.any():
            bad = (m & np.uint32(bad_mask)) != 0
            if bad.any():
                badpix = bad if badpix is None else (badpix | bad)
                kwargs["mask"] = badpix
            sat = (m & np.uint32(MaskPlane.SAT)) != 0
            if sat.any():
                satpix = sat.astype(np.float32)
    circles = bool(np.all(a == b))
    if circles and badpix is None:
        # Our strip-integral kernel: exact like sep's, faster, and sources sorted by row so
        # consecutive apertures touch nearby memory.
        order = np.argsort(y, kind="stable")
        var_in = kwargs.get("var", np.zeros((1, 1), dtype=data.dtype))
        f_s, v_s, t_s = _kernels.sum_circles(data, var_in, x[order], y[order], a[order])
        flux = np.empty_like(f_s)
        vsum = np.empty_like(v_s)
        trunc = np.empty_like(t_s)
        flux[order], vsum[order], trunc[order] = f_s, v_s, t_s
        err = np.sqrt(vsum)
        sflags = np.where(trunc, sep.APER_TRUNC, 0)
    elif circles:
        flux, err, sflags = sep.sum_circle(data, x, y, a, **kwargs)
    else:
        flux, err, sflags = sep.sum_ellipse(data, x, y, a, b, theta, 1.0, **kwargs)
    flags = np.zeros(np.shape(flux), dtype=np.int32)
    flags[(sflags & sep.APER_TRUNC) != 0] |= PhotFlag.EDGE
    flags[(sflags & sep.APER_HASMASKED) != 0] |= PhotFlag.MASKED
    flags[(sflags & sep.APER_ALLMASKED) != 0] |= PhotFlag.ALL_MASKED
    if satpix is not None:
        if circles:
            nsat, _, _ = _kernels.sum_circles(satpix, np.zeros((1, 1), np.float32), x, y, a)
        else:
            nsat, _, _ = sep.sum_ellipse(satpix, x, y, a, b, theta, 1.0, subpix=0)
        flags[nsat > 0] |= PhotFlag.SATURATED
    flags[~np.isfinite(flux)] |= PhotFlag.NONFINITE
    if variance is None:
        err = np.full(np.shape(flux), np.nan)
    return np.asarray(flux, dtype=np.float64), np.asarray(err, dtype=np.float64), flags


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
        Aperture radius in arcsec: each source gets the ellipse {d : |J d| <= r} from the
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
