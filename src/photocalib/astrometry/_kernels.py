"""Numba kernels of the astrometry layer: the exact TAN/SIP/TPV Jacobian, one pixel at a time.

The NumPy form in ``_analytic`` makes dozens of array temporaries per point; this loop keeps
everything in registers, which makes exact areas of whole images affordable.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["tan_jacobian"]

_D2R = math.pi / 180.0
_ARCSEC_PER_DEG = 3600.0


@numba.njit(cache=True, nogil=True, inline="always")
def _poly(c, u, v):
    """Value and partials of sum c[p, q] u**p v**q."""
    n = c.shape[0]
    val = 0.0
    du = 0.0
    dv = 0.0
    up = 1.0
    dup = 0.0
    for p in range(n):
        s = 0.0
        ds = 0.0
        vq = 1.0
        dvq = 0.0
        for q in range(n):
            cpq = c[p, q]
            s += cpq * vq
            ds += cpq * dvq
            dvq = (q + 1) * vq
            vq *= v
        val += up * s
        du += dup * s
        dv += up * ds
        dup = (p + 1) * up
        up *= u
    return val, du, dv


@numba.njit(cache=True, nogil=True)
def _tan_jacobian(x, y, crpix, cd, rot, sip_a, sip_b, has_sip, p1, r1, p2, r2, has_tpv, out):
    for k in range(x.size):
        u = x[k] - crpix[0]
        v = y[k] - crpix[1]
        m00 = 1.0
        m01 = 0.0
        m10 = 0.0
        m11 = 1.0
        if has_sip:
            fa, fau, fav = _poly(sip_a, u, v)
            fb, fbu, fbv = _poly(sip_b, u, v)
            u += fa
            v += fb
            m00 += fau
            m01 = fav
            m10 = fbu
            m11 += fbv
        bx = cd[0, 0] * u + cd[0, 1] * v
        by = cd[1, 0] * u + cd[1, 1] * v
        t00 = cd[0, 0] * m00 + cd[0, 1] * m10
        t01 = cd[0, 0] * m01 + cd[0, 1] * m11
        t10 = cd[1, 0] * m00 + cd[1, 1] * m10
        t11 = cd[1, 0] * m01 + cd[1, 1] * m11
        m00, m01, m10, m11 = t00, t01, t10, t11
        if has_tpv:
            rr = math.sqrt(bx * bx + by * by)
            xi, xix, xiy = _poly(p1, bx, by)
            et, etx, ety = _poly(p2, bx, by)
            for mm in range(1, 8, 2):
                for row in range(2):
                    coef = r1[mm] if row == 0 else r2[mm]
                    if coef != 0.0:
                        val = coef * rr**mm
                        # d r**m / dX = m r**(m-2) X; at r = 0 the m = 1 term has no derivative.
                        g = coef * mm * rr ** (mm - 2) if rr > 0.0 else 0.0
                        if row == 0:
                            xi += val
                            xix += g * bx
                            xiy += g * by
                        else:
                            et += val
                            etx += g * bx
                            ety += g * by
            t00 = xix * m00 + xiy * m10
            t01 = xix * m01 + xiy * m11
            t10 = etx * m00 + ety * m10
            t11 = etx * m01 + ety * m11
            m00, m01, m10, m11 = t00, t01, t10, t11
            bx = xi
            by = et
        # Native direction of the plane point is (-Y, X, 1) (radians), rotated to celestial.
        xr = bx * _D2R
        yr = by * _D2R
        w0 = -yr * rot[0, 0] + xr * rot[0, 1] + rot[0, 2]
        w1 = -yr * rot[1, 0] + xr * rot[1, 1] + rot[1, 2]
        w2 = -yr * rot[2, 0] + xr * rot[2, 1] + rot[2, 2]
        rho = math.sqrt(w0 * w0 + w1 * w1)
        norm = math.sqrt(rho * rho + w2 * w2)
        if rho > 0.0:
            ca = w0 / rho
            sa = w1 / rho
        else:
            ca = 1.0
            sa = 0.0
        sd = w2 / norm
        cdec = rho / norm
        # east = (-sa, ca, 0), north = (-sd ca, -sd sa, cdec); dw/dX = rot[:, 1], dw/dY = -rot[:, 0]
        e_x = -sa * rot[0, 1] + ca * rot[1, 1]
        e_y = -(-sa * rot[0, 0] + ca * rot[1, 0])
        n_x = -sd * ca * rot[0, 1] - sd * sa * rot[1, 1] + cdec * rot[2, 1]
        n_y = -(-sd * ca * rot[0, 0] - sd * sa * rot[1, 0] + cdec * rot[2, 0])
        # M is in degrees/pixel: radians per degree times arcsec per radian is 3600.
        scale = _ARCSEC_PER_DEG / norm
        g00 = e_x * scale
        g01 = e_y * scale
        g10 = n_x * scale
        g11 = n_y * scale
        out[k, 0, 0] = g00 * m00 + g01 * m10
        out[k, 0, 1] = g00 * m01 + g01 * m11
        out[k, 1, 0] = g10 * m00 + g11 * m10
        out[k, 1, 1] = g10 * m01 + g11 * m11


def tan_jacobian(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact Jacobian (n, 2, 2) in arcsec/pixel of an ``AnalyticTan`` at 1-D float64 x, y."""
    out = np.empty((x.size, 2, 2))
    empty = np.zeros((1, 1))
    sip = model.sip_a is not None
    tpv = model.tpv is not None
    p1, r1, p2, r2 = model.tpv if tpv else (empty, np.zeros(8), empty, np.zeros(8))
    _tan_jacobian(
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
        np.asarray(model.crpix, dtype=np.float64),
        np.ascontiguousarray(model.cd),
        np.ascontiguousarray(model.rotation),
        model.sip_a if sip else empty,
        model.sip_b if sip else empty,
        sip,
        p1, r1, p2, r2,
        tpv,
        out,
    )
    return out
