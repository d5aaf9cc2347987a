"""The per-star Cauchy location kernel of the streamed fit against a direct NumPy evaluation."""

from __future__ import annotations

import numpy as np

from photocalib.fit import _kernels as K


def _reference(ptr, e, w, ref_w, ref_m, c, n_iter):
    """The same estimator star by star in plain NumPy, iterated a fixed, generous number of times."""
    out = np.zeros(len(ptr) - 1)
    for s in range(len(ptr) - 1):
        es, ws = e[ptr[s]:ptr[s + 1]], w[ptr[s]:ptr[s + 1]]
        used = np.sort(es[ws > 0])
        m = used[len(used) // 2] if used.size else 0.0
        for _ in range(n_iter):
            wi = ws / (1.0 + ws * (es - m) ** 2 / c**2)
            W = wi.sum() + ref_w[s]
            m = (np.sum(wi * es) + ref_w[s] * ref_m[s]) / W if W > 0 else m
        out[s] = m
    return out


def test_cauchy_locations_match_the_fixed_point_and_resist_outliers():
    rng = np.random.default_rng(3)
    n_s = 300
    counts = rng.integers(1, 12, n_s)
    counts[:5] = 2  # a few two-observation stars
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    true = rng.uniform(17, 22, n_s)
    sig = 0.01
    e = np.repeat(true, counts) + rng.normal(0, sig, ptr[-1])
    bad = rng.random(ptr[-1]) < 0.05
    e[bad] += rng.uniform(0.3, 1.5, bad.sum())
    w = np.full(ptr[-1], 1 / sig**2)
    w[rng.random(ptr[-1]) < 0.05] = 0.0  # set aside
    ref_w = np.where(rng.random(n_s) < 0.2, 1 / 0.02**2, 0.0)
    ref_m = np.where(ref_w > 0, true + rng.normal(0, 0.02, n_s), 0.0)
    got = K.cauchy_locations(ptr, e, w, ref_w, ref_m, 3.0, 200, 1e-11)
    want = _reference(ptr, e, w, ref_w, ref_m, 3.0, 400)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    # a star whose every row is set aside and has no reference keeps the median start (0)
    empty = (np.add.reduceat(w, ptr[:-1]) == 0) & (ref_w == 0)
    assert np.all(got[empty] == 0.0)
    # stars with ≥ 5 clean rows sit on the truth despite their outliers
    nbad = np.add.reduceat(bad.astype(int), ptr[:-1])
    clean = (counts >= 5) & (nbad <= 1) & ~empty
    assert np.max(np.abs(got[clean] - true[clean])) < 5 * sig
