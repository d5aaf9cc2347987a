"""Exposure with a real SkyWcs (TAN-SIP across RA = 0): conversions, FITS round trips, properties."""

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

import photocalib as pc
from photocalib.image import ARCSEC2_TO_SR, MaskPlane
from wcs_fixtures import sip_header

SHAPE = (200, 300)  # the sip_header box
WCS = pc.SkyWcs.from_header(sip_header())
_YS, _XS = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
EXACT_AREA = WCS.pixel_area(_XS, _YS)


def test_area_image_matches_exact_jacobian():
    exp = pc.Exposure(np.ones(SHAPE), wcs=WCS)
    # fill() of the PixelAreaField is checked to 1e-7 relative by construction (contract)
    np.testing.assert_allclose(exp.pixel_area_image(), EXACT_AREA, rtol=1e-7, atol=0)
    assert exp.pixel_area_field().bbox == exp.bbox
    # the area varies by ~2 %: a constant pixel area would be visibly wrong
    assert EXACT_AREA.max() / EXACT_AREA.min() > 1.015


def test_to_fluence_multiplies_by_area_exactly(rng):
    img = rng.normal(100, 10, SHAPE)
    var = rng.uniform(1, 4, SHAPE)
    exp = pc.Exposure(img, var, wcs=WCS, unit="count/arcsec2")
    fl = exp.to_fluence()
    area = exp.pixel_area_image()
    np.testing.assert_array_equal(fl.image, img * area)
    np.testing.assert_array_equal(fl.variance, var * np.square(area))  # A² cached once
    np.testing.assert_allclose(fl.image, img * EXACT_AREA, rtol=1e-7)
    assert fl.unit == u.count
    # a uniform sky of 1 count/arcsec² sums to the sky area of the detector
    ones = pc.Exposure(np.ones(SHAPE), wcs=WCS).to_fluence().image.sum()
    assert ones == pytest.approx(EXACT_AREA.sum(), rel=1e-9)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]),
    st.floats(1e-3, 1e6),
)
def test_property_conversions_are_inverse(seed, dtype, kind, scale):
    rng = np.random.default_rng(seed)
    img = (scale * rng.normal(size=SHAPE)).astype(dtype)
    var = (scale**2 * rng.uniform(0.1, 1, SHAPE)).astype(dtype)
    exp = pc.Exposure(img, var, wcs=WCS, kind=kind)
    other = "SURFACE_BRIGHTNESS" if kind == "FLUENCE" else "FLUENCE"
    there = exp.to_kind(other)
    back = there.to_kind(kind)
    assert back.kind is exp.kind and back.unit == exp.unit
    assert back.image.dtype == dtype
    # x·A/A and x/A·A are x up to the two roundings of the two operations
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(back.image, img, rtol=2 * eps, atol=0)
    np.testing.assert_allclose(back.variance, var, rtol=4 * eps, atol=0)
    # and the intermediate is the analytic one
    factor = EXACT_AREA if other == "FLUENCE" else 1.0 / EXACT_AREA
    np.testing.assert_allclose(there.image, img.astype(np.float64) * factor, rtol=1e-7 + 2 * eps)


@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(["FLUENCE", "SURFACE_BRIGHTNESS"]),
    st.sampled_from(["adu", "nJy", "electron"]),
)
def test_property_fits_round_trip_keeps_kind_wcs_values(tmp_path_factory, seed, dtype, kind, unit):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=SHAPE).astype(dtype)
    var = rng.uniform(0.1, 1, SHAPE).astype(dtype)
    mask = rng.integers(0, 2**32, SHAPE, dtype=np.uint64).astype(np.uint32)
    if kind == "SURFACE_BRIGHTNESS":
        unit = f"{unit}/arcsec2"
    exp = pc.Exposure(img, var, mask, wcs=WCS, kind=kind, unit=unit, metadata={"VISIT": seed})
    path = tmp_path_factory.mktemp("rt") / "exp.fits"
    exp.write(path)
    back = pc.Exposure.read(path)
    assert back.kind is exp.kind
    assert back.unit == exp.unit
    assert back.wcs == WCS
    np.testing.assert_array_equal(back.image, img)
    np.testing.assert_array_equal(back.variance, var)
    np.testing.assert_array_equal(back.mask, mask)
    assert back.metadata["VISIT"] == seed
    # the WCS read back gives the same pixel areas and sky positions
    np.testing.assert_array_equal(back.wcs.pixel_area(_XS[::50, ::50], _YS[::50, ::50]), EXACT_AREA[::50, ::50])


def test_pixar_keywords_as_jwst_writes_them(tmp_path):
    path = tmp_path / "e.fits"
    pc.Exposure(np.ones(SHAPE, np.float32), wcs=WCS).write(path)
    with fits.open(path) as hdul:
        h = hdul[0].header
    area = float(WCS.pixel_area(149.5, 99.5))
    assert h["PIXAR_A2"] == pytest.approx(area, rel=1e-15)
    assert h["PIXAR_SR"] == pytest.approx(area * (math.pi / 648000) ** 2, rel=1e-14)
    assert ARCSEC2_TO_SR == pytest.approx(2.350443053909789e-11, rel=1e-15)
    assert h["PCKIND"] == "SURFACE_BRIGHTNESS"
    assert h["CTYPE1"] == "RA---TAN-SIP" and h["A_ORDER"] == 3


def test_read_foreign_file_with_sip_wcs(tmp_path):
    """A file written by someone else: plain primary image with its WCS and no PCKIND."""
    h = sip_header()
    h["BUNIT"] = "adu"
    path = tmp_path / "foreign.fits"
    fits.PrimaryHDU(np.ones(SHAPE, np.int16), header=h).writeto(path)
    exp = pc.Exposure.read(path)
    assert exp.wcs == WCS
    assert exp.kind is pc.ImageKind.SURFACE_BRIGHTNESS  # flat-fielded images are SB (docs/design.md)
    assert exp.image.dtype == np.float64
    assert "A_ORDER" not in exp.metadata and "NAXIS1" not in exp.metadata


def test_photo_calib_travels_through_conversions_and_files(tmp_path, rng):
    calib = pc.PhotoCalib(2.0, error=0.01)
    box = pc.Box(0, 0, SHAPE[1], SHAPE[0])
    sb_calib = calib.to_kind("SURFACE_BRIGHTNESS", WCS, bbox=box)
    exp = pc.Exposure(rng.normal(10, 1, SHAPE), wcs=WCS, photo_calib=sb_calib,
                      mask=np.full(SHAPE, MaskPlane.EDGE, np.uint32))
    fl = exp.to_fluence()
    assert fl.photo_calib == calib
    # calibrating the SB image with the SB calib equals calibrating the fluence image
    np.testing.assert_allclose(
        sb_calib.calibrate_image(exp).image, calib.calibrate_image(fl).image, rtol=1e-15
    )
    path = tmp_path / "e.fits"
    exp.write(path)
    back = pc.Exposure.read(path)
    assert back.photo_calib.kind is pc.ImageKind.SURFACE_BRIGHTNESS
    # the persisted area factor is recognised as this WCS's and cancels exactly
    assert back.photo_calib.to_kind("FLUENCE", back.wcs) == calib
    np.testing.assert_allclose(
        back.photo_calib.field.fill(), sb_calib.field.fill(), rtol=1e-15
    )


def test_wcs_header_that_cannot_be_written(tmp_path):
    class NoHeader:
        def pixel_area(self, x, y):
            return np.full(np.broadcast(x, y).shape, 0.04)

        def pixel_area_field(self, box):
            return pc.ConstantField(0.04, box)

        def to_header(self):
            raise pc.InputError("lookup tables have no header form")

    with pytest.raises(pc.InputError, match="cannot write the exposure's WCS"):
        pc.Exposure(np.ones((3, 3)), wcs=NoHeader()).write(tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()


def test_background_mapping_round_trips(tmp_path, rng):
    box = pc.Box(0, 0, SHAPE[1], SHAPE[0])
    flat_ratio = pc.ChebyshevField([[1.0, 0.01], [0.02, 0.0]], box)
    mapping = WCS.pixel_area_field(box) * flat_ratio
    exp = pc.Exposure(np.ones(SHAPE), wcs=WCS, kind="FLUENCE", background_mapping=mapping)
    path = tmp_path / "e.fits"
    exp.write(path)
    back = pc.Exposure.read(path)
    np.testing.assert_allclose(back.background_mapping.fill(), mapping.fill(), rtol=1e-15)
    with pytest.raises(pc.InputError, match="background_mapping box"):
        exp.replace(image=np.ones((5, 5)), wcs=None)


def test_astropy_wcs_is_wrapped_and_big_endian_kept(rng):
    img = rng.normal(size=SHAPE).astype(">f4")
    exp = pc.Exposure(img, wcs=WCS.astropy_wcs)
    assert isinstance(exp.wcs, pc.SkyWcs) and exp.wcs == WCS
    assert exp.image.dtype == np.float32 and exp.image.dtype.isnative
    np.testing.assert_array_equal(exp.image, img)


def test_constant_sb_calib_converts_with_the_exposure_box(rng):
    calib = pc.PhotoCalib(3.0, kind="SURFACE_BRIGHTNESS", error=0.02)
    exp = pc.Exposure(rng.normal(10, 1, SHAPE), wcs=WCS, photo_calib=calib)
    fl = exp.to_fluence()
    assert fl.photo_calib.kind is pc.ImageKind.FLUENCE and fl.photo_calib.error == 0.02
    x, y = rng.uniform(0, 299, 20), rng.uniform(0, 199, 20)
    np.testing.assert_allclose(fl.photo_calib.field.evaluate(x, y), 3.0 / WCS.pixel_area(x, y), rtol=1e-15)
    # the same fluence in nJy either way: s·A·(3/A) against 3·s, both A from the same fill
    np.testing.assert_allclose(fl.photo_calib.calibrate_image(fl).image, calib.calibrate_image(exp).image,
                               rtol=8 * np.finfo(float).eps)
    assert fl.to_surface_brightness().photo_calib == calib


def test_equal_wcs_objects_share_the_cached_area():
    from photocalib.image import clear_area_cache

    clear_area_cache()
    a = pc.Exposure(np.ones(SHAPE), wcs=pc.SkyWcs.from_header(sip_header()))
    b = pc.Exposure(np.ones(SHAPE), wcs=pc.SkyWcs.from_header(sip_header()))
    assert a.wcs is not b.wcs and a.wcs == b.wcs
    assert a.pixel_area_image() is b.pixel_area_image()
    other = sip_header()
    other["CRVAL2"] = -31.0
    c = pc.Exposure(np.ones(SHAPE), wcs=pc.SkyWcs.from_header(other))
    assert c.pixel_area_image() is not a.pixel_area_image()
    assert not np.array_equal(c.pixel_area_image(), a.pixel_area_image())
