"""PixelAreaField: the pixel area of a WCS on a box, exact pointwise and fast to fill.

A tensor-product Chebyshev approximation with a checked relative error serves whole images.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
from astropy.table import Table
from numpy.polynomial import chebyshev as C

from ..errors import InputError, PhotocalibError
from ..geom import Box
from ._kernels import low_rank_fill
from .base import BoundedField, register_field, require_bbox_from_meta
from .chebyshev import ChebyshevField

__all__ = ["PixelAreaField"]

#: Orders tried, in turn, until the checked error is small enough.
_ORDERS = (2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48)

#: Points per side of the uniform check grid (pixel centres, box edges included).
_CHECK_GRID = 65

#: Pixels per block when the area is evaluated exactly (bounds memory).
_EXACT_BLOCK = 1 << 16


@register_field
class PixelAreaField(BoundedField):
    r"""The pixel area :math:`A(x, y) = |\det J|` of a WCS, in arcsec², on a box.

    :meth:`evaluate` is exact: it calls ``wcs_like.pixel_area(x, y)``. :meth:`fill`,
    :meth:`multiply_image`, :meth:`divide_image`, :meth:`mean` and :meth:`integrate` use a
    tensor-product :class:`ChebyshevField` interpolating the exact area at Chebyshev nodes.
    Its order is raised until the maximum relative error against exact values on a check set
    is at most ``max_rel_error``; the check set is a 65×65 grid of pixel centres that includes
    the corners and edges of the box, plus the midpoints between the interpolation nodes (where
    the interpolation error of a smooth function peaks). The achieved maximum is
    :attr:`error_bound`. The approximation is built on first use, so constructing the field is
    free.

    When no order up to 48 reaches the tolerance (lookup-table distortions are only piecewise
    smooth), ``fallback='exact'`` (default) warns and evaluates every pixel exactly, which is
    correct but slow (several seconds per megapixel for finite-difference WCSs);
    ``fallback='raise'`` raises :class:`PhotocalibError` instead.

    A field read back from a FITS table (:meth:`BoundedField.to_table`, ``write``/``read``) has
    no WCS: it evaluates everywhere from the stored Chebyshev approximation (within
    :attr:`error_bound`), and keeps the WCS header, when there was one, as :attr:`wcs_header`.

    Parameters
    ----------
    wcs_like : object
        Anything with ``pixel_area(x, y) -> arcsec²`` (a :class:`~photocalib.SkyWcs`).
    box : Box
        The pixels covered.
    max_rel_error : float
        Largest relative error allowed for the fast path (default 1e-7).
    fallback : {'exact', 'raise'}
        What to do when the Chebyshev approximation cannot reach ``max_rel_error``.

    Raises
    ------
    InputError
        ``wcs_like`` has no ``pixel_area``, ``box`` is not a Box, or a bad tolerance.
    """

    def __init__(self, wcs_like: Any, box: Box, max_rel_error: float = 1e-7, fallback: str = "exact") -> None:
        if not callable(getattr(wcs_like, "pixel_area", None)):
            raise InputError(
                f"PixelAreaField needs an object with pixel_area(x, y) (a SkyWcs), got {type(wcs_like).__name__}"
            )
        if not isinstance(box, Box):
            raise InputError(f"PixelAreaField needs a Box, got {box!r}")
        if not (np.isfinite(max_rel_error) and 0 < max_rel_error < 1):
            raise InputError(f"max_rel_error must be in (0, 1), got {max_rel_error!r}")
        if fallback not in ("exact", "raise"):
            raise InputError(f"fallback must be 'exact' or 'raise', got {fallback!r}")
        self._wcs = wcs_like
        self._bbox = box
        self._tol = float(max_rel_error)
        self._fallback = fallback
        self._cheb: ChebyshevField | None = None
        self._error: float | None = None
        self._method: str | None = None
        self._wcs_header: str | None = None
        self._lock = threading.Lock()

    # -- properties ----------------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        return self._bbox

    @property
    def wcs(self) -> Any:
        """The WCS whose area this is (``None`` for a field read from a file)."""
        return self._wcs

    @property
    def max_rel_error(self) -> float:
        """The tolerance asked for."""
        return self._tol

    @property
    def error_bound(self) -> float:
        """Maximum relative error of :attr:`approximation` found on the check set (0 if exact)."""
        self._build()
        return float(self._error)

    @property
    def method(self) -> str:
        """``'chebyshev'`` (fast fill) or ``'exact'`` (every pixel evaluated)."""
        self._build()
        return self._method

    @property
    def approximation(self) -> ChebyshevField | None:
        """The internal Chebyshev approximation (``None`` when the method is exact)."""
        self._build()
        return self._cheb

    @property
    def wcs_header(self) -> str | None:
        """The WCS as FITS header text, if it could be written as one."""
        if self._wcs_header is None and self._wcs is not None:
            to_header = getattr(self._wcs, "to_header", None)
            if callable(to_header):
                try:
                    # Trailing blanks stripped: FITS string columns drop them, and the table
                    # must compare equal after a round trip.
                    text = to_header().tostring(sep="\n")
                    self._wcs_header = "\n".join(line.rstrip() for line in text.splitlines())
                except Exception:  # noqa: BLE001 - e.g. a WCS with lookup tables has no header form
                    self._wcs_header = ""
        return self._wcs_header or None

    # -- construction of the approximation -----------------------------------------------------
    def _exact(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(self._wcs.pixel_area(x, y), dtype=np.float64)

    def _check_points(self) -> tuple[np.ndarray, np.ndarray]:
        box = self._bbox
        gx = np.unique(np.round(np.linspace(box.x0, box.x1, min(_CHECK_GRID, box.width))))
        gy = np.unique(np.round(np.linspace(box.y0, box.y1, min(_CHECK_GRID, box.height))))
        xx, yy = np.meshgrid(gx, gy)
        return xx.ravel(), yy.ravel()

    def _build(self) -> None:
        if self._method is not None:
            return
        with self._lock:
            if self._method is not None:
                return
            box = self._bbox
            xmin, xmax, ymin, ymax = box.extent
            cx, cy = self._check_points()
            exact_c = self._exact(cx, cy)
            if not np.all(np.isfinite(exact_c)) or np.any(exact_c <= 0):
                raise PhotocalibError(
                    f"pixel area is not finite and positive everywhere on {box}; the WCS is "
                    "undefined over part of the box"
                )
            best = np.inf
            stalls = 0
            for order in _ORDERS:
                cheb = _interpolate(self._exact, box, order)
                # Midpoints between nodes, where interpolation error peaks, plus the fixed grid.
                mid = np.cos(np.pi * np.arange(1, order + 1) / (order + 1))
                mx = (mid + 1.0) * 0.5 * (xmax - xmin) + xmin
                my = (mid + 1.0) * 0.5 * (ymax - ymin) + ymin
                mxx, myy = np.meshgrid(mx, my)
                exact_m = self._exact(mxx.ravel(), myy.ravel())
                err = max(
                    _max_rel(cheb.evaluate(cx, cy), exact_c),
                    _max_rel(cheb.evaluate(mxx.ravel(), myy.ravel()), exact_m),
                )
                if err <= self._tol:
                    self._cheb, self._error, self._method = cheb, err, "chebyshev"
                    return
                # Piecewise (lookup-table) areas stop converging: give up early.
                stalls = stalls + 1 if err > 0.5 * best else 0
                best = min(best, err)
                if stalls >= 3:
                    break
            message = (
                f"pixel area on {box} cannot be approximated by a Chebyshev polynomial to "
                f"{self._tol:g} relative (best {best:.3g}); the WCS is probably only piecewise "
                "smooth (lookup-table distortions)"
            )
            if self._fallback == "raise":
                raise PhotocalibError(message + "; use fallback='exact' to evaluate every pixel")
            warnings.warn(message + "; evaluating every pixel exactly (slow)", stacklevel=3)
            self._cheb, self._error, self._method = None, 0.0, "exact"

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate(self, x, y):
        if self._wcs is None:
            return self._cheb._evaluate(x, y)
        return self._exact(x, y)

    def _cheb_fill(self, y0: int, y1: int, out: np.ndarray) -> np.ndarray:
        # Separable evaluation: (rows × k) times (k × columns), one write per pixel.
        cheb = self._cheb
        left = np.einsum("yk,kj->yj", cheb._basis_y(y0, y1), cheb.coefficients)
        right = np.ascontiguousarray(cheb._basis_x().T)
        return low_rank_fill(left, right, out)

    def _fill_rows(self, y0, y1):
        self._build()
        if self._cheb is not None:
            return self._cheb_fill(y0, y1, np.empty((y1 - y0, self._bbox.width)))
        return super()._fill_rows(y0, y1)

    def fill(self, dtype=np.float64, out: np.ndarray | None = None) -> np.ndarray:
        """Area at every pixel centre of the box, arcsec² (float64 by default).

        Within :attr:`error_bound` (≤ ``max_rel_error``) of the exact area when the method is
        ``'chebyshev'``; exact otherwise.
        """
        self._build()
        box = self._bbox
        if out is None:
            out = np.empty(box.shape, dtype=dtype)
        elif out.shape != box.shape:
            raise InputError(f"fill(out=...) needs shape {box.shape}, got {out.shape}")
        if self._cheb is not None:
            if out.dtype not in (np.float32, np.float64):
                raise InputError(f"fill() writes float32 or float64, not {out.dtype}")
            return self._cheb_fill(box.y0, box.y0 + box.height, out)
        rows = max(1, _EXACT_BLOCK // box.width)
        xs = np.arange(box.x0, box.x0 + box.width, dtype=np.float64)
        for r0 in range(0, box.height, rows):
            r1 = min(box.height, r0 + rows)
            ys = np.arange(box.y0 + r0, box.y0 + r1, dtype=np.float64)
            out[r0:r1] = self._exact(xs[None, :], ys[:, None])
        return out

    def integrate(self) -> float:
        """Integral of the area over the box (pixel units): the solid angle it covers, arcsec²."""
        self._build()
        if self._cheb is not None:
            return self._cheb.integrate()
        return super().integrate()

    def mean(self) -> float:
        """Mean pixel area over the box, arcsec²."""
        return self.integrate() / self._bbox.area

    # -- persistence -----------------------------------------------------------------------------
    def _to_table(self) -> Table:
        self._build()
        if self._cheb is None:
            raise InputError(
                "PixelAreaField evaluated exactly (no Chebyshev approximation) cannot be written "
                "to a table; persist the WCS instead"
            )
        c = self._cheb.coefficients
        # Numbers go in binary columns, not keywords, so they round-trip bit for bit.
        cols = {
            "coefficients": c.reshape((1,) + c.shape),
            "error_bound": np.array([self._error], dtype=np.float64),
            "max_rel_error": np.array([self._tol], dtype=np.float64),
        }
        header = self.wcs_header
        if header:
            cols["wcs_header"] = np.array([header])
        return Table(cols)

    @classmethod
    def _from_table(cls, table: Table) -> PixelAreaField:
        bbox = require_bbox_from_meta(table.meta, "PixelAreaField")
        try:
            c = np.asarray(table["coefficients"][0], dtype=np.float64)
            err = float(table["error_bound"][0])
            tol = float(table["max_rel_error"][0])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise InputError(
                "PixelAreaField table needs 'coefficients', 'error_bound' and 'max_rel_error' "
                f"columns ({exc})"
            ) from exc
        self = cls.__new__(cls)
        self._wcs = None
        self._bbox = bbox
        self._tol = tol
        self._fallback = "raise"
        self._cheb = ChebyshevField(np.atleast_2d(c), bbox)
        self._error = err
        self._method = "chebyshev"
        header = None
        if "wcs_header" in table.colnames:
            value = table["wcs_header"][0]
            header = value.decode() if isinstance(value, bytes) else str(value)
        self._wcs_header = header
        self._lock = threading.Lock()
        return self

    def __getstate__(self) -> dict:
        # For transport to workers (pickle is never used to persist): locks do not pickle.
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "not built" if self._method is None else f"method={self._method}, error_bound={self._error:.2g}"
        order = "" if self._cheb is None else f", order={self._cheb.order}"
        return f"PixelAreaField(bbox={self._bbox!r}, {state}{order})"


def _max_rel(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs(approx - exact) / np.abs(exact)))


def _interpolate(func, box: Box, order: int) -> ChebyshevField:
    """Tensor-product interpolation of ``func(x, y)`` at first-kind Chebyshev nodes."""
    xmin, xmax, ymin, ymax = box.extent
    nodes = C.chebpts1(order + 1)
    xs = (nodes + 1.0) * 0.5 * (xmax - xmin) + xmin
    ys = (nodes + 1.0) * 0.5 * (ymax - ymin) + ymin
    values = func(xs[None, :], ys[:, None])  # (ny, nx)
    vander = C.chebvander(nodes, order)
    coeffs = np.linalg.solve(vander, np.linalg.solve(vander, values.T).T)
    return ChebyshevField(coeffs, box)
