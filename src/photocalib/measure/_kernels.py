"""Numba kernels for aperture photometry: exact circle-pixel overlaps, row strip by row strip.

Within a pixel row (a horizontal strip y0 <= y <= y1 relative to the centre), the area of the
disc left of a vertical line x = X is H(X); a pixel's overlap is H(x1) - H(x0). H is linear
where the line crosses the whole strip, so the exact (arcsine) form is only evaluated at the
few column boundaries where the circle's edge passes through the strip.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _f(t, r):
    """∫_0^t sqrt(r² - u²) du for |t| <= r."""
    if t >= r:
        return 0.25 * math.pi * r * r
    if t <= -r:
        return -0.25 * math.pi * r * r
    return 0.5 * (t * math.sqrt(r * r - t * t) + r * r * math.asin(t / r))


@numba.njit(cache=True, nogil=True, inline="always")
def _right(X, y0, y1, f0, f1, r):
    """Area of the disc within the strip y0..y1 and right of x = X >= 0 (f0, f1 = F(y0), F(y1))."""
    if X >= r:
        return 0.0
    yx = math.sqrt(r * r - X * X)
    # Where the chord's ends fall outside the strip, the strip edges' F values are reused.
    if y0 >= -yx:
        a, fa = y0, f0
    else:
        a, fa = -yx, -_f(yx, r)
    if y1 <= yx:
        b, fb = y1, f1
    else:
        b, fb = yx, _f(yx, r)
    if b <= a:
        return 0.0
    return fb - fa - X * (b - a)


@numba.njit(cache=True, nogil=True, inline="always")
def _left_area(X, y0, y1, f0, f1, r, strip):
    """H(X): area of the disc within the strip and left of x = X (``strip`` = whole strip area)."""
    if X >= 0.0:
        return strip - _right(X, y0, y1, f0, f1, r)
    return _right(-X, y0, y1, f0, f1, r)


@numba.njit(cache=True, nogil=True, fastmath={"nsz", "arcp", "contract", "reassoc"})
def sum_circles(image, variance, xc, yc, radius):
    """Exact-overlap sums of ``image`` (and ``variance``) in circles.

    Parameters
    ----------
    image, variance : 2-D float arrays (``variance`` may be a 1×1 dummy when not used)
    xc, yc, radius : 1-D float arrays (pixels, centres on integers)

    Returns
    -------
    flux, var_sum : float64 arrays
    truncated : bool array, True where the circle runs off the image
    """
    ny, nx = image.shape
    use_var = variance.shape[0] == ny and variance.shape[1] == nx
    n = xc.size
    flux = np.zeros(n)
    vsum = np.zeros(n)
    trunc = np.zeros(n, dtype=np.bool_)
    for k in range(n):
        r = radius[k]
        cx = xc[k]
        cy = yc[k]
        jlo = int(math.floor(cy - r + 0.5))
        jhi = int(math.floor(cy + r + 0.5))
        ilo = int(math.floor(cx - r + 0.5))
        ihi = int(math.floor(cx + r + 0.5))
        if jlo < 0 or ilo < 0 or jhi >= ny or ihi >= nx:
            trunc[k] = True
        fsum = 0.0
        var = 0.0
        # A strip's upper edge is the next strip's lower edge: carry F and the half-width over.
        last_y = math.nan
        last_f = 0.0
        last_s = 0.0
        for j in range(max(jlo, 0), min(jhi, ny - 1) + 1):
            y0 = max(j - 0.5 - cy, -r)
            y1 = min(j + 0.5 - cy, r)
            if y1 <= y0:
                continue
            if y0 == last_y:
                f0 = last_f
                s0 = last_s
            else:
                f0 = _f(y0, r)
                s0 = math.sqrt(max(r * r - y0 * y0, 0.0))
            f1 = _f(y1, r)
            s1 = math.sqrt(max(r * r - y1 * y1, 0.0))
            last_y, last_f, last_s = y1, f1, s1
            strip = 2.0 * (f1 - f0)  # the chord is 2 s(y) wide
            h = y1 - y0
            # Half-widths of the disc at the strip's edges (s0, s1) and its widest point.
            smin = min(s0, s1)
            smax = r if (y0 < 0.0 < y1) else max(s0, s1)
            i_first = int(math.floor(cx - smax + 0.5))
            i_last = int(math.floor(cx + smax + 0.5))
            # Columns lying wholly within |x| <= smin are covered over the whole strip height:
            # weight h, summed in one tight loop. Only the few columns beyond need H.
            i_in_lo = int(math.ceil(cx - smin + 0.5))
            i_in_hi = int(math.floor(cx + smin - 0.5))
            if i_in_lo > i_in_hi:
                i_in_lo = i_last + 1
                i_in_hi = i_last
            prev_h = 0.0
            for i in range(i_first, min(i_in_lo, i_last + 1)):
                x1 = i + 0.5 - cx
                cur_h = strip if x1 >= smax else _left_area(x1, y0, y1, f0, f1, r, strip)
                w = cur_h - prev_h
                prev_h = cur_h
                if w > 0.0 and 0 <= i < nx:
                    fsum += w * image[j, i]
                    if use_var:
                        var += w * variance[j, i]
            lo = max(i_in_lo, 0)
            hi = min(i_in_hi, nx - 1)
            if hi >= lo:
                acc = 0.0
                for i in range(lo, hi + 1):
                    acc += image[j, i]
                fsum += h * acc
                if use_var:
                    acc = 0.0
                    for i in range(lo, hi + 1):
                        acc += variance[j, i]
                    var += h * acc
            if i_in_hi >= i_in_lo:
                prev_h = 0.5 * strip + (i_in_hi + 0.5 - cx) * h
            for i in range(max(i_in_hi + 1, i_first), i_last + 1):
                x1 = i + 0.5 - cx
                cur_h = strip if x1 >= smax else _left_area(x1, y0, y1, f0, f1, r, strip)
                w = cur_h - prev_h
                prev_h = cur_h
                if w > 0.0 and 0 <= i < nx:
                    fsum += w * image[j, i]
                    if use_var:
                        var += w * variance[j, i]
        flux[k] = fsum
        vsum[k] = var
    return flux, vsum, trunc


@numba.njit(cache=True, nogil=True)
def fill_missing(image, missing):
    """A copy of ``image`` with ``missing`` pixels replaced by the mean of their valid neighbours.

    Filling proceeds inward, one ring per sweep (each sweep uses only pixels valid before it),
    so a hole in a star's core becomes a smooth plateau instead of a dark ring that the
    deblender would split. Pixels never reached (an all-missing image) become 0.
    """
    ny, nx = image.shape
    out = image.copy()
    todo = missing.copy()
    remaining = 0
    for y in range(ny):
        for x in range(nx):
            if todo[y, x]:
                remaining += 1
    ys = np.empty(remaining, dtype=np.int64)
    xs = np.empty(remaining, dtype=np.int64)
    k = 0
    for y in range(ny):
        for x in range(nx):
            if todo[y, x]:
                ys[k] = y
                xs[k] = x
                k += 1
    vals = np.empty(remaining)
    done = np.zeros(remaining, dtype=np.bool_)
    left = remaining
    for _ in range(ny + nx):
        if left == 0:
            break
        for k in range(remaining):
            if done[k]:
                continue
            y = ys[k]
            x = xs[k]
            s = 0.0
            c = 0
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    yy = y + dy
                    xx = x + dx
                    if 0 <= yy < ny and 0 <= xx < nx and not todo[yy, xx]:
                        s += out[yy, xx]
                        c += 1
            vals[k] = s / c if c > 0 else np.nan
        progressed = 0
        for k in range(remaining):
            if not done[k] and vals[k] == vals[k]:  # filled this sweep (not NaN)
                out[ys[k], xs[k]] = vals[k]
                done[k] = True
                progressed += 1
        for k in range(remaining):
            if done[k]:
                todo[ys[k], xs[k]] = False
        left -= progressed
        if progressed == 0:
            break
    for k in range(remaining):
        if not done[k]:
            out[ys[k], xs[k]] = 0.0
    return out
