"""Numba kernels of the fields layer: filling an image from a separable (low-rank) product.

A skinny matrix product through BLAS is slow and erratic on busy machines (thread start-up);
this loop writes each output pixel once, so a fill runs at about the speed of one NumPy pass.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["low_rank_fill"]


@numba.njit(cache=True, nogil=True, fastmath=False)
def _low_rank_fill(left: np.ndarray, right: np.ndarray, out: np.ndarray) -> None:
    ny, k = left.shape
    nx = right.shape[1]
    row = np.empty(nx, dtype=np.float64)
    for i in range(ny):
        a = left[i, 0]
        for j in range(nx):
            row[j] = a * right[0, j]
        for m in range(1, k):
            a = left[i, m]
            for j in range(nx):
                row[j] += a * right[m, j]
        for j in range(nx):
            out[i, j] = row[j]


def low_rank_fill(left: np.ndarray, right: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i, j] = sum_m left[i, m] * right[m, j]``, accumulated in float64.

    Parameters
    ----------
    left : numpy.ndarray
        float64 ``(ny, k)``.
    right : numpy.ndarray
        float64 ``(k, nx)``, C-contiguous.
    out : numpy.ndarray
        float32 or float64 ``(ny, nx)``, written in place (rows may be strided).

    Returns
    -------
    numpy.ndarray
        ``out``.
    """
    _low_rank_fill(np.ascontiguousarray(left, dtype=np.float64), np.ascontiguousarray(right, dtype=np.float64), out)
    return out
