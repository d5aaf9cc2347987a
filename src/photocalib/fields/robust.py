"""Iteratively sigma-clipped weighted fits of a constant or a Chebyshev field.

Shared by aperture corrections (measure), sky models (background) and the single-detector
calibration (fit), so it lives with the fields it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..geom import Box
from .base import BoundedField
from .chebyshev import ChebyshevField
from .constant import ConstantField

__all__ = ["RobustFit", "robust_field_fit"]


@dataclass(frozen=True)
class RobustFit:
    """The outcome of :func:`robust_field_fit`.

    Attributes
    ----------
    field : BoundedField
        The fitted field (ConstantField for order None, else ChebyshevField).
    used : numpy.ndarray
        Boolean mask of the points kept after clipping.
    residuals : numpy.ndarray
        ``z - field(x, y)`` for every point.
    scatter : float
        Robust (MAD-based) standard deviation of the normalised residuals of the kept points.
    error : float
        Standard error of the field's mean level: ``scatter_z / sqrt(n_eff)``, with the
        scatter scaled to z units (reduced-chi² inflated where the noise was underestimated).
    """

    field: BoundedField
    used: np.ndarray
    residuals: np.ndarray
    scatter: float
    error: float


def _mad_sigma(v: np.ndarray) -> float:
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def robust_field_fit(
    x,
    y,
    z,
    z_err=None,
    *,
    order: int | None = None,
    bbox: Box | None = None,
    nsigma: float = 3.0,
    max_iter: int = 10,
) -> RobustFit:
    """Fit ``z(x, y)`` by a constant (``order=None``) or a Chebyshev field, clipping outliers.

    Each iteration fits the kept points with weights ``1 / z_err²``, then keeps points whose
    residual is within ``nsigma`` robust standard deviations, where the deviation of a point is
    its residual divided by ``sqrt(z_err² + s²)`` with s an extra scatter that makes the kept
    points' normalised scatter 1. Stops when the kept set no longer changes.

    Parameters
    ----------
    x, y, z : array_like
        Positions (pixels) and values.
    z_err : array_like, optional
        Standard errors of ``z`` (default: equal weights).
    order : int or None
        Chebyshev order (triangular), or None for a constant.
    bbox : Box, optional
        The field's box (required for a Chebyshev field).
    nsigma : float
        Clipping threshold.
    max_iter : int
        Maximum number of clip-and-refit iterations.

    Raises
    ------
    InputError
        Too few finite points for the model.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    z = np.asarray(z, dtype=np.float64).ravel()
    if z_err is None:
        e = np.ones_like(z)
    else:
        e = np.asarray(z_err, dtype=np.float64)
        e = e.ravel().copy() if e.size == z.size else np.broadcast_to(e, z.shape).copy()
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & np.isfinite(e) & (e > 0)
    nterm = 1 if order is None else (order + 1) * (order + 2) // 2
    if finite.sum() < max(nterm, 2):
        raise InputError(
            f"robust fit: {int(finite.sum())} usable points for a model with {nterm} terms; "
            "supply more matched sources or lower the order"
        )
    if order is not None and bbox is None:
        raise InputError("robust fit: a Chebyshev model needs bbox=")
    used = finite.copy()
    extra = 0.0
    for _ in range(max_iter):
        w = 1.0 / (e[used] ** 2 + extra**2)
        if order is None:
            level = float(np.sum(w * z[used]) / np.sum(w))
            field: BoundedField = ConstantField(level, bbox)
        else:
            field = ChebyshevField.fit(x[used], y[used], z[used], weights=w, order=order, bbox=bbox)
        model = field.evaluate(x, y)
        resid = z - model
        # Extra scatter so the kept points' normalised residuals have unit robust sigma.
        r_used = resid[used]
        s_total = _mad_sigma(r_used)
        med_e = float(np.median(e[used]))
        extra = float(np.sqrt(max(s_total**2 - med_e**2, 0.0)))
        norm = resid / np.sqrt(e**2 + extra**2)
        new_used = finite & (np.abs(norm) <= nsigma * max(_mad_sigma(norm[used]), 1e-300))
        if new_used.sum() < max(nterm, 2) or np.array_equal(new_used, used):
            break
        used = new_used
    w = 1.0 / (e[used] ** 2 + extra**2)
    norm = resid[used] * np.sqrt(w)
    chi2 = float(np.sum(norm**2) / max(used.sum() - nterm, 1))
    # Standard error of the mean level, inflated by the reduced chi² (never deflated).
    error = float(np.sqrt(max(chi2, 1.0) / np.sum(w)))
    return RobustFit(field=field, used=used, residuals=resid, scatter=_mad_sigma(norm), error=error)
