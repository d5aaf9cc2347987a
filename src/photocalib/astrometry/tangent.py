"""Gnomonic tangent planes on the unit sphere: the local frame every Jacobian is expressed in.

Unit vectors avoid the RA = 0/360 wrap and the coordinate singularity at the poles.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ARCSEC_PER_RADIAN",
    "sky_to_tangent",
    "tangent_to_sky",
    "unit_vectors",
    "vectors_to_sky",
    "local_basis",
    "mean_pointing",
]

#: Arcseconds per radian.
ARCSEC_PER_RADIAN = 180.0 * 3600.0 / np.pi


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors ``(..., 3)`` of sky positions given in degrees."""
    ra = np.deg2rad(np.asarray(ra_deg, dtype=np.float64))
    dec = np.deg2rad(np.asarray(dec_deg, dtype=np.float64))
    ra, dec = np.broadcast_arrays(ra, dec)
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def vectors_to_sky(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA in [0, 360) and Dec in degrees of (not necessarily unit) vectors ``(..., 3)``."""
    v = np.asarray(v, dtype=np.float64)
    rho = np.hypot(v[..., 0], v[..., 1])
    ra = np.rad2deg(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    dec = np.rad2deg(np.arctan2(v[..., 2], rho))
    return ra, dec


def mean_pointing(ra_deg, dec_deg) -> tuple[float, float]:
    """The mean direction of sky positions (degrees): their unit vectors' mean, renormalised.

    The centre of a visit's detectors, of a survey's footprint, of a coadd grid; it has no
    trouble at RA = 0/360 or at the poles.

    Examples
    --------
    >>> [round(c, 9) for c in mean_pointing([10.0, 20.0], [0.0, 0.0])]
    [15.0, 0.0]
    >>> ra, dec = mean_pointing([359.0, 1.0], [10.0, 10.0])  # across RA = 0
    >>> abs((ra + 180.0) % 360.0 - 180.0) < 1e-9, round(dec, 6)
    (True, 10.001493)
    """
    v = unit_vectors(np.ravel(ra_deg), np.ravel(dec_deg)).mean(axis=0)
    ra, dec = vectors_to_sky(v)
    return float(ra), float(dec)


def local_basis(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors ``(p, east, north)``, each ``(..., 3)``, of the local frame at ``v``.

    East and north are the directions of increasing RA and Dec. They are computed from the
    RA of ``v`` (``atan2``), which stays accurate arbitrarily close to a pole; exactly at a
    pole the RA is 0 by convention and the basis is still orthonormal.
    """
    v = np.asarray(v, dtype=np.float64)
    norm = np.sqrt(np.einsum("...i,...i->...", v, v))
    rho = np.hypot(v[..., 0], v[..., 1])
    safe = np.where(rho > 0, rho, 1.0)
    cos_a = np.where(rho > 0, v[..., 0] / safe, 1.0)
    sin_a = np.where(rho > 0, v[..., 1] / safe, 0.0)
    sin_d = v[..., 2] / norm
    cos_d = rho / norm
    p = v / norm[..., None]
    east = np.stack([-sin_a, cos_a, np.zeros_like(cos_a)], axis=-1)
    north = np.stack([-sin_d * cos_a, -sin_d * sin_a, cos_d], axis=-1)
    return p, east, north


def sky_to_tangent(ra, dec, ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of sky positions about a tangent point.

    Parameters
    ----------
    ra, dec : array_like
        Positions to project, degrees.
    ra0, dec0 : array_like
        Tangent point(s), degrees; broadcast against ``ra, dec``.

    Returns
    -------
    xi, eta : numpy.ndarray
        Tangent-plane coordinates in arcsec, ``xi`` towards east (increasing RA), ``eta``
        towards north. Points 90° or more from the tangent point give NaN.

    Examples
    --------
    >>> xi, eta = sky_to_tangent(0.001, 0.0, 359.999, 0.0)
    >>> round(float(xi), 6), round(float(eta), 6)
    (7.2, 0.0)
    """
    q = unit_vectors(ra, dec)
    p, east, north = local_basis(unit_vectors(ra0, dec0))
    q, p, east, north = np.broadcast_arrays(q, p, east, north)
    qp = np.einsum("...i,...i->...", q, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(qp > 0, ARCSEC_PER_RADIAN / qp, np.nan)
    xi = np.einsum("...i,...i->...", q, east) * scale
    eta = np.einsum("...i,...i->...", q, north) * scale
    return xi, eta


def tangent_to_sky(xi, eta, ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`sky_to_tangent`: tangent-plane arcsec about ``(ra0, dec0)`` to degrees.

    Parameters
    ----------
    xi, eta : array_like
        Gnomonic coordinates in arcsec (east, north).
    ra0, dec0 : array_like
        Tangent point(s), degrees.

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees, RA in [0, 360).
    """
    xi = np.asarray(xi, dtype=np.float64) / ARCSEC_PER_RADIAN
    eta = np.asarray(eta, dtype=np.float64) / ARCSEC_PER_RADIAN
    p, east, north = local_basis(unit_vectors(ra0, dec0))
    v = p + xi[..., None] * east + eta[..., None] * north
    return vectors_to_sky(v)
