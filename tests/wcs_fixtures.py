"""WCS stand-ins and headers shared by the image and calib tests."""

from __future__ import annotations

import numpy as np

from photocalib.fields import BoundedField


class PixelAreaField(BoundedField):
    """Stand-in for photocalib's PixelAreaField: evaluates the stand-in WCS's area exactly."""

    def __init__(self, wcs, box):
        self.wcs = wcs
        self._box = box

    @property
    def bbox(self):
        return self._box

    def _evaluate(self, x, y):
        return self.wcs.pixel_area(x, y)


class AnalyticWcs:
    """Stand-in WCS: pixel area 0.04 (1 + 1e-3 x + 2e-3 y + 1e-6 x y) arcsec²."""

    def __init__(self):
        self._fields = {}
        self.calls = 0

    def pixel_area(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return 0.04 * (1 + 1e-3 * x + 2e-3 * y + 1e-6 * x * y)

    def pixel_area_field(self, box):
        self.calls += 1
        return self._fields.setdefault(box, PixelAreaField(self, box))

    def to_header(self):
        from astropy.io import fits

        return fits.Header()


def sip_header(nx=300, ny=200):
    """A TAN-SIP header (order 3) whose pixel area varies by a few per cent over the box."""
    from astropy.io import fits

    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    h["CTYPE1"] = "RA---TAN-SIP"
    h["CTYPE2"] = "DEC--TAN-SIP"
    h["CRVAL1"] = 359.95  # straddles RA = 0
    h["CRVAL2"] = -30.0
    h["CRPIX1"] = nx / 2 + 0.5
    h["CRPIX2"] = ny / 2 + 0.5
    h["CD1_1"] = -5.0e-5
    h["CD1_2"] = 1.0e-6
    h["CD2_1"] = 1.5e-6
    h["CD2_2"] = 5.0e-5
    h["A_ORDER"] = 3
    h["B_ORDER"] = 3
    h["A_2_0"] = 2.0e-5
    h["A_1_1"] = -1.0e-5
    h["A_0_2"] = 5.0e-6
    h["A_3_0"] = 1.0e-7
    h["B_0_2"] = 1.5e-5
    h["B_1_1"] = 8.0e-6
    h["B_2_0"] = -4.0e-6
    h["B_0_3"] = -1.0e-7
    return h
