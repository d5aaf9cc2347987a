"""The sparse reduced system of the joint fit against the dense one (issue 14, item 3).

The sparse path assembles the Schur complement from a sparse Jacobian and solves a KKT system
by sparse LU; the dense path sums it in Numba kernels and solves by bordered Cholesky. They are
independent implementations of the same normal equations: on problems both can solve every
model must give the same calibration, star magnitudes and errors.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from photocalib.errors import InputError
from photocalib.fit import _joint_sparse
from photocalib.fit import _kernels as K
from photocalib.fit._joint_solver import GaussNewton, _symmetrize, prior_matrix
from photocalib.fit.joint import JointCalibrator, fit_joint
from photocalib.sim.camera import Camera
from photocalib.sim.catalog import observations_from_truth
from photocalib.sim.survey import make_survey


@pytest.fixture(scope="module")
def problem():
    camera = Camera.preset("hsc-like", n_detectors=6, seed=3)
    survey = make_survey(camera, n_visits=6, seed=5)
    obs, wcs, truth = observations_from_truth(camera, survey, density=6e3, seed=8, outlier_fraction=0.02)
    flux = np.asarray(truth.stars["flux"])
    rng = np.random.default_rng(2)
    ref = Table({"star": truth.stars["star"], "flux": flux * (1 + 0.01 * rng.standard_normal(flux.size)),
                 "flux_err": 0.01 * flux})
    return obs, wcs, truth, ref


def _fit(problem, model, solver):
    obs, wcs, truth, ref = problem
    kw = dict(star_flat_order=2, visit_order=3) if model == "monolithic" else dict(star_flat_order=2)
    return fit_joint(obs, wcs, model=model, reference=None if model == "reference-free" else ref,
                     bboxes=truth.bboxes, solver=solver, **kw)


@pytest.mark.parametrize("model", ["separated", "reference-free", "monolithic"])
def test_sparse_solver_gives_the_dense_answer(problem, model):
    dense = _fit(problem, model, "dense")
    sparse = _fit(problem, model, "sparse")
    assert dense.converged and sparse.converged
    np.testing.assert_array_equal(sparse.residuals["used"], dense.residuals["used"])
    assert np.count_nonzero(~np.asarray(dense.residuals["used"])) > 0  # outliers were classified
    np.testing.assert_allclose(sparse.star_flux["mag"], dense.star_flux["mag"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sparse.residuals["residual"], dense.residuals["residual"], rtol=0, atol=1e-6)
    # the calibration itself, over every (visit, detector)'s whole area
    obs, _, truth, _ = problem
    u, v = np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    pairs = set(zip(np.asarray(obs["visit"]).tolist(), np.asarray(obs["detector"]).tolist(), strict=True))
    worst = 0.0
    for vis, det in sorted(pairs):
        box = truth.bboxes[det]
        x = box.x0 + u.ravel() * (box.width - 1)
        y = box.y0 + v.ravel() * (box.height - 1)
        cd = dense.photo_calib(vis, det).field.evaluate(x, y)
        cs = sparse.photo_calib(vis, det).field.evaluate(x, y)
        worst = max(worst, float(np.max(np.abs(2.5 * np.log10(cs / cd)))))
    assert worst <= 1e-6
    # errors: the covariance diagonal and the stars' calibration variance
    np.testing.assert_allclose(sparse._perr, dense._perr, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(sparse.star_flux["mag_err"], dense.star_flux["mag_err"], rtol=1e-5)


@pytest.mark.parametrize("model", ["separated", "monolithic"])
def test_sparse_reduced_matrix_and_prior_equal_the_dense_ones(problem, model):
    """The pieces themselves: the Schur complement and the priors' quadratic form."""
    obs, wcs, truth, ref = problem
    kw = dict(visit_order=3) if model == "monolithic" else {}
    cfg = JointCalibrator(model, star_flat_order=2, solver="sparse", **kw)
    model_obj = cfg._model_class(cfg)
    prob = cfg._prepare(obs, wcs, ref, truth.bboxes)
    gn = GaussNewton(cfg, model_obj, prob, None)
    rng = np.random.default_rng(0)
    w = gn.w0 * (rng.uniform(size=gn.w0.size) > 0.05)
    gn.mapper(gn.p, gn.M[prob.star], w, False)
    D, r = gn.mapper.D, gn.mapper.r
    ref_w = gn.ref_w
    Npp, _ = K.accumulate_normal(prob.starts, prob.nbs, D, w, r, prob.n_p)
    Ns, _, W, _ = K.eliminate_stars(prob.ptr, prob.starts, prob.nbs, D, w, r, ref_w, ref_w * 0, prob.n_p, 1)
    dense = _symmetrize(Npp + Ns)
    got = _joint_sparse.reduced_matrix(prob, gn.cols, D, w, W).toarray()
    np.testing.assert_allclose(got, dense, rtol=0, atol=1e-9 * np.abs(dense).max())
    Qd = prior_matrix(cfg, prob, np.ones(len(prob.visit_ids)))
    Qs = _joint_sparse.prior(cfg, prob, np.ones(len(prob.visit_ids)))
    np.testing.assert_allclose(Qs.dense(), Qd, rtol=0, atol=1e-9 * np.abs(Qd).max())
    p = rng.normal(size=prob.n_p)
    np.testing.assert_allclose(Qs @ p, Qd @ p, rtol=1e-9, atol=1e-9 * np.abs(Qd @ p).max())
    # the model's own constraints and priors factorise with diagonal pivots, so the errors come
    # from the selected inverse; they equal the covariance's columns solved for one by one
    system = _joint_sparse.SparseSystem(_joint_sparse.reduced_matrix(prob, gn.cols, D, w, W), gn.Q, gn.C,
                                        float(np.mean(np.abs(dense.diagonal()))), prob)
    assert system.selected_inverse() is not None
    perr, quad = system.errors(prob, gn.cols, D, w)
    system.selected_inverse = lambda: None
    perr2, quad2 = system.errors(prob, gn.cols, D, w)
    np.testing.assert_allclose(perr, perr2, rtol=1e-6)
    np.testing.assert_allclose(quad, quad2, rtol=1e-6)


def test_solver_keyword_is_checked():
    with pytest.raises(InputError, match="solver must be 'auto', 'dense' or 'sparse'"):
        JointCalibrator("separated", solver="cholesky")


def _run(cfg, obs, wcs, ref, bboxes):
    gn = GaussNewton(cfg, cfg._model_class(cfg), prob := cfg._prepare(obs, wcs, ref, bboxes), None)
    gn.run()
    return gn, prob


def test_auto_keeps_sparse_for_a_wide_survey_and_goes_dense_for_a_deep_field(problem, monkeypatch):
    """``solver="auto"`` above the size threshold: sparse where visits couple only to their
    neighbours, dense (same answer) where every visit shares stars with every other."""
    from photocalib.fit import _joint_solver

    monkeypatch.setattr(_joint_solver, "SPARSE_MIN_PARAMS", 0)
    obs, wcs, truth, _ = problem
    cfg = JointCalibrator("reference-free", star_flat_order=1, solver="auto")
    deep, _ = _run(cfg, obs, wcs, None, truth.bboxes)
    assert not deep.sparse
    ref, _ = _run(JointCalibrator("reference-free", star_flat_order=1, solver="dense"), obs, wcs, None, truth.bboxes)
    np.testing.assert_allclose(deep.M, ref.M, rtol=0, atol=1e-6)

    camera = Camera.preset("hsc-like", n_detectors=4)
    survey = make_survey(camera, n_visits=1000, seed=1, dither_fraction=np.sqrt(1000 / 8))
    density = 20 / (np.pi * (camera.field_radius_arcsec / 3600.0) ** 2)
    wobs, wwcs, wtruth = observations_from_truth(camera, survey, density=density, seed=1, wcs_factory="camera")
    wide, prob = _run(cfg, wobs, wwcs, None, wtruth.bboxes)
    assert wide.sparse
    assert wide.S.nnz < 0.05 * prob.n_p**2  # (the sparse answer is the dense one: tests above)


# ----------------------------------------------------------------------------------------------
# the sparse solver on a synthetic reduced system (a wide survey's star–visit incidence, no WCS)
# ----------------------------------------------------------------------------------------------
def _synthetic_system(n_visits=400, per_visit=25, depth=8.0, seed=4):
    """Reduced system of ``n_visits`` unit-disc visits about ``depth`` deep, 4 quadrant detectors
    with a first-order star flat and one grey per visit, built from a star–visit incidence."""
    import types

    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    side = np.sqrt(n_visits * np.pi / depth)
    centre = rng.uniform(0, side, (n_visits, 2))
    stars = rng.uniform(0, side, (rng.poisson(per_visit / np.pi * side**2), 2))
    hits = cKDTree(centre).query_ball_point(stars, r=1.0)
    star = np.repeat(np.arange(len(stars)), [len(h) for h in hits])
    visit = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
    keep = np.bincount(star, minlength=len(stars))[star] >= 2
    star, visit = star[keep], visit[keep]
    angle = rng.uniform(0, 2 * np.pi, n_visits)[visit]  # each visit's camera rotation on the sky
    rel = stars[star] - centre[visit]
    rel = np.stack([np.cos(angle) * rel[:, 0] + np.sin(angle) * rel[:, 1],
                    -np.sin(angle) * rel[:, 0] + np.cos(angle) * rel[:, 1]], 1)
    _, star = np.unique(star, return_inverse=True)
    det = (rel[:, 0] > 0) + 2 * (rel[:, 1] > 0)
    n_p = n_visits + 12
    cols = np.stack([visit, n_visits + 3 * det, n_visits + 3 * det + 1, n_visits + 3 * det + 2], 1)
    D = np.stack([np.ones(len(star)), np.ones(len(star)), 2 * np.abs(rel[:, 0]) - 1, 2 * np.abs(rel[:, 1]) - 1], 1)
    w = 1.0 / rng.uniform(0.01, 0.05, len(star)) ** 2
    n_s = int(star.max()) + 1
    W = np.bincount(star, weights=w, minlength=n_s)
    prob = types.SimpleNamespace(n_p=n_p, star=star, ptr=np.concatenate([[0], np.cumsum(np.bincount(star))]),
                                 describe=lambda j: f"parameter {j}")
    # the reference-free constraints: mean grey 1, mean star-flat constant 1
    C = np.zeros((2, n_p))
    C[0, :n_visits] = 1.0 / n_visits
    C[1, n_visits + 3 * np.arange(4)] = 0.25
    ridge = np.zeros(n_p)
    ridge[n_visits:][np.arange(12) % 3 != 0] = 1.0
    # a prior like the shared-shape one: a sparse part minus a dense low-rank part, PSD in sum
    F = 3.0 * rng.normal(size=(1, n_p))
    Q = _joint_sparse.SparsePrior(sp_csr(np.diag(ridge + 0.5 * np.sum(F * F))), F, 0.5)
    return prob, cols.astype(np.int32), D, w, W, C, Q


def sp_csr(a):
    import scipy.sparse as sp

    return sp.csr_matrix(a)


def _dense_kkt(S, Q, C):
    """The KKT matrix densely, with the fit's 1e-12 relative ridge (both paths guard rounding
    with it; this synthetic system's condition number is about 1e10, so it shows at 1e-5)."""
    nc = len(C)
    A = S.toarray() + Q.dense()
    A[np.diag_indices_from(A)] += 1e-12 * np.abs(np.diag(S.toarray() + Q.Qs.toarray()))
    return np.block([[A, C.T], [C, np.zeros((nc, nc))]])


@pytest.mark.parametrize("with_prior_row", [False, True])
def test_sparse_system_solves_and_inverts_like_a_dense_kkt_solve(with_prior_row):
    """``solve`` against scipy's dense solve of the constrained system, and the selected
    inverse (parameter variances and every star's ``u_sᵀ cov u_s``) against the dense inverse."""
    import scipy.linalg as sla
    import scipy.sparse as sp

    prob, cols, D, w, W, C, Q = _synthetic_system()
    if not with_prior_row:
        Q = _joint_sparse.SparsePrior(Q.Qs, np.zeros((0, prob.n_p)), 0.0)
    S = _joint_sparse.reduced_matrix(prob, cols, D, w, W)
    lam = float(np.mean(S.diagonal()))
    system = _joint_sparse.SparseSystem(S, Q, C, lam, prob)
    Kd = _dense_kkt(S, Q, C)
    rng = np.random.default_rng(1)
    # a gradient as the fit has one: in the range of the (singular) reduced matrix
    rhs = Kd[: prob.n_p, : prob.n_p] @ rng.normal(size=prob.n_p)
    ct = np.array([0.01, -0.02])
    want = sla.solve(Kd, np.concatenate([rhs, ct]))[: prob.n_p]
    got = system.solve(rhs, ct)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(C @ got, ct, rtol=0, atol=1e-12)

    cov = np.linalg.inv(Kd)[: prob.n_p, : prob.n_p]
    assert system.selected_inverse() is not None  # symmetric pivots: the factor is L D Lᵀ
    perr, quad = system.errors(prob, cols, D, w)
    np.testing.assert_allclose(perr, np.sqrt(np.diag(cov)), rtol=1e-6)
    n = len(w)
    Jw = sp.csr_matrix(((D * w[:, None]).ravel(), cols.ravel(), np.arange(0, 4 * n + 1, 4)), shape=(n, prob.n_p))
    U = (Jw.T @ sp.csr_matrix((np.ones(n), (np.arange(n), prob.star)))).toarray()
    np.testing.assert_allclose(quad, np.einsum("ps,pq,qs->s", U, cov, U), rtol=1e-6)
    # what a streamed fit calls: the diagonal alone, and one partition's stars at a time
    np.testing.assert_allclose(system.variances(), np.diag(cov), rtol=1e-6)
    part = np.arange(0, U.shape[1], 3)
    np.testing.assert_allclose(system.star_quadratic(sp.csc_matrix(U[:, part])), quad[part], rtol=1e-12)
    idx = np.unique(np.nonzero(U[:, part])[0])  # the parameters those stars touch
    block = system.covariance_block(idx)
    on = block != 0
    assert on.mean() < 0.5  # not the whole block: only pairs that share a star (and their fill)
    np.testing.assert_allclose(block[on], cov[np.ix_(idx, idx)][on], rtol=1e-6)
    Up = U[idx][:, part]
    np.testing.assert_allclose(np.einsum("ps,pq,qs->s", Up, block, Up), quad[part], rtol=1e-9)
    # the fallback (columns of the covariance by solves) gives the same numbers
    system.selected_inverse = lambda: None
    perr2, quad2 = system.errors(prob, cols, D, w)
    np.testing.assert_allclose(perr2, perr, rtol=1e-6)
    np.testing.assert_allclose(quad2, quad, rtol=1e-6)
    full_block = cov[np.ix_(idx, idx)]
    np.testing.assert_allclose(system.covariance_block(idx), full_block, rtol=0, atol=1e-6 * np.abs(full_block).max())


def test_selected_inverse_of_a_random_sparse_spd_matrix():
    """Takahashi's recurrences against ``numpy.linalg.inv`` on the factor's whole pattern."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    n = 120
    A = sp.random(n, n, density=0.03, random_state=rng)
    A = (A + A.T + sp.diags(np.full(n, 4.0))).tocsc()
    prob = type("P", (), {"n_p": n, "describe": staticmethod(lambda j: str(j))})()
    system = _joint_sparse.SparseSystem(A, _joint_sparse.SparsePrior(sp.csr_matrix((n, n)), np.zeros((0, n)), 0.0),
                                        np.zeros((0, n)), 1.0, prob)
    indptr, indices, Z, Zd = system.selected_inverse()
    B = system.lu.L @ system.lu.U  # the permuted matrix the factor is of
    inv = np.linalg.inv(B.toarray())
    np.testing.assert_allclose(Zd, np.diag(inv), rtol=1e-10)
    col = np.repeat(np.arange(n), np.diff(indptr))
    np.testing.assert_allclose(Z, inv[indices, col], rtol=1e-9, atol=1e-12 * np.abs(inv).max())


def test_fill_reducing_order_is_a_permutation_that_cuts_the_fill():
    import scipy.sparse.linalg as spla

    prob, cols, D, w, W, C, Q = _synthetic_system(n_visits=1500, per_visit=20)
    S = (_joint_sparse.reduced_matrix(prob, cols, D, w, W) + Q.Qs).tocsc()
    S = S + _sp_identity(prob.n_p) * float(np.mean(S.diagonal()))
    order = _joint_sparse.fill_reducing_order(S)
    assert np.array_equal(np.sort(order), np.arange(prob.n_p))
    nd = spla.splu(S[order][:, order].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0)
    natural = spla.splu(S, permc_spec="NATURAL", diag_pivot_thresh=0.0)
    assert nd.L.nnz < 0.5 * natural.L.nnz


def _sp_identity(n):
    import scipy.sparse as sp

    return sp.identity(n, format="csc")


def test_constraints_whose_pins_miss_the_null_space_still_solve_exactly():
    """A constraint whose largest coefficient is on a parameter outside the degeneracy it
    removes (valid, but its pin fixes nothing): the factorisation falls back to threshold
    pivoting and the answer and errors are still the dense ones."""
    import scipy.linalg as sla

    prob, cols, D, w, W, C, Q = _synthetic_system(n_visits=200)
    n_v = prob.n_p - 12
    # only the star-flat ridge: the reduced matrix keeps its null space (the degeneracies)
    Q = _joint_sparse.SparsePrior(sp_csr(np.diag(np.r_[np.zeros(n_v), np.tile([0.0, 1.0, 1.0], 4)])),
                                  np.zeros((0, prob.n_p)), 0.0)
    C = C.copy()
    C[0, n_v + 1] = 1.0  # a star flat's x term: not in the null space, but now the largest entry
    S = _joint_sparse.reduced_matrix(prob, cols, D, w, W)
    system = _joint_sparse.SparseSystem(S, Q, C, float(np.mean(S.diagonal())), prob)
    assert not np.array_equal(system.lu.perm_r, system.lu.perm_c)  # pivoted off the diagonal
    assert system.selected_inverse() is None
    Kd = _dense_kkt(S, Q, C)
    rhs = Kd[: prob.n_p, : prob.n_p] @ np.random.default_rng(5).normal(size=prob.n_p)
    ct = np.array([0.003, 0.0])
    want = sla.solve(Kd, np.concatenate([rhs, ct]))[: prob.n_p]
    np.testing.assert_allclose(system.solve(rhs, ct), want, rtol=0, atol=1e-6 * np.abs(want).max())
    cov = np.linalg.inv(Kd)[: prob.n_p, : prob.n_p]
    np.testing.assert_allclose(system.variances(), np.diag(cov), rtol=1e-6)
