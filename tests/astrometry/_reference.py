"""Independent references for the astrometry tests: finite differences of RA/Dec via astropy.

Written separately from photocalib's own unit-sphere path: it differentiates (RA cos Dec, Dec)
directly, whose derivative at a point equals that of the gnomonic tangent plane there.
"""

from __future__ import annotations

from pathlib import Path

import astropy.wcs
import numpy as np

DATA = Path(astropy.wcs.__file__).parent / "tests" / "data"

ARCSEC = 180.0 * 3600.0 / np.pi


def reference_jacobian(pixel_to_world, x, y, h: float = 0.5) -> np.ndarray:
    """(n, 2, 2) Jacobian in arcsec/pixel by 4th-order central differences of RA, Dec.

    ``pixel_to_world(x, y) -> (ra_deg, dec_deg)``. RA differences are wrapped into
    (-180, 180] and scaled by cos(Dec) at the centre: d(xi)/dx = cos(dec0) dRA/dx there.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ra0, dec0 = pixel_to_world(x, y)
    cosd = np.cos(np.deg2rad(dec0))
    jac = np.empty((x.size, 2, 2))
    for col, (dx, dy) in enumerate(((1.0, 0.0), (0.0, 1.0))):
        vals = {}
        for k in (-2, -1, 1, 2):
            ra, dec = pixel_to_world(x + k * h * dx, y + k * h * dy)
            dra = (np.asarray(ra) - ra0 + 180.0) % 360.0 - 180.0
            vals[k] = (dra, np.asarray(dec) - dec0)
        for row in range(2):
            d = (8.0 * (vals[1][row] - vals[-1][row]) - (vals[2][row] - vals[-2][row])) / (12.0 * h)
            jac[:, row, col] = np.deg2rad(d) * ARCSEC * (cosd if row == 0 else 1.0)
    return jac


def det(jac: np.ndarray) -> np.ndarray:
    return jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
