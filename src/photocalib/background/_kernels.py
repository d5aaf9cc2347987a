"""Numba kernels for background meshes: clipped statistics per mesh and source masking.

Each kernel makes a few linear passes over a mesh's pixels in place (no sorting, no copies; a
mesh stays in cache between its clipping iterations), so a 4k×4k image costs about as much as a
few NumPy passes.
"""

from __future__ import annotations

import numba
import numpy as np

#: Histogram bins spanning ±nsigma·σ, used to locate the median of the clipped pixels.
_NBINS = 1024

#: Reassociation lets LLVM vectorise the clipped sums; NaN/inf semantics are kept (no 'nnan',
#: 'ninf') because the kernels test for non-finite pixels.
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _block_sums(image, y0, y1, x0, x1, win):
    """Sums of d = v - shift, d² and the count over the pixels of ``[y0:y1, x0:x1]`` in lo..hi.

    ``win`` = (lo, hi, shift, 0, 1, big) in the image's dtype: each row is summed in the image's
    own precision (vectorised selects; NaN and ±inf fail the finite window), the rows in float64.
    Also returns the number of finite pixels.
    """
    lo = win[0]
    hi = win[1]
    shift = win[2]
    zero = win[3]
    one = win[4]
    big = win[5]
    s = 0.0
    s2 = 0.0
    c = 0.0
    nf = 0.0
    for yy in range(y0, y1):
        rs = zero
        rs2 = zero
        rc = zero
        rf = zero
        for xx in range(x0, x1):
            v = image[yy, xx]
            ok = (v >= lo) & (v <= hi)
            # Selects, not a product with 0/1: a NaN pixel times 0 would still be NaN.
            d = (v - shift) if ok else zero
            inside = one if ok else zero
            rs += d
            rs2 += d * d
            rc += inside
            rf += one if (v >= -big) & (v <= big) else zero
        s += rs
        s2 += rs2
        c += rc
        nf += rf
    return s, s2, c, nf


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _finish_mesh(image, y0, y1, x0, x1, nsigma, max_iter, statistic, win, s, s2, c):
    """Clipped (level, sigma, n_used) of a mesh whose first iteration's sums (s, s2, c) over the
    window ``win`` (see :func:`_block_sums`) are given; later iterations re-read the block,
    which the first one left in cache. ``win`` is updated in place.

    ``statistic``: 0 clipped mean, 1 clipped median, 2 SExtractor's mode.
    """
    mean = 0.0
    sigma = 0.0
    count = 0
    for it in range(max_iter):
        if it > 0:
            s, s2, c, _ = _block_sums(image, y0, y1, x0, x1, win)
        if c < 3:
            break
        m = s / c
        var = s2 / c - m * m
        new_sigma = np.sqrt(var) if var > 0 else 0.0
        converged = count == int(c)
        mean = m + float(win[2])
        sigma = new_sigma
        count = int(c)
        if converged or sigma == 0.0:
            break
        # The window, and the shift at its centre, stored in the image's precision.
        win[0] = mean - nsigma * sigma
        win[1] = mean + nsigma * sigma
        win[2] = mean
    if count < 3 or sigma == 0.0 or statistic == 0:
        return mean, sigma, count
    # Median of the clipped values from a fine histogram, interpolated inside its bin.
    lo64 = mean - nsigma * sigma
    hi64 = mean + nsigma * sigma
    width = (hi64 - lo64) / _NBINS
    hist = np.zeros(_NBINS, dtype=np.int64)
    inside = 0
    for yy in range(y0, y1):
        for xx in range(x0, x1):
            v = image[yy, xx]
            if v >= lo64 and v < hi64:
                b = int((v - lo64) / width)
                if b >= _NBINS:
                    b = _NBINS - 1
                hist[b] += 1
                inside += 1
    half = 0.5 * inside
    cum = 0.0
    median = mean
    for b in range(_NBINS):
        if cum + hist[b] >= half:
            median = lo64 + (b + (half - cum) / hist[b]) * width
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
def _finish_band(image, row0, j, x_edges, y_edges, nsigma, max_iter, statistic, win, s, s2, c, nfin, windowed,
                 big, level, sigma, count):
    """Finish the clipping of band ``j``'s meshes from their first-iteration sums.

    ``image`` holds the band's rows from image row ``row0`` on (the whole image, or a buffer of
    the band). A mesh whose start window (``windowed``) ends with fewer than half its finite
    pixels clipped missed the sky (a step in it, or a start from another one) and is clipped
    again from all its pixels.
    """
    nmx = x_edges.size - 1
    y0 = y_edges[j]
    y1 = y_edges[j + 1]
    for i in range(nmx):
        x0 = x_edges[i]
        x1 = x_edges[i + 1]
        if c[i] == 0 and not windowed[i]:
            level[j, i] = np.nan
            sigma[j, i] = np.nan
            count[j, i] = 0
            continue
        m, sd, cnt = _finish_mesh(image, y0 - row0, y1 - row0, x0, x1, nsigma, max_iter, statistic, win[i],
                                  s[i], s2[i], c[i])
        if windowed[i] and cnt < 0.5 * nfin[i]:
            # The start window missed this mesh's sky (a step in the sky, or a start from a
            # different one): clip again from all its pixels, as without a start.
            win[i, 0] = -big
            win[i, 1] = big
            a, b, n, _ = _block_sums(image, y0 - row0, y1 - row0, x0, x1, win[i])
            m, sd, cnt = np.nan, np.nan, 0
            if n > 0:
                m, sd, cnt = _finish_mesh(image, y0 - row0, y1 - row0, x0, x1, nsigma, max_iter, statistic, win[i], a, b, n)
        level[j, i] = m
        sigma[j, i] = sd
        count[j, i] = cnt


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def mesh_statistics(image, x_edges, y_edges, nsigma, max_iter, statistic, start_level, start_sigma, big):
    """Clipped background (mode), sigma and number of used pixels for every mesh.

    A band of meshes is read row by row once (a streaming pass: the first clipping iteration
    of all its meshes); later iterations re-read each mesh from cache.

    Parameters
    ----------
    image : 2-D float array; NaN marks pixels to ignore (±inf are ignored too)
    x_edges, y_edges : int64 arrays of mesh boundaries (first 0, last nx / ny)
    nsigma : float, max_iter : int
        Clipping parameters.
    statistic : int
        0 clipped mean, 1 clipped median, 2 SExtractor mode (2.5 median - 1.5 mean).
    start_level, start_sigma : float arrays (n_mesh_y, n_mesh_x), or (0, 0) for none
        A previous estimate: clipping starts from level ± nsigma·sigma, so a second pass
        (after masking sources) converges in one or two iterations. Without one, a mesh starts
        from the result of the mesh below it (a sky is smooth). Where the clipped pixels from
        such a start end up fewer than half the mesh's finite pixels, the start missed the
        sky and the mesh is clipped again from all its pixels.
    big : scalar of the image's dtype
        Its largest finite value (the unclipped window).

    Returns
    -------
    level, sigma : float64 arrays (n_mesh_y, n_mesh_x); count : int64 array.
    """
    nmx = x_edges.size - 1
    nmy = y_edges.size - 1
    level = np.empty((nmy, nmx))
    sigma = np.empty((nmy, nmx))
    count = np.zeros((nmy, nmx), dtype=np.int64)
    has_start = start_level.shape[0] == nmy and start_level.shape[1] == nmx
    # Per mesh of the band: lo, hi, shift, 0, 1, big in the image's dtype.
    win = np.zeros((nmx, 6), dtype=image.dtype)
    win[:, 4] = 1
    win[:, 5] = big
    nfin = np.empty(nmx)
    s = np.empty(nmx)
    s2 = np.empty(nmx)
    c = np.empty(nmx)
    windowed = np.zeros(nmx, dtype=np.bool_)
    for j in range(nmy):
        y0 = y_edges[j]
        y1 = y_edges[j + 1]
        for i in range(nmx):
            lv = np.nan
            sg = np.nan
            if has_start:
                lv = start_level[j, i]
                sg = start_sigma[j, i]
            elif j > 0 and count[j - 1, i] > 0:
                lv = level[j - 1, i]
                sg = sigma[j - 1, i]
            windowed[i] = np.isfinite(lv) and np.isfinite(sg) and sg > 0.0
            if windowed[i]:
                win[i, 0] = lv - nsigma * sg
                win[i, 1] = lv + nsigma * sg
                win[i, 2] = lv
            else:
                win[i, 0] = -big
                win[i, 1] = big
                win[i, 2] = 0
            if not windowed[i]:
                # Shift by a pixel of the mesh (its first finite one) against cancellation.
                for yy in range(y0, y1):
                    found = False
                    for xx in range(x_edges[i], x_edges[i + 1]):
                        v = image[yy, xx]
                        if abs(v) <= big:
                            win[i, 2] = v
                            found = True
                            break
                    if found:
                        break
            s[i] = 0.0
            s2[i] = 0.0
            c[i] = 0.0
            nfin[i] = 0.0
        # The streaming pass: each row of the band once, left to right.
        for yy in range(y0, y1):
            for i in range(nmx):
                a, b, n, nf = _block_sums(image, yy, yy + 1, x_edges[i], x_edges[i + 1], win[i])
                s[i] += a
                s2[i] += b
                c[i] += n
                nfin[i] += nf
        _finish_band(image, 0, j, x_edges, y_edges, nsigma, max_iter, statistic, win, s, s2, c, nfin, windowed,
                     big, level, sigma, count)
    return level, sigma, count


@numba.njit(cache=True, nogil=True)
def mask_above(image, bad, level, sigma, x_edges, y_edges, threshold, grow):
    """Pixels above their mesh's ``level + threshold·sigma``, grown by ``grow``, OR ``bad``.

    See :func:`_grow_above`. Returns a new bool array.
    """
    out = np.empty(image.shape, dtype=np.bool_)
    none = np.zeros((0, 0))
    _grow_above(image, bad, level, sigma, x_edges, y_edges, threshold, grow, out, np.empty((0, 0), image.dtype),
                0.0, 0, 0, np.zeros(1, image.dtype)[0], none, none, np.zeros((0, 0), np.int64))
    return out


@numba.njit(cache=True, nogil=True)
def masked_mesh_statistics(image, level, sigma, x_edges, y_edges, threshold, grow, nsigma, max_iter, statistic,
                           big):
    """:func:`mesh_statistics` again with the pixels :func:`mask_above` marks left out.

    The second pass of a background estimate, fused with source masking: each row, once its
    mask is known, goes with NaN on the masked pixels into a buffer of one band of meshes and
    is summed at once into the band's first clipping iteration (windows ``level ±
    nsigma·sigma``, as :func:`mesh_statistics` with that start); when a band is complete its
    meshes are finished from the buffer, still in cache. No masked image is ever written.
    Returns level, sigma, count like :func:`mesh_statistics`.
    """
    nmx = x_edges.size - 1
    nmy = y_edges.size - 1
    maxh = 0
    for j in range(nmy):
        maxh = max(maxh, y_edges[j + 1] - y_edges[j])
    band = np.empty((maxh, image.shape[1]), dtype=image.dtype)
    out_level = np.empty((nmy, nmx))
    out_sigma = np.empty((nmy, nmx))
    out_count = np.zeros((nmy, nmx), dtype=np.int64)
    _grow_above(image, np.zeros((0, 0), dtype=np.bool_), level, sigma, x_edges, y_edges, threshold, grow,
                np.zeros((0, 0), dtype=np.bool_), band, nsigma, max_iter, statistic, big, out_level, out_sigma,
                out_count)
    return out_level, out_sigma, out_count


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _grow_above(image, bad, level, sigma, x_edges, y_edges, threshold, grow, out, band, nsigma, max_iter,
                statistic, big, out_level, out_sigma, out_count):
    """Mark pixels above their mesh's ``level + threshold·sigma`` and a (2·grow+1)² box around.

    A piecewise-constant model per mesh is enough to find sources. The box dilation is
    separable and done in one streaming pass: along a row, a pixel is within ``grow`` of a hit
    iff the last hit at or before ``grow`` positions *ahead* of it is at most ``grow`` behind
    it; down the columns, each column remembers the last row where it was hit. The image is
    read once, whatever ``grow`` is; every loop is branch-free.

    With an image-shaped ``out``: writes ``bad`` OR the grown mask into it. Otherwise each
    finished row goes, NaN where masked, into the band buffer ``band`` and the masked mesh
    statistics into ``out_level``, ``out_sigma``, ``out_count`` (see
    :func:`masked_mesh_statistics`).
    """
    ny, nx = image.shape
    to_mask = out.shape[0] == ny and out.shape[1] == nx
    nmx = x_edges.size - 1
    nmy = y_edges.size - 1
    # Band statistics state: windows (lo, hi, shift, 0, 1, big) from level ± nsigma·sigma.
    win = np.zeros((nmx, 6), dtype=image.dtype)
    windowed = np.zeros(nmx, dtype=np.bool_)
    s = np.zeros(nmx)
    s2 = np.zeros(nmx)
    c = np.zeros(nmx)
    nfin = np.zeros(nmx)
    far = ny + nx + 2 * grow + 2
    # Cut per mesh (NaN where unknown: no pixel compares above it), and each column's mesh.
    cut = level + threshold * sigma
    col_mesh = np.empty(nx, dtype=np.int64)
    for i in range(nmx):
        for x in range(x_edges[i], x_edges[i + 1]):
            col_mesh[x] = i
    row_mesh = np.empty(ny, dtype=np.int64)
    for j in range(nmy):
        for y in range(y_edges[j], y_edges[j + 1]):
            row_mesh[y] = j
    last_row = np.full(nx, -far, dtype=np.int64)  # last row (<= current) dilated-hit per column
    cut_row = np.empty(nx, dtype=image.dtype)
    last_hit = np.empty(nx, dtype=np.int64)
    cur_j = -1
    reach = min(grow, nx - 1)
    for yy in range(ny + grow):
        if yy < ny:
            j = row_mesh[yy]
            if j != cur_j:
                for x in range(nx):
                    cut_row[x] = cut[j, col_mesh[x]]
                cur_j = j
            last = -far
            for xx in range(nx):
                last = xx if image[yy, xx] > cut_row[xx] else last
                last_hit[xx] = last
            for x in range(nx - reach):
                last_row[x] = yy if last_hit[x + reach] >= x - grow else last_row[x]
            for x in range(max(nx - reach, 0), nx):
                last_row[x] = yy if last_hit[nx - 1] >= x - grow else last_row[x]
        y = yy - grow
        if y < 0:
            continue
        if to_mask:
            for x in range(nx):
                out[y, x] = bad[y, x] or last_row[x] >= y - grow
            continue
        jb = row_mesh[y]
        y0 = y_edges[jb]
        if y == y0:
            for i in range(nmx):
                lv = level[jb, i]
                sg = sigma[jb, i]
                windowed[i] = np.isfinite(lv) and np.isfinite(sg) and sg > 0.0
                win[i, 0] = lv - nsigma * sg if windowed[i] else -big
                win[i, 1] = lv + nsigma * sg if windowed[i] else big
                win[i, 2] = lv if windowed[i] else 0
                win[i, 3] = 0
                win[i, 4] = 1
                win[i, 5] = big
                s[i] = 0.0
                s2[i] = 0.0
                c[i] = 0.0
                nfin[i] = 0.0
        r = y - y0
        for x in range(nx):
            band[r, x] = np.nan if last_row[x] >= y - grow else image[y, x]
        for i in range(nmx):
            a, b, n, nf = _block_sums(band, r, r + 1, x_edges[i], x_edges[i + 1], win[i])
            s[i] += a
            s2[i] += b
            c[i] += n
            nfin[i] += nf
        if y == y_edges[jb + 1] - 1:
            _finish_band(band, y0, jb, x_edges, y_edges, nsigma, max_iter, statistic, win, s, s2, c, nfin,
                         windowed, big, out_level, out_sigma, out_count)


@numba.njit(cache=True, nogil=True)
def any_bits(mask, bits):
    """Whether any pixel of ``mask`` has one of ``bits`` (a row at a time, stopping at the first)."""
    ny, nx = mask.shape
    b = np.uint32(bits)
    for y in range(ny):
        acc = np.uint32(0)
        for x in range(nx):
            acc |= mask[y, x]
        if acc & b:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def nan_where_bits(image, mask, bits):
    """A copy of ``image`` with NaN where ``mask`` has one of ``bits``."""
    ny, nx = image.shape
    out = np.empty_like(image)
    b = np.uint32(bits)
    for y in range(ny):
        for x in range(nx):
            out[y, x] = np.nan if (mask[y, x] & b) != 0 else image[y, x]
    return out
