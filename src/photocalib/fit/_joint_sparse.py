"""The joint fit's reduced system in sparse form: for surveys of 10⁴–10⁵ visits.

After the star magnitudes are eliminated, the reduced Hessian couples two calibration
parameters only where one star was seen with both (visits that overlap, a visit and the
detectors it used), so it is sparse in visits. With the sparse Jacobian ``J`` (one row per
observation, its derivative row ``D[o]`` at the columns of the factors it touches), the
weights ``w``, and ``U = Jᵀ diag(w) E`` (``E`` the observation-to-star incidence, so column
``s`` of ``U`` is the star's ``u_s = Σ w D``)::

    S = Jᵀ diag(w) J − U diag(1 / W) Uᵀ + Q

which is what :func:`._kernels.eliminate_stars` sums densely. ``Q`` (the priors) is a sparse
part plus, for the monolithic shared-shape prior, a rank-``nb−1`` term ``−c FᵀF`` that couples
every visit; that term and the constraints ``C p = t`` go into one symmetric indefinite
(KKT) system, factorised by sparse LU (SuperLU, minimum-degree ordering on ``Kᵀ + K``)::

    [ S_s  Fᵀ     Cᵀ ] [dp]   [rhs    ]
    [ F   I / c   0  ] [y ] = [0      ]
    [ C    0      0  ] [μ ]   [t − C p]

Eliminating ``y`` gives back ``S_s − c FᵀF``; the solution is the dense path's bordered
Cholesky solve to rounding. The top-left block of the KKT inverse is the constrained
covariance: parameter errors and the calibration part of the star variances come from its
columns, solved in batches (``n_p`` solves; ``compute_errors=False`` skips them on very large
problems).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import InputError, PhotocalibError
from ._joint_model import MAG_PER_LN
from ._joint_problem import Problem

__all__ = ["SparsePrior", "SparseSystem", "jacobian_columns", "prior", "reduced_matrix"]


class SparsePrior:
    """The priors' quadratic form ``Q = Qs − coef · FᵀF`` (``Qs`` sparse, ``F`` a few dense rows).

    Behaves as the symmetric matrix under ``@`` (``Q @ p`` and ``p @ Q``).
    """

    __array_ufunc__ = None  # ``ndarray @ prior`` defers to ``__rmatmul__``

    def __init__(self, Qs: sp.csr_matrix, F: np.ndarray, coef: float) -> None:
        self.Qs, self.F, self.coef = Qs, F, float(coef)

    def __matmul__(self, p: np.ndarray) -> np.ndarray:
        out = self.Qs @ p
        if len(self.F):
            out = out - self.coef * (self.F.T @ (self.F @ p))
        return out

    __rmatmul__ = __matmul__

    def dense(self) -> np.ndarray:
        """The full matrix (for tests)."""
        return self.Qs.toarray() - self.coef * (self.F.T @ self.F)


def prior(cfg, prob: Problem, level: np.ndarray) -> SparsePrior:
    """The sparse form of :func:`._joint_solver.prior_matrix` (the same quadratic form)."""
    from . import _priors

    n_p = prob.n_p
    diag = np.zeros(n_p)
    rows, cols, vals = [], [], []
    F = np.zeros((0, n_p))
    coef = 0.0
    for b in prob.blocks:
        if b.coord == "pixel" and b.base == 0.0 and b.order > 0 and cfg.star_flat_prior is not None:
            diag += _priors.ridge(n_p, b, cfg.star_flat_prior)
        if b.name == "visit" and b.order > 0 and cfg.visit_prior is not None and b.n_groups > 1:
            frame_radius = float(np.max(prob.visit_radius))
            nb, n_v = b.n_basis, b.n_groups
            lam = (MAG_PER_LN / cfg.visit_prior) ** 2
            Mv = np.stack([_priors.frame_map(b.order, prob.frame_offset[v], prob.visit_rotation[v],
                                             prob.visit_radius[v], frame_radius)[1:, :] / level[v]
                           for v in range(n_v)])  # (n_v, nb-1, nb)
            blk = lam * np.einsum("vki,vkj->vij", Mv, Mv)  # Σ_v |y_v|²: block diagonal
            ii, jj = np.meshgrid(np.arange(nb), np.arange(nb), indexing="ij")
            base = b.offset + np.arange(n_v)[:, None, None] * nb
            rows.append((base + ii).ravel())
            cols.append((base + jj).ravel())
            vals.append(blk.ravel())
            # − n |ȳ|² = − (lam / n_v) |flat a|²
            F = np.zeros((nb - 1, n_p))
            F[:, b.offset: b.offset + n_v * nb] = Mv.transpose(1, 0, 2).reshape(nb - 1, n_v * nb)
            coef = lam / n_v
    r = np.concatenate([np.arange(n_p), *rows])
    c = np.concatenate([np.arange(n_p), *cols])
    v = np.concatenate([diag, *vals])
    return SparsePrior(sp.csr_matrix((v, (r, c)), shape=(n_p, n_p)), F, coef)


def jacobian_columns(prob: Problem) -> np.ndarray:
    """Parameter index of every entry of the derivative rows ``D`` (shape of ``D``)."""
    slot = np.repeat(np.arange(len(prob.nbs)), prob.nbs)
    within = np.concatenate([np.arange(n) for n in prob.nbs])
    cols = prob.starts[:, slot] + within
    return cols.astype(np.int32 if prob.n_p < 2**31 else np.int64)


def reduced_matrix(prob: Problem, cols: np.ndarray, D: np.ndarray, w: np.ndarray,
                   W: np.ndarray) -> sp.csc_matrix:
    """``Jᵀ diag(w) J − U diag(1/W) Uᵀ`` (stars with ``W = 0`` carry nothing), sparse, symmetric."""
    n, k = D.shape
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    Jw = sp.csr_matrix(((D * w[:, None]).ravel(), cols.ravel(), indptr), shape=(n, prob.n_p))
    J = sp.csr_matrix((D.ravel(), cols.ravel(), indptr), shape=(n, prob.n_p))
    Npp = (Jw.T @ J).tocsc()
    del J
    n_s = len(prob.ptr) - 1
    E = sp.csr_matrix((np.ones(n), prob.star, np.arange(n + 1)), shape=(n, n_s))
    U = (Jw.T @ E).tocsc()
    del Jw, E
    inv = np.where(W > 0, 1.0 / np.where(W > 0, W, 1.0), 0.0)
    Ns = (U @ sp.diags(inv) @ U.T).tocsc()
    return (Npp - Ns).tocsc()


class SparseSystem:
    """The factorised KKT system of one reduced Hessian ``S`` (sparse), the priors and constraints."""

    def __init__(self, S: sp.spmatrix, Q: SparsePrior, C: np.ndarray, lam: float, prob: Problem) -> None:
        n_p = prob.n_p
        self.n_p, self.S = n_p, S
        Ss = (S + Q.Qs).tocsc()
        d = Ss.diagonal()
        dz = d + lam * np.sum(C * C, axis=0) <= 1e-14 * lam
        if dz.any():
            raise InputError(f"the fit cannot constrain the {prob.describe(int(np.nonzero(dz)[0][0]))}: "
                             "no used observation touches it; drop that visit/detector or add stars")
        # the same relative regularisation as the dense path's Cholesky
        Ss = Ss + sp.diags(1e-12 * np.abs(d))
        nf, nc = len(Q.F), len(C)
        Fs = sp.csr_matrix(Q.F)
        Cs = sp.csr_matrix(C)
        mid = sp.identity(nf, format="csr") / Q.coef if nf else sp.csr_matrix((0, 0))
        K = sp.bmat([[Ss, Fs.T, Cs.T],
                     [Fs, mid, None],
                     [Cs, None, sp.csr_matrix((nc, nc))]], format="csc")
        self.n_f, self.n_c = nf, nc
        try:
            # a symmetric ordering (minimum degree on Kᵀ + K) with diagonal pivots preferred:
            # at 2000 visits a third of the COLAMD fill and half its time
            self.lu = spla.splu(K, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.01,
                                options={"SymmetricMode": True})
        except RuntimeError as exc:
            raise PhotocalibError(
                "the joint fit's normal matrix is singular beyond the documented degeneracies; "
                "check that visits overlap and detectors have stars across them") from exc

    def solve(self, rhs: np.ndarray, ct: np.ndarray) -> np.ndarray:
        """``dp`` minimising ``½ dpᵀ S dp − rhsᵀ dp`` subject to ``C dp = ct``."""
        full = np.concatenate([rhs, np.zeros(self.n_f), ct])
        return self.lu.solve(full)[: self.n_p]

    def covariance_columns(self, idx: np.ndarray) -> np.ndarray:
        """Columns ``idx`` of the constrained covariance (shape ``(n_p, len(idx))``)."""
        rhs = np.zeros((self.n_p + self.n_f + self.n_c, len(idx)))
        rhs[idx, np.arange(len(idx))] = 1.0
        return self.lu.solve(rhs)[: self.n_p]

    def errors(self, prob: Problem, cols: np.ndarray, D: np.ndarray, w: np.ndarray,
               batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Parameter errors (the covariance diagonal) and ``u_sᵀ cov u_s`` per star.

        The covariance is solved for in column batches and never held whole: ``n_p`` solves
        and, per batch, ``(cov U)`` restricted to the batch's rows.
        """
        n, k = D.shape
        n_s = len(prob.ptr) - 1
        Jw = sp.csr_matrix(((D * w[:, None]).ravel(), cols.ravel(), np.arange(0, n * k + 1, k, dtype=np.int64)),
                           shape=(n, self.n_p))
        E = sp.csr_matrix((np.ones(n), prob.star, np.arange(n + 1)), shape=(n, n_s))
        U = (Jw.T @ E).tocsr()
        del Jw, E
        var = np.zeros(self.n_p)
        quad = np.zeros(n_s)
        # keep the dense (batch × stars) product under about 256 MB
        batch = int(max(8, min(batch, 2**25 // max(n_s, 1))))
        for i0 in range(0, self.n_p, batch):
            idx = np.arange(i0, min(i0 + batch, self.n_p))
            cov = self.covariance_columns(idx)
            var[idx] = cov[idx, np.arange(len(idx))]
            cu = (U.T @ cov).T  # rows idx of cov U: (len(idx), n_s)
            quad += np.asarray(U[idx].multiply(cu).sum(axis=0)).ravel()
        return np.sqrt(np.clip(var, 0, None)), quad
