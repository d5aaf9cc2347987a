"""PhotoCalib against analytic truth: conversions, kinds, images, catalogs, persistence."""

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

import photocalib as pc

BOX = pc.Box(0, 0, 24, 18)


def _cheb(rng, box=BOX, scale=2.0):
    c = 0.05 * rng.normal(size=(3, 3))
    c[0, 0] = scale
    return pc.ChebyshevField(c, box)


def test_top_level_name():
    assert pc.PhotoCalib is pc.calib.PhotoCalib


def test_scalar_conversions_analytic():
    calib = pc.PhotoCalib(2.5, error=0.02)
    assert calib.mean() == 2.5 and calib.is_constant
    np.testing.assert_array_equal(calib.instflux_to_nanojansky([1.0, 4.0]), [2.5, 10.0])
    flux, err = calib.instflux_to_nanojansky(100.0, instflux_err=3.0)
    assert (flux, err) == (250.0, 7.5)
    flux, err = calib.instflux_to_nanojansky(100.0, instflux_err=3.0, include_calibration_error=True)
    assert err == pytest.approx(math.hypot(7.5, 0.02 * 250.0), rel=1e-15)
    mag, mag_err = calib.instflux_to_magnitude(100.0, instflux_err=3.0)
    assert mag == pytest.approx(-2.5 * math.log10(250.0) + 31.4, rel=1e-15)
    assert mag_err == pytest.approx(2.5 / math.log(10) * 7.5 / 250.0, rel=1e-14)
    # 3631 Jy is AB magnitude 0 to the 31.4 convention's accuracy (6e-5 mag)
    assert float(pc.calib.nanojansky_to_ab(3631e9)) == pytest.approx(0.0, abs=1e-4)
    assert np.isnan(calib.instflux_to_magnitude(-1.0))


def test_inverses(rng):
    calib = pc.PhotoCalib(_cheb(rng), error=0.01)
    x, y = rng.uniform(0, 23, 50), rng.uniform(0, 17, 50)
    inst = rng.uniform(1, 1000, 50)
    err = rng.uniform(0.1, 1, 50)
    flux, flux_err = calib.instflux_to_nanojansky(inst, x, y, err)
    back, back_err = calib.nanojansky_to_instflux(flux, x, y, flux_err)
    np.testing.assert_allclose(back, inst, rtol=1e-14)
    np.testing.assert_allclose(back_err, err, rtol=1e-14)
    mag, mag_err = calib.instflux_to_magnitude(inst, x, y, err)
    back, back_err = calib.magnitude_to_instflux(mag, x, y, mag_err)
    np.testing.assert_allclose(back, inst, rtol=1e-12)
    np.testing.assert_allclose(back_err, err, rtol=1e-12)
    with pytest.raises(pc.InputError, match="pass the pixel positions"):
        calib.instflux_to_nanojansky(inst)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), "abc"])
def test_bad_scalar_calibration(value):
    with pytest.raises(pc.InputError, match="calibration"):
        pc.PhotoCalib(value)


def test_bad_field_calibration():
    field = pc.ChebyshevField([[0.0, 1.0]], BOX)  # crosses zero at the box centre column
    with pytest.raises(pc.InputError, match="positive and finite"):
        pc.PhotoCalib(field)


@pytest.mark.parametrize("error", [-0.1, float("nan")])
def test_bad_error(error):
    with pytest.raises(pc.InputError, match="error"):
        pc.PhotoCalib(1.0, error=error)


def test_unknown_kind():
    with pytest.raises(pc.InputError, match="unknown image kind"):
        pc.PhotoCalib(1.0, kind="RADIANCE")


def test_to_kind_multiplies_by_area_and_round_trips_exactly(analytic_wcs, rng):
    c_f = pc.PhotoCalib(_cheb(rng), error=0.03)
    c_sb = c_f.to_kind("SURFACE_BRIGHTNESS", analytic_wcs)
    assert c_sb.kind is pc.ImageKind.SURFACE_BRIGHTNESS and c_sb.error == 0.03
    x, y = rng.uniform(0, 23, 30), rng.uniform(0, 17, 30)
    np.testing.assert_allclose(
        c_sb.field.evaluate(x, y), c_f.field.evaluate(x, y) * analytic_wcs.pixel_area(x, y), rtol=1e-15
    )
    back = c_sb.to_kind("FLUENCE", analytic_wcs)
    assert back == c_f and back.field is c_f.field
    np.testing.assert_array_equal(c_sb.fluence_to_fluence(analytic_wcs).fill(), c_f.field.fill())
    assert c_f.to_kind("FLUENCE") is c_f


def test_fluence_to_fluence_divides_when_no_factor_to_cancel(analytic_wcs, rng):
    c_sb = pc.PhotoCalib(_cheb(rng), kind="SB")
    f2f = c_sb.fluence_to_fluence(analytic_wcs)
    assert isinstance(f2f, pc.QuotientField)
    x, y = rng.uniform(0, 23, 30), rng.uniform(0, 17, 30)
    np.testing.assert_allclose(
        f2f.evaluate(x, y), c_sb.field.evaluate(x, y) / analytic_wcs.pixel_area(x, y), rtol=1e-15
    )
    # and the SB -> F -> SB round trip takes the numerator back, exactly
    assert c_sb.to_kind("FLUENCE", analytic_wcs).to_kind("SB", analytic_wcs).field is c_sb.field


def test_scalar_to_kind_needs_a_box(analytic_wcs):
    calib = pc.PhotoCalib(1.5)
    with pytest.raises(pc.InputError, match="bbox"):
        calib.to_kind("SB", analytic_wcs)
    sb = calib.to_kind("SB", analytic_wcs, bbox=BOX)
    assert sb.field.bbox == BOX
    assert sb.mean() == pytest.approx(1.5 * 0.04 * (1 + 1e-3 * 11.5 + 2e-3 * 8.5 + 1e-6 * 11.5 * 8.5), rel=1e-12)
    assert sb.to_kind("FLUENCE", analytic_wcs) == calib


def test_scaling_to(analytic_wcs, rng):
    a = _cheb(rng)
    b = _cheb(rng, scale=3.0)
    ca = pc.PhotoCalib(a).to_kind("SB", analytic_wcs)
    cb = pc.PhotoCalib(b).to_kind("SB", analytic_wcs)
    s = ca.scaling_to(cb)
    # the shared area factor cancels: the scaling is b / a with no area anywhere
    assert isinstance(s, pc.QuotientField) and s.numerator is b and s.denominator is a
    x, y = rng.uniform(0, 23, 30), rng.uniform(0, 17, 30)
    inst = rng.uniform(1, 100, 30)
    np.testing.assert_allclose(
        cb.instflux_to_nanojansky(inst, x, y), s.evaluate(x, y) * ca.instflux_to_nanojansky(inst, x, y),
        rtol=1e-14,
    )
    const = pc.PhotoCalib(2.0).scaling_to(pc.PhotoCalib(3.0))
    assert const.is_constant and const.value == 1.5
    with pytest.raises(pc.InputError, match="to_kind"):
        ca.scaling_to(pc.PhotoCalib(2.0))


def test_calibrate_image_fluence_and_sb(analytic_wcs, rng):
    shape = BOX.shape
    img = rng.normal(50, 3, shape)
    var = rng.uniform(1, 2, shape)
    exp_sb = pc.Exposure(img, var, wcs=analytic_wcs, kind="SB")
    c_f = pc.PhotoCalib(_cheb(rng), error=0.01)
    with pytest.raises(pc.ImageKindError, match="to_fluence"):
        c_f.calibrate_image(exp_sb)
    c_sb = c_f.to_kind("SB", analytic_wcs)
    cal_sb = c_sb.calibrate_image(exp_sb)
    cal_f = c_f.calibrate_image(exp_sb.to_fluence())
    assert cal_sb.kind is cal_f.kind is pc.ImageKind.FLUENCE
    assert cal_sb.unit == u.nJy
    c = c_f.field.fill()
    area = analytic_wcs.pixel_area(np.arange(shape[1])[None, :], np.arange(shape[0])[:, None])
    np.testing.assert_allclose(cal_f.image, img * area * c, rtol=1e-15)
    np.testing.assert_allclose(cal_sb.image, img * area * c, rtol=1e-15)
    np.testing.assert_allclose(cal_sb.variance, var * (area * c) ** 2, rtol=1e-14)
    assert cal_sb.photo_calib.mean() == 1.0 and cal_sb.photo_calib.error == 0.01
    # uncalibrate gives the image back, in its own kind, with the calibration attached
    raw = c_sb.uncalibrate_image(cal_sb)
    assert raw.kind is pc.ImageKind.SURFACE_BRIGHTNESS and raw.unit == u.count / u.arcsec**2
    assert raw.photo_calib is c_sb
    np.testing.assert_allclose(raw.image, img, rtol=1e-14)
    np.testing.assert_allclose(raw.variance, var, rtol=1e-14)
    # a calibrated image in Jy uncalibrates too
    in_jy = cal_f.replace(image=cal_f.image * 1e-9, unit="Jy", variance=None)
    np.testing.assert_allclose(c_f.uncalibrate_image(in_jy).image, exp_sb.to_fluence().image, rtol=1e-13)
    with pytest.raises(pc.ImageKindError):
        c_f.uncalibrate_image(exp_sb)


def test_calibrate_image_box_mismatch(analytic_wcs, rng):
    calib = pc.PhotoCalib(_cheb(rng))
    with pytest.raises(pc.InputError, match="does not match"):
        calib.calibrate_image(pc.Exposure(np.ones((5, 5)), kind="FLUENCE"))


def test_calibrate_catalog(rng):
    calib = pc.PhotoCalib(_cheb(rng), error=0.05)
    t = Table({"x": rng.uniform(0, 23, 20), "y": rng.uniform(0, 17, 20),
               "instflux": rng.uniform(10, 100, 20), "instflux_err": np.full(20, 1.0),
               "ap": rng.uniform(10, 100, 20)})
    out = calib.calibrate_catalog(t, flux_columns=["instflux", "ap"], include_calibration_error=True)
    assert "instflux_nJy" not in t.colnames  # the input is not modified
    c = calib.field.evaluate(t["x"], t["y"])
    np.testing.assert_allclose(out["instflux_nJy"], t["instflux"] * c, rtol=1e-15)
    np.testing.assert_allclose(
        out["instflux_nJy_err"], np.hypot(c, 0.05 * t["instflux"] * c), rtol=1e-14
    )
    np.testing.assert_allclose(out["ap_mag"], -2.5 * np.log10(t["ap"] * c) + 31.4, rtol=1e-14)
    np.testing.assert_allclose(out["ap_nJy_err"], 0.05 * t["ap"] * c, rtol=1e-14)
    assert out["instflux_nJy"].unit == u.nJy
    with pytest.raises(pc.InputError, match="'psf_flux'"):
        calib.calibrate_catalog(t, flux_columns="psf_flux")
    with pytest.raises(pc.InputError, match="'xc'"):
        calib.calibrate_catalog(t, x="xc")


def test_fits_round_trip(tmp_path, rng):
    for calib in (
        pc.PhotoCalib(1.7, error=0.01),
        pc.PhotoCalib(_cheb(rng) * 2.0, kind="SB", error=0.0, instrumental_unit="adu"),
    ):
        path = tmp_path / "calib.fits"
        calib.write(path)
        back = pc.PhotoCalib.read(path)
        assert back == calib
        assert back.kind is calib.kind and back.error == calib.error
        assert back.instrumental_unit == calib.instrumental_unit
        if not calib.is_constant:
            np.testing.assert_array_equal(back.field.fill(), calib.field.fill())


def test_read_bad_files(tmp_path, rng):
    with pytest.raises(pc.InputError, match="no such file"):
        pc.PhotoCalib.read(tmp_path / "none.fits")
    txt = tmp_path / "calib.txt"
    txt.write_text("not fits" * 400)
    with pytest.raises(pc.InputError, match="calib.txt"):
        pc.PhotoCalib.read(txt)
    good = tmp_path / "good.fits"
    pc.PhotoCalib(_cheb(rng)).write(good)
    trunc = tmp_path / "trunc.fits"
    trunc.write_bytes(good.read_bytes()[:4000])
    with pytest.raises(pc.InputError, match="trunc.fits: .*truncated"):
        pc.PhotoCalib.read(trunc)
    field_only = tmp_path / "field.fits"
    _cheb(rng).write(field_only)
    with pytest.raises(pc.InputError, match="PHOTOCAL"):
        pc.PhotoCalib.read(field_only)


def test_equality_and_repr(rng):
    a = pc.PhotoCalib(2.0, error=0.01)
    assert a == pc.PhotoCalib(2.0, error=0.01)
    assert a != pc.PhotoCalib(2.0, error=0.02)
    assert a != pc.PhotoCalib(2.0, kind="SB", error=0.01)
    assert repr(a) == "PhotoCalib(2 nJy/count, kind=FLUENCE, error=0.01)"
    f = _cheb(rng)
    assert repr(pc.PhotoCalib(f)) == f"PhotoCalib(ChebyshevField (mean {f.mean():.7g}) nJy/count, kind=FLUENCE, error=0)"
    with pytest.raises(AttributeError):
        a.error = 0.5


def test_exposure_round_trip_with_photo_calib(tmp_path, rng):
    calib = pc.PhotoCalib(_cheb(rng), kind="FLUENCE", error=0.02)
    exp = pc.Exposure(np.ones(BOX.shape), kind="FLUENCE", photo_calib=calib)
    path = tmp_path / "exp.fits"
    exp.write(path)
    assert pc.Exposure.read(path).photo_calib == calib


def test_calibrate_catalog_from_pandas():
    import pandas as pd

    df = pd.DataFrame({"instflux": [10.0, 20.0], "instflux_err": [1.0, 2.0]})
    out = pc.PhotoCalib(3.0).calibrate_catalog(df)
    assert isinstance(out, Table)
    np.testing.assert_array_equal(out["instflux_nJy"], [30.0, 60.0])
    np.testing.assert_array_equal(out["instflux_nJy_err"], [3.0, 6.0])
    with pytest.raises(pc.InputError, match="astropy Table"):
        pc.PhotoCalib(3.0).calibrate_catalog({"instflux": [1.0]})


def test_constant_calibration_takes_its_box_from_the_wcs_image_size(sip_wcs):
    """docs/design.md's ``calib.to_kind(SURFACE_BRIGHTNESS, wcs)`` with a scalar calibration: the
    detector box comes from the image the WCS describes (NAXIS1/2 = 300 x 200)."""
    import numpy as np

    import photocalib as pc

    calib = pc.PhotoCalib(1.7, kind=pc.ImageKind.FLUENCE)
    sb = calib.to_kind(pc.ImageKind.SURFACE_BRIGHTNESS, sip_wcs)
    assert sb.field.bbox == pc.Box(0, 0, 300, 200)
    x = np.array([0.0, 150.0, 299.0])
    y = np.array([0.0, 100.0, 199.0])
    np.testing.assert_allclose(sb.field.evaluate(x, y), 1.7 * sip_wcs.pixel_area(x, y), rtol=1e-12)
    np.testing.assert_allclose(sb.fluence_to_fluence(sip_wcs).evaluate(x, y), 1.7, rtol=1e-12)
    assert sb.to_kind(pc.ImageKind.FLUENCE, sip_wcs).field.evaluate(x, y) == pytest.approx(1.7)
