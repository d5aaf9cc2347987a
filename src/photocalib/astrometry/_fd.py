"""High-order finite-difference Jacobians on the unit sphere, for WCSs with no analytic form.

Offsets are projected gnomonically about the central point, so RA wraps and poles are harmless.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .tangent import ARCSEC_PER_RADIAN, local_basis, unit_vectors

__all__ = ["fd_jacobian", "STENCILS"]

#: Central stencils for a first derivative, f'(0) h = sum_k w_k (f(k h) - f(-k h)), by order.
STENCILS = {
    2: (np.array([1.0]), np.array([0.5])),
    6: (np.array([1.0, 2.0, 3.0]), np.array([45.0, -9.0, 1.0]) / 60.0),
}

PixelToSky = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def fd_jacobian(
    pixel_to_sky: PixelToSky, x: np.ndarray, y: np.ndarray, step: float = 1.0, order: int = 6
) -> np.ndarray:
    """Jacobian ``d(xi, eta)/d(x, y)`` in arcsec/pixel by central differences.

    Parameters
    ----------
    pixel_to_sky : callable
        ``(x, y) -> (ra_deg, dec_deg)`` on 1-D float64 arrays.
    x, y : numpy.ndarray
        1-D pixel positions (same length).
    step : float
        Finite-difference step in pixels. The truncation error is of order
        ``step**6 * d^7 f / 140``, negligible for any smooth optical distortion at one pixel;
        the rounding error is about ``1e-16 * 360 deg / (step * scale)``, ~1e-10 relative.
    order : {6, 2}
        Order of the stencil. ``order=2`` with ``step=0.5`` differences the pixel's own edges:
        the mean derivative across the pixel, exact for piecewise-linear lookup tables.

    Returns
    -------
    numpy.ndarray
        ``(n, 2, 2)``: rows (xi east, eta north), columns (d/dx, d/dy), each xi/eta in the
        gnomonic tangent plane centred on the sky position of that pixel.
    """
    offsets, weights = STENCILS[order]
    n = x.size
    k = offsets.size
    offs = np.concatenate([offsets, -offsets]) * step  # (2k,)
    # One call for the centre and all 4k offset points keeps per-call overhead negligible.
    xs = np.concatenate([x, (x[None, :] + offs[:, None]).ravel(), np.repeat(x[None, :], 2 * k, 0).ravel()])
    ys = np.concatenate([y, np.repeat(y[None, :], 2 * k, 0).ravel(), (y[None, :] + offs[:, None]).ravel()])
    ra, dec = pixel_to_sky(xs, ys)
    v = unit_vectors(ra, dec)
    p, east, north = local_basis(v[:n])
    q = v[n:].reshape(2, 2 * k, n, 3)  # (axis, offset, point, xyz)
    qp = np.einsum("aopi,pi->aop", q, p)
    xi = np.einsum("aopi,pi->aop", q, east) / qp
    eta = np.einsum("aopi,pi->aop", q, north) / qp
    w = weights[None, :, None] / step
    jac = np.empty((n, 2, 2))
    for row, comp in enumerate((xi, eta)):
        diff = comp[:, :k, :] - comp[:, k:, :]  # (axis, k, point)
        jac[:, row, :] = (np.sum(w * diff, axis=1) * ARCSEC_PER_RADIAN).T
    return jac
