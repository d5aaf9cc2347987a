"""Positional matching on the sky: nearest neighbours of unit vectors in a k-d tree.

Chord distances on the unit sphere are monotonic in angle, so the match is exact at the poles
and across RA = 0/360, with no tangent-plane approximation.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..astrometry import unit_vectors as sky_unit_vectors
from ..errors import InputError

__all__ = ["match_sky", "unit_vectors"]


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors (n, 3) of sky positions in degrees (flattened)."""
    ra = np.asarray(ra_deg, dtype=np.float64).ravel()
    dec = np.asarray(dec_deg, dtype=np.float64).ravel()
    if ra.shape != dec.shape:
        raise InputError(f"ra and dec must have one length, got {ra.size} and {dec.size}")
    return sky_unit_vectors(ra, dec)


def match_sky(ra, dec, ref_ra, ref_dec, radius_arcsec: float, unique: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Match each position to the nearest reference within a radius.

    Parameters
    ----------
    ra, dec : array_like
        Positions to match (degrees).
    ref_ra, ref_dec : array_like
        Reference positions (degrees).
    radius_arcsec : float
        Match radius.
    unique : bool
        Keep only the closest source for a reference that several sources matched.

    Returns
    -------
    index : numpy.ndarray of int64
        Reference row per position, -1 where unmatched.
    separation : numpy.ndarray
        Separation in arcsec (inf where unmatched).
    """
    if not (np.isfinite(radius_arcsec) and radius_arcsec > 0):
        raise InputError(f"match radius must be positive, got {radius_arcsec!r}")
    src = unit_vectors(ra, dec)
    n = src.shape[0]
    index = np.full(n, -1, dtype=np.int64)
    sep = np.full(n, np.inf)
    if n == 0 or np.size(ref_ra) == 0:
        return index, sep
    tree = cKDTree(unit_vectors(ref_ra, ref_dec))
    chord = 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)
    dist, idx = tree.query(src, k=1, distance_upper_bound=chord)
    ok = np.isfinite(dist)
    index[ok] = idx[ok]
    sep[ok] = np.degrees(2.0 * np.arcsin(np.clip(dist[ok] / 2.0, 0.0, 1.0))) * 3600.0
    if unique and ok.any():
        rows = np.flatnonzero(ok)
        order = rows[np.lexsort((sep[rows], index[rows]))]
        first = np.ones(order.size, dtype=bool)
        first[1:] = index[order[1:]] != index[order[:-1]]
        drop = order[~first]
        index[drop] = -1
        sep[drop] = np.inf
    return index, sep
