"""Exposure FITS persistence: round trips and every way a file can be bad."""

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

import photocalib as pc
from photocalib.image import MaskPlane


def _exposure(rng, kind="FLUENCE", dtype=np.float32):
    img = rng.normal(10, 1, (12, 17)).astype(dtype)
    var = rng.uniform(1, 2, (12, 17)).astype(dtype)
    mask = np.zeros((12, 17), np.uint32)
    mask[3, 4] = MaskPlane.SAT | MaskPlane.SUSPECT
    mask[5, 6] = 2**31  # the top bit survives the int32 + BZERO encoding
    meta = fits.Header()
    meta["FILTER"] = "r"
    meta["EXPTIME"] = 30.0
    meta["HISTORY"] = "flat-fielded by photocalib"
    meta["HIERARCH ESO DET CHIP NAME"] = "CCD-7"
    return pc.Exposure(img, var, mask, kind=kind, unit="adu" if kind == "FLUENCE" else "adu/arcsec2",
                       metadata=meta)


@pytest.mark.parametrize("kind", ["FLUENCE", "SURFACE_BRIGHTNESS"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_without_wcs(tmp_path, rng, kind, dtype):
    exp = _exposure(rng, kind, dtype)
    path = tmp_path / "exp.fits"
    exp.write(path)
    back = pc.Exposure.read(path)
    assert back.kind is exp.kind and back.unit == exp.unit
    assert back.image.dtype == dtype
    np.testing.assert_array_equal(back.image, exp.image)
    np.testing.assert_array_equal(back.variance, exp.variance)
    np.testing.assert_array_equal(back.mask, exp.mask)
    assert back.mask.dtype == np.uint32
    assert back.metadata["FILTER"] == "r" and back.metadata["EXPTIME"] == 30.0
    assert list(back.metadata["HISTORY"]) == ["flat-fielded by photocalib"]
    assert back.metadata["ESO DET CHIP NAME"] == "CCD-7"
    assert back.wcs is None
    with fits.open(path) as hdul:
        assert hdul[0].header["PCKIND"] == kind
        assert u.Unit(hdul[0].header["BUNIT"]) == exp.unit
        assert [h.name for h in hdul] == ["PRIMARY", "VARIANCE", "MASK"]


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, rng):
    exp = _exposure(rng)
    path = tmp_path / "exp.fits"
    exp.write(path)
    exp.write(path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.fits"]


def test_read_sci_extension_layout(tmp_path):
    """HST/JWST layout: empty primary with metadata, image in SCI."""
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "JWST"
    sci = fits.ImageHDU(np.ones((4, 5), np.float32), name="SCI")
    sci.header["BUNIT"] = "MJy/sr"
    path = tmp_path / "jw.fits"
    fits.HDUList([primary, sci]).writeto(path)
    exp = pc.Exposure.read(path)
    assert exp.shape == (4, 5)
    assert exp.unit == u.MJy / u.sr
    assert exp.metadata["TELESCOP"] == "JWST"
    assert pc.Exposure.read(path, hdu="SCI").shape == (4, 5)


def _good_file(tmp_path, rng):
    path = tmp_path / "good.fits"
    _exposure(rng).write(path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(pc.InputError, match="no such file"):
        pc.Exposure.read(tmp_path / "nope.fits")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(pc.InputError, match="empty"):
        pc.Exposure.read(path)


def test_non_fits_file(tmp_path):
    path = tmp_path / "text.fits"
    path.write_text("this is not FITS\n" * 200)
    with pytest.raises(pc.InputError, match=str(path.name)):
        pc.Exposure.read(path)


@pytest.mark.parametrize("keep", [100, 2880 + 500, 2880 * 2 + 10])
def test_truncated_file(tmp_path, rng, keep):
    path = _good_file(tmp_path, rng)
    data = path.read_bytes()
    bad = tmp_path / "trunc.fits"
    bad.write_bytes(data[:keep])
    with pytest.raises(pc.InputError, match="trunc.fits"):
        pc.Exposure.read(bad)


def test_no_image_data(tmp_path):
    path = tmp_path / "nodata.fits"
    fits.HDUList([fits.PrimaryHDU()]).writeto(path)
    with pytest.raises(pc.InputError, match="no HDU holds image data"):
        pc.Exposure.read(path)


def test_unknown_hdu(tmp_path, rng):
    path = _good_file(tmp_path, rng)
    with pytest.raises(pc.InputError, match="no HDU 'SCI'"):
        pc.Exposure.read(path, hdu="SCI")


def test_unknown_pckind(tmp_path, rng):
    path = _good_file(tmp_path, rng)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["PCKIND"] = "RADIANCE"
    with pytest.raises(pc.InputError, match=r"PCKIND = 'RADIANCE'"):
        pc.Exposure.read(path)


def test_bad_bunit(tmp_path, rng):
    path = _good_file(tmp_path, rng)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["BUNIT"] = "bananas/fortnight"
    with pytest.raises(pc.InputError, match="BUNIT"):
        pc.Exposure.read(path)


def test_mismatched_variance_shape(tmp_path, rng):
    path = tmp_path / "mis.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones((4, 5))), fits.ImageHDU(np.ones((5, 4)), name="VARIANCE")]).writeto(path)
    with pytest.raises(pc.InputError, match=r"VARIANCE\]: shape \(5, 4\)"):
        pc.Exposure.read(path)


def test_header_without_celestial_axes(tmp_path):
    h = fits.Header()
    h["CTYPE1"] = "WAVE"
    h["CTYPE2"] = "TIME"
    h["CRPIX1"] = 1.0
    h["CRPIX2"] = 1.0
    h["CDELT1"] = 1.0
    h["CDELT2"] = 1.0
    path = tmp_path / "spec.fits"
    fits.PrimaryHDU(np.ones((3, 3)), header=h).writeto(path)
    with pytest.raises(pc.InputError, match="no celestial axes"):
        pc.Exposure.read(path)


def test_hdu_that_is_a_table(tmp_path, rng):
    path = tmp_path / "withcalib.fits"
    pc.Exposure(np.ones((4, 4)), kind="FLUENCE", photo_calib=pc.PhotoCalib(2.0)).write(path)
    with pytest.raises(pc.InputError, match=r"withcalib.fits\[PHOTOCAL\]: is a BinTableHDU"):
        pc.Exposure.read(path, hdu="PHOTOCAL")


def test_invalid_celestial_wcs_names_the_hdu(tmp_path):
    h = fits.Header()
    # celestial axes with a projection wcslib does not know
    h.update(CTYPE1="RA---QQQ", CTYPE2="DEC--QQQ", CRPIX1=1.0, CRPIX2=1.0, CRVAL1=10.0,
             CRVAL2=20.0, CD1_1=-5e-5, CD1_2=0.0, CD2_1=0.0, CD2_2=5e-5)
    path = tmp_path / "nanwcs.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((3, 3)), header=h, name="SCI")]).writeto(path)
    with pytest.raises(pc.InputError, match=r"nanwcs.fits\[SCI\]"):
        pc.Exposure.read(path)


def test_mask_shape_mismatch(tmp_path):
    path = tmp_path / "mask.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones((4, 5))),
                  fits.ImageHDU(np.zeros((4, 4), np.int32), name="MASK")]).writeto(path)
    with pytest.raises(pc.InputError, match=r"mask.fits\[MASK\]: shape"):
        pc.Exposure.read(path)


def test_reads_a_file_written_by_ccddata(tmp_path):
    from astropy.nddata import CCDData, StdDevUncertainty

    mask = np.eye(3, 4, dtype=bool)
    ccd = CCDData(np.arange(12.0).reshape(3, 4), unit="adu",
                  uncertainty=StdDevUncertainty(np.full((3, 4), 2.0)), mask=mask)
    path = tmp_path / "ccd.fits"
    ccd.write(path)
    exp = pc.Exposure.read(path)
    np.testing.assert_array_equal(exp.image, ccd.data)
    np.testing.assert_array_equal(exp.variance, 4.0)
    np.testing.assert_array_equal(exp.mask, np.where(mask, MaskPlane.BAD, 0))
    assert exp.unit == u.adu
