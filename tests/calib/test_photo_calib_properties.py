"""Hypothesis properties of PhotoCalib with a real TAN-SIP SkyWcs: kind round trips, files."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import photocalib as pc
from wcs_fixtures import sip_header

WCS = pc.SkyWcs.from_header(sip_header())
BOX = pc.Box(0, 0, 300, 200)


def _calibration(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "scalar":
        return float(rng.uniform(0.1, 10.0))
    if kind == "chebyshev":
        c = rng.uniform(-0.1, 0.1, size=(3, 3))
        c[0, 0] = rng.uniform(1.0, 5.0)
        return pc.ChebyshevField(c, BOX)
    return pc.SplineField.on_grid(rng.uniform(1.0, 1.2, size=(5, 6)), BOX)


calibrations = st.sampled_from(["scalar", "chebyshev", "spline"])
seeds = st.integers(0, 2**32 - 1)
errors = st.floats(0.0, 0.5)


@given(calibrations, seeds, errors, st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]))
def test_to_kind_round_trips_exactly(kind, seed, error, start):
    calib = pc.PhotoCalib(_calibration(kind, seed), kind=start, error=error)
    other = "SURFACE_BRIGHTNESS" if start == "FLUENCE" else "FLUENCE"
    there = calib.to_kind(other, WCS, bbox=BOX)
    back = there.to_kind(start, WCS, bbox=BOX)
    assert back == calib
    assert back.error == error and back.kind is calib.kind
    xs, ys = BOX.pixel_centers()
    np.testing.assert_array_equal(back.field.fill() if back.field.bbox else back.mean(),
                                  calib.field.fill() if calib.field.bbox else calib.mean())
    # and the intermediate differs by exactly the pixel area, with the right sign
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-0.5, 299.5, 50), rng.uniform(-0.5, 199.5, 50)
    area = WCS.pixel_area(x, y)
    c0 = calib.instflux_to_nanojansky(np.ones(50), x, y)
    c1 = there.instflux_to_nanojansky(np.ones(50), x, y)
    expected = c0 * area if other == "SURFACE_BRIGHTNESS" else c0 / area
    np.testing.assert_allclose(c1, expected, rtol=4e-16 * 4)


@given(calibrations, seeds, errors)
def test_calibrating_either_kind_gives_the_same_fluence(kind, seed, error):
    rng = np.random.default_rng(seed)
    calib_f = pc.PhotoCalib(_calibration(kind, seed), error=error)
    calib_sb = calib_f.to_kind("SB", WCS, bbox=BOX)
    sb = pc.Exposure(rng.normal(10.0, 1.0, BOX.shape), np.full(BOX.shape, 2.0), wcs=WCS)
    a = calib_sb.calibrate_image(sb)
    b = calib_f.calibrate_image(sb.to_fluence())
    # c_F·A·s (one fill of the product) against c_F·(s·A): the same numbers in another order
    np.testing.assert_allclose(a.image, b.image, rtol=4 * np.finfo(float).eps)
    np.testing.assert_allclose(a.variance, b.variance, rtol=8 * np.finfo(float).eps)
    assert a.unit == b.unit == pc.calib.photo_calib.u.nJy


@settings(max_examples=10)  # each example writes and reads a file
@given(calibrations, seeds, errors, st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]))
def test_fits_round_trip_keeps_kind_error_and_values(tmp_path_factory, kind, seed, error, k):
    calib = pc.PhotoCalib(_calibration(kind, seed), error=error).to_kind(k, WCS, bbox=BOX)
    path = tmp_path_factory.mktemp("calib") / "c.fits"
    calib.write(path)
    back = pc.PhotoCalib.read(path)
    assert back == calib
    assert back.kind is calib.kind and back.error == calib.error
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-0.5, 299.5, 50), rng.uniform(-0.5, 199.5, 50)
    # the area factor is stored as its checked Chebyshev fill (<= 1e-7 relative, by contract)
    rtol = 1e-7 if k == "SURFACE_BRIGHTNESS" else 0
    np.testing.assert_allclose(back.instflux_to_nanojansky(np.ones(50), x, y),
                               calib.instflux_to_nanojansky(np.ones(50), x, y), rtol=rtol, atol=0)
