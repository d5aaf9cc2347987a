"""Joint calibration: the solver against independent implementations, persistence, Dask, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

import photocalib as pc
from photocalib.fit import _kernels as K
from photocalib.fit._joint_model import cheb_basis, cheb_means, coefficients_to_matrix
from photocalib.fit.joint import JointCalibrator, JointSolution, fit_joint
from photocalib.sim.camera import Camera
from photocalib.sim.catalog import observations_from_truth
from photocalib.sim.survey import make_survey


@pytest.fixture(scope="module")
def small():
    camera = Camera.preset("hsc-like", n_detectors=6)
    survey = make_survey(camera, n_visits=6, seed=4, grey_gradient_mag=0.01)
    obs, wcs, truth = observations_from_truth(camera, survey, density=1.2e4, seed=6)
    flux = np.asarray(truth.stars["flux"])
    ref = Table({"star": truth.stars["star"], "flux": flux, "flux_err": 0.01 * flux})
    return obs, wcs, truth, ref


@pytest.fixture(scope="module")
def small_fit(small):
    obs, wcs, truth, ref = small
    return fit_joint(obs, wcs, model="separated", reference=ref, bboxes=truth.bboxes, star_flat_order=2)


# -- numerical core ------------------------------------------------------------------------------
def test_kernels_equal_the_dense_schur_complement(rng):
    n_s, slots, nbs = 40, (3, 4), np.array([3, 2])  # groups per slot, params per group
    offsets = np.array([0, slots[0] * nbs[0]])
    n_p = int(offsets[-1] + slots[1] * nbs[1])
    counts = rng.integers(1, 6, n_s)
    star = np.repeat(np.arange(n_s), counts)
    n = star.size
    starts = np.stack([offsets[0] + rng.integers(0, slots[0], n) * nbs[0],
                       offsets[1] + rng.integers(0, slots[1], n) * nbs[1]], axis=1).astype(np.int64)
    D = rng.normal(size=(n, nbs.sum()))
    w = rng.uniform(0.5, 2.0, n)
    w[::7] = 0.0  # rejected observations
    r = rng.normal(size=n)
    ref_w = np.where(rng.uniform(size=n_s) < 0.3, rng.uniform(1, 3, n_s), 0.0)
    ref_b = ref_w * rng.normal(size=n_s)
    ptr = np.searchsorted(star, np.arange(n_s + 1)).astype(np.int64)
    # dense normal equations over (star magnitudes, parameters)
    E = np.zeros((n, n_s + n_p))
    E[np.arange(n), star] = 1.0
    cols = np.concatenate([starts[:, :1] + np.arange(nbs[0]), starts[:, 1:] + np.arange(nbs[1])], axis=1)
    for j in range(cols.shape[1]):
        E[np.arange(n), n_s + cols[:, j]] += D[:, j]
    N = E.T @ (w[:, None] * E)
    b = E.T @ (w * r)
    N[np.arange(n_s), np.arange(n_s)] += ref_w
    b[:n_s] += ref_b
    Wd = np.diag(N)[:n_s]
    live = Wd > 0
    Nmm_inv = np.where(live, 1.0 / np.where(live, Wd, 1.0), 0.0)
    S = N[n_s:, n_s:] - N[n_s:, :n_s] @ (Nmm_inv[:, None] * N[:n_s, n_s:])
    rhs = b[n_s:] - N[n_s:, :n_s] @ (Nmm_inv * b[:n_s])
    Npp, bpp = K.accumulate_normal(starts, nbs, D, w, r, n_p)
    Ns, bs, W, B = K.eliminate_stars(ptr, starts, nbs, D, w, r, ref_w, ref_b, n_p, 2)
    U = Npp + Ns
    got = U + U.T - np.diag(np.diag(U))
    np.testing.assert_allclose(got, S, atol=1e-10)
    np.testing.assert_allclose(bpp + bs, rhs, atol=1e-10)
    np.testing.assert_allclose(W, Wd, atol=1e-12)
    np.testing.assert_allclose(B, b[:n_s], atol=1e-12)
    vec = rng.normal(size=n_p)
    np.testing.assert_allclose(K.rows_dot(starts, nbs, D, vec), (E[:, n_s:] @ vec), atol=1e-12)
    coef = rng.normal(size=n)
    np.testing.assert_allclose(K.rows_scatter(starts, nbs, D, coef, n_p), E[:, n_s:].T @ coef, atol=1e-12)
    cov = rng.normal(size=(n_p, n_p))
    cov = cov @ cov.T
    Ustar = (w[:, None] * E[:, n_s:])
    u = np.zeros((n_s, n_p))
    np.add.at(u, star, Ustar)
    np.testing.assert_allclose(K.star_quadratic(ptr, starts, nbs, D, w, cov), np.einsum("si,ij,sj->s", u, cov, u),
                               rtol=1e-10)


def test_chebyshev_helpers_match_chebyshev_field(rng):
    from photocalib.geom import Box

    order = 3
    coef = rng.normal(size=(order + 1) * (order + 2) // 2)
    box = Box(0, 0, 200, 100)
    f = pc.ChebyshevField(coefficients_to_matrix(coef, order), box)
    x = rng.uniform(-0.5, 199.5, 50)
    y = rng.uniform(-0.5, 99.5, 50)
    xmin, xmax, ymin, ymax = box.extent
    u = (x - xmin) * 2 / (xmax - xmin) - 1
    v = (y - ymin) * 2 / (ymax - ymin) - 1
    np.testing.assert_allclose(cheb_basis(u, v, order) @ coef, f.evaluate(x, y), rtol=1e-12)
    assert abs(cheb_means(order) @ coef - f.mean()) < 1e-12


def test_gauss_newton_equals_a_general_least_squares_solver(small):
    """The whole fit against scipy.optimize.least_squares on the same χ², written independently."""
    from scipy.optimize import least_squares

    obs, wcs, truth, ref = small
    sel = np.isin(np.asarray(obs["visit"]), np.unique(np.asarray(obs["visit"]))[:4])
    sel &= np.asarray(obs["instflux"]) / np.asarray(obs["instflux_err"]) > 100  # bright: small problem
    o = obs[sel]
    sol = fit_joint(o, wcs, model="separated", reference=ref, bboxes=truth.bboxes, star_flat_order=1, n_sigma=None,
                    compute_errors=False)
    res = sol.residuals
    stars, si = np.unique(np.asarray(res["star"]), return_inverse=True)
    visits, vi = np.unique(np.asarray(res["visit"]), return_inverse=True)
    dets, di = np.unique(np.asarray(res["detector"]), return_inverse=True)
    rows = np.asarray(res["input_row"])
    x = np.asarray(o["x"])[rows]
    y = np.asarray(o["y"])[rows]
    area = np.empty(len(rows))
    for v in visits:
        for d in dets:
            m = (np.asarray(res["visit"]) == v) & (np.asarray(res["detector"]) == d)
            if m.any():
                area[m] = wcs[(v, d)].pixel_area(x[m], y[m])
    mag = -2.5 * np.log10(np.asarray(o["instflux"])[rows] * area)
    sig = 1.0857362047581294 * np.asarray(o["instflux_err"])[rows] / np.asarray(o["instflux"])[rows]
    box = truth.bboxes[dets[0]]
    u = (x + 0.5) * 2 / box.width - 1
    v = (y + 0.5) * 2 / box.height - 1
    basis = np.stack([np.ones_like(u), u, v], axis=1)
    rpos = np.searchsorted(stars, np.asarray(ref["star"]))
    hit = (rpos < len(stars)) & (stars[np.clip(rpos, 0, len(stars) - 1)] == np.asarray(ref["star"]))
    ref_m = -2.5 * np.log10(np.asarray(ref["flux"])[hit])
    ref_s = 1.0857362047581294 * np.asarray(ref["flux_err"])[hit] / np.asarray(ref["flux"])[hit]
    n_s, n_d, n_v = len(stars), len(dets), len(visits)

    def resid(theta):
        M = theta[:n_s]
        a = theta[n_s:n_s + 3 * n_d].reshape(n_d, 3)
        g = theta[n_s + 3 * n_d:]
        S = np.einsum("ij,ij->i", basis, a[di])
        model = M[si] + 2.5 * np.log10(np.abs(S) * np.abs(g[vi]))
        # one gauge constraint (mean star flat = 1), as a heavily weighted residual
        gauge = 1e3 * (np.mean(a[:, 0]) - 1.0)
        return np.concatenate([(mag - model) / sig, (theta[:n_s][rpos[hit]] - ref_m) / ref_s, [gauge]])

    M0 = np.asarray(sol.star_flux["mag"]) - 31.4 + 0.01 * np.random.default_rng(1).normal(size=n_s)
    theta0 = np.concatenate([M0, np.tile([1.0, 0, 0], n_d), np.full(n_v, sol.grey(visits[0]))])
    from scipy.sparse import lil_matrix

    n_r = len(mag) + int(hit.sum()) + 1
    sparsity = lil_matrix((n_r, len(theta0)), dtype=int)
    obs_rows = np.arange(len(mag))
    sparsity[obs_rows, si] = 1
    for j in range(3):
        sparsity[obs_rows, n_s + 3 * di + j] = 1
    sparsity[obs_rows, n_s + 3 * n_d + vi] = 1
    sparsity[len(mag) + np.arange(int(hit.sum())), rpos[hit]] = 1
    sparsity[n_r - 1, n_s + 3 * np.arange(n_d)] = 1
    ls = least_squares(resid, theta0, method="trf", x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14,
                       jac_sparsity=sparsity)
    np.testing.assert_allclose(ls.x[:n_s], np.asarray(sol.star_flux["mag"]) - 31.4, atol=2e-6)
    for k, d in enumerate(dets):
        np.testing.assert_allclose(ls.x[n_s + 3 * k:n_s + 3 * k + 3],
                                   sol.star_flat(d).coefficients[[0, 0, 1], [0, 1, 0]], atol=2e-6)
    assert abs(2 * np.sum(ls.fun[:-1] ** 2) / 2 - sol.chi2) < 1e-6 * sol.chi2


# -- solution --------------------------------------------------------------------------------------
def test_photo_calib_is_area_times_star_flat_times_grey(small, small_fit):
    obs, wcs, truth, _ = small
    v, d = small_fit.visits[2], small_fit.detectors[1]
    calib = small_fit.photo_calib(v, d)
    assert isinstance(calib, pc.PhotoCalib)
    kinds = [type(f).__name__ for f in calib.field.factors]
    assert kinds == ["PixelAreaField", "ChebyshevField", "ConstantField"]
    x = np.linspace(0, 2047, 7)
    y = np.linspace(0, 4175, 7)
    np.testing.assert_allclose(calib.fluence_to_fluence(wcs[(v, d)]).evaluate(x, y),
                               small_fit.star_flat(d).evaluate(x, y) * small_fit.grey(v), rtol=1e-12)
    # calibrating the observations reproduces the fitted star fluxes (the model's definition)
    res = small_fit.residuals
    m = (np.asarray(res["visit"]) == v) & (np.asarray(res["detector"]) == d) & np.asarray(res["used"])
    rows = np.asarray(res["input_row"])[m]
    f = calib.instflux_to_nanojansky(np.asarray(obs["instflux"])[rows], np.asarray(obs["x"])[rows],
                                     np.asarray(obs["y"])[rows])
    fitted = dict(zip(np.asarray(small_fit.star_flux["star"]).tolist(), np.asarray(small_fit.star_flux["flux"]),
                      strict=True))
    model = np.array([fitted[s] for s in np.asarray(res["star"])[m].tolist()])
    dm = 2.5 * np.log10(f / model)
    np.testing.assert_allclose(dm, -np.asarray(res["residual"])[m], atol=1e-5)
    assert np.all(np.isfinite(np.asarray(small_fit.star_flux["flux_err"])))
    assert np.all(np.asarray(small_fit.star_flux["flux_err"]) > 0)


def test_grey_gradient_field_on_the_detector(small):
    obs, wcs, truth, ref = small
    sol = fit_joint(obs, wcs, model="separated", reference=ref, bboxes=truth.bboxes, grey_gradient=True,
                    star_flat_order=2)
    v, d = sol.visits[1], sol.detectors[3]
    field = sol.grey_field(v, d)
    assert isinstance(field, pc.ChebyshevField)
    # the Chebyshev form equals the tangent-plane plane through the WCS
    from photocalib.astrometry import sky_to_tangent

    b = sol._block("grey")
    coef = b.coefficients(sol.parameters, sol.visits.index(v))
    vi = sol.visits.index(v)
    x = np.random.default_rng(2).uniform(0, 2047, 40)
    y = np.random.default_rng(3).uniform(0, 4175, 40)
    ra, dec = wcs[(v, d)].pixel_to_sky(x, y)
    xi, eta = sky_to_tangent(ra, dec, *sol._visit_center[vi])
    direct = coef[0] + coef[1] * xi / sol._visit_radius[vi] + coef[2] * eta / sol._visit_radius[vi]
    np.testing.assert_allclose(field.evaluate(x, y), direct, rtol=1e-9)
    # the fitted gradients follow the survey's (0.01 mag rms) gradients: calibration ∝ 1/T, so
    # its relative gradient per visit radius is +0.4 ln10 × (mag per field radius) × R_v / R
    grad = np.array([sol._block("grey").coefficients(sol.parameters, i)[1:] / sol.grey(sol.visits[i])
                     for i in range(len(sol.visits))])
    true = np.array([truth.survey.visit(vv).grey_gradient for vv in sol.visits])
    true = 0.4 * np.log(10) * true * sol._visit_radius[:, None] / truth.camera.field_radius_arcsec
    # a gradient fixed in the camera frame is a star-flat term (the fit sets its sum to zero):
    # compare in the camera frame, (ξ, η) = R(θ) (u, v), R = [[-cos, sin], [sin, cos]]
    th = np.radians([truth.survey.visit(vv).rotation_deg for vv in sol.visits])
    R = np.stack([np.stack([-np.cos(th), np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], -2)
    cam_fit = np.einsum("vji,vj->vi", R, grad)
    cam_true = np.einsum("vji,vj->vi", R, true)
    np.testing.assert_allclose(cam_fit - cam_fit.mean(0), cam_true - cam_true.mean(0), atol=1.5e-3)
    assert np.std(cam_true) > 3e-3  # the gradients are real


def test_two_epochs_have_their_own_star_flats(small):
    obs, wcs, truth, ref = small
    o = obs.copy()
    visits = np.unique(np.asarray(o["visit"]))
    epoch = np.where(np.isin(np.asarray(o["visit"]), visits[: len(visits) // 2]), 1, 2)
    o["epoch"] = epoch
    # epoch 2's response changes by a 2 % gradient along x on every detector
    x = np.asarray(o["x"])
    change = 1.0 + 0.02 * (x / 2047.0 - 0.5)
    o["instflux"] = np.where(epoch == 2, np.asarray(o["instflux"]) * change, np.asarray(o["instflux"]))
    # the survey has grey gradients: without grey_gradient they would leak into the star flats
    sol = fit_joint(o, wcs, model="separated", reference=ref, bboxes=truth.bboxes, star_flat_order=2,
                    grey_gradient=True)
    xs = np.linspace(0, 2047, 9)
    ys = np.full(9, 2000.0)
    for d in sol.detectors:
        ratio = sol.star_flat(d, epoch=2).evaluate(xs, ys) / sol.star_flat(d, epoch=1).evaluate(xs, ys)
        expect = 1.0 / (1.0 + 0.02 * (xs / 2047.0 - 0.5))
        ratio_n = ratio / ratio.mean()
        # star-flat coefficient errors are 0.5–1.5 mmag here (3 visits per epoch): 3σ
        np.testing.assert_allclose(ratio_n, expect / expect.mean(), atol=2.5e-3)
    with pytest.raises(pc.InputError, match="epoch"):
        sol.star_flat(sol.detectors[0])


def test_chromatic_term_recovered(small):
    obs, wcs, truth, _ = small
    o = obs.copy()
    rng = np.random.default_rng(11)
    stars = np.unique(np.asarray(o["star"]))
    colour = dict(zip(stars.tolist(), rng.uniform(-1, 1, stars.size), strict=True))
    c = np.array([colour[s] for s in np.asarray(o["star"]).tolist()])
    o["colour"] = c
    det = np.asarray(o["detector"])
    slope = {d: 0.01 * (k - 2.5) for k, d in enumerate(np.unique(det))}  # zero mean over detectors
    kd = np.array([slope[d] for d in det.tolist()]) * (np.asarray(o["x"]) / 1023.5 - 1)
    o["instflux"] = np.asarray(o["instflux"]) / (1.0 + c * kd)
    sol = fit_joint(o, wcs, model="reference-free", bboxes=truth.bboxes, chromatic_order=1, star_flat_order=2,
                    grey_gradient=True)
    xs = np.array([0.0, 1023.5, 2047.0])
    for d in sol.detectors:
        got = sol.chromatic_field(d).evaluate(xs, np.full(3, 2000.0))
        # the K coefficients have 1σ errors of 0.4–1.5e-3 here; the slopes reach 0.025
        np.testing.assert_allclose(got, slope[d] * (xs / 1023.5 - 1), atol=3e-3)


def test_write_read_round_trip(small, small_fit, tmp_path):
    path = tmp_path / "joint.fits"
    small_fit.write(path)
    back = JointSolution.read(path)
    assert back.model == small_fit.model and back.kind is small_fit.kind
    assert back.visits == small_fit.visits and back.detectors == small_fit.detectors
    np.testing.assert_array_equal(back.parameters, small_fit.parameters)
    np.testing.assert_array_equal(np.asarray(back.star_flux["flux"]), np.asarray(small_fit.star_flux["flux"]))
    assert len(back.residuals) == len(small_fit.residuals)
    assert back.chi2 == small_fit.chi2 and back.dof == small_fit.dof and back.converged == small_fit.converged
    v, d = small_fit.visits[0], small_fit.detectors[2]
    x = np.linspace(0, 2047, 5)
    y = np.linspace(0, 4175, 5)
    np.testing.assert_allclose(back.photo_calib(v, d).field.evaluate(x, y),
                               small_fit.photo_calib(v, d).field.evaluate(x, y), rtol=1e-12)
    with open(path, "rb") as fh:
        assert b"pickle" not in fh.read()


def test_dask_map_reduce_gives_the_in_process_answer(small, small_fit):
    from dask.distributed import Client, LocalCluster

    obs, wcs, truth, ref = small
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        sol = fit_joint(obs, wcs, model="separated", reference=ref, bboxes=truth.bboxes, star_flat_order=2,
                        client=client, chunk_size=5000)
    np.testing.assert_allclose(sol.parameters, small_fit.parameters, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sol.star_flux["flux"]), np.asarray(small_fit.star_flux["flux"]), rtol=1e-9)
    assert sol.n_iter == small_fit.n_iter


@pytest.mark.slow
def test_dask_with_worker_processes(small, small_fit):
    from dask.distributed import Client, LocalCluster

    obs, wcs, truth, ref = small
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        sol = fit_joint(obs, wcs, model="separated", reference=ref, bboxes=truth.bboxes, star_flat_order=2,
                        client=client, chunk_size=5000)
    np.testing.assert_allclose(sol.parameters, small_fit.parameters, rtol=1e-9, atol=1e-12)


# -- bad input -------------------------------------------------------------------------------------
def test_missing_column_names_it(small):
    obs, wcs, truth, ref = small
    o = obs.copy()
    o.remove_column("instflux_err")
    with pytest.raises(pc.InputError, match="instflux_err"):
        fit_joint(o, wcs, reference=ref)


def test_missing_wcs_names_the_visit_and_detector(small):
    obs, wcs, truth, ref = small
    w = dict(wcs)
    key = next(iter(w))
    del w[key]
    with pytest.raises(pc.InputError, match=rf"\({key[0]}, {key[1]}\)"):
        fit_joint(obs, w, reference=ref)


def test_unknown_model_and_missing_reference(small):
    obs, wcs, truth, ref = small
    with pytest.raises(pc.InputError, match="unknown joint model"):
        fit_joint(obs, wcs, model="ubercal", reference=ref)
    with pytest.raises(pc.InputError, match="reference"):
        fit_joint(obs, wcs, model="separated")
    with pytest.raises(pc.InputError, match="reference"):
        fit_joint(obs, wcs, model="monolithic")
    with pytest.raises(pc.InputError, match="no reference star matches"):
        fit_joint(obs, wcs, model="separated", reference=Table({"star": [-1], "flux": [1.0], "flux_err": [0.1]}))


def test_bad_rows_are_dropped_and_counted_never_nan(small):
    obs, wcs, truth, ref = small
    o = obs.copy()
    o["instflux"][:5] = np.nan
    o["instflux"][5:9] = -3.0
    o["instflux_err"][9:12] = 0.0
    o["x"][12] = np.inf
    sol = fit_joint(o, wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=2)
    ex = {(r["what"], r["reason"]): r["id"] for r in sol.excluded}
    assert ex[("observations", "non-finite instflux")] == "5"
    assert ex[("observations", "non-positive instflux")] == "4"
    assert ex[("observations", "non-finite or non-positive instflux_err")] == "3"
    assert ex[("observations", "non-finite x or y")] == "1"
    assert ("stars", "seen once (no constraint on the calibration)") in ex or True
    for col in ("flux", "flux_err", "mag", "mag_err"):
        assert np.all(np.isfinite(np.asarray(sol.star_flux[col])))
    assert np.all(np.isfinite(sol.parameters)) and np.all(np.isfinite(sol.parameter_errors))
    assert not np.isin(np.arange(13), np.asarray(sol.residuals["input_row"])).any()


def test_stars_seen_once_and_sparse_detectors_are_excluded(small):
    obs, wcs, truth, ref = small
    o = obs.copy()
    det = np.asarray(o["detector"])
    sparse = np.unique(det)[-1]
    keep = (det != sparse) | (np.arange(len(o)) % 500 == 0)  # a handful of stars left on it
    o = o[keep]
    sol = fit_joint(o, wcs, model="reference-free", bboxes=truth.bboxes)
    assert sparse not in sol.detectors
    row = [r for r in sol.excluded if r["what"] == "detector"]
    assert row and f"detector {sparse}" in row[0]["id"]
    with pytest.raises(pc.InputError, match=f"detector {sparse}.*excluded"):
        sol.photo_calib(sol.visits[0], sparse)
    with pytest.raises(pc.InputError, match="visit 99999"):
        sol.photo_calib(99999, sol.detectors[0])
    once = np.bincount(np.unique(np.asarray(o["star"]), return_inverse=True)[1]) == 1
    assert once.any()
    assert any(r["what"] == "stars" and "seen once" in r["reason"] for r in sol.excluded)
    assert not np.isin(np.unique(np.asarray(o["star"]))[once], np.asarray(sol.star_flux["star"])).any()


def test_disconnected_visits_are_refused(small):
    obs, wcs, truth, ref = small
    o = obs.copy()
    v = np.asarray(o["visit"])
    first, second = np.unique(v)[:2]
    # the first two visits' stars get new identifiers: they share no star with the others
    pair = (v == first) | (v == second)
    o["star"] = np.where(pair, np.asarray(o["star"]) + 10_000_000, np.asarray(o["star"]))
    with pytest.raises(pc.InputError, match=f"visits \\[{first}, {second}\\] share no star"):
        fit_joint(o, wcs, model="reference-free", bboxes=truth.bboxes)


def test_pandas_input_gives_the_same_answer(small, small_fit):
    obs, wcs, truth, ref = small
    sol = fit_joint(obs.to_pandas(), wcs, model="separated", reference=ref.to_pandas(), bboxes=truth.bboxes,
                    star_flat_order=2)
    np.testing.assert_allclose(sol.parameters, small_fit.parameters, rtol=1e-12)


def test_configuration_is_validated():
    with pytest.raises(pc.InputError, match="star_flat_order"):
        JointCalibrator(star_flat_order=-1)
    with pytest.raises(pc.InputError, match="chromatic_order"):
        JointCalibrator(model="separated", chromatic_order=1)
    with pytest.raises(pc.InputError, match="image kind"):
        JointCalibrator(kind="counts")
    assert "separated" in repr(JointCalibrator())
