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
(KKT) system::

    [ S_s + λGᵀG  Fᵀ     Cᵀ   Gᵀ    ] [dp]   [rhs    ]
    [ F           I / c  0    0     ] [y ] = [0      ]
    [ C           0      0    0     ] [μ ]   [t − C p]
    [ G           0      0    I / λ ] [z ]   [0      ]

Eliminating ``y`` gives back ``S_s − c FᵀF`` and eliminating ``z`` takes back ``λGᵀG``: the
solution is the dense path's bordered Cholesky solve to rounding. ``G`` pins one parameter
per constraint (rows of the identity): the constraints remove ``S``'s null space (the
degeneracies) but their rows are dense and can only be eliminated last, so without the pins
the leading block would have near-zero pivots along that null space. Ordering: nested
dissection (METIS) of ``S_s``'s graph, the dense rows last; SuperLU factorises in that order
with diagonal pivots, which is ``L D Lᵀ``. On a wide survey of 10⁵ visits the factorisation
takes 5–8 s where SuperLU's own minimum-degree ordering of the whole KKT matrix took 28 s,
with less fill (``benchmarks/bench_joint_sparse.py`` has the measurements).

Errors: the top-left block of the KKT inverse is the constrained covariance. Its entries on
the factor's pattern, which holds every pair of parameters one star touches, follow from the
factor by Takahashi's recurrences (selected inversion, at about the cost of the
factorisation): the parameter variances and every star's ``u_sᵀ cov u_s`` without the ``n_p``
solves the whole covariance would take. Where SuperLU had to pivot off the diagonal the
columns are solved for instead, in batches.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import InputError, PhotocalibError
from ._joint_model import MAG_PER_LN
from ._joint_problem import Problem

__all__ = ["SparsePrior", "SparseSystem", "fill_reducing_order", "jacobian_columns", "prior", "reduced_matrix"]


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


def fill_reducing_order(A: sp.spmatrix) -> np.ndarray:
    """A fill-reducing symmetric ordering of ``A`` (nested dissection by METIS on its graph).

    The reduced matrix of a wide survey is the graph of visits that share stars (a mesh on the
    sky, plus the few detector parameters that touch everything): nested dissection keeps the
    factor's fill near ``n log n`` where minimum degree grows faster.
    """
    import pymetis

    n = A.shape[0]
    if n < 3:
        return np.arange(n)
    G = sp.csr_matrix(A, copy=True)
    G.setdiag(0)
    G.eliminate_zeros()
    G = (G + G.T).tocsr()  # a symmetric pattern, as METIS requires
    perm, _ = pymetis.nested_dissection(pymetis.CSRAdjacency(G.indptr, G.indices))
    return np.asarray(perm, dtype=np.int64)


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
        # The constraints remove ``S``'s null space (the degeneracies) but their rows are dense,
        # so they can only come last in a sparse factorisation, after ``S`` itself, whose
        # pivots would then be near zero along the null space. Pin one parameter per constraint
        # instead (``+ lam GᵀG``, ``G`` rows of the identity, a sparse gauge fix) and take it
        # back exactly through a border ``[G, 0, 0, I / lam]`` (eliminating it subtracts
        # ``lam GᵀG``): the system is the same, its leading block is well conditioned.
        pins = _pins(C)
        ng = len(pins)
        G = sp.csr_matrix((np.ones(ng), (np.arange(ng), pins)), shape=(ng, n_p))
        Ss = Ss + lam * (G.T @ G)
        Fs = sp.csr_matrix(Q.F)
        Cs = sp.csr_matrix(C)
        mid = sp.identity(nf, format="csr") / Q.coef if nf else sp.csr_matrix((0, 0))
        K = sp.bmat([[Ss, Fs.T, Cs.T, G.T],
                     [Fs, mid, None, None],
                     [Cs, None, sp.csr_matrix((nc, nc)), None],
                     [G, None, None, sp.identity(ng, format="csr") / lam]], format="csc")
        self.n_f, self.n_c, self.n_g = nf, nc, ng
        # nested dissection (METIS) of the reduced matrix's graph, the few dense rows of the
        # shared-shape prior, the constraints and the pins last; SuperLU keeps that order
        # (NATURAL) and pivots on the diagonal where it can
        order = np.concatenate([fill_reducing_order(Ss), np.arange(n_p, n_p + nf + nc + ng)])
        self.perm = order
        self._selected = None  # the selected inverse, once computed (``()``: not available)
        K = K[order][:, order].tocsc()
        try:
            # diagonal pivots: L D Lᵀ, stable while the pinned leading block is positive definite
            self.lu = spla.splu(K, permc_spec="NATURAL", diag_pivot_thresh=0.0,
                                options={"SymmetricMode": True})
            # a pivot of the leading block near zero means the pins left a degeneracy (a model
            # whose constraints' largest coefficients miss its null space); elimination without
            # pivoting through it carries no stability guarantee (the border usually recovers
            # the digits, as in the tests), so factorise again with threshold pivoting (the
            # errors then come from solves)
            lead = np.abs(self.lu.U.diagonal()[self.lu.perm_c[:n_p]])
            scale = np.abs(K.diagonal()[:n_p])
            if np.any(lead < 1e-9 * np.where(scale > 0, scale, 1.0)):
                self.lu = spla.splu(K, permc_spec="NATURAL", diag_pivot_thresh=0.01,
                                    options={"SymmetricMode": True})
        except RuntimeError as exc:
            raise PhotocalibError(
                "the joint fit's normal matrix is singular beyond the documented degeneracies; "
                "check that visits overlap and detectors have stars across them") from exc

    def _solve(self, b: np.ndarray) -> np.ndarray:
        x = np.empty_like(b)
        x[self.perm] = self.lu.solve(np.ascontiguousarray(b[self.perm]))
        return x

    def solve(self, rhs: np.ndarray, ct: np.ndarray) -> np.ndarray:
        """``dp`` minimising ``½ dpᵀ S dp − rhsᵀ dp`` subject to ``C dp = ct``."""
        full = np.concatenate([rhs, np.zeros(self.n_f), ct, np.zeros(self.n_g)])
        return self._solve(full)[: self.n_p]

    def covariance_columns(self, idx: np.ndarray) -> np.ndarray:
        """Columns ``idx`` of the constrained covariance (shape ``(n_p, len(idx))``)."""
        rhs = np.zeros((self.n_p + self.n_f + self.n_c + self.n_g, len(idx)))
        rhs[idx, np.arange(len(idx))] = 1.0
        return self._solve(rhs)[: self.n_p]

    def selected_inverse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The KKT inverse on the pattern of its factor (Takahashi's recurrences), or None.

        With the factor ``L D Lᵀ`` of the symmetrically permuted KKT matrix, the entries of
        ``Z = K⁻¹`` on the pattern of ``L`` (which holds every pair of parameters that one
        star touches: the pattern of ``S``) follow from the last column back::

            Z_ij = − Σ_{k ∈ L_j} Z_ik L_kj   (i ∈ L_j),     Z_jj = 1 / d_j − Σ_{k ∈ L_j} L_kj Z_kj

        at about the cost of the factorisation, instead of ``n_p`` solves. Returns
        ``(indptr, indices, Z, Zd)`` of the strictly lower part (CSC, factor order) and the
        diagonal, or None when SuperLU pivoted off the diagonal (then the factor is not
        ``L D Lᵀ``) or the pattern lacks an entry the recurrence needs. Computed once.
        """
        if self._selected is not None:
            return self._selected or None
        lu = self.lu
        self._selected = ()
        if not np.array_equal(lu.perm_r, lu.perm_c):
            return None
        L = sp.tril(lu.L, k=-1, format="csc")
        L.sort_indices()
        d = lu.U.diagonal()
        indptr, indices = L.indptr.astype(np.int64), L.indices.astype(np.int64)
        Z, Zd, ok = _takahashi(indptr, indices, L.data, d)
        if ok:
            self._selected = (indptr, indices, Z, Zd)
        return self._selected or None

    def _positions(self) -> np.ndarray:
        """Where each parameter sits in the factor's order (``K[perm][:, perm]`` is then
        permuted by SuperLU's ``perm_c``)."""
        where = np.empty(len(self.perm), dtype=np.int64)
        where[self.perm] = self.lu.perm_c
        return where[: self.n_p]

    def variances(self, batch: int = 256) -> np.ndarray:
        """The constrained covariance's diagonal (the squared parameter errors).

        From the selected inverse where the factor allows it, else ``n_p`` solves in batches.
        """
        sel = self.selected_inverse()
        if sel is not None:
            return sel[3][self._positions()].copy()
        var = np.zeros(self.n_p)
        for i0 in range(0, self.n_p, batch):
            idx = np.arange(i0, min(i0 + batch, self.n_p))
            var[idx] = self.covariance_columns(idx)[idx, np.arange(len(idx))]
        return var

    def covariance_block(self, idx: np.ndarray) -> np.ndarray:
        """``cov[idx][:, idx]`` where the selected inverse has it (every pair of parameters that
        one star touches), 0 elsewhere; the exact block by solves without the selected inverse.

        For ``u_sᵀ cov u_s`` of stars whose parameters are all in ``idx`` the zeros never
        count (``u_s`` is 0 off its star's parameters), so a streamed fit can hand a
        partition this block instead of solving ``len(idx)`` columns.
        """
        idx = np.asarray(idx, dtype=np.int64)
        sel = self.selected_inverse()
        if sel is None:
            return self.covariance_columns(idx)[idx]
        indptr, indices, Z, Zd = sel
        pos = self._positions()[idx]
        local = np.full(len(Zd), -1, dtype=np.int64)
        local[pos] = np.arange(len(idx))
        return _gather_block(indptr, indices, Z, Zd, pos, local)

    def star_quadratic(self, U: sp.spmatrix, batch: int = 256) -> np.ndarray:
        """``u_sᵀ cov u_s`` for every column ``u_s`` of ``U`` (shape ``(n_p, n_stars)``, sparse).

        Each ``u_s = Σ w D`` over one star's observations touches only parameters that star
        touches, whose covariance entries are all in the selected inverse; a streamed fit can
        pass one partition's stars at a time. Without the selected inverse, by solves.
        """
        U = sp.csc_matrix(U)
        if U.shape[0] != self.n_p:
            raise ValueError(f"U has {U.shape[0]} rows; the system has {self.n_p} parameters")
        sel = self.selected_inverse()
        if sel is not None:
            indptr, indices, Z, Zd = sel
            U.sort_indices()
            return _star_quadratic(U.indptr.astype(np.int64), U.indices.astype(np.int64), U.data,
                                   self._positions(), indptr, indices, Z, Zd)
        U = U.tocsr()
        n_s = U.shape[1]
        quad = np.zeros(n_s)
        # keep the dense (batch × stars) product under about 256 MB
        batch = int(max(8, min(batch, 2**25 // max(n_s, 1))))
        for i0 in range(0, self.n_p, batch):
            idx = np.arange(i0, min(i0 + batch, self.n_p))
            cov = self.covariance_columns(idx)
            cu = (U.T @ cov).T  # rows idx of cov U: (len(idx), n_s)
            quad += np.asarray(U[idx].multiply(cu).sum(axis=0)).ravel()
        return quad

    def errors(self, prob: Problem, cols: np.ndarray, D: np.ndarray, w: np.ndarray,
               batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Parameter errors (the covariance diagonal) and ``u_sᵀ cov u_s`` per star.

        By selected inversion (:meth:`selected_inverse`) where the factor allows it; otherwise
        the covariance is solved for in column batches and never held whole: ``n_p`` solves
        and, per batch, ``(cov U)`` restricted to the batch's rows.
        """
        n, k = D.shape
        n_s = len(prob.ptr) - 1
        Jw = sp.csr_matrix(((D * w[:, None]).ravel(), cols.ravel(), np.arange(0, n * k + 1, k, dtype=np.int64)),
                           shape=(n, self.n_p))
        E = sp.csr_matrix((np.ones(n), prob.star, np.arange(n + 1)), shape=(n, n_s))
        U = (Jw.T @ E).tocsc()
        del Jw, E
        var = self.variances(batch)
        return np.sqrt(np.clip(var, 0, None)), self.star_quadratic(U, batch)


def _pins(C: np.ndarray) -> np.ndarray:
    """One parameter per constraint row: its largest coefficient among the columns not taken."""
    taken: list[int] = []
    for row in np.abs(C):
        row = row.copy()
        row[taken] = -1.0
        j = int(np.argmax(row))
        if row[j] > 0:
            taken.append(j)
    return np.asarray(taken, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _takahashi(indptr, indices, L, d):  # pragma: no cover - compiled
    """Takahashi's recurrences on a unit lower factor (strict part, CSC, sorted rows) and its
    pivots ``d``: the inverse on the factor's pattern (see :meth:`SparseSystem.selected_inverse`)."""
    n = len(d)
    Z = np.zeros(len(L))
    Zd = np.zeros(n)
    pos = np.full(n, -1, dtype=np.int64)
    for j in range(n - 1, -1, -1):
        a, b = indptr[j], indptr[j + 1]
        for qk in range(a, b):
            k = indices[qk]
            lkj = L[qk]
            Z[qk] -= Zd[k] * lkj
            for t in range(indptr[k], indptr[k + 1]):
                pos[indices[t]] = t
            for qi in range(qk + 1, b):
                t = pos[indices[qi]]
                if t < 0:  # the pattern is not closed under elimination: not a symbolic factor
                    return Z, Zd, False
                Z[qi] -= Z[t] * lkj  # Z_ij gets Z_ik L_kj (i > k)
                Z[qk] -= Z[t] * L[qi]  # Z_kj gets Z_ki L_ij (i > k)
            for t in range(indptr[k], indptr[k + 1]):
                pos[indices[t]] = -1
        s = 1.0 / d[j]
        for q in range(a, b):
            s -= L[q] * Z[q]
        Zd[j] = s
    return Z, Zd, True


@numba.njit(cache=True, nogil=True)
def _gather_block(indptr, indices, Z, Zd, pos, local):  # pragma: no cover - compiled
    """The selected inverse's entries between the factor positions ``pos`` (dense block)."""
    m = len(pos)
    out = np.zeros((m, m))
    for a in range(m):
        j = pos[a]
        out[a, a] = Zd[j]
        for q in range(indptr[j], indptr[j + 1]):
            b = local[indices[q]]
            if b >= 0:
                out[a, b] = Z[q]
                out[b, a] = Z[q]
    return out


@numba.njit(cache=True, nogil=True)
def _lookup(indptr, indices, Z, Zd, i, j):  # pragma: no cover - compiled
    if i == j:
        return Zd[i]
    if i < j:
        i, j = j, i
    a, b = indptr[j], indptr[j + 1]
    while a < b:  # binary search of row i in column j
        m = (a + b) // 2
        if indices[m] < i:
            a = m + 1
        else:
            b = m
    return Z[a]


@numba.njit(cache=True, nogil=True)
def _star_quadratic(uptr, urow, uval, pos, indptr, indices, Z, Zd):  # pragma: no cover - compiled
    """``u_sᵀ Z u_s`` per star (``u_s`` column ``s`` of ``U``) from the selected inverse."""
    n_s = len(uptr) - 1
    out = np.zeros(n_s)
    for s in range(n_s):
        acc = 0.0
        for a in range(uptr[s], uptr[s + 1]):
            pa = pos[urow[a]]
            acc += uval[a] * uval[a] * Zd[pa]
            for b in range(a + 1, uptr[s + 1]):
                acc += 2.0 * uval[a] * uval[b] * _lookup(indptr, indices, Z, Zd, pa, pos[urow[b]])
        out[s] = acc
    return out
