"""PixelAreaField: checked Chebyshev fill, exact evaluate, integrals, persistence, fallbacks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.fields import read_field


@pytest.fixture(scope="module")
def sip_4k():
    wcs = pc.SkyWcs.from_header(hsc_like_sip_header(4096, 4096))
    box = pc.Box(0, 0, 4096, 4096)
    return wcs, box, wcs.pixel_area_field(box)


def test_error_bound_verified_independently_on_4k_sip(sip_4k):
    wcs, box, field = sip_4k
    assert field.method == "chebyshev"
    assert field.error_bound <= 1e-7
    image = field.fill()
    assert image.shape == (4096, 4096) and image.dtype == np.float64
    rng = np.random.default_rng(5)
    # Random pixels, every pixel of the four edges, and a fine grid offset from the check grid.
    xs = [rng.integers(0, 4096, 20000), np.arange(4096), np.arange(4096), np.zeros(4096, int), np.full(4096, 4095)]
    ys = [rng.integers(0, 4096, 20000), np.zeros(4096, int), np.full(4096, 4095), np.arange(4096), np.arange(4096)]
    gx, gy = np.meshgrid(np.arange(17, 4096, 97), np.arange(31, 4096, 89))
    x = np.concatenate(xs + [gx.ravel()])
    y = np.concatenate(ys + [gy.ravel()])
    exact = wcs.pixel_area(x, y)
    rel = np.abs(image[y, x] / exact - 1.0)
    assert rel.max() <= 1e-7
    # The area really varies (HSC-like distortion), so the check is not trivial.
    assert image.max() / image.min() > 1.04
    # evaluate is exact, not the approximation.
    np.testing.assert_array_equal(field.evaluate(x[:100], y[:100]), exact[:100])


def test_fill_float32_out_and_apply(sip_4k):
    wcs, box, field = sip_4k
    sub = pc.Box(100, 200, 300, 100)
    f = wcs.pixel_area_field(sub)
    img64 = f.fill()
    img32 = f.fill(dtype=np.float32)
    assert img32.dtype == np.float32
    np.testing.assert_allclose(img32, img64, rtol=3e-7)
    out = np.zeros(sub.shape)
    assert f.fill(out=out) is out
    np.testing.assert_array_equal(out, img64)
    xs, ys = sub.pixel_centers()
    exact = wcs.pixel_area(xs[None, :], ys[:, None])
    np.testing.assert_array_less(np.abs(img64 / exact - 1), 1e-7)
    data = np.full(sub.shape, 3.0)
    np.testing.assert_allclose(f.multiply_image(data), 3.0 * img64, rtol=1e-15)
    np.testing.assert_allclose(f.divide_image(data), 3.0 / img64, rtol=1e-15)


def test_mean_and_integrate_match_pixel_sums(sip_4k):
    wcs, box, field = sip_4k
    image = field.fill()
    # Pixel-centre sums differ from the integral over pixel areas by ~ (1/24) lap(A): tiny here.
    assert field.mean() == pytest.approx(image.mean(), rel=1e-9)
    assert field.integrate() == pytest.approx(image.sum(), rel=1e-9)
    assert field.integrate() == pytest.approx(field.mean() * box.area, rel=1e-14)


def test_fits_round_trip_keeps_values_bound_and_wcs(tmp_path, sip_4k):
    wcs, _, _ = sip_4k
    box = pc.Box(0, 0, 512, 1024)
    field = wcs.pixel_area_field(box)
    path = tmp_path / "area.fits"
    field.write(path)
    back = read_field(path)
    assert isinstance(back, pc.PixelAreaField)
    assert back.wcs is None and back.method == "chebyshev"
    assert back.error_bound == field.error_bound and back.bbox == box
    np.testing.assert_array_equal(back.fill(), field.fill())
    x = np.array([0.0, 100.5, 511.0])
    y = np.array([0.0, 700.25, 1023.0])
    np.testing.assert_array_less(np.abs(back.evaluate(x, y) / wcs.pixel_area(x, y) - 1), 1e-7)
    assert back == pc.PixelAreaField.read(path)
    rebuilt = pc.SkyWcs.from_header(fits.Header.fromstring(back.wcs_header, sep="\n"))
    assert rebuilt == wcs
    assert "chebyshev" in repr(back)


class _Polynomial:
    """A duck-typed 'WCS' whose area is a known polynomial."""

    def pixel_area(self, x, y):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return 0.04 * (1.0 + 1e-4 * x - 2e-8 * x * y + 3e-9 * y**2)


class _Kinked:
    """An area with a kink (like a lookup table): no polynomial reaches 1e-7."""

    def pixel_area(self, x, y):
        x = np.asarray(x, dtype=float)
        return 1.0 + 1e-3 * np.abs(x - 33.3) + 0.0 * np.asarray(y, dtype=float)


def test_duck_typed_polynomial_area_is_reproduced():
    box = pc.Box(-10, 5, 300, 200)
    field = pc.PixelAreaField(_Polynomial(), box)
    assert field.error_bound <= 1e-12
    xs, ys = box.pixel_centers()
    np.testing.assert_allclose(field.fill(), _Polynomial().pixel_area(xs[None, :], ys[:, None]), rtol=1e-12)
    # Analytic mean over the box's area: integrate the polynomial over [x0-1/2, x1+1/2] etc.
    xmin, xmax, ymin, ymax = box.extent
    gx, wx = np.polynomial.legendre.leggauss(4)
    gx = 0.5 * (gx + 1) * (xmax - xmin) + xmin
    gy, wy = np.polynomial.legendre.leggauss(4)
    gy = 0.5 * (gy + 1) * (ymax - ymin) + ymin
    mean = (wy @ _Polynomial().pixel_area(gx[None, :], gy[:, None]) @ wx) / 4.0
    assert field.mean() == pytest.approx(mean, rel=1e-13)


def test_kinked_area_raises_or_falls_back_to_exact():
    box = pc.Box(0, 0, 100, 20)
    with pytest.raises(pc.PhotocalibError, match="piecewise"):
        pc.PixelAreaField(_Kinked(), box, fallback="raise").fill()
    field = pc.PixelAreaField(_Kinked(), box)
    with pytest.warns(UserWarning, match="exactly"):
        image = field.fill()
    assert field.method == "exact" and field.approximation is None
    xs, ys = box.pixel_centers()
    np.testing.assert_array_equal(image, _Kinked().pixel_area(xs[None, :], ys[:, None]))
    with pytest.raises(pc.InputError, match="cannot be written"):
        field.to_table()


def test_bad_arguments():
    with pytest.raises(pc.InputError, match="pixel_area"):
        pc.PixelAreaField(object(), pc.Box(0, 0, 3, 3))
    with pytest.raises(pc.InputError, match="Box"):
        pc.PixelAreaField(_Polynomial(), (0, 0, 3, 3))
    with pytest.raises(pc.InputError, match="max_rel_error"):
        pc.PixelAreaField(_Polynomial(), pc.Box(0, 0, 3, 3), max_rel_error=0.0)
    with pytest.raises(pc.InputError, match="fallback"):
        pc.PixelAreaField(_Polynomial(), pc.Box(0, 0, 3, 3), fallback="maybe")


def test_fields_layer_does_not_import_astrometry():
    # `import photocalib` imports every layer on purpose; stand in a bare package so that only
    # what the fields module itself imports is loaded.
    code = (
        "import sys, types, importlib.util; "
        "spec = importlib.util.find_spec('photocalib'); "
        "pkg = types.ModuleType('photocalib'); pkg.__path__ = list(spec.submodule_search_locations); "
        "sys.modules['photocalib'] = pkg; "
        "import photocalib.fields.pixel_area as m; "
        "assert 'photocalib.astrometry' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_error_bound_holds_at_every_pixel_of_4k_sip(sip_4k):
    # Every one of the 16.8 million pixels against the exact analytic area (about 10 s).
    wcs, box, field = sip_4k
    image = field.fill()
    xs, ys = box.pixel_centers()
    worst = 0.0
    for r0 in range(0, box.height, 512):
        exact = wcs.pixel_area(xs[None, :], ys[r0:r0 + 512, None])
        worst = max(worst, float(np.max(np.abs(image[r0:r0 + 512] / exact - 1.0))))
    assert worst <= field.error_bound * (1 + 1e-6) + 1e-15
    assert worst <= 1e-7
