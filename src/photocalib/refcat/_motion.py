"""Propagating catalogue positions to another epoch with their proper motions.

Straight-line space motion, the model Gaia and astropy use: the star moves on a straight line
at constant velocity; its direction at epoch t follows from position + velocity × (t − t0).
"""

from __future__ import annotations

import numpy as np

__all__ = ["propagate", "julian_year"]

_MAS = np.pi / 180.0 / 3600.0 / 1000.0
#: Astronomical units per parsec and km/s in AU per Julian year.
_KMS_AU_PER_YR = 365.25 * 86400.0 / 1.495978707e8


def julian_year(epoch) -> float:
    """A Julian epoch (e.g. 2016.0) from a float, an astropy ``Time`` or a ``'J2016.0'`` string."""
    if hasattr(epoch, "jyear"):
        return float(epoch.jyear)
    if isinstance(epoch, str):
        text = epoch.strip()
        return float(text[1:] if text[:1] in "Jj" else text)
    return float(epoch)


def propagate(ra, dec, pmra, pmdec, ref_epoch, epoch, parallax=None, radial_velocity=None):
    """Positions at ``epoch`` from positions at ``ref_epoch`` and proper motions.

    Parameters
    ----------
    ra, dec : array_like
        Degrees at ``ref_epoch``.
    pmra, pmdec : array_like
        mas/yr; ``pmra`` includes cos(dec) (μα*), as Gaia gives it. NaN is taken as 0.
    ref_epoch, epoch : float or array_like
        Julian years.
    parallax : array_like, optional
        mas; used with ``radial_velocity`` (km/s) for the perspective effect. Without a
        radial velocity the distance cancels and is not needed.

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees at ``epoch``.
    """
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    pmra = np.nan_to_num(np.asarray(pmra, dtype=np.float64)) * _MAS
    pmdec = np.nan_to_num(np.asarray(pmdec, dtype=np.float64)) * _MAS
    dt = np.asarray(epoch, dtype=np.float64) - np.asarray(ref_epoch, dtype=np.float64)
    cr, sr, cd, sd = np.cos(ra), np.sin(ra), np.cos(dec), np.sin(dec)
    r0 = np.stack([cd * cr, cd * sr, sd])
    p = np.stack([-sr, cr, np.zeros_like(ra)])          # unit vector towards east
    q = np.stack([-sd * cr, -sd * sr, cd])              # unit vector towards north
    # Velocity in units of the star's distance per year: tangential from the proper motion,
    # radial from vr * parallax (distance in AU = 1 / parallax[rad]).
    vel = p * pmra + q * pmdec
    if radial_velocity is not None and parallax is not None:
        vr = np.nan_to_num(np.asarray(radial_velocity, dtype=np.float64))
        plx = np.nan_to_num(np.asarray(parallax, dtype=np.float64)) * _MAS
        vel = vel + r0 * (vr * _KMS_AU_PER_YR * plx)
    x = r0 + vel * dt
    ra_t = np.degrees(np.arctan2(x[1], x[0])) % 360.0
    dec_t = np.degrees(np.arctan2(x[2], np.hypot(x[0], x[1])))
    return ra_t, dec_t
