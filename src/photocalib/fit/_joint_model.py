"""The parameterisation of the joint photometric fit: factor blocks, Chebyshev bases, constraints.

Every model is a product of factors, each linear in its coefficients; this module says which
coefficients an observation touches and evaluates the factors and their derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev as C

#: 2.5 / ln 10: d(2.5 log10 f) / df × f.
MAG_PER_LN = 2.5 / np.log(10.0)


def triangular_terms(order: int) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` exponent pairs of ``T_i(u) T_j(v)`` with ``i + j <= order``, ordered by j then i."""
    ii, jj = [], []
    for j in range(order + 1):
        for i in range(order + 1 - j):
            ii.append(i)
            jj.append(j)
    return np.asarray(ii, dtype=np.int64), np.asarray(jj, dtype=np.int64)


def cheb_basis(u: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    """Triangular Chebyshev basis ``(n, n_terms)`` at ``u, v`` in [-1, 1]."""
    ii, jj = triangular_terms(order)
    tu = C.chebvander(np.asarray(u, dtype=np.float64), order)
    tv = C.chebvander(np.asarray(v, dtype=np.float64), order)
    return tv[:, jj] * tu[:, ii]


def cheb_means(order: int) -> np.ndarray:
    """Mean over [-1, 1]² of each triangular basis term (the row of a mean constraint)."""
    ii, jj = triangular_terms(order)
    k = np.arange(order + 1, dtype=np.float64)
    m = np.zeros(order + 1)
    even = (np.arange(order + 1) % 2) == 0
    m[even] = 1.0 / (1.0 - k[even] ** 2)
    return m[ii] * m[jj]


def coefficients_to_matrix(coef: np.ndarray, order: int) -> np.ndarray:
    """Triangular coefficient vector → ``ChebyshevField`` coefficient matrix ``c[j, i]``."""
    ii, jj = triangular_terms(order)
    c = np.zeros((order + 1, order + 1))
    c[jj, ii] = coef
    return c


@dataclass(frozen=True)
class Block:
    """One multiplicative factor ``f = base + mult × Σ_k a[g, k] B_k(u, v)`` of the calibration.

    Attributes
    ----------
    name : str
        ``starflat``, ``grey``, ``detector``, ``visit`` or ``chromatic``.
    coord : str
        ``pixel``: (u, v) are the detector pixel coordinates mapped onto [-1, 1] from the
        detector box; ``tangent``: the visit's tangent-plane coordinates divided by its radius.
    order : int
        Triangular Chebyshev order.
    group : str
        What indexes the coefficient sets: ``epoch_detector``, ``detector`` or ``visit``.
    base : float
        0 for ordinary factors, 1 for the chromatic factor ``1 + colour × K``.
    n_groups : int
        Number of coefficient sets.
    offset : int
        Index of the first coefficient in the parameter vector.
    """

    name: str
    coord: str
    order: int
    group: str
    base: float
    n_groups: int
    offset: int

    @property
    def n_basis(self) -> int:
        return (self.order + 1) * (self.order + 2) // 2

    @property
    def n_params(self) -> int:
        return self.n_basis * self.n_groups

    def coefficients(self, p: np.ndarray, g: int) -> np.ndarray:
        """Coefficient vector of group ``g``."""
        s = self.offset + g * self.n_basis
        return p[s : s + self.n_basis]

    def initial(self) -> np.ndarray:
        """Starting coefficients: the factor is 1 (ordinary) or the chromatic term is 0."""
        a = np.zeros((self.n_groups, self.n_basis))
        if self.base == 0.0:
            a[:, 0] = 1.0
        return a.ravel()


def block_to_table_row(b: Block) -> dict:
    return {
        "name": b.name,
        "coord": b.coord,
        "order": b.order,
        "group": b.group,
        "base": b.base,
        "n_groups": b.n_groups,
        "offset": b.offset,
    }


def evaluate_blocks(blocks, p, groups, coords, colour):
    """Factors, derivative rows and slot starts for a set of observations.

    Parameters
    ----------
    blocks : list of Block
    p : ndarray
        Parameter vector.
    groups : dict
        ``group name -> int array (n,)`` of group indices per observation.
    coords : dict
        ``'pixel' -> (u, v)``, ``'tangent' -> (u, v)``, each in [-1, 1].
    colour : ndarray or None
        Per-observation star colour (for the chromatic block).

    Returns
    -------
    log_model : ndarray (n,)
        2.5 log10 of the product of the factors.
    D : ndarray (n, k)
        d(2.5 log10 Π f) / d a, in slot order.
    starts : ndarray (n, n_blocks) int64
        First parameter index of each block for each observation.
    ok : ndarray (n,) bool
        Whether every factor is positive.
    """
    n = len(next(iter(groups.values())))
    log_model = np.zeros(n)
    ok = np.ones(n, dtype=bool)
    Ds = []
    starts = np.empty((n, len(blocks)), dtype=np.int64)
    for bi, b in enumerate(blocks):
        g = groups[b.group]
        u, v = coords[b.coord]
        basis = cheb_basis(u, v, b.order)
        coef = p[b.offset : b.offset + b.n_params].reshape(b.n_groups, b.n_basis)
        poly = np.einsum("ij,ij->i", basis, coef[g])
        if b.base != 0.0:
            mult = colour
            f = b.base + mult * poly
        else:
            mult = None
            f = poly
        good = f > 0
        ok &= good
        fs = np.where(good, f, 1.0)
        log_model += MAG_PER_LN * np.log(fs)
        scale = MAG_PER_LN / fs if mult is None else MAG_PER_LN * mult / fs
        basis *= scale[:, None]
        Ds.append(basis)
        starts[:, bi] = b.offset + g * b.n_basis
    D = np.concatenate(Ds, axis=1) if len(Ds) > 1 else Ds[0]
    return log_model, D, starts, ok
