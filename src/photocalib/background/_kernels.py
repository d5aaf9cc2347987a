"""Numba kernels for background meshes: clipped statistics per mesh and source masking.

Each kernel makes a few linear passes over a mesh's pixels (no sorting), so a 4k×4k image costs
about as much as a handful of NumPy passes.
"""

from __future__ import annotations

import numba
import numpy as np

#: Histogram bins spanning ±nsigma·σ, used to locate the median of the clipped pixels.
_NBINS = 1024

#: Reassociation lets LLVM vectorise the clipped sums; NaN/inf semantics are kept (no 'nnan',
#: 'ninf') because the kernels test for non-finite pixels.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _mesh_stat(values, n, nsigma, max_iter, statistic):
    """Clipped (level, sigma, n_used) of ``values[:n]``.

    ``statistic``: 0 clipped mean, 1 clipped median, 2 SExtractor's mode.
    """
    if n == 0:
        return np.nan, np.nan, 0
    lo = -np.inf
    hi = np.inf
    mean = 0.0
    sigma = 0.0
    count = 0
    for _ in range(max_iter):
        s = 0.0
        s2 = 0.0
        c = 0.0
        # Shifted sums avoid cancellation for a sky level far above its noise.
        shift = values[0]
        for k in range(n):
            v = values[k]
            # Branch-free accumulation vectorises; inside is 0 or 1.
            inside = 1.0 if (v >= lo) & (v <= hi) else 0.0
            d = (v - shift) * inside
            s += d
            s2 += d * d
            c += inside
        if c < 3:
            break
        m = s / c
        var = s2 / c - m * m
        new_sigma = np.sqrt(var) if var > 0 else 0.0
        new_mean = m + shift
        converged = count == int(c)
        mean = new_mean
        sigma = new_sigma
        count = int(c)
        if converged or sigma == 0.0:
            break
        lo = mean - nsigma * sigma
        hi = mean + nsigma * sigma
    if count < 3 or sigma == 0.0 or statistic == 0:
        return mean, sigma, count
    # Median of the clipped values from a fine histogram, interpolated inside its bin.
    lo = mean - nsigma * sigma
    hi = mean + nsigma * sigma
    width = (hi - lo) / _NBINS
    hist = np.zeros(_NBINS, dtype=np.int64)
    inside = 0
    for k in range(n):
        v = values[k]
        if v >= lo and v < hi:
            b = int((v - lo) / width)
            if b >= _NBINS:
                b = _NBINS - 1
            hist[b] += 1
            inside += 1
    half = 0.5 * inside
    cum = 0.0
    median = mean
    for b in range(_NBINS):
        if cum + hist[b] >= half:
            median = lo + (b + (half - cum) / hist[b]) * width
            break
        cum += hist[b]
    # SExtractor's rule: the mode estimate 2.5 med - 1.5 mean unless the distribution is
    # very skewed (crowded), where the median is safer.
    if statistic == 1:
        return median, sigma, count
    if abs(mean - median) / sigma < 0.3:
        mode = 2.5 * median - 1.5 * mean
    else:
        mode = median
    return mode, sigma, count


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def mesh_statistics(image, bad, x_edges, y_edges, nsigma, max_iter, statistic):
    """Clipped background (mode), sigma and number of used pixels for every mesh.

    Parameters
    ----------
    image : 2-D float array
    bad : 2-D bool array (True: ignore the pixel) of the same shape
    x_edges, y_edges : int64 arrays of mesh boundaries (first 0, last nx / ny)
    nsigma : float, max_iter : int
        Clipping parameters.
    statistic : int
        0 clipped mean, 1 clipped median, 2 SExtractor mode (2.5 median - 1.5 mean).

    Returns
    -------
    level, sigma : float64 arrays (n_mesh_y, n_mesh_x); count : int64 array.
    """
    nmx = x_edges.size - 1
    nmy = y_edges.size - 1
    level = np.empty((nmy, nmx))
    sigma = np.empty((nmy, nmx))
    count = np.zeros((nmy, nmx), dtype=np.int64)
    maxw = 0
    maxh = 0
    for i in range(nmx):
        maxw = max(maxw, x_edges[i + 1] - x_edges[i])
    for j in range(nmy):
        maxh = max(maxh, y_edges[j + 1] - y_edges[j])
    buf = np.empty(maxw * maxh)
    for j in range(nmy):
        for i in range(nmx):
            n = 0
            for yy in range(y_edges[j], y_edges[j + 1]):
                for xx in range(x_edges[i], x_edges[i + 1]):
                    v = image[yy, xx]
                    if not bad[yy, xx] and np.isfinite(v):
                        buf[n] = v
                        n += 1
            m, s, c = _mesh_stat(buf, n, nsigma, max_iter, statistic)
            level[j, i] = m
            sigma[j, i] = s
            count[j, i] = c
    return level, sigma, count


@numba.njit(cache=True, nogil=True)
def mask_above(image, bad, level, sigma, x_edges, y_edges, threshold, grow):
    """Mark pixels above their mesh's ``level + threshold·sigma`` and a (2·grow+1)² box around.

    A piecewise-constant model per mesh is enough to find sources. The box dilation is
    separable and done in one streaming pass: a pixel is within ``grow`` of a hit along an axis
    iff the last hit seen ``grow`` positions *ahead* of it is at most ``grow`` behind it, so the
    image and mask are each read once and the result written once, whatever ``grow`` is.
    Returns ``bad`` OR the grown mask (a new array).
    """
    ny, nx = image.shape
    far = ny + nx + 2 * grow + 2
    # Cut per mesh, and each column's mesh index.
    cut = level + threshold * sigma
    col_mesh = np.empty(nx, dtype=np.int64)
    for i in range(x_edges.size - 1):
        for x in range(x_edges[i], x_edges[i + 1]):
            col_mesh[x] = i
    row_mesh = np.empty(ny, dtype=np.int64)
    for j in range(y_edges.size - 1):
        for y in range(y_edges[j], y_edges[j + 1]):
            row_mesh[y] = j
    out = np.empty((ny, nx), dtype=np.bool_)
    last_row = np.full(nx, -far, dtype=np.int64)  # last row (<= current) dilated-hit per column
    cut_row = np.empty(nx)
    dilated = np.empty(nx, dtype=np.bool_)
    for yy in range(ny + grow):
        if yy < ny:
            j = row_mesh[yy]
            for x in range(nx):
                cut_row[x] = cut[j, col_mesh[x]]
            last = -far
            for xx in range(nx + grow):
                if xx < nx:
                    c = cut_row[xx]
                    if np.isfinite(c) and image[yy, xx] > c:
                        last = xx
                xo = xx - grow
                if xo >= 0:
                    dilated[xo] = last >= xo - grow
            for x in range(nx):
                if dilated[x]:
                    last_row[x] = yy
        y = yy - grow
        if y >= 0:
            for x in range(nx):
                out[y, x] = bad[y, x] or last_row[x] >= y - grow
    return out
