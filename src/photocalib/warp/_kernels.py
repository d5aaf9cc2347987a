"""Numba kernels of the warp layer: evaluating the tiled pixel mapping and resampling through it.

The Python API lives in :mod:`photocalib.warp.mapping` and :mod:`photocalib.warp.warp`.

Why a kernel of our own rather than drizzle or reproject (both measured in
benchmarks/bench_warp.py on a 4k x 4k TAN-SIP image): ``reproject_adaptive(conserve_flux=True)``
conserves flux to ~7e-4 per star but is 30-40 times slower than this warp (it works out the
WCS Jacobian at every output pixel); ``reproject_interp`` does not conserve flux; drizzle's
square kernel conserves flux exactly but needs a pixmap evaluated through the full WCS at every
input pixel (the slowest step, several seconds at 4k), convolves the image with its pixel once
more (a wider PSF), and its Lanczos kernels do not conserve flux (drizzle's own warning). A
separable, normalised (tabulated) Lanczos-3 interpolation of surface brightness through a checked
piecewise-cubic mapping conserves flux to ~2e-4 per star at several times drizzle's end-to-end
throughput (and twice its add_image alone); its loop over output pixels cannot be written as whole-array NumPy without 36
shifted copies of the image, so it is written here once in Numba.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = [
    "BILINEAR", "LANCZOS3", "N_PHASE", "eval_mapping", "grow_bits", "lanczos3_table", "resample",
    "surface_brightness_planes",
]

#: Kernel codes passed to :func:`resample`.
LANCZOS3 = 3
BILINEAR = 1

#: Sub-pixel phases of the tabulated Lanczos-3 weights (see :func:`lanczos3_table`).
N_PHASE = 8192


def lanczos3_table(n_phase: int = N_PHASE) -> np.ndarray:
    """Normalised Lanczos-3 weights of taps ``floor(x) - 2 .. floor(x) + 3`` at ``n_phase + 1``
    phases ``f = x - floor(x)`` from 0 to 1, shape ``(n_phase + 1, 6)``.

    L(t) = sinc(t) sinc(t / 3) for |t| < 3. Each row is divided by its sum, so a constant is
    reproduced exactly; in 1-D this also makes the integral of every tap's weight over x
    exactly 1 (the sum of the raw weights is 1-periodic), which is what makes the interpolant
    conserve flux. The kernel interpolates linearly between rows, which keeps the sum at 1 and
    errs by at most 6.6e-9 per weight at 8192 phases (1.7e-9 at 16384): tabulating is twice as
    fast as evaluating the sines at every pixel.
    """
    f = np.linspace(0.0, 1.0, n_phase + 1)
    t = f[:, None] - np.arange(-2, 4)[None, :]
    w = np.sinc(t) * np.sinc(t / 3.0)
    w /= w.sum(axis=1, keepdims=True)
    w[0] = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # exact at integer positions
    w[-1] = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    return np.ascontiguousarray(w)


@nb.njit(inline="always", cache=True)
def _row_poly(coef, t, v):
    """Collapse a (4, 4) tensor polynomial ``sum c[b, a] v^b u^a`` at fixed ``v`` to 4 coeffs."""
    p0 = ((coef[t, 3, 0] * v + coef[t, 2, 0]) * v + coef[t, 1, 0]) * v + coef[t, 0, 0]
    p1 = ((coef[t, 3, 1] * v + coef[t, 2, 1]) * v + coef[t, 1, 1]) * v + coef[t, 0, 1]
    p2 = ((coef[t, 3, 2] * v + coef[t, 2, 2]) * v + coef[t, 1, 2]) * v + coef[t, 0, 2]
    p3 = ((coef[t, 3, 3] * v + coef[t, 2, 3]) * v + coef[t, 1, 3]) * v + coef[t, 0, 3]
    return p0, p1, p2, p3


@nb.njit(inline="always", cache=True)
def _lanczos3(f, table, w):
    """Lanczos-3 weights at phase ``0 <= f < 1``, linearly interpolated in ``table``."""
    n_phase = table.shape[0] - 1
    p = f * n_phase
    i = int(p)
    if i >= n_phase:
        i = n_phase - 1
    u = p - i
    for n in range(6):
        a = table[i, n]
        w[n] = a + u * (table[i + 1, n] - a)


@nb.njit(inline="always", cache=True)
def _lanczos3_w(f, table):
    """The six Lanczos-3 weights at phase ``0 <= f < 1`` as scalars (kept in registers)."""
    n_phase = table.shape[0] - 1
    p = f * n_phase
    i = int(p)
    if i >= n_phase:
        i = n_phase - 1
    u = p - i
    return (table[i, 0] + u * (table[i + 1, 0] - table[i, 0]),
            table[i, 1] + u * (table[i + 1, 1] - table[i, 1]),
            table[i, 2] + u * (table[i + 1, 2] - table[i, 2]),
            table[i, 3] + u * (table[i + 1, 3] - table[i, 3]),
            table[i, 4] + u * (table[i + 1, 4] - table[i, 4]),
            table[i, 5] + u * (table[i + 1, 5] - table[i, 5]))


@nb.njit(inline="always", cache=True)
def _dot6(a, r, c, w):
    """``sum_n w_n a[r, c + n]`` for six taps, in the array's precision: ``w`` holds the weights
    in ``a``'s dtype, so a float32 image's rows are summed in float32 (six terms: a relative
    rounding of ~1e-7, unbiased) and only the six row sums are combined in float64."""
    return (w[0] * a[r, c] + w[1] * a[r, c + 1] + w[2] * a[r, c + 2] + w[3] * a[r, c + 3]
            + w[4] * a[r, c + 4] + w[5] * a[r, c + 5])


@nb.njit(cache=True)
def _weights(x, size, order, table, w):
    """Tap weights along one axis; returns (first tap index, number of taps, truncated?).

    Taps outside ``0 .. size-1`` are dropped and the rest renormalised (so a constant stays
    constant up to the edge); ``truncated`` says whether a dropped tap had weight.
    """
    ix = math.floor(x)
    f = x - ix
    ix = int(ix)
    if order == 3:
        _lanczos3(f, table, w)
        first = ix - 2
        ntap = 6
    else:
        w[0] = 1.0 - f
        w[1] = f
        first = ix
        ntap = 2
    truncated = False
    total = 0.0
    for n in range(ntap):
        i = first + n
        if i < 0 or i >= size:
            if w[n] != 0.0:
                truncated = True
            w[n] = 0.0
        total += w[n]
    if truncated:
        for n in range(ntap):
            w[n] /= total
    return first, ntap, truncated


@nb.njit(cache=True, fastmath={"reassoc", "contract", "arcp"})
def _edge_sums(src, var, has_var, xi, yi, order, table, wx, wy):
    """Kernel sums at a point whose taps reach past the input's edge (the rare path): the taps
    outside are dropped and the rest renormalised. Returns (sum, variance sum, cut in x, in y)."""
    ny_in, nx_in = src.shape
    fx, nxt, trx = _weights(xi, nx_in, order, table, wx)
    fy, nyt, try_ = _weights(yi, ny_in, order, table, wy)
    acc = 0.0
    accv = 0.0
    for m in range(nyt):
        wm = wy[m]
        if wm == 0.0:
            continue
        row = fy + m
        s = 0.0
        sv = 0.0
        for n in range(nxt):
            wn = wx[n]
            if wn == 0.0:
                continue
            s += wn * src[row, fx + n]
            if has_var:
                sv += wn * wn * var[row, fx + n]
        acc += wm * s
        accv += wm * wm * sv
    return acc, accv, trx, try_


@nb.njit(cache=True)
def _map_point(t, x, y, tx0, ty0, tsx, tsy, coef_x, coef_y):
    u = (x - tx0[t]) / tsx[t]
    v = (y - ty0[t]) / tsy[t]
    a0, a1, a2, a3 = _row_poly(coef_x, t, v)
    b0, b1, b2, b3 = _row_poly(coef_y, t, v)
    return ((a3 * u + a2) * u + a1) * u + a0, ((b3 * u + b2) * u + b1) * u + b0


@nb.njit(cache=True)  # a diagnostic: serial, so that it compiles fast
def eval_mapping(tx0, ty0, tnx, tny, tsx, tsy, coef_x, coef_y, texact, ex, ey, out_x, out_y):
    """Fill ``out_x``, ``out_y`` (output-image shaped) with the tiled mapping; NaN where no tile."""
    ntile = tx0.shape[0]
    for t in range(ntile):
        x0 = tx0[t]
        y0 = ty0[t]
        off = texact[t]
        for j in range(tny[t]):
            y = y0 + j
            for i in range(tnx[t]):
                x = x0 + i
                if off >= 0:
                    k = off + j * tnx[t] + i
                    out_x[y, x] = ex[k]
                    out_y[y, x] = ey[k]
                else:
                    xi, yi = _map_point(t, float(x), float(y), tx0, ty0, tsx, tsy, coef_x, coef_y)
                    out_x[y, x] = xi
                    out_y[y, x] = yi


_FAST = {"reassoc", "contract", "arcp"}


@nb.njit(nogil=True, cache=True, fastmath=_FAST)
def resample(
    src, var, mask, has_var, has_mask, area_out, use_area,
    tx0, ty0, tnx, tny, tsx, tsy, coef_x, coef_y, texact, ex, ey,
    order, table, out, out_var, out_mask, edge_bit, nodata_bit,
):
    """Resample ``src`` at the mapped position of every output pixel covered by a tile.

    ``out = area_out * sum_ij wy_i wx_j src`` and ``out_var = area_out^2 * sum (wy_i wx_j)^2 var``
    (``area_out`` only when ``use_area``). The output mask is the OR of the input mask over the
    bilinear footprint (the 2x2 pixels around the point; the caller grows the bits of untrusted
    pixels to the Lanczos support first). Points mapped outside the input's pixel edges get NaN
    and ``nodata_bit``; points whose kernel was cut by the input edge get ``edge_bit`` (the
    remaining taps are renormalised). Serial and ``nogil``: the caller runs chunks of tiles on
    threads (each tile owns its pixels), which compiles in half the time of ``parallel=True``.
    """
    ny_in, nx_in = src.shape
    ntile = tx0.shape[0]
    xmax = nx_in - 0.5
    ymax = ny_in - 0.5
    for t in range(ntile):
        wx = np.empty(6)
        wy = np.empty(6)
        wq = np.empty(6, dtype=src.dtype)
        wv = np.empty(6, dtype=var.dtype)
        x0 = tx0[t]
        y0 = ty0[t]
        off = texact[t]
        for j in range(tny[t]):
            y = y0 + j
            if off < 0:
                v = (y - y0) / tsy[t]
                a0, a1, a2, a3 = _row_poly(coef_x, t, v)
                b0, b1, b2, b3 = _row_poly(coef_y, t, v)
            for i in range(tnx[t]):
                x = x0 + i
                if off >= 0:
                    k = off + j * tnx[t] + i
                    xi = ex[k]
                    yi = ey[k]
                else:
                    u = (x - x0) / tsx[t]
                    xi = ((a3 * u + a2) * u + a1) * u + a0
                    yi = ((b3 * u + b2) * u + b1) * u + b0
                if not (xi >= -0.5 and xi <= xmax and yi >= -0.5 and yi <= ymax):
                    out[y, x] = np.nan
                    out_var[y, x] = np.nan
                    out_mask[y, x] = nodata_bit
                    continue
                ix = int(math.floor(xi))
                iy = int(math.floor(yi))
                if order == 3:
                    fx = ix - 2
                    fy = iy - 2
                    ntap = 6
                else:
                    fx = ix
                    fy = iy
                    ntap = 2
                acc = 0.0
                accv = 0.0
                trx = False
                try_ = False
                if order == 3 and fx >= 0 and fy >= 0 and fx + 6 <= nx_in and fy + 6 <= ny_in:
                    # Interior Lanczos-3, the common case: weights in registers, the 6x6 sums
                    # unrolled, image and variance in one pass over the footprint's rows.
                    x0_, x1_, x2_, x3_, x4_, x5_ = _lanczos3_w(xi - ix, table)
                    y0_, y1_, y2_, y3_, y4_, y5_ = _lanczos3_w(yi - iy, table)
                    wq[0], wq[1], wq[2], wq[3], wq[4], wq[5] = x0_, x1_, x2_, x3_, x4_, x5_
                    acc = (y0_ * _dot6(src, fy, fx, wq) + y1_ * _dot6(src, fy + 1, fx, wq)
                           + y2_ * _dot6(src, fy + 2, fx, wq) + y3_ * _dot6(src, fy + 3, fx, wq)
                           + y4_ * _dot6(src, fy + 4, fx, wq) + y5_ * _dot6(src, fy + 5, fx, wq))
                    if has_var:
                        wv[0], wv[1], wv[2] = x0_ * x0_, x1_ * x1_, x2_ * x2_
                        wv[3], wv[4], wv[5] = x3_ * x3_, x4_ * x4_, x5_ * x5_
                        accv = (y0_ * y0_ * _dot6(var, fy, fx, wv) + y1_ * y1_ * _dot6(var, fy + 1, fx, wv)
                                + y2_ * y2_ * _dot6(var, fy + 2, fx, wv) + y3_ * y3_ * _dot6(var, fy + 3, fx, wv)
                                + y4_ * y4_ * _dot6(var, fy + 4, fx, wv) + y5_ * y5_ * _dot6(var, fy + 5, fx, wv))
                elif fx >= 0 and fy >= 0 and fx + ntap <= nx_in and fy + ntap <= ny_in:
                    # interior: the whole footprint is inside the input, no per-tap checks
                    if order == 3:
                        _lanczos3(xi - ix, table, wx)
                        _lanczos3(yi - iy, table, wy)
                    else:
                        wx[0] = 1.0 - (xi - ix)
                        wx[1] = xi - ix
                        wy[0] = 1.0 - (yi - iy)
                        wy[1] = yi - iy
                    for m in range(ntap):
                        s = 0.0
                        for n in range(ntap):
                            s += wx[n] * src[fy + m, fx + n]
                        acc += wy[m] * s
                    if has_var:
                        for m in range(ntap):
                            sv = 0.0
                            for n in range(ntap):
                                sv += wx[n] * wx[n] * var[fy + m, fx + n]
                            accv += wy[m] * wy[m] * sv
                else:
                    acc, accv, trx, try_ = _edge_sums(src, var, has_var, xi, yi, order, table, wx, wy)
                bits = np.uint32(0)
                if trx or try_:
                    bits |= edge_bit
                if has_mask:
                    # the bilinear footprint: rows iy (and iy + 1 if it has weight), same for columns
                    r1 = iy + 1 if yi > iy else iy
                    c1 = ix + 1 if xi > ix else ix
                    for r in range(max(iy, 0), min(r1, ny_in - 1) + 1):
                        for c in range(max(ix, 0), min(c1, nx_in - 1) + 1):
                            bits |= mask[r, c]
                if use_area:
                    aa = area_out[y, x]
                    acc *= aa
                    accv *= aa * aa
                if not math.isfinite(acc):
                    bits |= nodata_bit
                out[y, x] = acc
                out_var[y, x] = accv if has_var else np.nan
                out_mask[y, x] = bits


@nb.njit(nogil=True, cache=True)
def grow_bits(mask, bits, radius):
    """``mask`` with ``bits`` ORed into every pixel within ``radius`` (a square) of a pixel that
    has them; ``mask`` itself when none has. Separable and streaming: each row's bits are grown
    along the row into a ring of the last 2·radius + 1 rows, which are ORed down the columns; no
    full-size temporary but the result."""
    ny, nx = mask.shape
    b = np.uint32(bits)
    found = False
    for y in range(ny):
        acc = np.uint32(0)
        for x in range(nx):
            acc |= mask[y, x]
        if acc & b:
            found = True
            break
    if not found:
        return mask
    out = mask.copy()
    row = np.zeros(nx, dtype=np.uint32)
    # A ring of the last 2·radius + 1 rows' horizontally grown bits: row y is final once rows up
    # to y + radius are in, so row yy = y + radius is grown first, then row y finished.
    hgrown = np.zeros((2 * radius + 1, nx), dtype=np.uint32)
    ring = 2 * radius + 1
    for yy in range(ny + radius):
        slot = yy % ring
        for x in range(nx):
            hgrown[slot, x] = 0
        if yy < ny:
            for x in range(nx):
                row[x] = mask[yy, x] & b
            # Shift-and-OR along the row: each pass over x is a vectorisable loop.
            for d in range(-radius, radius + 1):
                for x in range(max(0, -d), min(nx, nx - d)):
                    hgrown[slot, x] |= row[x + d]
        y = yy - radius
        if y < 0:
            continue
        for d in range(ring):
            for x in range(nx):
                out[y, x] |= hgrown[d, x]
    return out


@nb.njit(nogil=True, cache=True)
def surface_brightness_planes(image, variance, area, values, var_out, has_var):
    """``values = image / area`` and ``var_out = variance / area²`` in one pass (no temporaries)."""
    ny, nx = image.shape
    for y in range(ny):
        for x in range(nx):
            a = area[y, x]
            values[y, x] = image[y, x] / a
            if has_var:
                var_out[y, x] = variance[y, x] / (a * a)
