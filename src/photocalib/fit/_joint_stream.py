"""The streamed joint fit: observations stay in their partitions, the client holds the reduced system.

What is held where
------------------
* Each partition (a Parquet file, or a Dask DataFrame partition) holds whole stars. A task reads
  it once, validates its rows and keeps them, sorted by star, in compact arrays (about 50 bytes
  per observation: float32 pixel and tangent coordinates and σ², float64 magnitude, int32
  indices). With a Dask client they are built and kept on the workers (``Executor.place``) and
  never pass through the client; Dask rebuilds one lost with its worker from its lineage (read
  the file again). Without a client they are a list in this process, worked on by threads.
* The client holds the visit table, the per-visit and per-detector arrays of a skeleton
  :class:`~._joint_problem.Problem` (no observations), one cubic pixel-to-tangent map per
  (visit, detector) (from the scan), the reduced normal matrix (sparse, calibration parameters
  only) and, at the end, one row per star.

Passes
------
1. load + scan (one read of each partition): visits, detectors, epochs, pixel extents, each
   visit's tangent-plane radius, the detectors' orientations on the sky (hence the camera
   rotation and the shared focal-plane frame), the stars each partition holds (a star split
   over two partitions is refused);
2. the exclusions (stars seen once, visits and detectors with too few observations), one cheap
   pass per round (usually two), and the connectedness check (one pass);
3. compaction (one pass), the robust start (two passes);
4. Gauss–Newton: one pass per iteration. Each task evaluates the model at the client's
   parameters ``p``, computes its stars' magnitudes for that ``p`` (variable projection: the
   weighted mean of the calibrated observations for least squares, the Cauchy location in the
   robust phase), and returns its share of the reduced normal equations with its stars
   eliminated, ``Σ w D Dᵀ − Σ_s u_s u_sᵀ / W_s`` (sparse) and ``Σ w D (r − r̄_s)``. The shares are
   summed in a fixed binary tree (on the workers), so the total does not depend on which task
   finished first. The client adds the priors and solves the constrained system
   (``_joint_sparse.SparseSystem``, or the dense bordered Cholesky for small problems) as the
   in-memory fit does;
5. the summary (one pass): star magnitudes and errors, χ² per visit and detector, coverage.

Outliers as in memory: a Cauchy IRLS phase, then the ``n_sigma`` classification at the robust
solution and least squares on the rest, re-classified until stable. A task never keeps state
between passes: the kept set is recomputed from the points at which the classifications were
made (and cached beside the partition), so a task rerun after its worker died gives the same
numbers, and the answer of a disturbed run is the undisturbed one.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..image.kind import ImageKind
from . import _joint_sparse as _sparse
from . import _joint_stream_part as part_fns
from . import _kernels as K
from ._joint_solver import SPARSE_MAX_FILL, SPARSE_MIN_PARAMS, factorise_bordered, solve_bordered
from ._joint_stream_scan import load, scan, source_items
from ._joint_stream_setup import check_whole_stars, exclusions, geometry, read_visits, skeleton

#: Called as ``hook(n_passes)`` after every Gauss–Newton pass (tests use it to disturb a fit).
PASS_HOOK = None


def _sources(observations, executor):
    """``(name, source)`` items and whether they are already placed (Dask DataFrame on a cluster)."""
    from ..execution import DaskExecutor, Placed

    if hasattr(observations, "npartitions") and hasattr(observations, "to_delayed"):
        from ._joint_stream_scan import STREAM_COLUMNS, STREAM_OPTIONAL

        # only the fit's columns are computed (a catalog's others never leave their partitions)
        wanted = [c for c in (*STREAM_COLUMNS, *STREAM_OPTIONAL) if c in observations.columns]
        if all(c in wanted for c in STREAM_COLUMNS):
            observations = observations[wanted]
        names = [f"partition {i} of the Dask DataFrame" for i in range(observations.npartitions)]
        if isinstance(executor, DaskExecutor):
            futs = executor.client.compute(observations.to_delayed())
            return Placed([(n, f) for n, f in zip(names, futs, strict=True)], keep=list(futs))
        # the partitions' graphs are built here, once: building them from several threads at a
        # time deadlocks in dask's expression layer
        return [(n, ("dask", d)) for n, d in zip(names, observations.to_delayed(), strict=True)]
    return source_items(observations)


class _Solver:
    """Gauss–Newton over the partitions (see the module docstring, "Passes" 4)."""

    def __init__(self, cfg, model, prob, ex, parts, ctx) -> None:
        self.cfg, self.model, self.prob, self.ex, self.parts, self.ctx = cfg, model, prob, ex, parts, ctx
        rows, targets = model.constraints(prob)
        self.C, self.t = np.array(rows), np.array(targets)
        self.irls = cfg.n_sigma is not None and cfg.robust_scale is not None
        self.lam = None
        self.dense = None
        self.history: list[float] = []
        self.n_iter = 0
        self.n_pass = 0
        self.system = None
        self.rounds = 0
        self.converged = False

    def start(self) -> None:
        """The robust start of the in-memory fit: star medians, then one zero point per visit."""
        prob, ex, parts, ctx = self.prob, self.ex, self.parts, self.ctx
        self.p = np.concatenate([b.initial() for b in prob.blocks])
        offset = 0.0
        if self.model.reference_in_chi2:
            offs = np.concatenate([r["offsets"] for r in ex.map_placed(part_fns.start_stars, parts, ctx)])
            offset = float(np.median(offs)) if offs.size else 0.0
        zp = self._visit_medians(offset)
        grey0 = self.model.initial_levels(10 ** (0.4 * zp))
        vis = next(b for b in prob.blocks if b.group == "visit")
        self.p[vis.offset + np.arange(vis.n_groups) * vis.n_basis] = grey0
        self.Q = _sparse.prior(self.cfg, prob, grey0)

    def _visit_medians(self, offset: float) -> np.ndarray:
        """Per visit, the upper median of (instrumental − star median) magnitudes over all
        partitions, exactly (as the in-memory start): bins are narrowed round by round to the
        one holding the median until it holds one value (a few passes of counting)."""
        n_v, nb = len(self.prob.visit_ids), part_fns.N_BINS
        lo, hi = np.full(n_v, -np.inf), np.full(n_v, np.inf)
        rank = None
        active = np.ones(n_v, dtype=bool)
        for _ in range(64):
            res = self.ex.map_placed(part_fns.visit_histogram, self.parts, self.ctx, offset,
                                     np.where(np.isfinite(lo), lo, -1e300), np.where(np.isfinite(hi), hi, 1e300), active)
            cnt = np.zeros(n_v * nb, dtype=np.int64)
            below = np.zeros(n_v, dtype=np.int64)  # values under ``lo``, counted afresh each round
            bmin, bmax = np.full(n_v * nb, np.inf), np.full(n_v * nb, -np.inf)
            for r in res:
                np.add.at(cnt, r["bins"], r["count"])
                np.minimum.at(bmin, r["bins"], r["min"])
                np.maximum.at(bmax, r["bins"], r["max"])
                np.add.at(below, r["below_visit"], r["below"])
            cnt = cnt.reshape(n_v, nb)
            if rank is None:
                rank = cnt.sum(axis=1) // 2  # the upper median's index among the visit's values
            cum = below[:, None] + np.cumsum(cnt, axis=1)
            b = np.argmax(cum > rank[:, None], axis=1)
            idx = np.arange(n_v) * nb + b
            lo = np.where(active, bmin[idx], lo)
            hi = np.where(active, bmax[idx], hi)
            active = active & (lo < hi)
            if not active.any():
                break
        return np.where(np.isfinite(lo), lo, 0.0)

    def _pass(self, p, robust, chain, dp, need_matrix=True):
        self.n_pass += 1
        out = self.ex.reduce_placed(part_fns.normal_pass, self.parts, part_fns.combine, self.ctx, p, robust,
                                    chain, dp, need_matrix)
        if PASS_HOOK is not None:
            PASS_HOOK(self.n_pass)
        return out

    def _solve(self, S, g, p) -> np.ndarray:
        n_p, C = self.prob.n_p, self.C
        rhs = g - self.Q @ p
        ct = self.t - C @ p
        if self.dense is None:
            solver = getattr(self.cfg, "solver", "auto")
            self.dense = solver == "dense" or (solver == "auto" and (
                n_p < SPARSE_MIN_PARAMS or S.nnz > SPARSE_MAX_FILL * float(n_p) ** 2))
        if not self.dense:
            if self.lam is None:
                d = S.diagonal() + self.Q.Qs.diagonal()
                self.lam = float(np.mean(d[d > 0])) if np.any(d > 0) else 1.0
            self.system = _sparse.SparseSystem(S, self.Q, C, self.lam, self.prob)
            return self.system.solve(rhs, ct)
        Sd = S.toarray() + self.Q.dense()
        if self.lam is None:
            d = np.diag(Sd)
            self.lam = float(np.mean(d[d > 0])) if np.any(d > 0) else 1.0
        cho, X = factorise_bordered(Sd, C, self.lam, self.prob)
        self.system = (Sd, cho, X)
        return solve_bordered(cho, X, C, self.lam, rhs, ct)

    def _solve_frozen(self, g, p) -> np.ndarray:
        """The step from the last factorised Hessian and this point's gradient ``g``."""
        rhs = g - self.Q @ p
        ct = self.t - self.C @ p
        if not self.dense:
            return self.system.solve(rhs, ct)
        _, cho, X = self.system
        return solve_bordered(cho, X, self.C, self.lam, rhs, ct)

    def _need_matrix(self, force: bool, robust: bool, steps: list[float]) -> bool:
        """Whether the next pass assembles the reduced Hessian, or the last one is re-used.

        The gradient is exact in every pass, so a re-used (frozen) Hessian changes only how
        fast the steps shrink, not where they end. It is re-assembled after a large step (the
        Hessian depends on the calibration: 0.2 mag in the robust phase, whose reweighting
        converges linearly whatever the Hessian; 20 mmag in least squares), and in least
        squares when the steps stop shrinking at least fourfold (a stale Hessian).
        """
        if force or self.system is None:
            return True
        if not steps:
            return False
        if steps[-1] > (0.2 if robust else 2e-2):
            return True
        return not robust and len(steps) >= 2 and steps[-1] > 0.25 * steps[-2]

    def run(self) -> None:
        """Iterate: robust phase, classification, least squares re-classified until stable."""
        cfg = self.cfg
        robust = self.irls
        chain: tuple = ()
        p, dp_taken, prev, step = self.p, None, None, 1.0
        since = 0
        solved: dict = {}  # per round: the kept sets' fingerprints and the least-squares solution
        force, steps = True, []  # steps: model changes of the frozen-Hessian steps since the last assembly
        while True:
            need = self._need_matrix(force, robust, steps)
            res = self._pass(p, robust, chain, dp_taken, need)
            cost = res["cost"] + float(p @ (self.Q @ p))
            if prev is not None and (res["n_bad"] > 0 or cost > prev[0] * (1 + 1e-10) + 1e-12) and step > 1e-3:
                if not prev[3]:
                    # a frozen-Hessian step went uphill: go back and assemble the Hessian there
                    # (that point's pass is done again, so it is not counted twice)
                    self.history.pop()
                    self.n_iter -= 1
                    p, dp_taken, prev, force, steps = prev[1], None, None, True, []
                    continue
                step *= 0.5
                p, dp_taken = prev[1] + step * prev[2], step * prev[2]
                continue
            force = False
            if need:
                steps = []
            if dp_taken is not None:
                steps.append(res["step"])
            self.history.append(cost)
            self.n_iter += 1
            h = self.history
            small = dp_taken is not None and res["step"] < (1e-5 if robust else cfg.tol)
            if len(h) - since >= 2 and 0.0 <= h[-2] - h[-1] <= 1e-11 * h[-1]:
                small = True
            more = self.n_iter < cfg.max_iter
            if small and not robust:
                solved[len(chain)] = (tuple(res["kept"]), p, res, cost)
                cycle = self._cycle(solved, len(chain)) if res["n_changed"] else None
                if cycle is not None:
                    p, res, cost = cycle[1:]
                    chain = chain[:len(chain) - cycle[0]]
                    self.converged = True
                    break
            if small and more and (robust or (self.irls and res["n_changed"] and self.rounds < cfg.max_rejection_rounds)):
                chain = chain + (p.copy(),)  # classify here, then least squares on the kept set
                force = force or robust  # the robust phase's Cauchy weights are gone: a new Hessian
                steps = []
                robust = False
                self.rounds += 1
                since, prev, dp_taken, step = len(h), None, None, 1.0
                continue
            if small or not more:
                self.converged = bool(small)
                break
            dp = self._solve(res["S"], res["g"], p) if need else self._solve_frozen(res["g"], p)
            prev, step = (cost, p, dp, need), 1.0
            p, dp_taken = p + dp, dp
        self.p, self.robust, self.chain, self.last = p, robust, chain, res
        self.chi2 = cost - float(p @ (self.Q @ p))

    def _cycle(self, solved: dict, r: int):
        """A re-classification that flips the same observations back and forth.

        When round ``r`` kept the same observations as round ``r − 2``, every later round
        repeats the last two, and the in-memory fit would go on until ``max_rejection_rounds``;
        its final state is known now: this round's or the previous one's solution, by parity.
        Returns ``(rounds to drop from the chain, p, pass result, cost)``, or None.
        """
        last = self.cfg.max_rejection_rounds
        if r < 3 or r - 2 not in solved or solved[r][0] != solved[r - 2][0] or self.rounds >= last:
            return None
        back = (last - r) % 2
        self.rounds = last
        return (back, *solved[r - back][1:])

    def errors(self, summaries) -> tuple[np.ndarray, list[np.ndarray]]:
        """Parameter errors and, per partition, its stars' calibration variance."""
        n_p = self.prob.n_p
        if not self.cfg.compute_errors:
            return np.zeros(n_p), [np.zeros(len(s["star_ids"])) for s in summaries]
        # the system at the final point (the last solve was one step before it, and may have
        # re-used an older Hessian)
        last = self.last if self.last["S"] is not None else self._pass(self.p, self.robust, self.chain, None)
        self._solve(last["S"], last["g"], self.p)
        if self.dense:
            import scipy.linalg as sla

            Sd, cho, X = self.system
            inv = sla.cho_solve(cho, np.eye(n_p))
            Xc = inv @ self.C.T
            cov = inv - Xc @ np.linalg.solve(self.C @ Xc, Xc.T)
            items = [(h, s["params"], cov[np.ix_(s["params"], s["params"])])
                     for h, s in zip(self.parts.handles, summaries, strict=True)]
            var_cal = self.ex.map(_star_variance_item, items, self.ctx, self.p, self.robust, self.chain)
            return np.sqrt(np.clip(np.diag(cov), 0, None)), var_cal
        # sparse: the selected inverse of the factorised system (``SparseSystem``), and each
        # partition's star columns U brought over a few partitions at a time
        from ..execution import Placed

        var = self.system.variances()
        var_cal = []
        step = 4
        for i0 in range(0, len(self.parts), step):
            some = Placed(self.parts.handles[i0:i0 + step], keep=self.parts.keep)
            for U in self.ex.map_placed(part_fns.star_columns, some, self.ctx, self.p, self.robust, self.chain):
                var_cal.append(self.system.star_quadratic(U))
        return np.sqrt(np.clip(var, 0, None)), var_cal


def _star_variance_item(item, ctx, p, robust, chain):
    part, idx, cov = item
    return part_fns.star_variance(part, ctx, p, robust, chain, idx, cov)


def partition_by_star(observations, npartitions: int | None = None):
    """A Dask DataFrame of observations reshuffled so that every star's rows are in one partition.

    A streamed joint fit (``fit_joint(..., visits=...)``) needs whole stars per partition; a
    catalog written per visit or per detector has each star in many. This is dask's own shuffle
    on the ``star`` column (rows of one star hash to one partition); nothing is computed here.

    Parameters
    ----------
    observations : dask.dataframe.DataFrame
        With a ``star`` column.
    npartitions : int, optional
        Default: as many as the input has.

    Returns
    -------
    dask.dataframe.DataFrame

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> df = dd.from_pandas(pd.DataFrame({"star": [1, 2, 1, 2], "visit": [1, 1, 2, 2]}), npartitions=2)
    >>> parts = partition_by_star(df).to_delayed()
    >>> sorted(sorted(set(p.compute()["star"])) for p in parts if len(p.compute()))
    [[1], [2]]
    """
    if not (hasattr(observations, "shuffle") and hasattr(observations, "npartitions")):
        raise InputError("partition_by_star takes a Dask DataFrame (dask.dataframe); for a Parquet dataset write it "
                         "partitioned by star (or by the star's sky cell) instead")
    if "star" not in observations.columns:
        raise InputError("partition_by_star: the observations have no column 'star'")
    return observations.shuffle(on="star", npartitions=npartitions or observations.npartitions)


def fit_streamed(cfg, model, observations, visits, reference, bboxes, client, residuals=None):
    """The streamed fit (see the module docstring); returns a :class:`StreamedJointSolution`."""
    from ..execution import Placed, as_executor
    from ._joint_stream_solution import build_solution

    if robust_rounds_unsupported(cfg):
        raise InputError("robust_scale=None (the older reject-and-resolve rounds) is not available for a streamed "
                         "fit (visits=...); use the default robust_scale")
    ex = as_executor(client, n_threads=K.num_threads())
    vt = read_visits(visits)
    need_area = cfg.kind is ImageKind.SURFACE_BRIGHTNESS and model.pixel_area
    spec = {"visit_ids": vt["visit_ids"], "ra": vt["ra"], "dec": vt["dec"], "epoch": vt["epoch"],
            "use_colour": cfg.chromatic_order is not None, "error_floor": cfg.error_floor,
            "need_area": need_area, "model": model.name}
    items = _sources(observations, ex)
    raw = ex.place(load, items, spec)
    if isinstance(items, Placed):
        raw.keep.extend(items.keep)
    scans = ex.map_placed(scan, raw)
    check_whole_stars(scans)
    for s in scans:
        s.pop("star_ids")
    geo = geometry(scans, vt, bboxes)
    ctx = exclusions(ex, raw, scans, geo, vt, cfg, model, reference)
    has_colour = any(s["has_colour"] for s in scans)
    prob, cctx = skeleton(cfg, model, vt, geo, ctx, has_colour)
    parts = ex.place(part_fns.compact, raw, cctx)
    parts.keep.extend(raw.keep)
    ex.release(raw)
    pctx = {"blocks": prob.blocks, "nbs": prob.nbs, "n_p": prob.n_p, "robust_scale": cfg.robust_scale,
            "n_sigma": cfg.n_sigma, "reference_in_chi2": model.reference_in_chi2,
            "n_visits": len(prob.visit_ids), "n_detectors": len(prob.detector_ids),
            "extent": cctx["extent"], "visit_ids": prob.visit_ids, "detector_ids_used": prob.detector_ids}
    from ._joint_solution import COVERAGE_CELLS

    pctx["coverage_cells"] = COVERAGE_CELLS
    gn = _Solver(cfg, model, prob, ex, parts, pctx)
    gn.start()
    gn.run()
    summaries = ex.map_placed(part_fns.summary, parts, pctx, gn.p, gn.robust, gn.chain)
    perr, var_cal = gn.errors(summaries)
    if residuals is not None:
        _write_residuals(ex, parts, pctx, gn, residuals)
    ex.release(parts)
    return build_solution(cfg, model, prob, geo, vt, gn, summaries, perr, var_cal)


def robust_rounds_unsupported(cfg) -> bool:
    return cfg.n_sigma is not None and cfg.robust_scale is None


def _write_residuals(ex, parts, pctx, gn, folder) -> None:
    import os

    os.makedirs(folder, exist_ok=True)
    names = [os.path.join(os.fspath(folder), f"part-{i:06d}.parquet") for i in range(len(parts))]
    items = [(h, n) for h, n in zip(parts.handles, names, strict=True)]
    ex.map(_residual_item, items, pctx, gn.p, gn.robust, gn.chain)


def _residual_item(item, ctx, p, robust, chain):
    part, path = item
    return part_fns.write_residuals(part, ctx, p, robust, chain, path)


__all__ = ["PASS_HOOK", "fit_streamed", "partition_by_star"]
