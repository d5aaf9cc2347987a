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


#: Bits of the ``flags`` returned by :func:`sum_circles` (aperture.PhotFlag uses the same values).
EDGE = 1
SATURATED = 2
MASKED = 4
ALL_MASKED = 8


@numba.njit(cache=True, nogil=True, inline="always")
def _add_pixel(w, v, var, m, use_var, bad_bits, sat_bits, acc):
    """One pixel of weight ``w`` > 0 into the running sums ``acc`` (the slow, checked path).

    ``acc`` = (flux, var_sum, total_area, masked_area, flags, saw_positive_variance). A pixel is
    missing data (left out, its area restored by scaling at the end, as sep does) when its
    mask has a ``bad_bits`` bit, its value is not finite, or its variance is negative or not
    finite.
    """
    fsum, vsum, tot, marea, flags, vpos = acc
    tot += w
    if m & sat_bits:
        flags |= SATURATED
    bad = (m & bad_bits) != 0 or not math.isfinite(v)
    if use_var and not (var >= 0.0 and var < math.inf):
        bad = True
    if bad:
        marea += w
    else:
        fsum += w * v
        if use_var:
            vsum += w * var
            if var > 0.0:
                vpos = True
    return fsum, vsum, tot, marea, flags, vpos


@numba.njit(cache=True, nogil=True, inline="always")
def _add_run(image, variance, mask, j, lo, hi, h, use_var, use_mask, bad_bits, sat_bits, acc):
    """Pixels lo..hi of row j, each of weight ``h`` (wholly inside the aperture over the strip).

    Summed in vectorisable loops and checked once (finite sum, non-negative minimum variance,
    no flagged mask bit); only a run that fails the check is redone pixel by pixel.
    """
    if hi < lo:
        return acc
    a_img = 0.0
    a_var = 0.0
    v_min = 0.0
    m_or = np.uint32(0)
    if use_var:
        v_min = math.inf
        for i in range(lo, hi + 1):
            a_img += image[j, i]
            vv = variance[j, i]
            a_var += vv
            v_min = min(v_min, vv)
    else:
        for i in range(lo, hi + 1):
            a_img += image[j, i]
    if use_mask:
        for i in range(lo, hi + 1):
            m_or |= mask[j, i]
    if math.isfinite(a_img) and v_min >= 0.0 and math.isfinite(a_var) and (m_or & (bad_bits | sat_bits)) == 0:
        fsum, vsum, tot, marea, fl, vpos = acc
        return fsum + h * a_img, vsum + h * a_var, tot + h * (hi - lo + 1), marea, fl, vpos or a_var > 0.0
    for i in range(lo, hi + 1):
        acc = _add_pixel(h, image[j, i], variance[j, i] if use_var else 0.0,
                         mask[j, i] if use_mask else np.uint32(0), use_var, bad_bits, sat_bits, acc)
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _finish(acc):
    """(flux, var_sum, flags, saw_positive_variance) of one aperture, with sep's area scaling."""
    fsum, vsum, tot, marea, fl, vpos = acc
    if marea > 0.0:
        fl |= MASKED
        if tot > marea:
            scale = tot / (tot - marea)
            fsum *= scale
            vsum *= scale
        else:
            fl |= ALL_MASKED
            fsum = math.nan
            vsum = math.nan
    return fsum, vsum, fl, vpos


@numba.njit(cache=True, nogil=True, fastmath={"nsz", "arcp", "contract", "reassoc"})
def sum_circles(image, variance, mask, bad_bits, sat_bits, xc, yc, radius):
    """Exact-overlap sums of ``image`` (and ``variance``) in circles, with sep's masking rule.

    Only the pixels under the apertures are read: unusable values (non-finite pixels, negative
    or non-finite variances) and ``bad_bits`` mask bits are found here, so the caller never
    scans the whole image.

    Parameters
    ----------
    image : 2-D float array
    variance : 2-D float array like ``image``, or a 1×1 dummy when there is none
    mask : 2-D uint32 array like ``image``, or a 1×1 dummy when there is none
    bad_bits, sat_bits : int
        Mask bits that make a pixel missing; mask bits that flag the source SATURATED.
    xc, yc, radius : 1-D float arrays (pixels, centres on integers)

    Returns
    -------
    flux, var_sum : float64 arrays
        Sums; scaled by total / usable area where pixels were missing; NaN where none was usable.
    flags : int32 array of EDGE, SATURATED, MASKED, ALL_MASKED bits
    saw_positive_variance : bool, whether any summed pixel had a positive finite variance
    """
    ny, nx = image.shape
    use_var = variance.shape[0] == ny and variance.shape[1] == nx
    use_mask = mask.shape[0] == ny and mask.shape[1] == nx
    n = xc.size
    flux = np.zeros(n)
    vout = np.zeros(n)
    flags_out = np.zeros(n, dtype=np.int32)
    any_vpos = False
    for k in range(n):
        r = radius[k]
        cx = xc[k]
        cy = yc[k]
        jlo = int(math.floor(cy - r + 0.5))
        jhi = int(math.floor(cy + r + 0.5))
        ilo = int(math.floor(cx - r + 0.5))
        ihi = int(math.floor(cx + r + 0.5))
        acc = (0.0, 0.0, 0.0, 0.0, np.int32(0), False)
        if jlo < 0 or ilo < 0 or jhi >= ny or ihi >= nx:
            acc = (0.0, 0.0, 0.0, 0.0, np.int32(EDGE), False)
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
                    acc = _add_pixel(w, image[j, i], variance[j, i] if use_var else 0.0,
                                     mask[j, i] if use_mask else np.uint32(0), use_var, bad_bits, sat_bits, acc)
            acc = _add_run(image, variance, mask, j, max(i_in_lo, 0), min(i_in_hi, nx - 1), h, use_var,
                           use_mask, bad_bits, sat_bits, acc)
            if i_in_hi >= i_in_lo:
                prev_h = 0.5 * strip + (i_in_hi + 0.5 - cx) * h
            for i in range(max(i_in_hi + 1, i_first), i_last + 1):
                x1 = i + 0.5 - cx
                cur_h = strip if x1 >= smax else _left_area(x1, y0, y1, f0, f1, r, strip)
                w = cur_h - prev_h
                prev_h = cur_h
                if w > 0.0 and 0 <= i < nx:
                    acc = _add_pixel(w, image[j, i], variance[j, i] if use_var else 0.0,
                                     mask[j, i] if use_mask else np.uint32(0), use_var, bad_bits, sat_bits, acc)
        flux[k], vout[k], flags_out[k], vpos = _finish(acc)
        any_vpos = any_vpos or vpos
    return flux, vout, flags_out, any_vpos


@numba.njit(cache=True, nogil=True, inline="always")
def _left_slanted(c, s, y0, y1, f0, f1, R):
    """Area of the disc of radius R within the strip y0..y1 (inside [-R, R]) left of v = c + s·t.

    Where the line is inside the disc the integrand is (c + s t) + S(t), S = sqrt(R² - t²);
    outside it the line is wholly left (0) or wholly right (the chord 2 S) of the disc.
    """
    A = 1.0 + s * s
    B = c * s
    disc = B * B - A * (c * c - R * R)
    if disc <= 0.0:
        return 2.0 * (f1 - f0) if c > 0.0 else 0.0
    sq = math.sqrt(disc)
    ta = (-B - sq) / A
    tb = (-B + sq) / A
    area = 0.0
    # Below the lower crossing: one side of the disc throughout (decided at the piece's middle).
    p1 = min(ta, y1)
    fa = f0
    if p1 > y0:
        fa = _f(p1, R)
        if c + s * 0.5 * (y0 + p1) > 0.0:
            area += 2.0 * (fa - f0)
    q0 = max(ta, y0)
    q1 = min(tb, y1)
    fb = f1
    if q1 > q0:
        fq0 = fa if p1 > y0 else f0
        fb = _f(q1, R) if q1 < y1 else f1
        area += c * (q1 - q0) + 0.5 * s * (q1 * q1 - q0 * q0) + fb - fq0
    r0 = max(tb, y0)
    if y1 > r0:
        fr0 = fb if q1 > q0 else _f(r0, R)
        if c + s * 0.5 * (r0 + y1) > 0.0:
            area += 2.0 * (f1 - fr0)
    return area


@numba.njit(cache=True, nogil=True, fastmath={"nsz", "arcp", "contract", "reassoc"})
def sum_ellipses(image, variance, mask, bad_bits, sat_bits, xc, yc, a, b, theta):
    """Exact-overlap sums in ellipses (semi-axes a, b, angle theta from +x), as :func:`sum_circles`.

    With the ellipse written as cxx dx² + cxy dx dy + cyy dy² <= 1, a horizontal line dy = t
    crosses it on m(t) ± α S(t) with m = -k t, S = sqrt(β² - t²). The shear-and-scale
    v = (dx + k t) / α keeps horizontal strips and turns the ellipse into the disc of radius β
    and a column edge dx = X into the line v = X/α + (k/α) t, so each strip's cumulative area
    left of a column edge is :func:`_left_slanted` times α. Columns inside the ellipse over the
    whole strip are summed as runs, like the circles'.
    """
    ny, nx = image.shape
    use_var = variance.shape[0] == ny and variance.shape[1] == nx
    use_mask = mask.shape[0] == ny and mask.shape[1] == nx
    n = xc.size
    flux = np.zeros(n)
    vout = np.zeros(n)
    flags_out = np.zeros(n, dtype=np.int32)
    any_vpos = False
    for k in range(n):
        cx = xc[k]
        cy = yc[k]
        ct = math.cos(theta[k])
        st = math.sin(theta[k])
        ia2 = 1.0 / (a[k] * a[k])
        ib2 = 1.0 / (b[k] * b[k])
        cxx = ct * ct * ia2 + st * st * ib2
        cyy = st * st * ia2 + ct * ct * ib2
        cxy = 2.0 * ct * st * (ia2 - ib2)
        det = ia2 * ib2  # cxx cyy - cxy²/4
        R = math.sqrt(cxx / det)  # half-extent in y
        xh = math.sqrt(cyy / det)  # half-extent in x
        alpha = math.sqrt(det) / cxx
        kk = cxy / (2.0 * cxx)
        sl = kk / alpha
        # Where the edges m ∓ α S reach their extremes (for a strip containing that height).
        t_star = sl * R / math.sqrt(1.0 + sl * sl)
        jlo = int(math.floor(cy - R + 0.5))
        jhi = int(math.floor(cy + R + 0.5))
        ilo = int(math.floor(cx - xh + 0.5))
        ihi = int(math.floor(cx + xh + 0.5))
        acc = (0.0, 0.0, 0.0, 0.0, np.int32(0), False)
        if jlo < 0 or ilo < 0 or jhi >= ny or ihi >= nx:
            acc = (0.0, 0.0, 0.0, 0.0, np.int32(EDGE), False)
        last_y = math.nan
        last_f = 0.0
        last_s = 0.0
        for j in range(max(jlo, 0), min(jhi, ny - 1) + 1):
            y0 = max(j - 0.5 - cy, -R)
            y1 = min(j + 0.5 - cy, R)
            if y1 <= y0:
                continue
            if y0 == last_y:
                f0 = last_f
                s0 = last_s
            else:
                f0 = _f(y0, R)
                s0 = math.sqrt(max(R * R - y0 * y0, 0.0))
            f1 = _f(y1, R)
            s1 = math.sqrt(max(R * R - y1 * y1, 0.0))
            last_y, last_f, last_s = y1, f1, s1
            strip = 2.0 * alpha * (f1 - f0)
            h = y1 - y0
            # Left (L) and right (U) edges of the ellipse at the strip's two heights.
            L0 = -kk * y0 - alpha * s0
            L1 = -kk * y1 - alpha * s1
            U0 = -kk * y0 + alpha * s0
            U1 = -kk * y1 + alpha * s1
            lmin = min(L0, L1)
            umax = max(U0, U1)
            if y0 < t_star < y1:
                lmin = -kk * t_star - alpha * math.sqrt(max(R * R - t_star * t_star, 0.0))
            if y0 < -t_star < y1:
                umax = kk * t_star + alpha * math.sqrt(max(R * R - t_star * t_star, 0.0))
            i_first = int(math.floor(cx + lmin + 0.5))
            i_last = int(math.floor(cx + umax + 0.5))
            i_in_lo = int(math.ceil(cx + max(L0, L1) + 0.5))
            i_in_hi = int(math.floor(cx + min(U0, U1) - 0.5))
            if i_in_lo > i_in_hi:
                i_in_lo = i_last + 1
                i_in_hi = i_last
            prev_h = 0.0
            for i in range(i_first, min(i_in_lo, i_last + 1)):
                x1 = i + 0.5 - cx
                cur_h = strip if x1 >= umax else alpha * _left_slanted(x1 / alpha, sl, y0, y1, f0, f1, R)
                w = cur_h - prev_h
                prev_h = cur_h
                if w > 0.0 and 0 <= i < nx:
                    acc = _add_pixel(w, image[j, i], variance[j, i] if use_var else 0.0,
                                     mask[j, i] if use_mask else np.uint32(0), use_var, bad_bits, sat_bits, acc)
            acc = _add_run(image, variance, mask, j, max(i_in_lo, 0), min(i_in_hi, nx - 1), h, use_var,
                           use_mask, bad_bits, sat_bits, acc)
            start = max(i_in_hi + 1, i_first)
            if start <= i_last:
                x1 = start - 0.5 - cx
                prev_h = 0.0 if x1 <= lmin else alpha * _left_slanted(x1 / alpha, sl, y0, y1, f0, f1, R)
            for i in range(start, i_last + 1):
                x1 = i + 0.5 - cx
                cur_h = strip if x1 >= umax else alpha * _left_slanted(x1 / alpha, sl, y0, y1, f0, f1, R)
                w = cur_h - prev_h
                prev_h = cur_h
                if w > 0.0 and 0 <= i < nx:
                    acc = _add_pixel(w, image[j, i], variance[j, i] if use_var else 0.0,
                                     mask[j, i] if use_mask else np.uint32(0), use_var, bad_bits, sat_bits, acc)
        flux[k], vout[k], flags_out[k], vpos = _finish(acc)
        any_vpos = any_vpos or vpos
    return flux, vout, flags_out, any_vpos


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
