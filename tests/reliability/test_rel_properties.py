"""Hypothesis properties that complement tests/fields, tests/image and tests/calib: algebraic
identities of fields (associativity, inverses, scalars), exposure kind conversions as exact
inverses under random TAN-SIP distortions (with NaN pixels and masks carried through, and FITS
round trips), and PhotoCalib's flux/magnitude maps as inverses with linear error propagation."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header

PROPS = settings(max_examples=20, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BOX = pc.Box(-3, 5, 40, 30)
seeds = st.integers(0, 2**32 - 1)


def _field(kind: str, seed: int, box: pc.Box = BOX) -> pc.BoundedField:
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return pc.ConstantField(float(rng.uniform(0.3, 4.0)), box)
    if kind == "chebyshev":
        c = rng.uniform(-1, 1, size=(rng.integers(1, 4), rng.integers(1, 4)))
        c[0, 0] = 1.5 * np.abs(c).sum() + 0.2
        return pc.ChebyshevField(c, box)
    if kind == "spline":
        return pc.SplineField.on_grid(1.5 + 0.3 * rng.uniform(-1, 1, size=(5, 6)), box)
    return _field("chebyshev", seed + 1, box) * _field("spline", seed + 2, box)  # a product


kinds = st.sampled_from(["constant", "chebyshev", "spline", "product"])


def _xy(seed: int, box: pc.Box = BOX, n: int = 50):
    rng = np.random.default_rng(seed)
    xmin, xmax, ymin, ymax = box.extent
    return rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)


# -- field algebra -------------------------------------------------------------------------------
@PROPS
@given(kinds, kinds, kinds, seeds, seeds, seeds)
def test_products_associate_and_commute(ka, kb, kc, sa, sb, sc):
    a, b, c = _field(ka, sa), _field(kb, sb), _field(kc, sc)
    x, y = _xy(sa ^ sb)
    left = ((a * b) * c).evaluate(x, y)
    right = (a * (b * c)).evaluate(x, y)
    swapped = (c * (b * a)).evaluate(x, y)
    np.testing.assert_allclose(left, right, rtol=4e-16 * 4, atol=0)
    np.testing.assert_allclose(left, swapped, rtol=4e-16 * 4, atol=0)
    np.testing.assert_allclose(left, a.evaluate(x, y) * b.evaluate(x, y) * c.evaluate(x, y), rtol=1e-15)


@PROPS
@given(kinds, kinds, seeds, seeds, st.floats(0.01, 100.0))
def test_quotients_invert_products_and_scalars(ka, kb, sa, sb, k):
    a, b = _field(ka, sa), _field(kb, sb)
    x, y = _xy(sb)
    va = a.evaluate(x, y)
    np.testing.assert_allclose(((a * b) / b).evaluate(x, y), va, rtol=1e-15)
    np.testing.assert_allclose((1.0 / (1.0 / a)).evaluate(x, y), va, rtol=1e-15)
    np.testing.assert_allclose(((k * a) / k).evaluate(x, y), va, rtol=1e-15)
    np.testing.assert_allclose((a / b).evaluate(x, y), va / b.evaluate(x, y), rtol=1e-15)
    # mean is linear in a scalar factor and fill() matches evaluate() of the same expression
    assert (k * a).mean() == pytest.approx(k * a.mean(), rel=1e-13)
    q = a / b
    yy, xx = np.mgrid[BOX.y0:BOX.y0 + BOX.height, BOX.x0:BOX.x0 + BOX.width]
    np.testing.assert_allclose(q.fill(), q.evaluate(xx.astype(float), yy.astype(float)), rtol=1e-15)


@PROPS
@given(kinds, seeds)
def test_multiply_then_divide_image_is_the_identity(ka, sa):
    a = _field(ka, sa)
    img = np.random.default_rng(sa).normal(5.0, 2.0, (BOX.height, BOX.width))
    back = a.divide_image(a.multiply_image(img))
    np.testing.assert_allclose(back, img, rtol=1e-15, atol=1e-15)
    f32 = img.astype(np.float32)
    back32 = a.divide_image(a.multiply_image(f32))
    assert back32.dtype == np.float32
    np.testing.assert_allclose(back32, f32, rtol=3e-7, atol=3e-7)


# -- exposures: kinds under random distortions ---------------------------------------------------------
@st.composite
def sip_wcs(draw):
    header = hsc_like_sip_header(
        nx=48, ny=32, ra=draw(st.floats(0.0, 359.9)), dec=draw(st.floats(-85.0, 85.0)),
        scale_arcsec=draw(st.floats(0.05, 1.0)),
        axis_pixel=(draw(st.floats(-8000.0, 8000.0)), draw(st.floats(-8000.0, 8000.0))),
        k1=draw(st.floats(0.0, 1e-9)), rotation_deg=draw(st.floats(-180.0, 180.0)))
    return pc.SkyWcs.from_header(header)


@PROPS
@given(sip_wcs(), seeds, st.sampled_from([np.float32, np.float64]))
def test_kind_round_trip_is_exact_to_rounding(wcs, seed, dtype):
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 10.0, (32, 48)).astype(dtype)
    img[3, 4] = np.nan
    mask = rng.integers(0, 256, (32, 48)).astype(np.uint32)
    sb = pc.Exposure(img, variance=np.abs(img) + 1, mask=mask, wcs=wcs, kind=pc.ImageKind.SURFACE_BRIGHTNESS,
                     unit="count/arcsec2")
    fl = sb.to_fluence()
    area = wcs.pixel_area_field(sb.bbox).fill()
    eps = np.finfo(dtype).eps
    # fluence = sb × A exactly (to one rounding), variance × A², mask and NaNs carried unchanged
    np.testing.assert_allclose(fl.image, img.astype(np.float64) * area, rtol=4 * eps)
    np.testing.assert_allclose(fl.variance, (np.abs(img) + 1).astype(np.float64) * area**2, rtol=6 * eps)
    np.testing.assert_array_equal(np.isnan(fl.image), np.isnan(img))
    np.testing.assert_array_equal(fl.mask, mask)
    assert fl.kind is pc.ImageKind.FLUENCE and fl.unit == u.Unit("count")
    back = fl.to_surface_brightness()
    np.testing.assert_allclose(back.image, img, rtol=8 * eps)
    assert back.kind is pc.ImageKind.SURFACE_BRIGHTNESS and back.unit == sb.unit
    assert fl.to_fluence() is fl and sb.to_surface_brightness() is sb


@PROPS
@given(sip_wcs(), seeds, st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]))
def test_exposure_file_round_trip_keeps_everything(tmp_path_factory, wcs, seed, kind):
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 10.0, (32, 48)).astype(np.float32)
    img[rng.integers(0, 32), rng.integers(0, 48)] = np.inf
    exp = pc.Exposure(img, variance=rng.uniform(1, 2, (32, 48)).astype(np.float32),
                      mask=rng.integers(0, 2**8, (32, 48)).astype(np.uint32), wcs=wcs, kind=kind,
                      unit="count" if kind == "FLUENCE" else "count/arcsec2")
    path = tmp_path_factory.getbasetemp() / "prop-exp.fits"
    exp.write(path)
    got = pc.Exposure.read(path)
    np.testing.assert_array_equal(got.image, exp.image)
    np.testing.assert_array_equal(got.variance, exp.variance)
    np.testing.assert_array_equal(got.mask, exp.mask)
    assert got.kind is exp.kind and got.unit == exp.unit
    x, y = np.array([0.0, 47.0, 20.5]), np.array([0.0, 31.0, 10.25])
    np.testing.assert_allclose(got.wcs.pixel_area(x, y), wcs.pixel_area(x, y), rtol=1e-12)
    np.testing.assert_allclose(np.array(got.wcs.pixel_to_sky(x, y)), np.array(wcs.pixel_to_sky(x, y)),
                               rtol=0, atol=1e-10)


# -- PhotoCalib maps -------------------------------------------------------------------------------------
WCS = pc.SkyWcs.from_header(hsc_like_sip_header(nx=40, ny=30, axis_pixel=(-2000.0, -1000.0)))
CBOX = pc.Box(0, 0, 40, 30)


@PROPS
@given(st.sampled_from(["scalar", "chebyshev", "spline"]), seeds,
       st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]), st.floats(0.0, 0.3))
def test_flux_and_magnitude_maps_are_inverse(kind, seed, ckind, error):
    rng = np.random.default_rng(seed)
    value = float(rng.uniform(0.1, 10.0)) if kind == "scalar" else _field(
        "chebyshev" if kind == "chebyshev" else "spline", seed, CBOX)
    calib = pc.PhotoCalib(value, kind=ckind, error=error)
    x, y = _xy(seed, CBOX, 30)
    inst = 10 ** rng.uniform(0, 6, 30)
    err = inst * rng.uniform(0.001, 0.2, 30)
    flux, flux_err = calib.instflux_to_nanojansky(inst, x, y, instflux_err=err)
    np.testing.assert_allclose(calib.nanojansky_to_instflux(flux, x, y), inst, rtol=1e-14)
    # errors propagate linearly: the relative error is kept (calibration error excluded)
    np.testing.assert_allclose(flux_err / flux, err / inst, rtol=1e-14)
    mag = calib.instflux_to_magnitude(inst, x, y)
    np.testing.assert_allclose(mag, -2.5 * np.log10(flux) + 31.4, rtol=0, atol=1e-12)
    np.testing.assert_allclose(calib.magnitude_to_instflux(mag, x, y), inst, rtol=1e-12)
    # with the calibration error the flux error grows in quadrature, never shrinks
    _, with_cal = calib.instflux_to_nanojansky(inst, x, y, instflux_err=err, include_calibration_error=True)
    np.testing.assert_allclose(with_cal, np.hypot(flux_err, error * flux), rtol=1e-12)
    # non-positive instrumental fluxes have no magnitude: NaN, never a number
    assert np.all(np.isnan(calib.instflux_to_magnitude(np.array([0.0, -5.0]), x[:2], y[:2])))


@PROPS
@given(st.sampled_from(["scalar", "chebyshev"]), seeds, st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]))
def test_calibrate_then_uncalibrate_is_the_identity(kind, seed, ckind):
    rng = np.random.default_rng(seed)
    value = float(rng.uniform(0.1, 10.0)) if kind == "scalar" else _field("chebyshev", seed, CBOX)
    calib = pc.PhotoCalib(value, kind=ckind)
    unit = "count" if ckind == "FLUENCE" else "count/arcsec2"
    exp = pc.Exposure(rng.normal(50.0, 5.0, (30, 40)), variance=np.full((30, 40), 25.0), wcs=WCS,
                      kind=ckind, unit=unit)
    cal = calib.calibrate_image(exp)
    assert cal.kind is pc.ImageKind.FLUENCE
    # the calibrated image sums to the calibrated fluxes of its pixels
    yy, xx = np.mgrid[0:30, 0:40]
    expected = calib.instflux_to_nanojansky(exp.image.ravel(), xx.ravel().astype(float),
                                            yy.ravel().astype(float)).reshape(30, 40)
    np.testing.assert_allclose(cal.image, expected, rtol=1e-13)
    back = calib.uncalibrate_image(cal)
    assert back.kind is exp.kind
    np.testing.assert_allclose(back.image, exp.image, rtol=1e-13)
    np.testing.assert_allclose(back.variance, exp.variance, rtol=1e-13)
    other = pc.ImageKind.SURFACE_BRIGHTNESS if ckind == "FLUENCE" else pc.ImageKind.FLUENCE
    with pytest.raises(pc.ImageKindError):
        calib.calibrate_image(exp.to_fluence() if other is pc.ImageKind.FLUENCE else exp.to_surface_brightness())
