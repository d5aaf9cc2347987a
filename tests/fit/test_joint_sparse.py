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
