r"""SkyGrid: a tract/patch-like TAN pixel grid on the sky, the target of warps and coadds.

Its pixel area is not uniform (a gnomonic projection's pixels shrink away from the tangent
point as :math:`(1+\rho^2)^{-3/2}`); the grid knows it exactly and records it in its outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..geom import Box

__all__ = ["SkyGrid"]

_DEG = math.pi / 180.0


@dataclass(frozen=True)
class SkyGrid:
    r"""A TAN (gnomonic) pixel grid about ``(ra, dec)``, cut into square patches.

    The tangent point is the centre of the grid; ``+y`` points along position angle
    ``rotation`` (degrees east of north) and ``+x`` 90° from it to the west, as for an image
    displayed north-up, east-left when ``rotation = 0``. Pixel ``(x, y)`` of the whole grid
    (the "tract") is pixel ``(x - box.x0, y - box.y0)`` of patch ``(i, j)``.

    The pixel area at tract pixel :math:`(x, y)`, with :math:`\rho` the distance from the
    tangent point in the projection plane (radians), is exactly
    :math:`A = s^2 (1 + \rho^2)^{-3/2}` arcsec² (:meth:`pixel_area`), where ``s`` is
    ``pixel_scale``: 1 at the centre, ≈ 1 − 1.5ρ² away from it (2.3e-4 at 0.5°, 3.7e-3 at 2°).

    Parameters
    ----------
    ra, dec : float
        Tangent point (grid centre), degrees.
    pixel_scale : float
        Pixel side at the tangent point, arcsec.
    width, height : int
        Grid size in pixels.
    patch_size : int
        Side of a patch in pixels (the last patches in x and y may be smaller).
    rotation : float
        Position angle of the grid's ``+y`` axis, degrees east of north.

    Raises
    ------
    InputError
        Non-finite or out-of-range centre, non-positive scale, size or patch size.

    Examples
    --------
    >>> grid = SkyGrid(150.0, 2.0, 0.2, 4000, 4000, patch_size=1000)
    >>> grid.n_patches
    (4, 4)
    >>> wcs, box = grid.patch(1, 2)
    >>> box
    Box(x0=1000, y0=2000, width=1000, height=1000)
    """

    ra: float
    dec: float
    pixel_scale: float
    width: int
    height: int
    patch_size: int = 4000
    rotation: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ra", "dec", "pixel_scale", "rotation"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise InputError(f"SkyGrid.{name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if not -90.0 <= self.dec <= 90.0:
            raise InputError(f"SkyGrid.dec must be within [-90, 90] degrees, got {self.dec}")
        if self.pixel_scale <= 0:
            raise InputError(f"SkyGrid.pixel_scale must be positive arcsec, got {self.pixel_scale}")
        for name in ("width", "height", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
                raise InputError(f"SkyGrid.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "ra", self.ra % 360.0)

    # -- the grid --------------------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        """The whole grid (tract) in its own pixels."""
        return Box(0, 0, self.width, self.height)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)

    @property
    def crpix(self) -> tuple[float, float]:
        """0-based tract pixel of the tangent point (the grid centre)."""
        return (0.5 * (self.width - 1), 0.5 * (self.height - 1))

    def _cd(self) -> np.ndarray:
        s = self.pixel_scale / 3600.0
        c = math.cos(self.rotation * _DEG)
        n = math.sin(self.rotation * _DEG)
        # columns: d(xi, eta)/dx and d(xi, eta)/dy; +y at position angle `rotation`, +x to the west
        return np.array([[-s * c, s * n], [s * n, s * c]])

    def header(self, box: Box | None = None) -> fits.Header:
        """FITS TAN header of the grid, or of the sub-image ``box`` (tract pixels).

        Parameters
        ----------
        box : Box, optional
            A sub-image of the grid (e.g. a patch); its pixel ``(0, 0)`` is tract pixel
            ``(box.x0, box.y0)``.

        Returns
        -------
        astropy.io.fits.Header
        """
        box = self.bbox if box is None else box
        cx, cy = self.crpix
        cd = self._cd()
        h = fits.Header()
        h["NAXIS"] = 2
        h["NAXIS1"] = box.width
        h["NAXIS2"] = box.height
        h["CTYPE1"] = "RA---TAN"
        h["CTYPE2"] = "DEC--TAN"
        h["CRVAL1"] = self.ra
        h["CRVAL2"] = self.dec
        h["CRPIX1"] = cx - box.x0 + 1.0  # FITS pixels are 1-based
        h["CRPIX2"] = cy - box.y0 + 1.0
        h["CD1_1"] = cd[0, 0]
        h["CD1_2"] = cd[0, 1]
        h["CD2_1"] = cd[1, 0]
        h["CD2_2"] = cd[1, 1]
        h["RADESYS"] = "ICRS"
        return h

    def _sky_wcs(self, box: Box) -> Any:
        from ..astrometry import SkyWcs

        return SkyWcs.from_header(self.header(box))

    @property
    def wcs(self) -> Any:
        """SkyWcs of the whole grid."""
        return self._sky_wcs(self.bbox)

    # -- patches ---------------------------------------------------------------------------------
    @property
    def n_patches(self) -> tuple[int, int]:
        """Number of patches along x and y."""
        return (-(-self.width // self.patch_size), -(-self.height // self.patch_size))

    def patch_box(self, i: int, j: int) -> Box:
        """The tract pixels of patch ``(i, j)`` (``i`` along x, ``j`` along y)."""
        nx, ny = self.n_patches
        if not (0 <= i < nx and 0 <= j < ny):
            raise InputError(f"patch ({i}, {j}) is outside the grid's {nx}x{ny} patches")
        x0 = i * self.patch_size
        y0 = j * self.patch_size
        return Box(x0, y0, min(self.patch_size, self.width - x0), min(self.patch_size, self.height - y0))

    def patch(self, i: int, j: int) -> tuple[Any, Box]:
        """The WCS and tract box of patch ``(i, j)``.

        Returns
        -------
        wcs : SkyWcs
            WCS of the patch image (its pixel ``(0, 0)`` is tract pixel ``(box.x0, box.y0)``).
        box : Box
            The patch in tract pixels; the patch image has shape ``box.shape``.
        """
        box = self.patch_box(i, j)
        return self._sky_wcs(box), box

    def patches_overlapping(self, wcs: Any, shape: tuple[int, int]) -> list[tuple[int, int]]:
        """Patches that an image of ``shape`` with WCS ``wcs`` overlaps (from its outline).

        Parameters
        ----------
        wcs : SkyWcs
            WCS of the image.
        shape : tuple of int
            Its ``(ny, nx)``.

        Returns
        -------
        list of (i, j)
        """
        ny, nx = shape
        # the image outline, densely enough that a distorted edge is followed
        t = np.linspace(0.0, 1.0, 33)
        xs = np.concatenate([t * (nx - 1), np.full_like(t, nx - 1), t * (nx - 1), np.zeros_like(t)])
        ys = np.concatenate([np.zeros_like(t), t * (ny - 1), np.full_like(t, ny - 1), t * (ny - 1)])
        ra, dec = wcs.pixel_to_sky(xs, ys)
        gx, gy = self.wcs.sky_to_pixel(ra, dec)
        ok = np.isfinite(gx) & np.isfinite(gy)
        if not ok.any():
            return []
        x_lo = max(0, int(np.floor(gx[ok].min())))
        x_hi = min(self.width - 1, int(np.ceil(gx[ok].max())))
        y_lo = max(0, int(np.floor(gy[ok].min())))
        y_hi = min(self.height - 1, int(np.ceil(gy[ok].max())))
        if x_hi < x_lo or y_hi < y_lo:
            return []
        ps = self.patch_size
        return [
            (i, j)
            for j in range(y_lo // ps, y_hi // ps + 1)
            for i in range(x_lo // ps, x_hi // ps + 1)
        ]

    # -- pixel area ------------------------------------------------------------------------------
    def pixel_area(self, x, y) -> np.ndarray:
        r"""Exact pixel area in arcsec² at tract pixels ``(x, y)``: :math:`s^2 (1+\rho^2)^{-3/2}`.

        Parameters
        ----------
        x, y : array_like
            0-based tract pixel coordinates, broadcastable.

        Returns
        -------
        numpy.ndarray
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        cx, cy = self.crpix
        rad = self.pixel_scale / 3600.0 * _DEG
        rho2 = ((x - cx) ** 2 + (y - cy) ** 2) * rad * rad  # the CD matrix is a scaled rotation
        return self.pixel_scale**2 * (1.0 + rho2) ** -1.5

    def pixel_area_field(self, box: Box | None = None) -> Any:
        """The pixel area on ``box`` (tract pixels; default the whole grid) as a BoundedField.

        The field is the patch WCS's ``pixel_area_field`` in the box's own pixels (0-based
        at ``box.x0, box.y0``), which is what a warp onto that patch records.
        """
        box = self.bbox if box is None else box
        return self._sky_wcs(box).pixel_area_field(Box(0, 0, box.width, box.height))
