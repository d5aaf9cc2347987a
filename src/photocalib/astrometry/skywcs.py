"""SkyWcs: a celestial WCS with exact Jacobians, pixel areas and cached pixel-area fields.

Wraps an astropy WCS (TAN, SIP, TPV analytically; anything else numerically) or any APE-14 object.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..errors import InputError
from ..fields.pixel_area import PixelAreaField
from ..geom import Box
from ._analytic import AnalyticTan, tpv_matrices
from ._fd import fd_jacobian
from ._kernels import tan_jacobian

__all__ = ["SkyWcs"]

#: Points per chunk: bounds the temporaries of a Jacobian call (~100 doubles per point).
_CHUNK_ANALYTIC = 1 << 16
_CHUNK_FD = 1 << 13

#: Largest disagreement (arcsec) allowed between the analytic model and astropy before the
#: analytic path is refused; real model errors are many orders of magnitude larger.
_ANALYTIC_CHECK_ARCSEC = 1e-6

#: WCS keywords that must hold finite numbers.
_NUMERIC_KEY = re.compile(
    r"^(CRVAL|CRPIX|CDELT|CROTA)\d+$|^(CD|PC|PV)\d+_\d+$|^(A|B|AP|BP)_\d+_\d+$|^(LONPOLE|LATPOLE)$"
)


def _as_header(header) -> fits.Header:
    if isinstance(header, fits.Header):
        return header
    if isinstance(header, str):
        try:
            if "\n" in header:
                return fits.Header.fromstring(header, sep="\n")
            return fits.Header.fromstring(header)
        except Exception as exc:  # astropy raises several types for a malformed card
            raise InputError(f"cannot parse the FITS header string ({exc})") from exc
    if isinstance(header, dict):
        return fits.Header(header)
    raise InputError(f"SkyWcs.from_header needs an astropy Header or a header string, got {type(header).__name__}")


def _raw_card(card) -> str:
    """The card's text as read, even when astropy cannot format it (non-ASCII bytes)."""
    raw = getattr(card, "_image", None)
    if isinstance(raw, str):
        return raw.strip()
    try:
        return card.image.strip()
    except Exception:  # noqa: BLE001 - formatting a damaged card raises several types
        return card.keyword


def _check_header_values(header: fits.Header) -> None:
    """Name the first WCS keyword that is NaN, infinite or not a number."""
    for card in header.cards:
        key = card.keyword
        if not _NUMERIC_KEY.match(key):
            continue
        try:
            value = card.value
        except Exception as exc:  # astropy's VerifyError for e.g. "CRVAL1 = NAN"
            raise InputError(
                f"WCS keyword {key} has an unparsable value ({_raw_card(card)!r}); give it a finite number"
            ) from exc
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"WCS keyword {key} is {value!r}; give it a finite number")


_SIP_TERM = re.compile(r"^(A|B|AP|BP)_(\d+)_(\d+)$")


def _check_sip_orders(header: fits.Header) -> None:
    """Name a SIP term beyond its ``<P>_ORDER`` (astropy would silently drop it).

    A header whose ``A_ORDER`` is lower than the degree of its ``A_p_q`` terms is inconsistent:
    wcslib ignores the higher terms, which changes the distortion (and the pixel area) without
    a word, so it is refused.
    """
    for card in header.cards:
        m = _SIP_TERM.match(card.keyword)
        if m is None:
            continue
        prefix, p, q = m.group(1), int(m.group(2)), int(m.group(3))
        order_key = f"{prefix}_ORDER"
        try:
            order = header.get(order_key)
        except Exception as exc:  # noqa: BLE001 - astropy's VerifyError/ValueError for a damaged card
            raise InputError(f"SIP keyword {order_key} has an unparsable value; give it an integer") from exc
        if not isinstance(order, int | float) or isinstance(order, bool):
            raise InputError(
                f"SIP keyword {card.keyword} is present but {order_key} is "
                f"{'missing' if order is None else repr(order)}; add {order_key} (an integer)"
            )
        value = card.value
        if p + q > order and isinstance(value, int | float) and value != 0:
            raise InputError(
                f"SIP keyword {card.keyword} (degree {p + q}) exceeds {order_key} = {int(order)}; "
                f"the term would be ignored: raise {order_key} to {p + q} or remove the term"
            )


#: Pixel scales a sky image can have (arcsec): outside them a WCS is a damaged header.
PIXEL_SCALE_RANGE_ARCSEC = (1e-4, 36000.0)

#: Largest ratio of the linear matrix's two singular values: beyond it the WCS is singular.
_MAX_ANISOTROPY = 1e3


def _check_linear(matrix: np.ndarray, keys: str) -> None:
    """InputError naming ``keys`` unless the 2×2 pixel→intermediate matrix (deg/pixel) is a
    regular matrix with a pixel scale in :data:`PIXEL_SCALE_RANGE_ARCSEC`."""
    m = np.asarray(matrix, dtype=np.float64)[:2, :2] * 3600.0
    with np.errstate(all="ignore"):
        sv = np.linalg.svd(m, compute_uv=False) if np.all(np.isfinite(m)) else np.array([np.nan, 0.0])
    lo, hi = PIXEL_SCALE_RANGE_ARCSEC
    if not (np.isfinite(sv).all() and sv[1] > 0):
        raise InputError(f"WCS keywords {keys} make a singular matrix (determinant 0), so pixels "
                         "have no size on the sky; the header's WCS is damaged")
    if sv[0] / sv[1] > _MAX_ANISOTROPY:
        raise InputError(f"WCS keywords {keys} make a nearly singular matrix (pixel axes "
                         f"{sv[0]:.3g}\" and {sv[1]:.3g}\" long); the header's WCS is damaged")
    scale = float(np.sqrt(sv[0] * sv[1]))
    if not lo <= scale <= hi:
        raise InputError(f"WCS keywords {keys} give a pixel scale of {scale:.3g}\", outside "
                         f"{lo:g}\"..{hi / 3600:g}°; the header's WCS is damaged")


def _check_header_linear(hdr: fits.Header) -> None:
    """Refuse a singular or absurd CD (or CDELT × PC) matrix as written in the header.

    wcslib takes an all-zero CD matrix for a missing one (1°/pixel), so this looks at the
    keywords themselves.
    """
    cd = [f"CD{i}_{j}" for i in (1, 2) for j in (1, 2)]
    if any(k in hdr for k in cd):
        values = [hdr.get(k, 0.0) for k in cd]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            _check_linear(np.array(values, dtype=np.float64).reshape(2, 2), "CD1_1..CD2_2")


def _check_wcs_values(w: WCS) -> None:
    ww = w.wcs
    for name, arr in (("CRVAL", ww.crval), ("CRPIX", ww.crpix), ("CDELT", ww.get_cdelt()), ("PC", ww.get_pc())):
        arr = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(np.atleast_1d(arr)))[0]
            suffix = "_".join(str(int(i) + 1) for i in bad)
            raise InputError(f"WCS keyword {name}{suffix} is not finite; give it a finite number")
    if w.sip is not None:
        for name, arr in (("A", w.sip.a), ("B", w.sip.b)):
            if arr is not None and not np.all(np.isfinite(arr)):
                p, q = np.argwhere(~np.isfinite(arr))[0]
                raise InputError(f"SIP keyword {name}_{p}_{q} is not finite; give it a finite number")
    try:
        matrix = w.celestial.pixel_scale_matrix if w.naxis != 2 else w.pixel_scale_matrix
    except Exception:  # noqa: BLE001 - a WCS astropy cannot turn into a matrix is caught later
        return
    keys = "CD1_1..CD2_2" if ww.has_cd() else "CDELT1/CDELT2 × PC1_1..PC2_2"
    _check_linear(matrix, keys)


def _tpv_from_header(hdr: fits.Header):
    pv1: dict[int, float] = {}
    pv2: dict[int, float] = {}
    for card in hdr.cards:
        key = card.keyword
        for prefix, store in (("PV1_", pv1), ("PV2_", pv2)):
            if key.startswith(prefix):
                k = int(key[len(prefix):])
                if k >= 40:
                    return None
                store[k] = float(card.value)
    p1, r1 = tpv_matrices(pv1, swap=False)
    p2, r2 = tpv_matrices(pv2, swap=True)
    return (p1, r1, p2, r2)


def _has_lookup_tables(w: WCS) -> bool:
    return any(getattr(w, name, None) is not None for name in ("cpdis1", "cpdis2", "det2im1", "det2im2"))


def _analytic_model(w: WCS) -> AnalyticTan | None:
    """The analytic TAN/SIP/TPV model of ``w``, or ``None`` when it has another form."""
    ww = w.wcs
    if w.naxis != 2 or ww.lng != 0 or ww.lat != 1:
        return None
    if _has_lookup_tables(w):
        return None
    if not ww.ctype[0].upper()[4:8] == "-TAN":
        return None
    tpv = None
    if w.sip is None:
        # astropy keeps TPV in wcslib's distortion structures and reports CTYPE "TAN"; only
        # the header it writes says TPV. (SIP together with TPV would fail the check against
        # astropy in SkyWcs and fall back to finite differences.)
        try:
            hdr = w.to_header(relax=True)
        except Exception:  # noqa: BLE001 - anything astropy cannot write has no analytic form here
            return None
        if hdr.get("CTYPE1", "").upper().endswith("-TPV"):
            tpv = _tpv_from_header(hdr)
            if tpv is None:
                return None
    sip_a = sip_b = None
    if w.sip is not None:
        sip_a, sip_b = w.sip.a, w.sip.b
        if sip_a is None or sip_b is None or not np.allclose(np.asarray(w.sip.crpix), ww.crpix, rtol=0, atol=0):
            return None
        n = max(sip_a.shape[0], sip_b.shape[0])
        pad = np.zeros((n, n))
        a = pad.copy()
        a[: sip_a.shape[0], : sip_a.shape[1]] = sip_a
        b = pad.copy()
        b[: sip_b.shape[0], : sip_b.shape[1]] = sip_b
        sip_a, sip_b = a, b
    return AnalyticTan.build(
        crpix0=np.asarray(ww.crpix) - 1.0,
        cd=w.pixel_scale_matrix,
        crval=ww.crval,
        lonpole=ww.lonpole,
        sip_a=sip_a,
        sip_b=sip_b,
        tpv=tpv,
    )


class SkyWcs:
    r"""A celestial world coordinate system with an exact local Jacobian.

    Pixel coordinates are 0-based with pixel centres on integers (astropy ``origin=0``).
    The Jacobian at a pixel is :math:`J = \partial(\xi, \eta)/\partial(x, y)` in arcsec/pixel,
    where :math:`(\xi, \eta)` are gnomonic tangent-plane coordinates (east, north) centred on
    *that pixel's* sky position; the pixel area is :math:`A = |\det J|` in arcsec², at the pixel
    centre (the integral over the pixel differs by about :math:`\nabla^2 A / 24`, below 1e-8
    relative for real cameras).

    For TAN, TAN-SIP and TPV WCSs the Jacobian is analytic (the chain rule through the SIP
    polynomials, the CD matrix, the TPV polynomials and the gnomonic projection, whose area
    factor is :math:`\cos^3\rho` at distance :math:`\rho` from CRVAL). The analytic model is
    checked against astropy's own transformation at construction. Any other WCS (ZPN, lookup
    table distortions D2IM/CPDIS, gwcs, any APE-14 object) uses a sixth-order central
    difference on the unit sphere: offsets are projected onto the tangent plane at the central
    point, so nothing goes wrong at RA = 0/360 or near the poles. :attr:`method` says which.
    Lookup tables are piecewise bilinear, so their derivative jumps at the table nodes; for
    them the numerical path differences the pixel's own edges (step ½, second order), which is
    the mean derivative across the pixel: well defined at pixel centres, where images sample it.

    Parameters
    ----------
    wcs : astropy.wcs.WCS, SkyWcs or APE-14 object
        The transformation. An astropy WCS must have celestial axes; extra axes are dropped.
        An APE-14 object must have two pixel axes and two world axes, longitude and latitude
        in degrees.
    fd_step : float, optional
        Finite-difference step in pixels for the numerical path: 1 with a sixth-order stencil
        by default; 0.5 with a second-order stencil (the pixel's own edges, so the mean
        derivative across the pixel, exact for piecewise-linear tables) when the WCS has
        lookup-table distortions, whose derivative jumps at the table nodes.
    method : {'auto', 'finite-difference'}
        ``'auto'`` uses the analytic Jacobian where the WCS has one; ``'finite-difference'``
        forces the numerical path (for checks and comparisons).

    Raises
    ------
    InputError
        No celestial axes, non-finite keywords, or an object that is not a WCS.

    Examples
    --------
    >>> from astropy.io import fits
    >>> h = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0,
    ...                  "CRVAL2": 20.0, "CRPIX1": 50.0, "CRPIX2": 50.0,
    ...                  "CD1_1": -5.5e-5, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 5.5e-5})
    >>> wcs = SkyWcs.from_header(h)
    >>> round(float(wcs.pixel_area(49.0, 49.0)), 6)   # (0.198 arcsec)^2 at CRPIX
    0.039204
    """

    __slots__ = (
        "_wcs", "_ape14", "_model", "_fd_step", "_fd_order", "_world_axes", "_area_fields", "_lock", "_shape",
        "_frozen", "_args", "_ident",
    )

    def __init__(self, wcs: Any, fd_step: float | None = None, method: str = "auto") -> None:
        self._frozen = False
        if method not in ("auto", "finite-difference"):
            raise InputError(f"SkyWcs method must be 'auto' or 'finite-difference', got {method!r}")
        if fd_step is not None and not (np.isfinite(fd_step) and fd_step > 0):
            raise InputError(f"SkyWcs fd_step must be a positive number of pixels, got {fd_step!r}")
        if isinstance(wcs, SkyWcs):
            wcs = wcs._wcs if wcs._wcs is not None else wcs._ape14
        self._wcs: WCS | None = None
        self._ape14 = None
        self._model: AnalyticTan | None = None
        self._world_axes = (0, 1)
        self._args = (fd_step, method)
        self._ident = None
        self._fd_step = 1.0 if fd_step is None else float(fd_step)
        self._fd_order = 6
        self._shape: tuple[int, int] | None = None
        if isinstance(wcs, WCS):
            if not wcs.has_celestial:
                raise InputError(
                    f"WCS has no celestial axes (CTYPE = {list(wcs.wcs.ctype)}); a SkyWcs needs "
                    "RA/Dec axes such as CTYPE1='RA---TAN', CTYPE2='DEC--TAN'"
                )
            if wcs.naxis != 2:
                wcs = wcs.celestial
            wcs = wcs.deepcopy()
            try:
                wcs.wcs.set()
            except Exception as exc:  # wcslib reports invalid parameters in many ways
                raise InputError(f"invalid celestial WCS ({exc})") from exc
            _check_wcs_values(wcs)
            self._wcs = wcs
            if _has_lookup_tables(wcs):
                # Piecewise-bilinear tables have kinks at their nodes (every pixel for ACS's
                # column D2IM): difference the pixel's own edges, the mean derivative across it.
                self._fd_order = 2
                self._fd_step = 0.5 if fd_step is None else float(fd_step)
            # A damaged header can leave NAXISn as text: only whole numbers make a shape.
            if wcs.pixel_shape is not None and all(isinstance(n, int | np.integer) and n > 1
                                                   for n in wcs.pixel_shape):
                self._shape = (int(wcs.pixel_shape[1]), int(wcs.pixel_shape[0]))
            if method == "auto":
                self._model = self._checked_model(_analytic_model(wcs))
        else:
            low = getattr(wcs, "low_level_wcs", wcs)
            if not hasattr(low, "pixel_to_world_values") or not hasattr(low, "world_axis_physical_types"):
                raise InputError(
                    f"SkyWcs needs an astropy WCS or an APE-14 WCS object, got {type(wcs).__name__}"
                )
            if low.pixel_n_dim != 2 or low.world_n_dim != 2:
                raise InputError(
                    f"APE-14 WCS must have 2 pixel and 2 world axes, got {low.pixel_n_dim} and {low.world_n_dim}"
                )
            types = [str(t or "") for t in low.world_axis_physical_types]
            lon = [i for i, t in enumerate(types) if t.startswith("pos.") and (t.endswith(".ra") or t.endswith(".lon") or "glon" in t or "elon" in t)]
            lat = [i for i, t in enumerate(types) if t.startswith("pos.") and (t.endswith(".dec") or t.endswith(".lat") or "glat" in t or "elat" in t)]
            if len(lon) != 1 or len(lat) != 1:
                raise InputError(f"APE-14 WCS has no celestial longitude/latitude axes (physical types {types})")
            units = [str(u) for u in low.world_axis_units]
            if units[lon[0]] != "deg" or units[lat[0]] != "deg":
                raise InputError(f"APE-14 WCS world axes must be in degrees, got units {units}")
            self._ape14 = low
            self._world_axes = (lon[0], lat[0])
            if getattr(low, "pixel_shape", None) is not None:
                nx, ny = low.pixel_shape
                self._shape = (int(ny), int(nx))
        self._area_fields: dict[tuple[Box, float], PixelAreaField] = {}
        self._lock = threading.Lock()
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError("SkyWcs is immutable")
        object.__setattr__(self, name, value)

    def _checked_model(self, model: AnalyticTan | None) -> AnalyticTan | None:
        """Accept the analytic model only if it reproduces astropy at a spread of pixels."""
        if model is None:
            return None
        cx, cy = model.crpix
        ny, nx = self._shape if self._shape is not None else (4096, 4096)
        g = np.array([-0.5, -0.1, 0.0, 0.3, 0.7, 1.0, 1.5])
        x = np.concatenate([cx + g * nx, np.array([0.0, nx - 1.0, 0.0, nx - 1.0])])
        y = np.concatenate([cy + g[::-1] * ny, np.array([0.0, 0.0, ny - 1.0, ny - 1.0])])
        with np.errstate(all="ignore"):
            big_x, big_y, _ = model._intermediate(x, y)
            # Far from CRVAL a gnomonic WCS is meaningless; check only where it is well defined.
            near = np.hypot(big_x, big_y) < 60.0
            x, y = x[near], y[near]
            ra1, dec1 = model.pixel_to_sky(x, y)
            ra2, dec2 = self._astropy_pixel_to_sky(x, y)
        from .tangent import unit_vectors

        d = np.linalg.norm(unit_vectors(ra1, dec1) - unit_vectors(ra2, dec2), axis=-1)
        ok = np.isfinite(ra2) & np.isfinite(dec2)
        if not np.any(ok) or np.any(~np.isfinite(d[ok])):
            return None
        if np.max(d[ok]) * 206264.80624709636 > _ANALYTIC_CHECK_ARCSEC:
            return None
        return model

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_header(cls, header, hdulist: fits.HDUList | None = None) -> SkyWcs:
        """Build from a FITS header.

        Parameters
        ----------
        header : astropy.io.fits.Header or str
            The header (a string is parsed as FITS cards, with or without newlines).
        hdulist : astropy.io.fits.HDUList, optional
            The file the header came from; needed for lookup-table distortions (D2IM, CPDIS),
            whose tables live in extensions.

        Raises
        ------
        InputError
            Unparseable header, no celestial axes, a NaN/infinite WCS keyword (named), a SIP
            term of a higher degree than its ``A_ORDER``/``B_ORDER``/``AP_ORDER``/``BP_ORDER``,
            or a singular or nearly singular CD (or CDELT × PC) matrix or a pixel scale outside
            1e-4″..10° (the keywords named).
        """
        hdr = _as_header(header)
        _check_header_values(hdr)
        _check_sip_orders(hdr)
        _check_header_linear(hdr)
        import warnings

        from astropy.wcs import FITSFixedWarning

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                w = WCS(hdr, fobj=hdulist, relax=True)
        except Exception as exc:  # astropy/wcslib raise many types for bad headers
            raise InputError(f"cannot build a WCS from the header ({type(exc).__name__}: {exc})") from exc
        if not w.has_celestial:
            ctypes = {k: hdr[k] for k in hdr if k.startswith("CTYPE")}
            raise InputError(
                f"header has no celestial axes (CTYPE keywords: {ctypes or 'none'}); a SkyWcs needs "
                "CTYPE1/CTYPE2 such as 'RA---TAN'/'DEC--TAN'"
            )
        sky = cls(w)
        n1, n2 = hdr.get("NAXIS1"), hdr.get("NAXIS2")
        if (sky._shape is None and all(isinstance(n, int) and not isinstance(n, bool) for n in (n1, n2))
                and n1 > 1 and n2 > 1):
            object.__setattr__(sky, "_shape", (n2, n1))
        return sky

    def to_header(self) -> fits.Header:
        """Celestial WCS keywords (TAN, TAN-SIP or TPV).

        Raises
        ------
        InputError
            The WCS is an APE-14 object or has lookup-table distortions, which a header alone
            cannot hold.
        """
        if self._wcs is None:
            raise InputError(f"{type(self._ape14).__name__} WCS cannot be written as FITS header keywords")
        if _has_lookup_tables(self._wcs):
            raise InputError("WCS has lookup-table distortions (D2IM/CPDIS) that need FITS extensions; "
                             "a header alone cannot represent it")
        return self._wcs.to_header(relax=True)

    # -- properties ---------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """``'analytic'`` (TAN/SIP/TPV) or ``'finite-difference'``."""
        return "analytic" if self._model is not None else "finite-difference"

    @property
    def astropy_wcs(self) -> WCS | None:
        """A copy of the wrapped astropy WCS (``None`` for APE-14 objects)."""
        return None if self._wcs is None else self._wcs.deepcopy()

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(ny, nx)`` of the image the WCS came with (NAXIS2, NAXIS1), if known."""
        return self._shape

    # -- transformations ------------------------------------------------------------------------
    def _astropy_pixel_to_sky(self, x, y):
        world = self._wcs.all_pix2world(x, y, 0)
        # Latitude may come first (CTYPE1 = 'DEC--TAN'): pick the axes by role.
        ra, dec = world[self._wcs.wcs.lng], world[self._wcs.wcs.lat]
        return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)

    def _raw_pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._wcs is not None:
            return self._astropy_pixel_to_sky(x, y)
        world = self._ape14.pixel_to_world_values(x, y)
        ra = np.asarray(world[self._world_axes[0]], dtype=np.float64) % 360.0
        return ra, np.asarray(world[self._world_axes[1]], dtype=np.float64)

    def pixel_to_sky(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Sky position of pixel positions.

        Parameters
        ----------
        x, y : array_like
            0-based pixel coordinates, any broadcastable shapes.

        Returns
        -------
        ra, dec : numpy.ndarray
            Degrees (RA in [0, 360)), with the broadcast shape.
        """
        xx, yy = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        ra, dec = self._raw_pixel_to_sky(xx.ravel(), yy.ravel())
        return (np.asarray(ra) % 360.0).reshape(xx.shape), np.asarray(dec).reshape(xx.shape)

    def sky_to_pixel(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """Pixel position (0-based) of sky positions in degrees; broadcastable arrays."""
        rr, dd = np.broadcast_arrays(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64))
        if self._wcs is not None:
            world = [None, None]
            world[self._wcs.wcs.lng] = rr.ravel()
            world[self._wcs.wcs.lat] = dd.ravel()
            x, y = self._wcs.all_world2pix(*world, 0, tolerance=1e-10, maxiter=100, quiet=True)
        else:
            world = [None, None]
            world[self._world_axes[0]] = rr.ravel()
            world[self._world_axes[1]] = dd.ravel()
            x, y = self._ape14.world_to_pixel_values(*world)
        return np.asarray(x, dtype=np.float64).reshape(rr.shape), np.asarray(y, dtype=np.float64).reshape(rr.shape)

    def jacobian(self, x, y) -> np.ndarray:
        """Local Jacobian ``d(xi, eta)/d(x, y)`` in arcsec/pixel.

        Parameters
        ----------
        x, y : array_like
            0-based pixel coordinates, any broadcastable shapes.

        Returns
        -------
        numpy.ndarray
            Shape ``(..., 2, 2)``: rows (xi towards east, eta towards north) in the gnomonic
            tangent plane at each pixel's own sky position, columns (d/dx, d/dy).
        """
        xx, yy = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        xf, yf = xx.ravel(), yy.ravel()
        out = np.empty((xf.size, 2, 2))
        chunk = _CHUNK_ANALYTIC if self._model is not None else _CHUNK_FD
        for s in range(0, xf.size, chunk):
            sl = slice(s, s + chunk)
            if self._model is not None:
                out[sl] = tan_jacobian(self._model, xf[sl], yf[sl])
            else:
                out[sl] = fd_jacobian(self._raw_pixel_to_sky, xf[sl], yf[sl], self._fd_step, self._fd_order)
        return out.reshape(xx.shape + (2, 2))

    def pixel_area(self, x, y) -> np.ndarray:
        """Pixel area ``|det J|`` in arcsec² at pixel centres ``(x, y)`` (broadcastable)."""
        xx, yy = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        if self._model is None:
            jac = self.jacobian(xx, yy)
            return np.abs(jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0])
        xf, yf = xx.ravel(), yy.ravel()
        out = np.empty(xf.size)
        for s in range(0, xf.size, _CHUNK_ANALYTIC):
            sl = slice(s, s + _CHUNK_ANALYTIC)
            jac = tan_jacobian(self._model, xf[sl], yf[sl])
            out[sl] = np.abs(jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0])
        return out.reshape(xx.shape)

    def pixel_scale(self, x, y) -> np.ndarray:
        """Square root of the pixel area, arcsec."""
        return np.sqrt(self.pixel_area(x, y))

    def pixel_area_field(self, box: Box, max_rel_error: float = 1e-7) -> PixelAreaField:
        """The pixel area on ``box`` as a :class:`PixelAreaField` (cached per box).

        Its ``fill()`` is a fast Chebyshev evaluation whose maximum relative error against the
        exact area is checked to be at most ``max_rel_error``; ``evaluate`` is exact.
        """
        if not isinstance(box, Box):
            raise InputError(f"pixel_area_field needs a Box, got {box!r}")
        key = (box, float(max_rel_error))
        with self._lock:
            field = self._area_fields.get(key)
            if field is None:
                field = PixelAreaField(self, box, max_rel_error=max_rel_error)
                self._area_fields[key] = field
        return field

    def celestial_center(self, box: Box) -> tuple[float, float]:
        """RA, Dec (degrees) of the centre of ``box``."""
        cx, cy = box.center
        ra, dec = self.pixel_to_sky(cx, cy)
        return float(ra), float(dec)

    # -- transport (Dask workers, copies): rebuild from the wrapped WCS, never persisted ----
    def __reduce__(self):
        wcs = self._wcs if self._wcs is not None else self._ape14
        return (_rebuild, (wcs, *self._args, self._shape))

    # -- value semantics ---------------------------------------------------------------------
    def _identity(self):
        # Immutable, so the (costly: header writing) identity is computed once.
        if self._ident is None:
            object.__setattr__(self, "_ident", self._compute_identity())
        return self._ident

    def _compute_identity(self):
        if self._wcs is None:
            return ("ape14", id(self._ape14))
        tables = []
        for name in ("cpdis1", "cpdis2", "det2im1", "det2im2"):
            t = getattr(self._wcs, name, None)
            tables.append(None if t is None else (np.asarray(t.data).tobytes(), tuple(t.crpix), tuple(t.crval), tuple(t.cdelt)))
        hdr = self._wcs.to_header(relax=True)
        for k in ("DATE-OBS", "MJD-OBS", "DATEREF", "MJDREF", "MJDREFI", "MJDREFF"):
            hdr.remove(k, ignore_missing=True, remove_all=True)
        cards = tuple((c.keyword, c.value) for c in hdr.cards if c.keyword not in ("COMMENT", "HISTORY", ""))
        return ("astropy", cards, tuple(tables))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, SkyWcs):
            return NotImplemented
        if self is other:
            return True
        if self._wcs is None or other._wcs is None:
            return self._ape14 is other._ape14
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        ident = self._identity()
        return hash(ident[:2])

    def __repr__(self) -> str:
        if self._wcs is None:
            return f"SkyWcs({type(self._ape14).__name__}, method={self.method})"
        if self._model is not None:
            kind = self._model.kind
        else:
            kind = str(list(self._wcs.wcs.ctype)[0])[5:].strip("-") or "?"
            if self._wcs.sip is not None and not kind.endswith("SIP"):
                kind += "-SIP"
            if self._wcs.det2im1 is not None or self._wcs.det2im2 is not None:
                kind += "+D2IM"
            if self._wcs.cpdis1 is not None or self._wcs.cpdis2 is not None:
                kind += "+CPDIS"
        ra, dec = self._wcs.wcs.crval
        scale = math.sqrt(abs(np.linalg.det(self._wcs.pixel_scale_matrix))) * 3600.0
        return (f"SkyWcs({kind}, crval=({ra:.6f}, {dec:.6f}), scale={scale:.4g} arcsec/pixel, "
                f"method={self.method})")


def _rebuild(wcs: Any, fd_step: float | None, method: str, shape: tuple[int, int] | None) -> SkyWcs:
    """Unpickling helper: the same SkyWcs, with an empty pixel-area cache."""
    sky = SkyWcs(wcs, fd_step=fd_step, method=method)
    object.__setattr__(sky, "_shape", shape)
    return sky
