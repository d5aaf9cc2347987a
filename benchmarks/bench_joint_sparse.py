"""Benchmark of the joint fit's sparse reduced system at 10⁴–10⁵ visits, against the previous
sparse solve and the dense one, in the same run.

Two parts (one command each):

* ``system`` (the default): the reduced system alone, built directly from a synthetic
  star–visit incidence (no WCS objects, no simulated images: ``synthetic_system``), so that
  10⁵ visits take seconds to set up. A wide survey about 8 deep: ``n`` unit-disc visits
  placed uniformly on a square of area ``nπ/8``, stars uniform at ``--obs-per-visit / π`` per
  unit area, a 4-detector camera (the field's quadrants) with a first-order star flat per
  detector and one grey per visit (``n + 12`` parameters, the reference-free model's
  constraints: mean grey 1, mean star-flat constant 1). Timed: the assembly
  (``reduced_matrix``), the factorisation (``SparseSystem``), one solve, and the errors
  (parameter variances and every star's ``u_sᵀ cov u_s``) — for the current solver (METIS
  nested dissection + SuperLU ``L D Lᵀ``, selected inversion), the previous one (SuperLU's
  minimum-degree ordering of the whole KKT matrix, errors by ``n_p`` solves: up to
  ``--old-max`` visits, its errors up to ``--old-errors-max``) and the dense path (bordered
  Cholesky of the dense reduced matrix, errors from its inverse: up to ``--dense-max``).
  Peak memory is each stage's growth of the process's resident memory over what it held
  before the stage.
* ``--candidates``: the fill-reducing orderings, CHOLMOD and preconditioned conjugate gradients
  on the same matrix, as measured to choose the solver.
* ``--fit``: whole in-memory fits (simulated observations with the camera's WCSs) of the
  sparse and dense solvers, with their Gauss–Newton iteration counts.

Usage::

    .venv/bin/python benchmarks/bench_joint_sparse.py [--visits 4000,10000,30000,100000]
        [--obs-per-visit 30] [--old-max 100000] [--old-errors-max 2000] [--dense-max 4000]
    .venv/bin/python benchmarks/bench_joint_sparse.py --candidates [--visits 10000,100000]
    .venv/bin/python benchmarks/bench_joint_sparse.py --fit [--visits 1000,2000,4000] [--dense-max 4000]

Measured: see the tables below (numbers are from a 2-core machine shared with three other
jobs; the load average is printed with each table, and wall times scale with it).

System, ``--visits 4000,10000,30000,100000 --dense-max 10000 --old-errors-max 4000``
(2026-12-06, load average 3.6–4.5 on the 2 CPUs during the run; MiB: each stage's peak growth
of resident memory; "previous/new": factorisation + one solve; "dense/new": factorisation +
solve + errors)::

    visits   observations nnz(S)     assemble s  factor s    solve s  errors s    previous      previous/ previous  dense          dense/
                                     (MiB)       (MiB)                (MiB)       factor s(MiB) new       errors s  s (MiB)        new
    4,000    118,199      203,772    0.1 (11)    0.1 (13)    0.001    0.3 (11)    0.2 (23)      1.7×      46.8      12.1 (517)     30.5×
    10,000   296,148      513,204    0.4 (12)    0.8 (25)    0.004    2.4 (26)    3.0 (99)      4.0×      not run   45.8 (3,077)   14.6×
    30,000   894,675      1,548,836  1.0 (78)    1.2 (109)   0.014    2.8 (116)   4.5 (362)     3.8×      not run   not run        –
    100,000  2,987,847    5,175,856  2.8 (285)   5.4 (264)   0.098    18.5 (432)  36.0 (1,463)  6.6×      not run   not run        –

All three give the same solution (max |Δx| 3e-14 to 1e-13 between new and previous, 4e-14
between new and dense) and the same parameter errors (new vs previous 1e-13 relative at
4,000 visits, where the previous ones are from n_p solves; vs dense 2e-13 at 4,000 and 6e-13
at 10,000); at 4,000 visits the errors take 0.3 s against the previous 46.8 s. At 10⁵
visits one factorisation + solve takes 5.5 s and 0.26 GiB, the errors (every parameter's
variance and every star's calibration variance, by selected inversion) 18.5 s and 0.42 GiB;
the previous path's factorisation took 36 s and 1.4 GiB (its errors, n_p = 10⁵ solves, were
not run: 47 s at 4,000 visits, 435 s at 10,000 in an earlier run). The dense path's matrix
alone is 8 n_p² bytes: 80 GB at 10⁵ visits. An earlier run on a quieter machine (load 1.1)
factorised the 10⁵-visit system in 4.7 s (previous: 28.3 s).

Candidates, ``--candidates --visits 10000,100000`` (the SPD leading block ``S + Qs + λGᵀG`` that
``SparseSystem`` factorises, one right-hand side; CG to a relative residual of 1e-12; CHOLMOD
and pyamg are optional here, from the ``bench`` extra; load average 4.6–4.8)::

    visits   method                          s      peak MiB  rel. residual  max |Δx|  detail
    10,000   SuperLU, minimum degree         0.5    35        5e-15          –         nnz(L+U) 1,920,396
    10,000   SuperLU, METIS (used)           0.3    23        5e-15          1e-12     nnz(L+U) 1,726,468
    10,000   CG, Jacobi                      3.7    0         9e-13          4e-09     403 iterations
    10,000   CG, pyamg smoothed aggregation  5.7    2         5e-13          7e-10     127 iterations
    10,000   CHOLMOD (cvxopt), AMD           0.2    6         3e-15          8e-12
    10,000   CHOLMOD (cvxopt), METIS         0.3    1         2e-15          2e-12
    100,000  SuperLU, minimum degree         19.0   410       1e-14          –         nnz(L+U) 29,515,304
    100,000  SuperLU, METIS (used)           6.1    553       6e-15          2e-11     nnz(L+U) 24,196,022
    100,000  CG, Jacobi                      43.9   0         8e-13          3e-08     1,205 iterations
    100,000  CG, pyamg smoothed aggregation  64.2   143       1e-12          4e-08     356 iterations
    100,000  CHOLMOD (cvxopt), AMD           1.4    283       6e-15          6e-11
    100,000  CHOLMOD (cvxopt), METIS         3.1    254       6e-15          5e-13

Conjugate gradients lose: the grey block is a graph Laplacian on the sky whose condition
grows with the survey's extent, and the 12 star-flat parameters couple to every visit, which
spoils smoothed aggregation (356 iterations); each solve also needs many iterations where a
factor is re-used for the frozen-Hessian steps and gives the errors. CHOLMOD's supernodal
Cholesky (cvxopt's wheel; scikit-sparse has no wheels) is 4× faster than SuperLU with the
METIS order at 10⁵ visits, but works on the SPD form only (the dense borders by Woodbury)
and cvxopt exposes no factor for the selected inversion: SuperLU with METIS is kept (6 s
here is well inside the few tens of seconds a fit can spend per factorisation).

Whole fits, ``--fit --visits 1000,2000,4000,10000 --dense-max 4000`` (reference-free, first-order
star flat, no errors; 2026-12-06, load average 5.1–5.7 on the 2 CPUs, so the CPU seconds are
the steadier number; peak: the fit's growth over its inputs)::

    visits   observations  parameters  sparse s (CPU s)  dense s (CPU s)  dense/sparse  sparse MiB  dense MiB  iterations
    1,000    49,552        1,012       1.9 (1.3)         3.6 (1.8)        1.86×         28          94         19
    2,000    98,939        2,012       8.0 (2.9)         13.0 (5.0)       1.63×         46          329        22
    4,000    198,806       4,012       15.5 (5.6)        54.3 (17.9)      3.50×         109         1,118      23
    10,000   494,756       10,012      20.5 (13.9)       not run          –             144         –          23

Sparse and dense fits give the same star magnitudes to 7e-15 mag and residuals to 1e-13 mag.
Before this session's solver changes the same fits took 27 (1,000 visits) and 36 (4,000)
iterations with 12 Hessian assemblies each, and the 10,000-visit fit 22.8 CPU s (table of
the previous version of this file, load 3–6); where the iterations went and what changed is
in :class:`photocalib.fit._joint_solver.GaussNewton`. Whole fits at 10⁵ visits are not run
here: the simulation builds one WCS object per (visit, detector) and the problem builder
projects through each (at 4,000 visits that was 4.8 of the fit's 8.2 s, against 3.3 s for
the solver); the streamed fit (``bench_joint_stream.py``) takes pixel areas and a visit
table instead.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_joint import PeakRSS, _rss, timed_fit  # noqa: E402


# ----------------------------------------------------------------------------------------------
# the reduced system alone, from a synthetic star–visit incidence
# ----------------------------------------------------------------------------------------------
def synthetic_system(n_visits: int, obs_per_visit: float = 30.0, depth: float = 8.0, seed: int = 1) -> dict:
    """Derivative rows, weights, priors and constraints of a wide survey ``depth`` deep (see the
    module documentation), without WCSs: what :func:`reduced_matrix` and the solvers take."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    from photocalib.fit._joint_sparse import SparsePrior

    rng = np.random.default_rng(seed)
    side = np.sqrt(n_visits * np.pi / depth)
    centre = rng.uniform(0, side, (n_visits, 2))
    stars = rng.uniform(0, side, (rng.poisson(obs_per_visit / np.pi * side**2), 2))
    hits = cKDTree(centre).query_ball_point(stars, r=1.0)
    count = np.fromiter((len(h) for h in hits), np.int64, len(hits))
    star = np.repeat(np.arange(len(stars)), count)
    visit = np.fromiter((v for h in hits for v in h), np.int64, int(count.sum()))
    del hits
    keep = count[star] >= 2
    star, visit = star[keep], visit[keep]
    # each visit's camera rotated at random on the sky (as dithered surveys are): without it a
    # gradient of the grey terms across the sky is exactly a tilt of every star flat
    angle = rng.uniform(0, 2 * np.pi, n_visits)[visit]
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
    prob = types.SimpleNamespace(n_p=n_p, star=star, ptr=np.concatenate([[0], np.cumsum(np.bincount(star))]),
                                 describe=lambda j: f"parameter {j}")
    C = np.zeros((2, n_p))
    C[0, :n_visits] = 1.0 / n_visits
    C[1, n_visits + 3 * np.arange(4)] = 0.25
    ridge = np.zeros(n_p)
    ridge[n_visits:][np.arange(12) % 3 != 0] = 1.0
    Q = SparsePrior(sp.diags(ridge).tocsr(), np.zeros((0, n_p)), 0.0)
    W = np.bincount(star, weights=w, minlength=n_s)
    rhs = rng.normal(size=n_p)
    return dict(prob=prob, cols=cols.astype(np.int32), D=D, w=w, W=W, C=C, Q=Q, rhs=rhs, n_obs=len(star), n_s=n_s)


class PreviousSystem:
    """The previous sparse solve (before METIS and the pins), kept here as the peer: SuperLU's
    minimum-degree ordering of the whole KKT matrix ``[S + Qs, Cᵀ; C, 0]``, errors by solving
    for the covariance's columns."""

    def __init__(self, S, Q, C, n_p):
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        Ss = (S + Q.Qs).tocsc()
        Ss = Ss + sp.diags(1e-12 * np.abs(Ss.diagonal()))
        nc = len(C)
        K = sp.bmat([[Ss, sp.csr_matrix(C).T], [sp.csr_matrix(C), sp.csr_matrix((nc, nc))]], format="csc")
        self.n_p, self.n_c = n_p, nc
        self.lu = spla.splu(K, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.01, options={"SymmetricMode": True})

    def solve(self, rhs, ct):
        return self.lu.solve(np.concatenate([rhs, ct]))[: self.n_p]

    def variances(self, batch=256):
        var = np.zeros(self.n_p)
        for i0 in range(0, self.n_p, batch):
            idx = np.arange(i0, min(i0 + batch, self.n_p))
            rhs = np.zeros((self.n_p + self.n_c, len(idx)))
            rhs[idx, np.arange(len(idx))] = 1.0
            var[idx] = self.lu.solve(rhs)[idx, np.arange(len(idx))]
        return var


def _dense(S, Q, C, lam, rhs, ct, errors):
    """The dense path's linear algebra (as ``GaussNewton`` does it): bordered Cholesky of
    ``S + Q + lam CᵀC``, errors from the inverse."""
    import scipy.linalg as sla

    Sp = S.toarray() + Q.dense()
    d = np.diag(Sp).copy()
    Sp += lam * (C.T @ C)
    Sp[np.diag_indices_from(Sp)] += 1e-12 * np.abs(d)
    cho = sla.cho_factor(Sp, lower=False)
    X = sla.cho_solve(cho, C.T)
    yv = sla.cho_solve(cho, rhs + lam * (C.T @ ct))
    dp = yv - X @ np.linalg.solve(C @ X, C @ yv - ct)
    var = None
    if errors:
        inv = sla.cho_solve(cho, np.eye(len(d)))
        Xi = inv @ C.T
        var = np.diag(inv) - np.einsum("ij,jk,ik->i", Xi, np.linalg.inv(C @ Xi), Xi)
    return dp, var


def _stage(fn):
    """(result, wall s, peak resident growth in bytes) of ``fn()``."""
    gc.collect()
    base = _rss()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    return out, wall, mem.peak - base


def _system_row(n: int, args) -> dict:
    """Every stage of the three solvers on one synthetic system of ``n`` visits."""
    from photocalib.fit import _joint_sparse as sparse

    t0 = time.perf_counter()
    d = synthetic_system(n, args.obs_per_visit)
    prob, ct = d["prob"], np.zeros(2)
    row = dict(n=n, n_obs=d["n_obs"], n_p=prob.n_p, gen=time.perf_counter() - t0)
    S, row["t_asm"], row["m_asm"] = _stage(lambda: sparse.reduced_matrix(prob, d["cols"], d["D"], d["w"], d["W"]))
    row["nnz_S"] = S.nnz
    lam = float(np.mean(S.diagonal()))
    rhs = S @ d["rhs"]  # a gradient in the range of the reduced matrix, as the fit's is
    new, row["t_fac"], row["m_fac"] = _stage(lambda: sparse.SparseSystem(S, d["Q"], d["C"], lam, prob))
    row["nnz_f"] = new.lu.L.nnz + new.lu.U.nnz
    x_new, row["t_sol"], _ = _stage(lambda: new.solve(rhs, ct))
    (perr, _quad), row["t_err"], row["m_err"] = _stage(lambda: new.errors(prob, d["cols"], d["D"], d["w"]))
    new = None  # free the factor before the peers run
    if n <= args.old_max:
        old, row["t_fac_old"], row["m_fac_old"] = _stage(lambda: PreviousSystem(S, d["Q"], d["C"], prob.n_p))
        row["nnz_f_old"] = old.lu.L.nnz + old.lu.U.nnz
        x_old, row["t_sol_old"], _ = _stage(lambda: old.solve(rhs, ct))
        row["dx_old"] = float(np.max(np.abs(x_new - x_old)))
        if n <= args.old_errors_max:
            var_old, row["t_err_old"], _ = _stage(old.variances)
            row["de_old"] = float(np.max(np.abs(perr / np.sqrt(var_old) - 1)))
        old = None
    if n <= args.dense_max:
        (x_de, var_de), row["t_de"], row["m_de"] = _stage(lambda: _dense(S, d["Q"], d["C"], lam, rhs, ct, True))
        row["dx_de"] = float(np.max(np.abs(x_new - x_de)))
        row["de_de"] = float(np.max(np.abs(perr / np.sqrt(var_de) - 1)))
    return row


def run_system(args) -> None:
    from photocalib.fit import _joint_sparse as sparse

    small = synthetic_system(300, args.obs_per_visit)  # compile the kernels outside the timings
    S0 = sparse.reduced_matrix(small["prob"], small["cols"], small["D"], small["w"], small["W"])
    sparse.SparseSystem(S0, small["Q"], small["C"], 1.0, small["prob"]).errors(small["prob"], small["cols"],
                                                                               small["D"], small["w"])
    rows = []
    for n in (int(v) for v in args.visits.split(",")):
        rows.append(_system_row(n, args))
        print(f"# {rows[-1]}", flush=True)
        gc.collect()

    print()
    print(f"# load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times scale with it)")
    print("| visits | observations | nnz(S) | assemble s (MiB) | factor s (MiB) | solve s | errors s (MiB) "
          "| previous factor s (MiB) | previous/new factor+solve | previous errors s | dense factor+solve+errors s "
          "(MiB) | dense/new (factor+solve+errors) | max |Δx| vs previous, dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    mib = 2.0**20
    for r in rows:
        new_fs = r["t_fac"] + r["t_sol"]
        if "t_fac_old" in r:
            old = f"{r['t_fac_old']:.1f} ({r['m_fac_old'] / mib:.0f})"
            ratio_old = f"{(r['t_fac_old'] + r['t_sol_old']) / new_fs:.1f}×"
        else:
            old = ratio_old = "not run"
        old_err = f"{r['t_err_old']:.1f}" if "t_err_old" in r else "not run"
        if "t_de" in r:
            dense = f"{r['t_de']:.1f} ({r['m_de'] / mib:.0f})"
            ratio_de = f"{r['t_de'] / (new_fs + r['t_err']):.1f}×"
        else:
            dense = ratio_de = "not run"
        dx = f"{r.get('dx_old', float('nan')):.0e}, {r.get('dx_de', float('nan')):.0e}"
        print(f"| {r['n']:,} | {r['n_obs']:,} | {r['nnz_S']:,} | {r['t_asm']:.1f} ({r['m_asm'] / mib:.0f}) "
              f"| {r['t_fac']:.1f} ({r['m_fac'] / mib:.0f}) | {r['t_sol']:.3f} | {r['t_err']:.1f} ({r['m_err'] / mib:.0f}) "
              f"| {old} | {ratio_old} | {old_err} | {dense} | {ratio_de} | {dx} |")


# ----------------------------------------------------------------------------------------------
# candidate factorisations and iterative solvers of the same (SPD) matrix
# ----------------------------------------------------------------------------------------------
def _candidates() -> dict:
    """name -> function(A, b) returning (x, detail): the ways of solving ``A x = b`` compared."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    from photocalib.fit._joint_sparse import fill_reducing_order

    def superlu(A, b, order=None, spec="MMD_AT_PLUS_A"):
        if order is not None:
            A = A[order][:, order].tocsc()
            b = b[order]
        lu = spla.splu(A, permc_spec=spec, diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        x = lu.solve(b)
        if order is not None:
            out = np.empty_like(x)
            out[order] = x
            x = out
        return x, f"nnz(L+U) {lu.L.nnz + lu.U.nnz:,}"

    def cg(A, b, M, name):
        its = [0]

        def count(_):
            its[0] += 1

        x, info = spla.cg(A, b, rtol=1e-12, maxiter=20000, M=M, callback=count)
        return x, f"{name}: {its[0]} iterations" + ("" if info == 0 else " (not converged)")

    out = {
        "SuperLU, minimum degree": lambda A, b: superlu(A, b),
        "SuperLU, METIS (used)": lambda A, b: superlu(A, b, fill_reducing_order(A), "NATURAL"),
        "CG, Jacobi": lambda A, b: cg(A, b, sp.diags(1.0 / A.diagonal()), "Jacobi"),
    }
    try:
        import pyamg

        def amg(A, b):
            ml = pyamg.smoothed_aggregation_solver(A.tocsr(), symmetry="symmetric")
            return cg(A, b, ml.aspreconditioner(cycle="V"), "pyamg SA")
        out["CG, pyamg smoothed aggregation"] = amg
    except ImportError:
        pass
    try:
        from cvxopt import cholmod, matrix, spmatrix

        def chol(A, b, order=None):
            lo = sp.tril(A).tocoo()
            M = spmatrix(lo.data, lo.row.astype(int).tolist(), lo.col.astype(int).tolist(), A.shape)
            F = cholmod.symbolic(M) if order is None else cholmod.symbolic(M, p=matrix(order.astype(int).tolist()))
            cholmod.numeric(M, F)
            X = matrix(b)
            cholmod.solve(F, X)
            return np.array(X).ravel(), "cvxopt"
        out["CHOLMOD (cvxopt), AMD"] = chol
        out["CHOLMOD (cvxopt), METIS"] = lambda A, b: chol(A, b, fill_reducing_order(A))
    except ImportError:
        pass
    return out


def run_candidates(args) -> None:
    """Each candidate on the SPD leading block ``S + Qs + λGᵀG`` that ``SparseSystem`` factorises."""
    import scipy.sparse as sp

    from photocalib.fit import _joint_sparse as sparse

    print(f"# candidates on the pinned reduced matrix; load average {os.getloadavg()[0]:.1f} at the start")
    print("| visits | method | s | peak MiB | relative residual | max |Δx| vs the first | detail |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(v) for v in args.visits.split(",")):
        d = synthetic_system(n, args.obs_per_visit)
        S = sparse.reduced_matrix(d["prob"], d["cols"], d["D"], d["w"], d["W"])
        lam = float(np.mean(S.diagonal()))
        pins = sparse._pins(d["C"])
        G = sp.csr_matrix((np.ones(len(pins)), (np.arange(len(pins)), pins)), shape=(len(pins), S.shape[0]))
        A = (S + d["Q"].Qs + lam * (G.T @ G)).tocsc()
        b = A @ d["rhs"]
        del d, S
        ref = None
        for name, fn in _candidates().items():
            (x, detail), wall, peak = _stage(lambda fn=fn, A=A, b=b: fn(A, b))
            res = float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))
            ref = x if ref is None else ref
            dx = float(np.max(np.abs(x - ref)))
            print(f"| {n:,} | {name} | {wall:.1f} | {peak / 2**20:.0f} | {res:.0e} | {dx:.0e} | {detail} |", flush=True)
        gc.collect()


# ----------------------------------------------------------------------------------------------
# whole fits
# ----------------------------------------------------------------------------------------------
def make_problem(n_visits: int, obs_per_visit: float, seed: int = 1):
    """Observations, WCSs and truth of a wide survey of ``n_visits`` visits about 8 deep."""
    from photocalib.sim.camera import Camera
    from photocalib.sim.catalog import observations_from_truth
    from photocalib.sim.survey import make_survey

    camera = Camera.preset("hsc-like", n_detectors=4)
    survey = make_survey(camera, n_visits=n_visits, seed=seed, dither_fraction=max(1.0, np.sqrt(n_visits / 8)))
    # stars per visit ≈ density × field area (the detectors cover part of it: the table says
    # how many observations there were)
    density = obs_per_visit / (np.pi * (camera.field_radius_arcsec / 3600.0) ** 2)
    obs, wcs, truth = observations_from_truth(camera, survey, density=density, mag_range=(17.0, 23.0), seed=seed,
                                              wcs_factory="camera")
    return obs, wcs, truth


def run_one(obs, wcs, truth, solver: str, errors: bool) -> dict:
    from photocalib.fit.joint import JointCalibrator

    cal = JointCalibrator("reference-free", star_flat_order=1, solver=solver, compute_errors=errors)
    sol, wall, cpu, peak, base = timed_fit(cal, obs, wcs, truth.bboxes)
    return dict(sol=sol, wall=wall, cpu=cpu, peak=peak - base, iters=sol.n_iter, n_p=len(sol._perr))


def run_fits(args) -> None:
    import numba

    print(f"# numba threads {numba.get_num_threads()}, CPUs {os.cpu_count()}, errors={args.errors}")
    obs, wcs, truth = make_problem(50, args.obs_per_visit)
    for solver in ("dense", "sparse"):  # compile the kernels outside the timings
        run_one(obs, wcs, truth, solver, args.errors)
    rows = []
    for n in (int(v) for v in args.visits.split(",")):
        t0 = time.perf_counter()
        obs, wcs, truth = make_problem(n, args.obs_per_visit)
        gen = time.perf_counter() - t0
        row = dict(n_visits=len(np.unique(np.asarray(obs["visit"]))), n_obs=len(obs), gen=gen)
        sp = run_one(obs, wcs, truth, "sparse", args.errors)
        row.update(n_p=sp["n_p"], t_sp=sp["wall"], cpu_sp=sp["cpu"], mem_sp=sp["peak"], it_sp=sp["iters"])
        if n <= args.dense_max:
            de = run_one(obs, wcs, truth, "dense", args.errors)
            row.update(t_de=de["wall"], cpu_de=de["cpu"], mem_de=de["peak"], it_de=de["iters"])
            a, b = sp["sol"], de["sol"]
            row["dmag"] = float(np.max(np.abs(np.asarray(a.star_flux["mag"]) - np.asarray(b.star_flux["mag"]))))
            row["dres"] = float(np.max(np.abs(np.asarray(a.residuals["residual"], dtype=float)
                                              - np.asarray(b.residuals["residual"], dtype=float))))
            del de
        del sp
        rows.append(row)
        print(f"# {row}", flush=True)
        del obs, wcs, truth
        gc.collect()

    print()
    print(f"# load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times scale with it)")
    print("| visits | observations | parameters | sparse s (CPU s) | dense s (CPU s) | dense/sparse wall | "
          "sparse peak MiB | dense peak MiB | iterations sparse, dense | max |Δmag| star | max |Δ| residual |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "t_de" in r:
            dense = f"{r['t_de']:.1f} ({r['cpu_de']:.1f})"
            ratio = f"{r['t_de'] / r['t_sp']:.2f}×"
            mem_de = f"{r['mem_de'] / 2**20:.0f}"
            dm, dr = f"{r['dmag']:.1e}", f"{r['dres']:.1e}"
            its = f"{r['it_sp']}, {r['it_de']}"
        else:
            dense = ratio = mem_de = dm = dr = "-"
            its = f"{r['it_sp']}, -"
        print(f"| {r['n_visits']:,} | {r['n_obs']:,} | {r['n_p']:,} | {r['t_sp']:.1f} ({r['cpu_sp']:.1f}) | {dense} "
              f"| {ratio} | {r['mem_sp'] / 2**20:.0f} | {mem_de} | {its} | {dm} | {dr} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="whole fits (simulated observations with WCSs)")
    parser.add_argument("--candidates", action="store_true",
                        help="the candidate sparse factorisations and preconditioned CG on one matrix")
    parser.add_argument("--visits", default=None,
                        help="comma-separated visit counts (default 4000,10000,30000,100000; with --fit 1000,2000,4000)")
    parser.add_argument("--dense-max", type=int, default=4000, help="largest visit count the dense peer runs at")
    parser.add_argument("--old-max", type=int, default=100000, help="largest visit count the previous solve runs at")
    parser.add_argument("--old-errors-max", type=int, default=2000,
                        help="largest visit count the previous solve's errors (n_p solves) run at")
    parser.add_argument("--obs-per-visit", type=float, default=None, help="default 30 (system), 100 (--fit)")
    parser.add_argument("--errors", action="store_true", help="with --fit: also compute the errors")
    args = parser.parse_args(argv)
    if args.candidates:
        args.visits = args.visits or "10000,100000"
        args.obs_per_visit = args.obs_per_visit or 30.0
        run_candidates(args)
    elif args.fit:
        args.visits = args.visits or "1000,2000,4000"
        args.obs_per_visit = args.obs_per_visit or 100.0
        run_fits(args)
    else:
        args.visits = args.visits or "4000,10000,30000,100000"
        args.obs_per_visit = args.obs_per_visit or 30.0
        run_system(args)


if __name__ == "__main__":
    main()
