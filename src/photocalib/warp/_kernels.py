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
piecewise-cubic mapping conserves flux to ~2e-4 per star at 6-7 times drizzle's end-to-end
throughput with variance and mask (16 times for the image alone, 4 times drizzle's add_image
alone; bench_warp.py); its loop over output pixels cannot be written as whole-array NumPy
without 36 shifted copies of the image, so it is written here once in Numba. Its cost is the
scalar 6x6 sums (about 56 ns of CPU per output pixel for image, variance and mask; see the
profile in bench_warp.py).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

__all__ = [
    "BILINEAR", "LANCZOS3", "N_PHASE", "eval_mapping", "fill_no_data", "grow_bits", "lanczos3_table", "resample",
    "surface_brightness_planes",
]

#: Kernel codes passed to :func:`resample`.
LANCZOS3 = 3
BILINEAR = 1

#: Sub-pixel phases of the tabulated Lanczos-3 weights (see :func:`lanczos3_table`).
N_PHASE = 8192

_FAST = {"reassoc", "contract", "arcp"}


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


def _like(a, v):
    """``v`` cast to the dtype of array ``a`` (compiled through the overload below)."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(_like, inline="always")
def _like_impl(a, v):
    if a.dtype == types.float32:
        return lambda a, v: np.float32(v)
    return lambda a, v: np.float64(v)


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _dot6(a, r, c, x0, x1, x2, x3, x4, x5):
    """``sum_n x_n a[r, c + n]`` for six taps."""
    return (x0 * a[r, c] + x1 * a[r, c + 1] + x2 * a[r, c + 2] + x3 * a[r, c + 3]
            + x4 * a[r, c + 4] + x5 * a[r, c + 5])


@nb.njit(inline="always", cache=True, fastmath=_FAST)
def _sum66(a, r, c, x0, x1, x2, x3, x4, x5, y0, y1, y2, y3, y4, y5):
    """``sum_m y_m sum_n x_n a[r + m, c + n]`` in the array's precision: the weights are cast
    to ``a``'s dtype, so a float32 plane is summed in float32 (36 terms of one sign pattern per
    phase: a relative rounding of ~1e-7 per pixel, unbiased, 1e-11 on a total) with no
    conversion of each of its values to float64, and a float64 plane in float64."""
    x0, x1, x2 = _like(a, x0), _like(a, x1), _like(a, x2)
    x3, x4, x5 = _like(a, x3), _like(a, x4), _like(a, x5)
    return (_like(a, y0) * _dot6(a, r, c, x0, x1, x2, x3, x4, x5)
            + _like(a, y1) * _dot6(a, r + 1, c, x0, x1, x2, x3, x4, x5)
            + _like(a, y2) * _dot6(a, r + 2, c, x0, x1, x2, x3, x4, x5)
            + _like(a, y3) * _dot6(a, r + 3, c, x0, x1, x2, x3, x4, x5)
            + _like(a, y4) * _dot6(a, r + 4, c, x0, x1, x2, x3, x4, x5)
            + _like(a, y5) * _dot6(a, r + 5, c, x0, x1, x2, x3, x4, x5))


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



@nb.njit(nogil=True, cache=True, fastmath=_FAST)
def resample(
    src, var, mask, has_var, has_mask, area_out, use_area,
    tx0, ty0, tnx, tny, tsx, tsy, coef_x, coef_y, texact, ex, ey,
    order, table, out, out_var, out_mask, edge_bit, nodata_bit,
):
    """Resample ``src`` at the mapped position of every output pixel covered by a tile.

    ``out = area_out * sum_ij wy_i wx_j src`` and ``out_var = area_out^2 * sum (wy_i wx_j)^2 var``
    (``area_out`` only when ``use_area``; ``out_var`` is written only when ``has_var``). The
    output mask is the OR of the input mask over the bilinear footprint (the 2x2 pixels around
    the point; the caller grows the bits of untrusted pixels to the Lanczos support first).
    Points mapped outside the input's pixel edges get NaN and ``nodata_bit``; points whose
    kernel was cut by the input edge get ``edge_bit`` (the remaining taps are renormalised).
    Serial and ``nogil``: the caller runs chunks of tiles on threads (each tile owns its
    pixels), which compiles in half the time of ``parallel=True``.

    The interior Lanczos-3 path keeps the twelve weights in registers (no per-pixel stores to
    scratch arrays) and sums each plane in its own precision (:func:`_sum66`): 12 % less CPU
    than weights staged through arrays and float32 values widened to float64 one by one.
    """
    ny_in, nx_in = src.shape
    ntile = tx0.shape[0]
    xmax = nx_in - 0.5
    ymax = ny_in - 0.5
    wx = np.empty(6)
    wy = np.empty(6)
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
    for t in range(ntile):
        x0 = tx0[t]
        y0 = ty0[t]
        off = texact[t]
        inv_sx = 1.0 / tsx[t]
        for j in range(tny[t]):
            y = y0 + j
            if off < 0:
                v = j / tsy[t]
                a0, a1, a2, a3 = _row_poly(coef_x, t, v)
                b0, b1, b2, b3 = _row_poly(coef_y, t, v)
            for i in range(tnx[t]):
                x = x0 + i
                if off >= 0:
                    k = off + j * tnx[t] + i
                    xi = ex[k]
                    yi = ey[k]
                else:
                    u = i * inv_sx
                    xi = ((a3 * u + a2) * u + a1) * u + a0
                    yi = ((b3 * u + b2) * u + b1) * u + b0
                if not (xi >= -0.5 and xi <= xmax and yi >= -0.5 and yi <= ymax):
                    out[y, x] = np.nan
                    if has_var:
                        out_var[y, x] = np.nan
                    out_mask[y, x] = nodata_bit
                    continue
                fxf = math.floor(xi)
                fyf = math.floor(yi)
                ix = int(fxf)
                iy = int(fyf)
                bits = np.uint32(0)
                accv = 0.0
                if order == 3 and ix >= 2 and iy >= 2 and ix + 4 <= nx_in and iy + 4 <= ny_in:
                    # Interior Lanczos-3, the common case: all 36 taps inside the input.
                    p0, p1, p2, p3, p4, p5 = _lanczos3_w(xi - fxf, table)
                    q0, q1, q2, q3, q4, q5 = _lanczos3_w(yi - fyf, table)
                    acc = _sum66(src, iy - 2, ix - 2, p0, p1, p2, p3, p4, p5, q0, q1, q2, q3, q4, q5)
                    if has_var:
                        accv = _sum66(var, iy - 2, ix - 2, p0 * p0, p1 * p1, p2 * p2, p3 * p3, p4 * p4, p5 * p5,
                                      q0 * q0, q1 * q1, q2 * q2, q3 * q3, q4 * q4, q5 * q5)
                elif order != 3 and ix >= 0 and iy >= 0 and ix + 2 <= nx_in and iy + 2 <= ny_in:
                    # interior bilinear
                    gx = xi - fxf
                    gy = yi - fyf
                    acc = ((1.0 - gy) * ((1.0 - gx) * src[iy, ix] + gx * src[iy, ix + 1])
                           + gy * ((1.0 - gx) * src[iy + 1, ix] + gx * src[iy + 1, ix + 1]))
                    if has_var:
                        hx0 = (1.0 - gx) * (1.0 - gx)
                        hx1 = gx * gx
                        accv = ((1.0 - gy) * (1.0 - gy) * (hx0 * var[iy, ix] + hx1 * var[iy, ix + 1])
                                + gy * gy * (hx0 * var[iy + 1, ix] + hx1 * var[iy + 1, ix + 1]))
                else:
                    acc, accv, trx, try_ = _edge_sums(src, var, has_var, xi, yi, order, table, wx, wy)
                    if trx or try_:
                        bits |= edge_bit
                if has_mask:
                    # the bilinear footprint: rows iy (and iy + 1 if it has weight), same for columns
                    dc = 1 if xi > fxf else 0
                    dr = 1 if yi > fyf else 0
                    if ix >= 0 and iy >= 0 and ix + 1 < nx_in and iy + 1 < ny_in:
                        # inside: four loads, no loop (a repeated pixel when a weight is zero)
                        bits |= (mask[iy, ix] | mask[iy, ix + dc]) | (mask[iy + dr, ix] | mask[iy + dr, ix + dc])
                    else:
                        for r in range(max(iy, 0), min(iy + dr, ny_in - 1) + 1):
                            for c in range(max(ix, 0), min(ix + dc, nx_in - 1) + 1):
                                bits |= mask[r, c]
                if use_area:
                    aa = area_out[y, x]
                    acc *= aa
                    accv *= aa * aa
                if not math.isfinite(acc):
                    bits |= nodata_bit
                out[y, x] = acc
                if has_var:
                    out_var[y, x] = accv
                out_mask[y, x] = bits


@nb.njit(nogil=True, cache=True)
def grow_bits(mask, bits, radius):
    """``mask`` with ``bits`` ORed into every pixel within ``radius`` (a square) of a pixel that
    has them; ``mask`` itself when none has.

    Run-length and sparse, in one pass: row ``y + radius`` is copied, then row ``y`` is scanned
    in blocks of 64 pixels (an OR over the block, which vectorises, skips clean ones) for runs
    of equal ``mask & bits``, and each run is ORed, widened by ``radius``, into the rows around
    it, all of which are copied by then. A clean row costs a copy and one read per pixel, a bad
    column ``(2 radius + 1)^2`` ORs per row, a dense block about ``2 radius + 1`` per pixel
    (4096² with one bad column: 35 ms of CPU against 114 ms for a dense pass over every row).
    """
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
    out = np.empty_like(mask)
    block = 64
    for y in range(-radius, ny):
        yc = y + radius  # copy ahead: the rows a run in row y writes into exist by then
        if yc < ny:
            for x in range(nx):
                out[yc, x] = mask[yc, x]
        if y < 0:
            continue
        r0 = max(0, y - radius)
        r1 = min(ny, y + radius + 1)
        x = 0
        while x < nx:
            xe = min(nx, x + block)
            acc = np.uint32(0)
            for xx in range(x, xe):
                acc |= mask[y, xx]
            if (acc & b) == 0:
                x = xe
                continue
            while x < xe:  # a run found here may end beyond xe; the scan goes on from its end
                m = mask[y, x] & b
                if m == 0:
                    x += 1
                    continue
                x1 = x + 1
                while x1 < nx and (mask[y, x1] & b) == m:
                    x1 += 1
                c0 = max(0, x - radius)
                c1 = min(nx, x1 + radius)
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        out[r, c] |= m
                x = x1
    return out


@nb.njit(nogil=True, cache=True)
def fill_no_data(tx0, ty0, tnx, tny, out, out_var, has_var, out_mask, nodata_bit):
    """NaN (and ``nodata_bit`` in the mask) over the rectangles ``(tx0, ty0, tnx, tny)``: the
    output tiles the mapping dropped, which :func:`resample` never visits."""
    for t in range(tx0.shape[0]):
        for y in range(ty0[t], ty0[t] + tny[t]):
            for x in range(tx0[t], tx0[t] + tnx[t]):
                out[y, x] = np.nan
                if has_var:
                    out_var[y, x] = np.nan
                out_mask[y, x] = nodata_bit


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
