"""Numba kernels of the joint photometric fit: normal-equation accumulation and star elimination.

The per-observation sums scatter into a small dense matrix at indices that depend on the data,
which NumPy cannot vectorise without materialising every outer product.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["accumulate_normal", "eliminate_stars", "num_threads", "rows_dot", "star_quadratic"]


def num_threads() -> int:
    """Threads the parallel kernels split their work over."""
    return int(numba.get_num_threads())


@numba.njit(cache=True, nogil=True)
def accumulate_normal(starts, nbs, D, w, r, n_p):  # pragma: no cover - compiled
    """Calibration-parameter block of the normal equations: ``N = Σ w D Dᵀ``, ``b = Σ w D r``.

    ``starts[o, b]`` is the first parameter index of factor ``b`` for observation ``o`` and
    ``nbs[b]`` its number of parameters; ``D[o]`` holds the derivatives in that slot order.
    Only the upper triangle of ``N`` is filled.
    """
    n_obs, n_slots = starts.shape
    N = np.zeros((n_p, n_p))
    b = np.zeros(n_p)
    k = D.shape[1]
    cols = np.empty(k, dtype=np.int64)
    for o in range(n_obs):
        wo = w[o]
        if wo == 0.0:
            continue
        c = 0
        for s in range(n_slots):
            for j in range(nbs[s]):
                cols[c] = starts[o, s] + j
                c += 1
        ro = r[o]
        for a in range(k):
            ca = cols[a]
            wda = wo * D[o, a]
            b[ca] += wda * ro
            for q in range(a, k):
                cq = cols[q]
                if ca <= cq:
                    N[ca, cq] += wda * D[o, q]
                else:
                    N[cq, ca] += wda * D[o, q]
    return N, b


@numba.njit(cache=True, nogil=True)
def _eliminate_range(s0, s1, ptr, starts, nbs, D, w, r, ref_w, ref_b, n_p, N, b, W, B, pos, idx, val):  # pragma: no cover
    n_slots = starts.shape[1]
    for s in range(s0, s1):
        Ws = ref_w[s]
        bs = ref_b[s]
        nn = 0
        for o in range(ptr[s], ptr[s + 1]):
            wo = w[o]
            if wo == 0.0:
                continue
            Ws += wo
            bs += wo * r[o]
            c = 0
            for sl in range(n_slots):
                for j in range(nbs[sl]):
                    col = starts[o, sl] + j
                    p = pos[col]
                    if p < 0:
                        pos[col] = nn
                        idx[nn] = col
                        val[nn] = wo * D[o, c]
                        nn += 1
                    else:
                        val[p] += wo * D[o, c]
                    c += 1
        W[s] = Ws
        B[s] = bs
        if Ws > 0.0:
            inv = 1.0 / Ws
            for a in range(nn):
                ia = idx[a]
                va = val[a] * inv
                b[ia] -= va * bs
                for q in range(a, nn):
                    iq = idx[q]
                    if ia <= iq:
                        N[ia, iq] -= va * val[q]
                    else:
                        N[iq, ia] -= va * val[q]
        for a in range(nn):
            pos[idx[a]] = -1


@numba.njit(cache=True, parallel=True, nogil=True)
def eliminate_stars(ptr, starts, nbs, D, w, r, ref_w, ref_b, n_p, n_threads):  # pragma: no cover
    """Schur complement of the star magnitudes: ``-Σ_s u_s u_sᵀ / W_s`` and ``-Σ_s u_s b_s / W_s``.

    Observations are grouped by star (``ptr`` is the CSR pointer over stars). For star ``s``,
    ``W_s = Σ w + ref_w[s]``, ``b_s = Σ w r + ref_b[s]`` and ``u_s = Σ w D`` (merged over its
    observations). Returns the upper triangle of the correction to the parameter block, the
    correction to its right-hand side, and ``W``, ``b`` per star (for back-substitution).
    """
    n_stars = ptr.shape[0] - 1
    k = D.shape[1]
    max_len = 0
    for s in range(n_stars):
        m = ptr[s + 1] - ptr[s]
        if m > max_len:
            max_len = m
    Ns = np.zeros((n_threads, n_p, n_p))
    bs = np.zeros((n_threads, n_p))
    W = np.zeros(n_stars)
    B = np.zeros(n_stars)
    for t in numba.prange(n_threads):
        s0 = (n_stars * t) // n_threads
        s1 = (n_stars * (t + 1)) // n_threads
        pos = -np.ones(n_p, dtype=np.int64)
        idx = np.empty(max_len * k + 1, dtype=np.int64)
        val = np.empty(max_len * k + 1)
        _eliminate_range(s0, s1, ptr, starts, nbs, D, w, r, ref_w, ref_b, n_p, Ns[t], bs[t], W, B, pos, idx, val)
    N = Ns[0]
    b = bs[0]
    for t in range(1, n_threads):
        N += Ns[t]
        b += bs[t]
    return N, b, W, B


@numba.njit(cache=True, nogil=True)
def star_quadratic(ptr, starts, nbs, D, w, cov):  # pragma: no cover
    """``u_sᵀ C u_s`` per star, the calibration part of each star magnitude's variance."""
    n_stars = ptr.shape[0] - 1
    n_p = cov.shape[0]
    n_slots = starts.shape[1]
    k = D.shape[1]
    out = np.zeros(n_stars)
    pos = -np.ones(n_p, dtype=np.int64)
    max_len = 0
    for s in range(n_stars):
        m = ptr[s + 1] - ptr[s]
        if m > max_len:
            max_len = m
    idx = np.empty(max_len * k + 1, dtype=np.int64)
    val = np.empty(max_len * k + 1)
    for s in range(n_stars):
        nn = 0
        for o in range(ptr[s], ptr[s + 1]):
            wo = w[o]
            if wo == 0.0:
                continue
            c = 0
            for sl in range(n_slots):
                for j in range(nbs[sl]):
                    col = starts[o, sl] + j
                    p = pos[col]
                    if p < 0:
                        pos[col] = nn
                        idx[nn] = col
                        val[nn] = wo * D[o, c]
                        nn += 1
                    else:
                        val[p] += wo * D[o, c]
                    c += 1
        acc = 0.0
        for a in range(nn):
            for q in range(nn):
                acc += val[a] * cov[idx[a], idx[q]] * val[q]
        out[s] = acc
        for a in range(nn):
            pos[idx[a]] = -1
    return out


@numba.njit(cache=True, nogil=True)
def rows_dot(starts, nbs, D, vec):  # pragma: no cover
    """``D[o] · vec[cols(o)]`` per observation: the model change of a parameter step."""
    n_obs, n_slots = starts.shape
    out = np.zeros(n_obs)
    for o in range(n_obs):
        c = 0
        acc = 0.0
        for sl in range(n_slots):
            s0 = starts[o, sl]
            for j in range(nbs[sl]):
                acc += D[o, c] * vec[s0 + j]
                c += 1
        out[o] = acc
    return out
