"""Fixtures for the image tests: a small WCS with known pixel areas."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.fixture
def analytic_wcs():
    return AnalyticWcs()
