"""Analytic pixel-to-sky maps and their exact Jacobians for TAN, TAN-SIP and TPV WCSs.

Chain rule through SIP polynomials, the CD matrix, TPV polynomials and the gnomonic projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tangent import ARCSEC_PER_RADIAN, local_basis, vectors_to_sky

__all__ = ["AnalyticTan", "tpv_matrices", "TPV_TERMS"]

_D2R = np.pi / 180.0


def _tpv_terms() -> list[tuple[str, int, int]]:
    """TPV term k as ('m', i, j) for x**i y**j, or ('r', m, 0) for r**m, in PV index order."""
    terms: list[tuple[str, int, int]] = []
    for d in range(8):
        terms.extend(("m", d - j, j) for j in range(d + 1))
        if d % 2 == 1:
            terms.append(("r", d, 0))
    return terms


#: The 40 TPV terms, index k = PV keyword number: 0:1, 1:x, 2:y, 3:r, 4:x², 5:xy, ...
TPV_TERMS = _tpv_terms()


def tpv_matrices(pv: dict[int, float], swap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Turn the PV coefficients of one axis into ``(P[i, j], radial[m])``.

    ``P[i, j]`` multiplies ``x**i y**j`` and ``radial[m]`` multiplies ``r**m`` (odd m).
    For the second axis (``swap``) TPV exchanges the roles of x and y.
    """
    poly = np.zeros((8, 8))
    radial = np.zeros(8)
    for k, value in pv.items():
        kind, i, j = TPV_TERMS[k]
        if kind == "r":
            radial[i] += value
        elif swap:
            poly[j, i] += value
        else:
            poly[i, j] += value
    return poly, radial


def _powers(u: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``u**p`` and ``d(u**p)/du`` for p = 0..n, shape (..., n+1)."""
    p = np.arange(n + 1)
    pw = np.ones(u.shape + (n + 1,))
    for k in range(1, n + 1):
        pw[..., k] = pw[..., k - 1] * u
    dpw = np.zeros_like(pw)
    dpw[..., 1:] = pw[..., :-1] * p[1:]
    return pw, dpw


def _poly2(c: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value and partials of ``sum c[p, q] u**p v**q``."""
    n = c.shape[0] - 1
    pu, dpu = _powers(u, n)
    pv, dpv = _powers(v, n)
    cv = np.einsum("pq,...q->...p", c, pv)
    value = np.einsum("...p,...p->...", pu, cv)
    du = np.einsum("...p,...p->...", dpu, cv)
    dv = np.einsum("...p,pq,...q->...", pu, c, dpv)
    return value, du, dv


def _celestial_rotation(ra0: float, dec0: float, lonpole: float) -> np.ndarray:
    """3×3 rotation from native to celestial unit vectors for a zenithal projection.

    Columns are the celestial images of the native x, y and z axes, from Calabretta &
    Greisen (2002) eq. 2 with (alpha_p, delta_p) = (CRVAL1, CRVAL2) and phi_p = LONPOLE.
    """
    ap, dp, pp = ra0 * _D2R, dec0 * _D2R, lonpole * _D2R

    def native_to_vec(phi: float, theta: float) -> np.ndarray:
        # Eq. 2 written for the vector components, with no arcsin (inaccurate near +-1).
        dphi = phi - pp
        c1 = np.sin(theta) * np.cos(dp) - np.cos(theta) * np.sin(dp) * np.cos(dphi)
        c2 = -np.cos(theta) * np.sin(dphi)
        z = np.sin(theta) * np.sin(dp) + np.cos(theta) * np.cos(dp) * np.cos(dphi)
        return np.array([c1 * np.cos(ap) - c2 * np.sin(ap), c1 * np.sin(ap) + c2 * np.cos(ap), z])

    return np.column_stack([native_to_vec(0.0, 0.0), native_to_vec(np.pi / 2, 0.0),
                            native_to_vec(0.0, np.pi / 2)])


@dataclass(frozen=True)
class AnalyticTan:
    """A gnomonic WCS with optional SIP (pixel-side) and TPV (sky-side) polynomials.

    Pixel (x, y), 0-based → ``u = x - (CRPIX1 - 1)``, ``v = y - (CRPIX2 - 1)`` → SIP
    ``(u + A(u, v), v + B(u, v))`` → CD matrix → TPV polynomials (degrees) → gnomonic
    deprojection about (CRVAL1, CRVAL2) with LONPOLE.
    """

    crpix: tuple[float, float]  # 0-based reference pixel
    cd: np.ndarray  # 2×2, degrees/pixel
    rotation: np.ndarray  # 3×3, native → celestial
    sip_a: np.ndarray | None = None
    sip_b: np.ndarray | None = None
    tpv: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # P1, r1, P2, r2

    @classmethod
    def build(cls, crpix0, cd, crval, lonpole, sip_a=None, sip_b=None, tpv=None) -> AnalyticTan:
        return cls(
            crpix=(float(crpix0[0]), float(crpix0[1])),
            cd=np.array(cd, dtype=np.float64),
            rotation=_celestial_rotation(float(crval[0]), float(crval[1]), float(lonpole)),
            sip_a=None if sip_a is None else np.array(sip_a, dtype=np.float64),
            sip_b=None if sip_b is None else np.array(sip_b, dtype=np.float64),
            tpv=tpv,
        )

    @property
    def kind(self) -> str:
        parts = ["TAN"]
        if self.sip_a is not None:
            parts.append("SIP")
        if self.tpv is not None:
            parts = ["TPV"] + parts[1:]
        return "-".join(parts)

    def _intermediate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Projection-plane coordinates (X, Y) in degrees and d(X, Y)/d(x, y), (..., 2, 2)."""
        u = x - self.crpix[0]
        v = y - self.crpix[1]
        m = np.zeros(x.shape + (2, 2))
        if self.sip_a is not None:
            fa, fa_u, fa_v = _poly2(self.sip_a, u, v)
            fb, fb_u, fb_v = _poly2(self.sip_b, u, v)
            u, v = u + fa, v + fb
            m[..., 0, 0] = 1.0 + fa_u
            m[..., 0, 1] = fa_v
            m[..., 1, 0] = fb_u
            m[..., 1, 1] = 1.0 + fb_v
        else:
            m[..., 0, 0] = 1.0
            m[..., 1, 1] = 1.0
        cd = self.cd
        big_x = cd[0, 0] * u + cd[0, 1] * v
        big_y = cd[1, 0] * u + cd[1, 1] * v
        m = np.einsum("ij,...jk->...ik", cd, m)
        if self.tpv is not None:
            p1, r1, p2, r2 = self.tpv
            t = np.zeros(x.shape + (2, 2))
            rr = np.sqrt(big_x * big_x + big_y * big_y)
            out = []
            for row, (poly, radial) in enumerate(((p1, r1), (p2, r2))):
                val, dx, dy = _poly2(poly, big_x, big_y)
                if np.any(radial):
                    safe = np.where(rr > 0, rr, 1.0)
                    for mm in np.nonzero(radial)[0]:
                        val = val + radial[mm] * rr**mm
                        # d r**m / dX = m r**(m-2) X; at r = 0 the m = 1 term has no derivative.
                        g = radial[mm] * mm * safe ** (mm - 2)
                        dx = dx + g * big_x
                        dy = dy + g * big_y
                t[..., row, 0] = dx
                t[..., row, 1] = dy
                out.append(val)
            big_x, big_y = out
            m = np.einsum("...ij,...jk->...ik", t, m)
        return big_x, big_y, m

    def _vectors(self, big_x, big_y) -> np.ndarray:
        # Native direction of plane point (X, Y) is proportional to (-Y, X, 1), X, Y in radians.
        xr = big_x * _D2R
        yr = big_y * _D2R
        r = self.rotation
        return (-yr[..., None] * r[:, 0] + xr[..., None] * r[:, 1] + r[:, 2])

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RA, Dec in degrees of float64 pixel arrays of one shape."""
        big_x, big_y, _ = self._intermediate(x, y)
        return vectors_to_sky(self._vectors(big_x, big_y))

    def jacobian(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact ``d(xi, eta)/d(x, y)`` in arcsec/pixel, shape (..., 2, 2)."""
        big_x, big_y, m = self._intermediate(x, y)
        w = self._vectors(big_x, big_y)
        p, east, north = local_basis(w)
        norm = np.sqrt(np.einsum("...i,...i->...", w, w))
        # d w / dX = R[:, 1], d w / dY = -R[:, 0] (radians); the gnomonic projection about
        # w/|w| has derivative (dw . e, dw . n) / |w| there because w . e = w . n = 0.
        r = self.rotation
        g = np.empty(x.shape + (2, 2))
        g[..., 0, 0] = east @ r[:, 1]
        g[..., 0, 1] = -(east @ r[:, 0])
        g[..., 1, 0] = north @ r[:, 1]
        g[..., 1, 1] = -(north @ r[:, 0])
        g *= (ARCSEC_PER_RADIAN * _D2R / norm)[..., None, None]
        return np.einsum("...ij,...jk->...ik", g, m)

    def pixel_area(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """|det J| in arcsec², using det(projection) = cos³ of the distance from CRVAL."""
        big_x, big_y, m = self._intermediate(x, y)
        rho2 = (big_x * _D2R) ** 2 + (big_y * _D2R) ** 2
        det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
        return np.abs(det) * (3600.0**2) * (1.0 + rho2) ** -1.5
