"""Exposure: validation, exact kind conversions, the area cache, NDData."""

import re

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty
from hypothesis import given
from hypothesis import strategies as st

import photocalib as pc
from photocalib.image import MaskPlane, clear_area_cache, pixel_area_image


def _area_truth(wcs, shape):
    ny, nx = shape
    return wcs.pixel_area(np.arange(nx)[None, :], np.arange(ny)[:, None])


def test_top_level_names():
    assert pc.Exposure is pc.image.Exposure
    assert pc.ImageKind.FLUENCE.value == "FLUENCE"
    assert int(MaskPlane.SUSPECT) == 128 and int(MaskPlane.NO_DATA) == 16


def test_defaults_and_bbox():
    exp = pc.Exposure(np.zeros((3, 4), dtype=np.int16))
    assert exp.image.dtype == np.float64
    assert exp.kind is pc.ImageKind.SURFACE_BRIGHTNESS
    assert exp.unit == u.count / u.arcsec**2
    assert exp.bbox == pc.Box(0, 0, 4, 3) and exp.shape == (3, 4)
    assert exp.mask.dtype == np.uint32 and not exp.mask.any()
    assert exp.variance is None
    assert pc.Exposure(np.zeros((2, 2)), kind="fluence").unit == u.count


def test_arrays_are_readonly_views_not_copies():
    img = np.ones((5, 6), dtype=np.float32)
    exp = pc.Exposure(img)
    assert np.shares_memory(exp.image, img)
    with pytest.raises(ValueError):
        exp.image[0, 0] = 2.0
    img[0, 0] = 3.0  # the caller's array stays writeable
    with pytest.raises(AttributeError):
        exp.kind = pc.ImageKind.FLUENCE


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros(5)}, "image must be 2-D"),
        ({"image": np.zeros((2, 3)), "variance": np.zeros((3, 2))}, "variance shape"),
        ({"image": np.zeros((2, 3)), "mask": np.zeros((2, 2), np.uint32)}, "mask shape"),
        ({"image": np.zeros((2, 3)), "kind": "brightness"}, "unknown image kind"),
        ({"image": np.zeros((2, 3)), "unit": "furlongs per fortnight"}, "not an astropy unit"),
        ({"image": np.zeros((2, 3)), "mask": -np.ones((2, 3), np.int32)}, "negative"),
        ({"image": np.zeros((2, 3)), "wcs": object()}, "SkyWcs"),
    ],
)
def test_bad_input_raises_input_error(kwargs, match):
    with pytest.raises(pc.InputError, match=match):
        pc.Exposure(**kwargs)


def test_boolean_mask_becomes_bad():
    m = np.array([[True, False], [False, True]])
    exp = pc.Exposure(np.zeros((2, 2)), mask=m)
    np.testing.assert_array_equal(exp.mask, np.where(m, MaskPlane.BAD, 0))


def test_to_fluence_is_exact_analytic(analytic_wcs, rng):
    shape = (33, 47)
    img = rng.normal(100, 5, shape)
    var = rng.uniform(1, 2, shape)
    exp = pc.Exposure(img, variance=var, wcs=analytic_wcs, unit="nJy/arcsec2")
    fl = exp.to_fluence()
    area = _area_truth(analytic_wcs, shape)
    assert fl.kind is pc.ImageKind.FLUENCE
    assert fl.unit == u.nJy
    np.testing.assert_array_equal(fl.image, img * area)
    np.testing.assert_array_equal(fl.variance, var * area**2)
    np.testing.assert_array_equal(fl.mask, exp.mask)
    assert fl.to_fluence() is fl
    back = fl.to_surface_brightness()
    assert back.unit == u.nJy / u.arcsec**2
    np.testing.assert_allclose(back.image, img, rtol=2e-16 * 4)
    np.testing.assert_allclose(back.variance, var, rtol=2e-16 * 8)
    assert exp.to_kind("SB") is exp


def test_to_fluence_float32_rounds_like_float32(analytic_wcs, rng):
    shape = (20, 30)
    img = rng.normal(100, 5, shape).astype(np.float32)
    fl = pc.Exposure(img, variance=np.ones(shape, np.float32), wcs=analytic_wcs).to_fluence()
    assert fl.image.dtype == np.float32 and fl.variance.dtype == np.float32
    area = _area_truth(analytic_wcs, shape)
    np.testing.assert_array_equal(fl.image, img * area.astype(np.float32))
    np.testing.assert_array_equal(fl.variance, (area**2).astype(np.float32))


def test_area_image_is_cached_once_per_wcs_and_box(analytic_wcs):
    clear_area_cache()
    exp = pc.Exposure(np.ones((16, 16)), wcs=analytic_wcs)
    a1 = exp.pixel_area_image()
    a2 = exp.replace(image=np.zeros((16, 16))).pixel_area_image()
    assert a1 is a2 and analytic_wcs.calls == 1
    assert not a1.flags.writeable
    np.testing.assert_array_equal(a1, _area_truth(analytic_wcs, (16, 16)))
    exp.to_fluence()
    exp.to_fluence()
    assert analytic_wcs.calls == 1
    # another box is another entry
    pc.Exposure(np.ones((8, 16)), wcs=analytic_wcs).pixel_area_image()
    assert analytic_wcs.calls == 2


def test_area_cache_is_bounded(analytic_wcs, monkeypatch):
    from photocalib.image import exposure as mod

    clear_area_cache()
    monkeypatch.setattr(mod, "_CACHE_MAX_BYTES", 3 * 100 * 100 * 8)
    for n in range(5):
        pixel_area_image(analytic_wcs, pc.Box(n, 0, 100, 100))
    assert len(mod._cache) == 3
    assert mod._cache_bytes() <= 3 * 100 * 100 * 8
    clear_area_cache()


def test_conversion_needs_wcs():
    with pytest.raises(pc.InputError, match="no WCS"):
        pc.Exposure(np.ones((2, 2))).to_fluence()


def test_replace_and_unknown_attribute(analytic_wcs):
    exp = pc.Exposure(np.ones((2, 2)), wcs=analytic_wcs)
    assert exp.replace(kind="FLUENCE").kind is pc.ImageKind.FLUENCE
    assert exp.replace(kind="FLUENCE").wcs is analytic_wcs
    with pytest.raises(pc.InputError, match="unknown attribute"):
        exp.replace(colour="red")


def test_photo_calib_kind_must_match_and_converts(analytic_wcs):
    calib = pc.PhotoCalib(2.0, kind="FLUENCE")
    with pytest.raises(pc.ImageKindError, match="to_kind"):
        pc.Exposure(np.ones((4, 4)), wcs=analytic_wcs, photo_calib=calib)
    sb_calib = calib.to_kind("SURFACE_BRIGHTNESS", analytic_wcs, bbox=pc.Box(0, 0, 4, 4))
    exp = pc.Exposure(np.ones((4, 4)), wcs=analytic_wcs, photo_calib=sb_calib)
    fl = exp.to_fluence()
    assert fl.photo_calib.kind is pc.ImageKind.FLUENCE
    assert fl.photo_calib == calib


def test_pickle_for_transport(analytic_wcs):
    import pickle

    exp = pc.Exposure(np.arange(6.0).reshape(2, 3), kind="FLUENCE", metadata={"VISIT": 7})
    back = pickle.loads(pickle.dumps(exp))
    np.testing.assert_array_equal(back.image, exp.image)
    assert not back.image.flags.writeable and not back.mask.flags.writeable
    assert back.kind is exp.kind and back.metadata["VISIT"] == 7


@pytest.mark.parametrize(
    ("uncertainty", "expected"),
    [
        (VarianceUncertainty(np.full((3, 4), 4.0)), 4.0),
        (StdDevUncertainty(np.full((3, 4), 2.0)), 4.0),
        (InverseVariance(np.full((3, 4), 0.25)), 4.0),
    ],
)
def test_from_nddata_uncertainties(uncertainty, expected):
    nd = NDData(np.ones((3, 4)), uncertainty=uncertainty, unit="nJy", meta={"PCKIND": "FLUENCE", "A": 1})
    exp = pc.Exposure.from_nddata(nd)
    np.testing.assert_array_equal(exp.variance, expected)
    assert exp.kind is pc.ImageKind.FLUENCE and exp.unit == u.nJy
    assert exp.metadata["A"] == 1 and "PCKIND" not in exp.metadata


def test_nddata_round_trip_keeps_everything():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(5, 7))
    mask = np.zeros((5, 7), np.uint32)
    mask[1, 2] = MaskPlane.SAT | MaskPlane.CR
    exp = pc.Exposure(img, variance=np.full((5, 7), 0.5), mask=mask, kind="FLUENCE", unit="adu",
                      metadata={"FILTER": "r"})
    nd = exp.to_nddata()
    assert isinstance(nd.uncertainty, VarianceUncertainty)
    back = pc.Exposure.from_nddata(nd)
    np.testing.assert_array_equal(back.image, img)
    np.testing.assert_array_equal(back.variance, 0.5)
    np.testing.assert_array_equal(back.mask, mask)
    assert back.kind is pc.ImageKind.FLUENCE and back.unit == u.adu
    assert back.metadata["FILTER"] == "r"


def test_ccddata_round_trip_mask_becomes_boolean():
    mask = np.zeros((3, 3), np.uint32)
    mask[0, 1] = MaskPlane.SAT
    exp = pc.Exposure(np.ones((3, 3)), variance=np.ones((3, 3)), mask=mask, kind="SB")
    ccd = exp.to_nddata(ccd=True)
    assert isinstance(ccd, CCDData)
    back = pc.Exposure.from_nddata(ccd)
    np.testing.assert_array_equal(back.mask, np.where(mask > 0, MaskPlane.BAD, 0))
    assert back.kind is pc.ImageKind.SURFACE_BRIGHTNESS


def test_from_nddata_rejects_other_objects():
    with pytest.raises(pc.InputError, match="NDData"):
        pc.Exposure.from_nddata(np.ones((2, 2)))


@given(st.tuples(st.integers(1, 6), st.integers(1, 6)), st.tuples(st.integers(1, 6), st.integers(1, 6)),
       st.sampled_from(["variance", "mask"]))
def test_property_mismatched_shapes_raise_naming_the_plane(img_shape, other_shape, plane):
    if img_shape == other_shape:
        return
    other = np.zeros(other_shape, np.uint32 if plane == "mask" else np.float64)
    with pytest.raises(pc.InputError, match=f"{plane} shape {re.escape(str(other_shape))}"):
        pc.Exposure(np.zeros(img_shape), **{plane: other})
