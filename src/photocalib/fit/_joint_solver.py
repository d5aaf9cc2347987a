"""The joint fit's solver: the map (residuals, derivative rows, normal equations per chunk of
visits), the reduce, the star elimination and the constrained Gauss–Newton iterations.

See :mod:`photocalib.fit.joint` for the mathematics ("Solver", "Outliers", "Thin data").
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, PhotocalibError
from . import _joint_sparse as _sparse
from . import _kernels as K
from . import _priors
from ._joint_model import evaluate_blocks
from ._joint_problem import Problem

__all__ = ["SPARSE_MIN_PARAMS", "linearize_chunk", "solve"]

#: ``solver="auto"`` solves the reduced system sparsely from this many calibration parameters
#: on (below it the dense Cholesky is as fast and the existing results stay bit-for-bit).
SPARSE_MIN_PARAMS = 3000
#: ... unless the reduced matrix is fuller than this (a deep field, where every visit shares
#: stars with every other): then ``"auto"`` goes back to the dense Cholesky.
SPARSE_MAX_FILL = 0.05
#: Phase 1 (robust) ends from steps of this size (mag) on once its classification is stable.
PHASE1_STABLE_STEP = 1e-2


# ----------------------------------------------------------------------------------------------
# map step (module level so Dask workers can import it)
# ----------------------------------------------------------------------------------------------
def _chunk_data(prob: Problem, sel: np.ndarray) -> dict:
    return {
        "sel": sel,
        "epoch_detector": prob.epdet[sel], "detector": prob.detector[sel], "visit": prob.visit[sel],
        "pu": prob.pu[sel], "pv": prob.pv[sel], "tu": prob.tu[sel], "tv": prob.tv[sel],
        "m": prob.m[sel], "colour": None if prob.colour is None else prob.colour[sel],
        "starts": prob.starts[sel],
    }


def linearize_chunk(chunk: dict, p: np.ndarray, star_mag: np.ndarray, w: np.ndarray, blocks: list,
                    nbs: np.ndarray, n_p: int, need_matrix: bool = True, robust: float | None = None) -> dict:
    """The map: residuals, derivative rows and the visit-local normal equations of one chunk.

    Parameters
    ----------
    chunk : dict
        Static per-observation data of a set of whole visits (from ``_chunk_data``).
    p : ndarray
        Current parameter vector.
    star_mag, w : ndarray
        Current magnitude of each observation's star, and the observation weights (0 =
        rejected), in chunk order.
    robust : float or None
        Cauchy scale ``c`` (in units of σ): the weights become ``w / (1 + w r² / c²)``, the
        iteratively reweighted least-squares weights of the cost ``Σ c² ln(1 + w r² / c²)``,
        computed here from this point's residuals (so every step decreases that cost).

    Returns
    -------
    dict
        ``sel, D, r, N`` (upper triangle of ``Σ w D Dᵀ``), ``b`` (``Σ w D r``), ``w`` (the
        weights used), ``chi2`` (the cost: ``Σ w r²``, or the Cauchy cost with ``robust``),
        ``n_bad`` (observations where a factor is not positive). ``N`` and ``b`` are ``None``
        when ``need_matrix`` is false (a frozen-Hessian iteration needs only ``D`` and ``r``).
    """
    groups = {"epoch_detector": chunk["epoch_detector"], "detector": chunk["detector"], "visit": chunk["visit"]}
    coords = {"pixel": (chunk["pu"], chunk["pv"]), "tangent": (chunk["tu"], chunk["tv"])}
    log_model, D, _starts, ok = evaluate_blocks(blocks, p, groups, coords, chunk["colour"])
    r = chunk["m"] - log_model - star_mag
    if robust is None:
        cost = float(np.sum(w * r * r))
    else:
        u = w * r * r / robust**2
        cost = float(robust**2 * np.sum(np.log1p(u)))
        w = w / (1.0 + u)
    N, b = K.accumulate_normal(chunk["starts"], nbs, D, w, r, n_p) if need_matrix else (None, None)
    return {"sel": chunk["sel"], "D": D, "r": r, "N": N, "b": b, "w": w,
            "chi2": cost, "n_bad": int(np.count_nonzero(~ok & (w > 0)))}


def _linearize_scattered(chunk: dict, star_mag: np.ndarray, w: np.ndarray, p: np.ndarray, blocks: list,
                         nbs: np.ndarray, n_p: int, need_matrix: bool, robust: float | None) -> dict:
    """:func:`linearize_chunk` with the per-chunk arguments first (for ``Executor.map_scattered``)."""
    return linearize_chunk(chunk, p, star_mag, w, blocks, nbs, n_p, need_matrix, robust)


class _Mapper:
    """Runs the map over chunks in process, or through an :class:`~photocalib.execution.Executor`
    (a Dask cluster), and reduces the results.

    On a cluster the chunks are placed once (``Executor.scatter``) and every iteration maps over
    them; a chunk lost with a dying worker is placed again and its task rerun by the executor
    (:meth:`~photocalib.execution.Executor.map_scattered`), not here.
    """

    def __init__(self, prob: Problem, client=None) -> None:
        from ..execution import ThreadExecutor, as_executor

        self.prob = prob
        self.executor = as_executor(client, n_threads=K.num_threads())
        self.in_process = isinstance(self.executor, ThreadExecutor)
        sels = prob.chunks
        if self.in_process:
            # In process the chunks run on the executor's threads (NumPy and the nogil kernel
            # release the GIL); split them so that every thread has work even with one chunk.
            n_split = -(-self.executor.n_threads // max(len(sels), 1))
            if n_split > 1:
                sels = [part for sel in sels for part in np.array_split(sel, n_split) if len(part)]
        self.chunks = [_chunk_data(prob, sel) for sel in sels]
        self.data = None if self.in_process else self.executor.scatter(self.chunks)
        n = len(prob.m)
        k = int(prob.nbs.sum())
        self.D = np.empty((n, k))
        self.r = np.empty(n)
        self.w = np.empty(n)

    def __call__(self, p, star_mag_obs, w, need_matrix=True, robust=None):
        prob = self.prob
        N = np.zeros((prob.n_p, prob.n_p)) if need_matrix else None
        b = np.zeros(prob.n_p) if need_matrix else None
        chi2 = 0.0
        n_bad = 0
        if self.in_process:
            results = self._threaded(p, star_mag_obs, w, need_matrix, robust)
        else:
            per_chunk = [(star_mag_obs[c["sel"]], w[c["sel"]]) for c in self.chunks]
            results = self.executor.map_scattered(_linearize_scattered, self.data, per_chunk, p, prob.blocks,
                                                  prob.nbs, prob.n_p, need_matrix, robust)
        for res in results:
            sel = res["sel"]
            self.D[sel] = res["D"]
            self.r[sel] = res["r"]
            self.w[sel] = res["w"]
            if need_matrix:
                N += res["N"]
                b += res["b"]
            chi2 += res["chi2"]
            n_bad += res["n_bad"]
        return N, b, chi2, n_bad

    def _threaded(self, p, star_mag_obs, w, need_matrix, robust):
        """Results of the in-process map, in chunk order (a fixed summation order), with at most
        two chunks per thread in flight: each result holds its chunk's derivative rows, so
        collecting them all first (``Executor.map``) would double the fit's largest array."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        prob = self.prob
        n_threads = min(self.executor.n_threads, len(self.chunks))

        def one(c):
            return linearize_chunk(c, p, star_mag_obs[c["sel"]], w[c["sel"]], prob.blocks, prob.nbs, prob.n_p,
                                   need_matrix, robust)

        if n_threads <= 1:
            yield from (one(c) for c in self.chunks)
            return
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            pending: deque = deque()
            for c in self.chunks:
                if len(pending) >= 2 * n_threads:
                    yield pending.popleft().result()
                pending.append(pool.submit(one, c))
            while pending:
                yield pending.popleft().result()


# ----------------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------------
def _symmetrize(U: np.ndarray) -> np.ndarray:
    return U + U.T - np.diag(np.diag(U))


def _group_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median (upper) of ``values`` per group; 0 for empty groups."""
    order = np.lexsort((values, groups))
    cnt = np.bincount(groups, minlength=n_groups)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    out = np.zeros(n_groups)
    ok = cnt > 0
    out[ok] = values[order][first[ok] + cnt[ok] // 2]
    return out


def prior_matrix(cfg, prob: Problem, level: np.ndarray) -> np.ndarray | None:
    """The priors' quadratic form ``Q`` (χ² gets ``pᵀ Q p``), or None without priors.

    ``level`` is each visit's starting grey level (it normalises the shared-shape prior).
    """
    Q = None
    for b in prob.blocks:
        if b.coord == "pixel" and b.base == 0.0 and b.order > 0 and cfg.star_flat_prior is not None:
            Q = np.zeros((prob.n_p, prob.n_p)) if Q is None else Q
            Q[np.diag_indices(prob.n_p)] += _priors.ridge(prob.n_p, b, cfg.star_flat_prior)
        if b.name == "visit" and b.order > 0 and cfg.visit_prior is not None and b.n_groups > 1:
            frame_radius = float(np.max(prob.visit_radius))
            maps = [_priors.frame_map(b.order, prob.frame_offset[v], prob.visit_rotation[v],
                                      prob.visit_radius[v], frame_radius) for v in range(b.n_groups)]
            Qv = _priors.shared_shape(prob.n_p, b, maps, level, cfg.visit_prior)
            Q = Qv if Q is None else Q + Qv
    return Q


def factorise_bordered(S: np.ndarray, C: np.ndarray, lam: float, prob: Problem):
    """Cholesky factor of ``S + λ CᵀC`` (a relative 1e-12 ridge on the diagonal) and
    ``X = (S + λ CᵀC)⁻¹ Cᵀ``: the dense reduced Hessian ``S`` under the constraints ``C p = t``
    (:func:`solve_bordered` takes the steps)."""
    import scipy.linalg as sla

    Sp = S + lam * (C.T @ C)
    dz = np.diag(Sp) <= 1e-14 * lam
    if dz.any():
        raise InputError(f"the fit cannot constrain the {prob.describe(int(np.nonzero(dz)[0][0]))}: "
                         "no used observation touches it; drop that visit/detector or add stars")
    Sp[np.diag_indices_from(Sp)] += 1e-12 * np.diag(Sp)
    try:
        cho = sla.cho_factor(Sp, lower=False, check_finite=True)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise PhotocalibError(
            "the joint fit's normal matrix is singular beyond the documented degeneracies; "
            "check that visits overlap and detectors have stars across them") from exc
    return cho, sla.cho_solve(cho, C.T)


def solve_bordered(cho, X: np.ndarray, C: np.ndarray, lam: float, rhs: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """``dp`` minimising ``½ dpᵀ S dp − rhsᵀ dp`` subject to ``C dp = ct``, from :func:`factorise_bordered`."""
    import scipy.linalg as sla

    yv = sla.cho_solve(cho, rhs + lam * (C.T @ ct))
    return yv - X @ np.linalg.solve(C @ X, C @ yv - ct)


class GaussNewton:
    """The solver's state and iterations (see the :mod:`.joint` documentation, "Solver").

    The Schur complement is the expensive part; once steps are small the Hessian hardly changes,
    so it is re-used (a frozen-Hessian Newton step, converging linearly at a rate of the
    Hessian's relative change) and re-assembled at the end to confirm convergence and give the
    covariance.

    Outliers: phase 0 converges roughly by least squares from the robust start, phase 1 by
    iteratively reweighted least squares on a Cauchy cost (gross outliers lose their weight
    inside the solve), then phase 2 refits by least squares on the observations whose
    leverage-corrected |z| at the robust solution is below n_sigma, re-classifying until the set
    is stable. Without robust_scale (None) the older reject-and-resolve rounds run in phase 2.

    Where the iterations went (wide surveys of 1000 and 4000 visits without outliers,
    ``benchmarks/bench_joint_sparse.py --fit``: 27 and 36 iterations with 12 Hessian
    assemblies before the changes below, 19 and 23 with 7 after): phase 0, 3; phase 1,
    16–20; phase 2, 4 per classification round, and there are two even without outliers (the
    robust solution's classification sets aside a few good observations that the least-squares
    one takes back). Phase 1 dominates because iteratively reweighted least squares is a
    fixed-point iteration: each step is exact for the weights of its start, and the weights
    then move with the residuals, so it converges linearly (step ratio 0.6, and 0.93 while one
    star's observations slowly part ways, the same whether the Hessian is re-assembled or
    frozen). Hence (i) phase 1 keeps the Hessian of its first iteration unless a step exceeds
    0.2 mag (its frozen steps converge at the same rate, each a map instead of an assembly and
    a factorisation); (ii) from 10 mmag steps on (``PHASE1_STABLE_STEP``), phase 1 ends as soon as
    the classification it prepares is the same at two successive points instead of waiting
    for 0.1 mmag steps (phase 2 re-classifies at the least-squares solution anyway); (iii) a
    phase-2 round whose re-classification changes the weights goes on from the frozen-Hessian
    solution without first confirming it with a re-assembled Hessian; (iv) in the
    least-squares phases a frozen Hessian is re-assembled as soon as a step is more than a
    quarter of the one before (stale after a re-classification: without this a round could
    take 25 linear steps). The answer stays the least-squares solution on the final set,
    converged to ``tol``: the tests' fits give the same magnitudes to 1e-13.
    """

    def __init__(self, cfg, model, prob: Problem, client) -> None:
        self.cfg, self.model, self.prob = cfg, model, prob
        self.n_s = len(prob.ptr) - 1
        self.w0 = 1.0 / prob.sigma2.astype(np.float64)
        self.w = self.w0.copy()
        rows, targets = model.constraints(prob)
        self.C, self.t = np.array(rows), np.array(targets)
        self.mapper = _Mapper(prob, client)
        solver = getattr(cfg, "solver", "dense")
        self.sparse = solver == "sparse" or (solver == "auto" and prob.n_p >= SPARSE_MIN_PARAMS)
        self.auto = solver == "auto"
        self.cols = _sparse.jacobian_columns(prob) if self.sparse else None
        self._start()
        self.lam = None
        self.history: list[float] = []
        self.rounds = 0
        self.since_reject = 0
        self.n_iter = 0
        self.converged = False
        self.prev = None  # (chi2, p, M, dp, dM, whether the Hessian was assembled)
        self.step = 1.0
        self.S = None
        self.fact = None  # (cho, X, C X) of the last assembled Hessian
        self.last_step = np.inf
        self.step_before = np.inf  # the step before the last (frozen-Hessian steps only)
        self.restarted = False
        self.force_full = True
        self.irls = cfg.n_sigma is not None and cfg.robust_scale is not None
        self.phase = 0 if self.irls else 2
        self.keep = None  # phase 1: the classification at the previous point

    def _start(self) -> None:
        """Start close to the answer, robustly (medians: outliers are still in): star magnitudes,
        then one zero point per visit, then the stars again. A start near the solution keeps the
        Hessian of the first iterations close to the final one (see the frozen-Hessian steps)."""
        prob, star, n_s = self.prob, self.prob.star, self.n_s
        self.p = np.concatenate([b.initial() for b in prob.blocks])
        M = _group_median(prob.m, star, n_s)
        self.has_ref = prob.ref_w > 0
        if self.model.reference_in_chi2:
            M = M - float(np.median((M - prob.ref_m)[self.has_ref]))
        zp = _group_median(prob.m - M[star], prob.visit, len(prob.visit_ids))
        grey0 = self.model.initial_levels(10 ** (0.4 * zp))
        self.M = _group_median(prob.m - 2.5 * np.log10(grey0)[prob.visit], star, n_s)
        vis = next(b for b in prob.blocks if b.group == "visit")
        self.p[vis.offset + np.arange(vis.n_groups) * vis.n_basis] = grey0
        self.ref_w = prob.ref_w if self.model.reference_in_chi2 else np.zeros(n_s)
        self.level0 = grey0
        if self.sparse:
            self.Q = _sparse.prior(self.cfg, prob, grey0)
            return
        Q = prior_matrix(self.cfg, prob, grey0)
        self.Q = np.zeros((prob.n_p, prob.n_p)) if Q is None else Q

    def _factorise_sparse(self, we, W) -> None:
        """Assemble the reduced Hessian sparsely and factorise its KKT form (see ``_joint_sparse``)."""
        S = _sparse.reduced_matrix(self.prob, self.cols, self.mapper.D, we, W)
        if self.auto and S.nnz > SPARSE_MAX_FILL * float(self.prob.n_p) ** 2:
            # nearly dense coupling: the dense Cholesky is faster; stay dense from here on
            self.sparse = False
            Q = prior_matrix(self.cfg, self.prob, self.level0)
            self.Q = np.zeros((self.prob.n_p, self.prob.n_p)) if Q is None else Q
            self._factorise_full(S.toarray() + self.Q)
            return
        self.S = S
        if self.lam is None:
            diag = self.S.diagonal() + self.Q.Qs.diagonal()
            self.lam = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
        self.fact = _sparse.SparseSystem(self.S, self.Q, self.C, self.lam, self.prob)

    def _factorise(self, Npp, Ns) -> None:
        """Assemble the reduced Hessian (with the priors) and factorise its bordered form."""
        self._factorise_full(_symmetrize(Npp + Ns) + self.Q)

    def _factorise_full(self, S: np.ndarray) -> None:
        """Factorise the bordered form of the dense reduced Hessian ``S`` (priors included)."""

        C, prob = self.C, self.prob
        self.S = S
        diag = np.diag(self.S).copy()
        if self.lam is None:
            self.lam = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
        cho, X = factorise_bordered(self.S, C, self.lam, prob)
        self.fact = (cho, X, C @ X)

    def _iterate(self):
        """One Gauss–Newton step from (p, M): returns (dp, dM, χ², whether assembled) or None to
        retry (a step went uphill and was shortened)."""
        import scipy.linalg as sla

        prob, mapper, star, n_s = self.prob, self.mapper, self.prob.star, self.n_s
        p, M, ref_w = self.p, self.M, self.ref_w
        # robust steps converge linearly whatever the Hessian (see the class documentation):
        # phase 1 re-assembles it only after large steps
        # least squares (phases 0, 2): a frozen Hessian that no longer cuts each step to a quarter
        # of the last is stale (weights changed by a classification): re-assemble it
        stale = self.phase != 1 and self.last_step > 0.25 * self.step_before
        full = (self.force_full or self.fact is None or stale
                or self.last_step > (2e-1 if self.phase == 1 else 2e-2))
        Npp, bpp, chi2_obs, n_bad = mapper(p, M[star], self.w, full and not self.sparse,
                                           self.cfg.robust_scale if self.phase == 1 else None)
        we = mapper.w  # the weights of this iteration (w, or its Cauchy reweighting)
        ref_b = ref_w * (prob.ref_m - M)
        chi2 = chi2_obs + float(np.sum(ref_w * (M - prob.ref_m) ** 2)) + float(p @ self.Q @ p)
        prev = self.prev
        if prev is not None and (n_bad > 0 or chi2 > prev[0] * (1 + 1e-10) + 1e-12) and self.step > 1e-3:
            if not prev[5]:
                # a frozen-Hessian step went uphill: go back and assemble the true Hessian there
                self.p, self.M = prev[1], prev[2]
                self.prev = None
                self.force_full = True
                return None
            self.step *= 0.5
            self.p = prev[1] + self.step * prev[3]
            self.M = prev[2] + self.step * prev[4]
            return None
        if full and not self.sparse:
            Ns, bs, W, B = K.eliminate_stars(prob.ptr, prob.starts, prob.nbs, mapper.D, we, mapper.r, ref_w, ref_b,
                                             prob.n_p, K.num_threads())
            self._factorise(Npp, Ns)
            rhs = bpp + bs - self.Q @ p
        else:
            W = np.bincount(star, weights=we, minlength=n_s) + ref_w
            B = np.bincount(star, weights=we * mapper.r, minlength=n_s) + ref_b
            mean_r = np.where(W > 0, B / np.where(W > 0, W, 1.0), 0.0)
            rhs = K.rows_scatter(prob.starts, prob.nbs, mapper.D, we * (mapper.r - mean_r[star]), prob.n_p) - self.Q @ p
            if full:
                self._factorise_sparse(we, W)
        self.W = W
        C, t = self.C, self.t
        if self.sparse:
            dp = self.fact.solve(rhs, t - C @ p)
        else:
            cho, X, CX = self.fact
            yv = sla.cho_solve(cho, rhs + self.lam * (C.T @ (t - C @ p)))
            dp = yv - X @ np.linalg.solve(CX, C @ yv - (t - C @ p))
        dmod = K.rows_dot(prob.starts, prob.nbs, mapper.D, dp)
        udp = np.bincount(star, weights=we * dmod, minlength=n_s)
        dM = np.where(W > 0, (B - udp) / np.where(W > 0, W, 1.0), 0.0)
        self.history.append(chi2)
        self.n_iter += 1
        # the ratio of successive steps judges a frozen Hessian; after an assembled one, or a
        # restart, there is nothing to judge yet
        self.step_before = np.inf if full or self.restarted else self.last_step
        self.restarted = False
        self.last_step = max(float(np.max(np.abs(dM))), float(np.max(np.abs(dmod))))
        self.chi2 = chi2
        return dp, dM, full

    def _advance(self, dp, dM) -> None:
        self.p = self.p + dp
        self.M = self.M + dM

    def _reclassify(self) -> int:
        """Outliers at the converged solution: how many weights changed."""
        mapper, cfg = self.mapper, self.cfg
        if self.irls:
            keep = _within(self.prob, mapper.r, mapper.w, self.w0, self.ref_w, cfg.n_sigma)
            n = int(np.count_nonzero(keep != (self.w > 0)))
            self.w = self.w0 * keep
            return n
        return _reject(self.prob, mapper.r, self.w, self.w0, self.W, cfg.n_sigma)

    def run(self) -> None:
        """Iterate to convergence (or ``max_iter``); leaves p, M, S and the map's D, r at p."""
        cfg = self.cfg
        while True:
            out = self._iterate()
            if out is None:
                continue
            dp, dM, full = out
            small = self.last_step < cfg.tol
            # χ² no longer moving (same weights): nearly degenerate directions (e.g. monolithic
            # detector polynomials vs the common part of the visit polynomials) change nothing.
            h = self.history
            if full and len(h) - self.since_reject >= 2 and 0.0 <= h[-2] - h[-1] <= 1e-11 * h[-1]:
                small = True
            self.force_full = False
            more = self.n_iter < cfg.max_iter
            # Phases 0 and 1 only prepare the classification: 1 mmag (least squares) and 0.1 mmag
            # (robust) steps are close enough for a 5σ cut; phase 2 converges to ``tol``. The
            # robust iterations converge linearly (each reweighting is a fixed-point step, rate
            # about 0.6), so phase 1 also ends, from 1 mmag steps on, as soon as the
            # classification it prepares is the same at two successive points.
            if self.phase == 1 and more and not small and self.last_step < PHASE1_STABLE_STEP:
                keep = _within(self.prob, self.mapper.r, self.mapper.w, self.w0, self.ref_w, cfg.n_sigma)
                stable = self.keep is not None and np.array_equal(keep, self.keep)
                self.keep = keep
                small = stable
            if self.phase < 2 and (small or self.last_step < (1e-3 if self.phase == 0 else 1e-4)) and more:
                if self.phase == 1:  # robust solution reached: keep what is within n_sigma of it
                    self.w = self.w0 * _within(self.prob, self.mapper.r, self.mapper.w, self.w0, self.ref_w,
                                               cfg.n_sigma)
                    self.rounds += 1
                    self._restart(dp, dM)
                else:
                    # Least squares drags a star's magnitude towards a gross outlier, the more so
                    # as an outlier that brightened a star has a smaller σ; the Cauchy cost
                    # would then keep it there. Re-centre each star on the median of its
                    # residuals (the calibration is nearly right already) before reweighting.
                    self.M = self.M + _group_median(self.mapper.r, self.prob.star, self.n_s)
                    self._restart(np.zeros_like(dp), np.zeros_like(dM))
                self.phase += 1
                continue
            if small and not full and more:
                if self._classify_again(dp, dM):
                    # the set changed: this solution needs no confirming; go on from it with
                    # the new weights (and the same Hessian: few weights changed)
                    self.force_full = False
                    continue
                self.force_full = True  # confirm with the true Hessian (and get the covariance)
                self.prev = None
                self._advance(dp, dM)
                continue
            if small or not more:
                if small and self._classify_again(dp, dM):
                    self.force_full = False
                    if more:
                        continue
                self.converged = small
                if not full:
                    self._assemble_final()
                return
            self.prev = (self.chi2, self.p, self.M, dp, dM, full)
            self.step = 1.0
            self._advance(dp, dM)

    def _classify_again(self, dp, dM) -> bool:
        """At a converged point of phase 2: re-classify the outliers; if any weight changed,
        count the round and restart from the point after the step ``(dp, dM)``."""
        cfg = self.cfg
        if cfg.n_sigma is None or self.rounds >= cfg.max_rejection_rounds or not self._reclassify():
            return False
        self.rounds += 1
        self._restart(dp, dM)
        return True

    def _restart(self, dp, dM) -> None:
        """After the weights changed: take the step and forget the step-length history."""
        self.restarted = True
        self.since_reject = len(self.history)
        self.prev = None
        self.step = 1.0
        self.force_full = True
        self._advance(dp, dM)

    def _assemble_final(self) -> None:
        """Ran out of iterations on a frozen Hessian: assemble it for the covariance."""
        prob, mapper = self.prob, self.mapper
        Npp, _, _, _ = mapper(self.p, self.M[prob.star], self.w, not self.sparse,
                              self.cfg.robust_scale if self.phase == 1 else None)
        if self.sparse:
            self.W = np.bincount(prob.star, weights=mapper.w, minlength=self.n_s) + self.ref_w
            self.S = _sparse.reduced_matrix(prob, self.cols, mapper.D, mapper.w, self.W)
            self.fact = None
            return
        Ns, _, self.W, _ = K.eliminate_stars(prob.ptr, prob.starts, prob.nbs, mapper.D, mapper.w, mapper.r,
                                             self.ref_w, self.ref_w * (prob.ref_m - self.M), prob.n_p,
                                             K.num_threads())
        self.S = _symmetrize(Npp + Ns) + self.Q

    def errors(self) -> tuple[np.ndarray, np.ndarray]:
        """Parameter errors and the calibration part of each star's variance (zeros without
        ``compute_errors``): from the constrained inverse of the reduced Hessian."""
        import scipy.linalg as sla

        prob = self.prob
        if not self.cfg.compute_errors:
            return np.zeros(prob.n_p), np.zeros(self.n_s)
        if self.sparse:
            fact = self.fact
            if fact is None or fact.S is not self.S:
                fact = _sparse.SparseSystem(self.S, self.Q, self.C, self.lam, prob)
            return fact.errors(prob, self.cols, self.mapper.D, self.mapper.w)
        C = self.C
        Sp = self.S + self.lam * (C.T @ C)
        Sp[np.diag_indices_from(Sp)] += 1e-12 * np.diag(Sp)
        cho = sla.cho_factor(Sp, lower=False)
        inv = sla.cho_solve(cho, np.eye(prob.n_p))
        X = inv @ C.T
        cov = inv - X @ np.linalg.solve(C @ X, X.T)
        perr = np.sqrt(np.clip(np.diag(cov), 0, None))
        var_cal = K.star_quadratic(prob.ptr, prob.starts, prob.nbs, self.mapper.D, self.mapper.w, cov, K.num_threads())
        return perr, var_cal


def solve(cfg, model, prob: Problem, client):
    """Fit ``prob`` and return the pieces of a :class:`JointSolution` (a dict for ``_from_fit``)."""
    gn = GaussNewton(cfg, model, prob, client)
    gn.run()
    p, M, W, w, w0, mapper = gn.p, gn.M, gn.W, gn.w, gn.w0, gn.mapper
    chi2 = gn.chi2 - float(p @ gn.Q @ p)  # the solution reports the data's χ²; the priors' share is not data
    perr, var_cal = gn.errors()
    star = prob.star
    Wsafe = np.where(W > 0, W, np.inf)
    mag_err = np.sqrt(1.0 / Wsafe + var_cal / np.where(W > 0, W, 1.0) ** 2)
    used = w > 0
    zp_offset = 0.0
    zp_offset_err = 0.0
    if not model.reference_in_chi2 and np.any(gn.has_ref & (W > 0)):
        # standards fix one number: the weighted mean offset of their fitted magnitudes
        sel = gn.has_ref & (W > 0)
        wr = 1.0 / (1.0 / prob.ref_w[sel] + mag_err[sel] ** 2)
        zp_offset = float(np.sum(wr * (M[sel] - prob.ref_m[sel])) / np.sum(wr))
        zp_offset_err = float(1.0 / math.sqrt(np.sum(wr)))
        M = M - zp_offset
        # calibrations scale by 10^(0.4 δ): every coefficient of the visit factor
        gb = next(b for b in prob.blocks if b.name == model.visit_block)
        p[gb.offset: gb.offset + gb.n_params] *= 10 ** (0.4 * zp_offset)
        perr[gb.offset: gb.offset + gb.n_params] *= 10 ** (0.4 * zp_offset)
    dof = int(np.count_nonzero(used) + np.count_nonzero(gn.ref_w > 0) - np.count_nonzero(W > 0)
              - (prob.n_p - len(gn.t)))
    lev = np.where(used, 1.0 / w0 - 1.0 / np.where(W[star] > 0, W[star], np.inf), 1.0 / w0)
    z = mapper.r / np.sqrt(np.clip(lev, 1e-30, None))
    z = np.where(lev > 1e-12 / w0, z, 0.0)
    return dict(p=p, perr=perr, M=M, mag_err=mag_err,
                n_used_star=np.bincount(star, weights=used, minlength=gn.n_s).astype(np.int64),
                r=mapper.r, z=z, used=used, chi2=chi2, dof=dof, n_iter=gn.n_iter, converged=gn.converged,
                rounds=gn.rounds, zp_offset=zp_offset, zp_offset_err=zp_offset_err, history=gn.history)


def _within(prob: Problem, r: np.ndarray, we: np.ndarray, w0: np.ndarray, ref_w: np.ndarray,
            n_sigma: float) -> np.ndarray:
    """Observations whose leverage-corrected normalised residual is below ``n_sigma``.

    ``we`` are the weights the solution was fitted with: an observation that carried more than
    half its weight is in its star's mean (residual variance ``σ² − 1/W_s``), one that did not
    is compared with a mean it hardly entered (``σ² + 1/W_s``).
    """
    W = np.bincount(prob.star, weights=we, minlength=len(prob.ptr) - 1) + ref_w
    Wst = np.where(W[prob.star] > 0, W[prob.star], np.inf)
    inside = we > 0.5 * w0
    var = np.where(inside, 1.0 / w0 - 1.0 / Wst, 1.0 / w0 + 1.0 / Wst)
    z = np.abs(r) / np.sqrt(np.clip(var, 1e-30, None))
    return (z < n_sigma) | (inside & (var <= 1e-9 / w0))


def _reject(prob: Problem, r: np.ndarray, w: np.ndarray, w0: np.ndarray, W: np.ndarray, n_sigma: float,
            shrink: float = 0.25) -> int:
    """One round of outlier rejection; returns how many weights changed (set to 0 or restored).

    The threshold is ``max(n_sigma, shrink × largest |z|)``: gross outliers distort the
    calibration, so good but precise measurements can exceed ``n_sigma`` until the worst are
    gone; lowering the threshold geometrically avoids rejecting them. Only the worst candidate
    per star goes per round, and rejected measurements now within ``n_sigma`` are restored.
    """
    star = prob.star
    used = w > 0
    Wst = np.where(W[star] > 0, W[star], np.inf)
    lev_in = 1.0 / w0 - 1.0 / Wst  # residual variance of a measurement in its star's mean
    lev_out = 1.0 / w0 + 1.0 / Wst  # ... of one left out of it
    z = np.abs(r) / np.sqrt(np.where(used, np.clip(lev_in, 1e-30, None), lev_out))
    valid = used & (lev_in > 1e-9 / w0)
    if not valid.any():
        return 0
    threshold = max(n_sigma, shrink * float(np.max(z[valid])))
    cand = np.nonzero(valid & (z > threshold))[0]
    restore = np.nonzero(~used & (z < n_sigma) & (threshold <= n_sigma))[0]
    n = 0
    if cand.size:
        o = np.lexsort((-z[cand], star[cand]))
        cs = cand[o]
        first = np.unique(star[cs], return_index=True)[1]
        worst = cs[first]
        w[worst] = 0.0
        n += int(worst.size)
    if restore.size:
        w[restore] = w0[restore]
        n += int(restore.size)
    return n
