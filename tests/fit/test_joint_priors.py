"""The joint fit's priors and shared focal-plane frame against direct computations."""

from __future__ import annotations

import numpy as np

from photocalib.fit._joint_model import MAG_PER_LN, Block, cheb_basis
from photocalib.fit._priors import focal_plane_frame, frame_map, ridge, shared_shape


def test_focal_plane_frame_recovers_the_detector_layout(rng):
    n_v, n_d = 7, 9
    position = rng.normal(0, 600, n_d) + 1j * rng.normal(0, 600, n_d)
    position -= position.mean()
    offset = rng.normal(0, 300, n_v) + 1j * rng.normal(0, 300, n_v)
    psi = rng.uniform(0, 2 * np.pi, n_v)
    centre = offset[:, None] + np.exp(1j * psi)[:, None] * position[None, :]
    centre[1, [0, 3, 4]] = np.nan  # detectors not seen in some visits
    centre[5, 8] = np.nan
    got_offset, got_position = focal_plane_frame(centre, psi, n_iter=400)
    np.testing.assert_allclose(got_position, position, atol=1e-6)
    np.testing.assert_allclose(got_offset, offset, atol=1e-6)
    # the mean of a visit's own detectors would move with the missing ones; the frame does not
    assert abs(np.nanmean(centre[1]) - offset[1]) > 10


def test_frame_map_is_exact(rng):
    order = 5
    offset, psi, radius, frame_radius = 120.0 - 80.0j, 0.7, 2400.0, 2600.0
    T = frame_map(order, offset, psi, radius, frame_radius)
    a = rng.normal(size=(order + 1) * (order + 2) // 2)
    cu, cv = rng.uniform(-1, 1, (2, 50))
    z = (offset + np.exp(1j * psi) * (cu + 1j * cv) * frame_radius) / radius
    np.testing.assert_allclose(cheb_basis(cu, cv, order) @ (T @ a), cheb_basis(z.real, z.imag, order) @ a,
                               rtol=1e-10, atol=1e-10)


def test_shared_shape_prior_is_the_spread_of_the_shapes(rng):
    order, n_v = 3, 5
    b = Block("visit", "tangent", order, "visit", 0.0, n_v, 4)
    n_p = b.offset + b.n_params + 2
    maps = [frame_map(order, rng.normal(0, 50) + 1j * rng.normal(0, 50), rng.uniform(0, 6), 2500.0, 2600.0)
            for _ in range(n_v)]
    level = rng.uniform(0.8, 1.2, n_v)
    sigma = 0.02
    Q = shared_shape(n_p, b, maps, level, sigma)
    p = rng.normal(size=n_p)
    a = p[b.offset:b.offset + b.n_params].reshape(n_v, b.n_basis)
    y = np.stack([(maps[v] @ a[v])[1:] / level[v] for v in range(n_v)])
    direct = (MAG_PER_LN / sigma) ** 2 * np.sum((y - y.mean(0)) ** 2)
    assert abs(p @ Q @ p - direct) < 1e-9 * direct
    np.testing.assert_allclose(Q, Q.T, atol=1e-9 * np.abs(Q).max())
    # visits with one shape in the camera frame (any grey level) cost nothing
    shape = np.concatenate([[1.0], rng.normal(0, 0.05, b.n_basis - 1)])
    same = np.zeros(n_p)
    for v in range(n_v):
        same[b.offset + v * b.n_basis:b.offset + (v + 1) * b.n_basis] = np.linalg.solve(maps[v], shape) * level[v]
    assert abs(same @ Q @ same) < 1e-9 * direct


def test_ridge_leaves_the_constant_terms_free():
    b = Block("starflat", "pixel", 2, "epoch_detector", 0.0, 3, 1)
    q = ridge(1 + b.n_params, b, 0.1)
    assert q[0] == 0 and np.all(q[1 + np.arange(3) * b.n_basis] == 0)
    assert np.count_nonzero(q) == 3 * (b.n_basis - 1)
    np.testing.assert_allclose(q[q > 0], (MAG_PER_LN / 0.1) ** 2)
