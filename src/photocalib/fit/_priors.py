"""Priors of the joint photometric fit: what a factor does where its data are thin.

A polynomial fitted where a detector or visit has stars is unconstrained where it has none, and
may run away there (cross zero, explode at a corner). Two Gaussian priors keep every factor sane
over its whole area while leaving it untouched where the data constrain it:

* **ridge** on a pixel block (the star flats, or monolithic detector polynomials): each
  non-constant coefficient ``a_k`` gets ``(MAG_PER_LN · a_k / σ)²`` added to χ², so an
  unconstrained direction goes to a *flat* factor (the lower order) instead of anywhere.
* **shared shape** of the monolithic per-visit polynomials: each visit's polynomial, divided by
  its starting grey level and expressed in one focal-plane frame shared by all visits
  (:func:`focal_plane_frame`), has non-constant coefficients ``y_v``; χ² gets
  ``(MAG_PER_LN / σ)² Σ_v |y_v − ȳ|²``. Where a visit has no stars its polynomial follows the
  mean shape of the other visits in the camera frame (the optical distortion and vignetting are
  fixed in that frame), and where it has stars the data win.

Both are quadratic forms ``pᵀ Q p`` in the parameter vector (their zero is the flat factor, or
equal shapes), so the Gauss–Newton system gets ``Q`` on its matrix and ``−Q p`` on its
right-hand side. With thousands of observations per factor and σ of 0.01–0.1 mag the prior's
weight is below 10⁻⁴ of the data's where they constrain a coefficient.
"""

from __future__ import annotations

import numpy as np

from ._joint_model import MAG_PER_LN, Block, cheb_basis


def focal_plane_frame(centre: np.ndarray, psi: np.ndarray, n_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """One focal-plane frame shared by every visit, from the detectors' centres on the sky.

    Parameters
    ----------
    centre : ndarray, complex, shape (n_visits, n_detectors)
        ``ξ + iη`` (arcsec) of each detector's box centre on its visit's tangent plane; NaN
        where the detector was not seen in that visit.
    psi : ndarray, shape (n_visits,)
        Each visit's camera rotation (radians), e.g. from the detectors' axes.

    Returns
    -------
    offset : ndarray, complex, shape (n_visits,)
        Where the focal-plane origin falls on the visit's tangent plane (arcsec).
    position : ndarray, complex, shape (n_detectors,)
        Each detector's centre in the focal-plane frame (arcsec, mean 0).

    Notes
    -----
    Model ``centre[v, d] = offset[v] + exp(iψ_v) · position[d]``, solved by alternating least
    squares (each half is an average). A visit with detectors missing keeps the same frame, which
    a mean of its own detectors' centres would not.
    """
    present = np.isfinite(centre)
    z = np.where(present, centre, 0)
    rot = np.exp(1j * psi)[:, None]
    n_v = np.maximum(present.sum(axis=1), 1)
    n_d = np.maximum(present.sum(axis=0), 1)
    offset = z.sum(axis=1) / n_v
    position = np.zeros(centre.shape[1], dtype=np.complex128)
    for _ in range(n_iter):
        position = np.where(present, (z - offset[:, None]) / rot, 0).sum(axis=0) / n_d
        position -= position[present.any(axis=0)].mean() if present.any() else 0
        offset = np.where(present, z - rot * position[None, :], 0).sum(axis=1) / n_v
    return offset, position


def frame_map(order: int, offset: complex, psi: float, radius: float, frame_radius: float) -> np.ndarray:
    """Matrix taking a visit's tangent-plane coefficients to focal-plane-frame coefficients.

    The visit polynomial is in ``t = (ξ + iη) / radius``; the frame coordinate is
    ``c = exp(-iψ) (ξ + iη − offset) / frame_radius``. ``t`` is an affine function of ``c``, so a
    triangular Chebyshev polynomial of total order ``order`` in ``t`` is one of the same order in
    ``c``; the map is found exactly by sampling both bases on Chebyshev nodes.
    """
    k = np.cos(np.pi * (np.arange(order + 2) + 0.5) / (order + 2))
    cu, cv = (a.ravel() for a in np.meshgrid(k, k))
    z = (offset + np.exp(1j * psi) * (cu + 1j * cv) * frame_radius) / radius
    b_c = cheb_basis(cu, cv, order)
    b_t = cheb_basis(z.real, z.imag, order)
    return np.linalg.lstsq(b_c, b_t, rcond=None)[0]


def ridge(n_p: int, block: Block, sigma: float) -> np.ndarray:
    """Diagonal of the ridge prior on a block's non-constant coefficients (length ``n_p``)."""
    q = np.zeros(n_p)
    lam = (MAG_PER_LN / sigma) ** 2
    for g in range(block.n_groups):
        s = block.offset + g * block.n_basis
        q[s + 1: s + block.n_basis] = lam
    return q


def shared_shape(n_p: int, block: Block, maps: list[np.ndarray], level: np.ndarray, sigma: float) -> np.ndarray:
    """Dense matrix of the shared-shape prior on a per-visit block (see the module docstring).

    ``maps[v]`` is visit ``v``'s :func:`frame_map`; ``level[v]`` its starting grey level (held
    fixed so that the prior is quadratic).
    """
    nb = block.n_basis
    n_v = block.n_groups
    lam = (MAG_PER_LN / sigma) ** 2
    M = np.stack([maps[v][1:, :] / level[v] for v in range(n_v)])  # (n_v, nb-1, nb)
    Q = np.zeros((n_p, n_p))
    sl = slice(block.offset, block.offset + n_v * nb)
    # Σ_v |y_v − ȳ|² = Σ_v |y_v|² − n |ȳ|²: the first is block-diagonal, the second rank nb−1
    diag = np.einsum("vki,vkj->vij", M, M)
    sub = np.zeros((n_v * nb, n_v * nb))
    for v in range(n_v):
        sub[v * nb:(v + 1) * nb, v * nb:(v + 1) * nb] = diag[v]
    flat = M.transpose(1, 0, 2).reshape(nb - 1, n_v * nb)  # ȳ = flat @ a / n_v
    sub -= flat.T @ flat / n_v
    Q[sl, sl] = lam * sub
    return Q
