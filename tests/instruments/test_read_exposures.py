"""read_exposures on real survey files (cropped copies in tests/data, see PROVENANCE).

Every number is checked against the file itself, read here independently with astropy, or
against the survey's documented recipe implemented here a second way.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import photocalib as pc
from photocalib.image import MaskPlane

DATA = Path(__file__).resolve().parents[1] / "data"
ZTF = DATA / "ztf" / "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"
ZTF_MASK = DATA / "ztf" / "ztf_20200924431759_000655_zr_c13_o_q3_mskimg.fits"
SDSS = DATA / "sdss" / "frame-r-002583-2-0136.fits.bz2"
CALEXP = DATA / "rubin-afw" / "calexp-850587-12.fits.fz"
HSC = DATA / "rubin-afw" / "HSC-0908120-056-small.fits"
VISIT_SUMMARY = DATA / "rubin-afw" / "visitSummary-850587.fits"
DECAM = sorted((DATA / "decam-cp").glob("testcase*/images/decam/CP/*/*/*_ooi_*.fits"))


def _astropy_area(header: fits.Header, x: float, y: float, h: float = 0.5) -> float:
    """Pixel area (arcsec²) by central differences of astropy's all_pix2world on the sphere."""
    w = WCS(header)
    xs = np.array([x + h, x - h, x, x])
    ys = np.array([y, y, y + h, y - h])
    ra, dec = w.all_pix2world(xs, ys, 0)
    v = np.stack([np.cos(np.radians(dec)) * np.cos(np.radians(ra)),
                  np.cos(np.radians(dec)) * np.sin(np.radians(ra)), np.sin(np.radians(dec))], -1)
    dx = (v[0] - v[1]) / (2 * h)
    dy = (v[2] - v[3]) / (2 * h)
    return float(np.linalg.norm(np.cross(dx, dy)) * (180 / np.pi * 3600) ** 2)


# -- ZTF ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ztf():
    return pc.read_exposures(ZTF)


def test_ztf_kind_unit_metadata(ztf):
    assert len(ztf) == 1
    exp = ztf[0]
    header = fits.getheader(ZTF)
    assert exp.kind is pc.ImageKind.SURFACE_BRIGHTNESS
    assert str(exp.unit) == "adu / arcsec2"
    m = exp.metadata
    assert (m["VISIT"], m["DETECTOR"], m["BAND"]) == (header["EXPID"], header["RCID"], "r")
    assert m["MJD"] == header["OBSMJD"] and m["EXPTIME"] == header["EXPTIME"]
    assert m["INSTRUMENT"] == "ZTF"
    assert pc.instruments.identify(fits.open(ZTF)).name == "ZTF"


def test_ztf_values_are_the_file_over_the_reference_area(ztf):
    exp = ztf[0]
    data = fits.getdata(ZTF).astype(np.float64)
    a_ref = exp.metadata["PCAREF"]
    ny, nx = data.shape
    assert a_ref == pytest.approx(_astropy_area(fits.getheader(ZTF), (nx - 1) / 2, (ny - 1) / 2), rel=1e-6)
    np.testing.assert_allclose(exp.image * a_ref, data, rtol=2e-7)


def test_ztf_zero_point_reproduced(ztf):
    """MAGZP is the AB magnitude of one DN summed on the file: any box of pixels, calibrated by
    the exposure's PhotoCalib, has magnitude MAGZP − 2.5 log10(sum of its DN)."""
    exp = ztf[0]
    header = fits.getheader(ZTF)
    data = fits.getdata(ZTF).astype(np.float64)
    box = (slice(100, 140), slice(200, 260))
    mag = exp.photo_calib.instflux_to_magnitude(exp.image[box].astype(np.float64).sum())
    assert float(mag) == pytest.approx(header["MAGZP"] - 2.5 * np.log10(data[box].sum()), abs=1e-6)
    calibrated = exp.photo_calib.calibrate_image(exp)
    njy_per_dn = 10 ** (-0.4 * (header["MAGZP"] - 31.4))
    np.testing.assert_allclose(calibrated.image, data * njy_per_dn, rtol=1e-6)


def test_ztf_variance_and_mask(ztf):
    exp = ztf[0]
    header = fits.getheader(ZTF)
    data = fits.getdata(ZTF).astype(np.float64)
    msk = fits.getdata(ZTF_MASK).astype(np.int64)
    a_ref = exp.metadata["PCAREF"]
    expected = np.maximum(data, 0) / header["GAIN"] + (header["READNOI"] / header["GAIN"]) ** 2
    np.testing.assert_allclose(exp.variance * a_ref**2, expected, rtol=1e-5)
    sat = ((msk >> 8) & 1).astype(bool) | (data >= header["SATURATE"])
    np.testing.assert_array_equal((exp.mask & MaskPlane.SAT) > 0, sat)
    dead = ((msk >> 9) & 1).astype(bool)
    assert np.all(exp.mask[dead] & MaskPlane.BAD)
    # The survey's own source-detection bits (1 and 11) mark no defect.
    only_detection = (msk & ~((1 << 1) | (1 << 11))) == 0
    assert np.all(exp.mask[only_detection & ~sat] == 0)
    assert (msk != 0).sum() > (exp.mask != 0).sum() > 0


def test_ztf_mask_of_another_shape_is_refused(tmp_path):
    shutil.copy(ZTF, tmp_path / ZTF.name)
    data = fits.getdata(ZTF_MASK)
    fits.writeto(tmp_path / ZTF_MASK.name, data[:-1])
    with pytest.raises(pc.InputError, match=r"mskimg.*does not match.*pass mask="):
        pc.read_exposures(tmp_path / ZTF.name)


# -- DECam community pipeline ----------------------------------------------------------------
@pytest.mark.parametrize("path", DECAM, ids=[p.name for p in DECAM])
def test_decam_cp(path):
    (exp,) = pc.read_exposures(path)
    weight = fits.getdata(str(path).replace("_ooi_", "_oow_")).astype(np.float64)
    quality = fits.getdata(str(path).replace("_ooi_", "_ood_")).astype(np.int64)
    primary = fits.getheader(path, 0)
    ext = fits.getheader(path, 1)
    data = fits.getdata(path).astype(np.float64)
    a_ref = exp.metadata["PCAREF"]
    assert exp.kind is pc.ImageKind.SURFACE_BRIGHTNESS and str(exp.unit) == "adu / arcsec2"
    m = exp.metadata
    assert (m["VISIT"], m["DETECTOR"], m["BAND"]) == (primary["EXPNUM"], ext["CCDNUM"],
                                                        primary["BAND"].strip())
    assert (m["MJD"], m["EXPTIME"], m["INSTRUMENT"]) == (primary["MJD-OBS"], primary["EXPTIME"], "DECam")
    assert m["GAIN"] == pytest.approx((ext["GAINA"] + ext["GAINB"]) / 2)
    np.testing.assert_allclose(exp.image * a_ref, data, rtol=2e-7)
    good = weight > 0
    np.testing.assert_allclose(exp.variance[good] * a_ref**2, 1 / weight[good], rtol=1e-6)
    assert np.all(exp.mask[~good] & MaskPlane.NO_DATA)
    np.testing.assert_array_equal((exp.mask & MaskPlane.SAT) > 0,
                                  (quality == 3) | (quality == 4)
                                  | (data >= min(ext["SATURATA"], ext["SATURATB"])))
    assert exp.photo_calib is None  # these cutouts carry no MAGZERO


def test_decam_magzero_becomes_the_calibration(tmp_path):
    src = DECAM[0]
    for kind in ("ooi", "oow", "ood"):
        shutil.copy(str(src).replace("_ooi_", f"_{kind}_"), tmp_path / src.name.replace("_ooi_", f"_{kind}_"))
    target = tmp_path / src.name
    with fits.open(target, mode="update") as h:
        h[0].header["MAGZERO"] = 31.25
    (exp,) = pc.read_exposures(target)
    data = fits.getdata(target).astype(np.float64)
    calibrated = exp.photo_calib.calibrate_image(exp)
    np.testing.assert_allclose(calibrated.image, data * 10 ** (-0.4 * (31.25 - 31.4)), rtol=1e-6)


def test_decam_weight_of_another_shape_is_refused(tmp_path):
    src = DECAM[0]
    target = tmp_path / src.name
    shutil.copy(src, target)
    shutil.copy(str(src).replace("_ooi_", "_ood_"), tmp_path / src.name.replace("_ooi_", "_ood_"))
    with fits.open(str(src).replace("_ooi_", "_oow_")) as h:
        h[1].data = h[1].data[:-2]
        h.writeto(tmp_path / src.name.replace("_ooi_", "_oow_"))
    with pytest.raises(pc.InputError, match=r"_oow_.*weight map shape.*does not match.*pass weight="):
        pc.read_exposures(target)


def test_other_cp_cameras_identified(tmp_path):
    for instrume, name in (("Mosaic3", "Mosaic3"), ("90prime", "90Prime")):
        target = tmp_path / f"{name}_ooi_r.fits"
        with fits.open(DECAM[0]) as h:
            h[0].header["INSTRUME"] = instrume
            h.writeto(target, overwrite=True)
        assert pc.instruments.identify(fits.open(target), target).name == name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no oow/ood beside it
            (exp,) = pc.read_exposures(target)
        assert exp.metadata["INSTRUMENT"] == name and exp.variance is not None


# -- SDSS ----------------------------------------------------------------------------------
def _sdss_recipe():
    """The data model's recipe, with scipy's interpolation (edge values beyond the grid)."""
    from scipy.ndimage import map_coordinates

    with fits.open(SDSS) as h:
        img = h[0].data.astype(np.float64)
        calib = h[1].data.astype(np.float64)
        sky = h[2].data
        allsky = sky["ALLSKY"][0].astype(np.float64)
        xi = sky["XINTERP"][0].astype(np.float64)
        yi = sky["YINTERP"][0].astype(np.float64)
    yy, xx = np.meshgrid(yi, xi, indexing="ij")
    simg = map_coordinates(allsky, [yy, xx], order=1, mode="nearest")
    return img, calib, simg, img / calib[None, :] + simg


def test_sdss_counts_follow_the_documented_recipe():
    (exp,) = pc.read_exposures(SDSS)
    img, calib, simg, dn = _sdss_recipe()
    assert exp.kind is pc.ImageKind.FLUENCE and str(exp.unit) == "ct"
    np.testing.assert_allclose(exp.image, dn, rtol=2e-7, atol=1e-5)
    # gain 4.6 e-/DN and dark variance 1.0 DN² for camcol 2, r (SDSS data model)
    np.testing.assert_allclose(exp.variance, np.maximum(dn, 0) / 4.6 + 1.0, rtol=2e-7)
    m = exp.metadata
    assert (m["BAND"], m["DETECTOR"], m["VISIT"], m["INSTRUMENT"]) == ("r", 2, 2583 * 10000 + 136, "SDSS")


def test_sdss_calibration_vector_is_the_photo_calib():
    (exp,) = pc.read_exposures(SDSS)
    img, calib, simg, dn = _sdss_recipe()
    cols = np.arange(calib.size, dtype=float)
    c = exp.photo_calib.instflux_to_nanojansky(np.ones(calib.size), cols, np.full(calib.size, 17.0))
    np.testing.assert_allclose(c, calib * 3631.0, rtol=1e-12)
    # The counts minus the sky, calibrated, give back the frame's nanomaggies.
    sky_free = exp.replace(image=(dn - simg).astype(np.float32))
    calibrated = exp.photo_calib.calibrate_image(sky_free)
    np.testing.assert_allclose(calibrated.image / 3631.0, img, rtol=1e-4, atol=1e-6)


# -- Rubin afw -----------------------------------------------------------------------------
def test_afw_calexp_calibration_mean():
    (exp,) = pc.read_exposures(CALEXP)
    mean = float(Table.read(CALEXP, hdu="PhotoCalib")["calibrationMean"][0])
    one_count = 1.0 / exp.metadata["PCAREF"]  # one count of the file, in the exposure's units
    assert float(exp.photo_calib.instflux_to_nanojansky(one_count)) == pytest.approx(mean, rel=1e-14)
    assert exp.kind is exp.photo_calib.kind is pc.ImageKind.SURFACE_BRIGHTNESS
    # The visit summary's zero point for this detector is the same calibration.
    summary = Table.read(VISIT_SUMMARY, hdu=1)
    row = summary[summary["id"] == exp.metadata["DETECTOR"]]
    assert float(exp.photo_calib.instflux_to_magnitude(one_count)) == pytest.approx(
        float(row["zeroPoint"][0]), abs=2e-5)
    m = exp.metadata
    assert (m["VISIT"], m["DETECTOR"], m["BAND"], m["INSTRUMENT"]) == (850587, 12, "r", "MegaPrime")
    assert m["EXPTIME"] == pytest.approx(300.181)


def test_afw_chebyshev_field(tmp_path):
    """A varying PhotoCalib: point the calexp's PhotoCalib at one of its ApCorr Chebyshev
    fields (order 2) and compare with afw's documented evaluation written out here."""
    target = tmp_path / "calexp.fits"
    with fits.open(CALEXP) as h:
        index = Table.read(h["ARCHIVE_INDEX"])
        row = index[index["id"] == 83][0]
        cat = [x for x in h if x.header.get("AR_CATN") == row["cat.archive"]][0]
        f = Table.read(cat)[row["row0"]]
        h["PhotoCalib"].data["flags"][0] = False
        h["PhotoCalib"].data["field"][0] = 83
        h.writeto(target)
    (exp,) = pc.read_exposures(target)
    nx = int(f["order_x"]) + 1
    coeff = np.asarray(f["coefficients"]).reshape(-1, nx)
    x0, x1, y0, y1 = f["bbox_min_x"] - 0.5, f["bbox_max_x"] + 0.5, f["bbox_min_y"] - 0.5, f["bbox_max_y"] + 0.5
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 2047, 50), rng.uniform(0, 4611, 50)
    u = 2 * x / (x1 - x0) - (x1 + x0) / (x1 - x0)
    v = 2 * y / (y1 - y0) - (y1 + y0) / (y1 - y0)
    expected = np.polynomial.chebyshev.chebval2d(v, u, coeff)
    got = exp.photo_calib.instflux_to_nanojansky(1.0 / exp.metadata["PCAREF"], x, y)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_afw_planes_and_variance():
    (exp,) = pc.read_exposures(HSC)
    with fits.open(HSC) as h:
        mask = h[2].data.astype(np.int64)
        mh = h[2].header
        variance = h[3].data.astype(np.float64)
        image = h[1].data.astype(np.float64)
    a_ref = exp.metadata["PCAREF"]
    np.testing.assert_allclose(exp.image * a_ref, image, rtol=2e-7)
    np.testing.assert_allclose(exp.variance * a_ref**2, variance, rtol=2e-7)
    def plane(name):
        return ((mask >> mh[f"MP_{name}"]) & 1) > 0

    for name, ours in (("DETECTED", MaskPlane.DETECTED), ("SAT", MaskPlane.SAT),
                       ("INTRP", MaskPlane.INTRP), ("BAD", MaskPlane.BAD)):
        np.testing.assert_array_equal((exp.mask & ours) > 0, plane(name))
    # afw's CROSSTALK pixels are doubtful, not defective: SUSPECT.
    np.testing.assert_array_equal((exp.mask & MaskPlane.SUSPECT) > 0,
                                  plane("SUSPECT") | plane("CROSSTALK"))
    assert ((mask >> mh["MP_DETECTED"]) & 1).sum() > 0
    assert exp.photo_calib is None  # FLUXMAG0 = 0: the file has no calibration
    assert exp.metadata["INSTRUMENT"] == "rubin-afw"


# -- generic, registry, units --------------------------------------------------------------
def test_generic_mef_one_exposure_per_detector(tmp_path):
    from wcs_fixtures import sip_header

    header = sip_header(30, 20)
    primary = fits.PrimaryHDU()
    primary.header["VISIT"] = 42
    primary.header["FILTER"] = "r"
    hdus = [primary]
    for det in (3, 7):
        h = fits.ImageHDU(np.full((20, 30), float(det), np.float32), header=header.copy())
        h.header["DETECTOR"] = det
        hdus.append(h)
    path = tmp_path / "raw.fits"
    fits.HDUList(hdus).writeto(path)
    exps = pc.read_exposures(path)
    assert [(e.metadata["VISIT"], e.metadata["DETECTOR"], e.metadata["BAND"]) for e in exps] == [
        (42, 3, "r"), (42, 7, "r")]
    assert exps[1].image[0, 0] == 7.0
    # A photocalib Exposure file reads back as itself.
    exps[0].replace(kind="FLUENCE").write(tmp_path / "exp.fits")
    (back,) = pc.read_exposures(tmp_path / "exp.fits")
    assert back.kind is pc.ImageKind.FLUENCE and np.array_equal(back.image, exps[0].image)


def test_generic_file_with_a_survey_or_unknown_bunit(tmp_path):
    import astropy.units as u

    from wcs_fixtures import sip_header

    for bunit, unit in (("Data Value", u.adu), ("counts/s", u.count / u.s), ("bananas", u.count)):
        path = tmp_path / "img.fits"
        header = sip_header(30, 20)
        header["BUNIT"] = bunit
        fits.PrimaryHDU(np.ones((20, 30), np.float32), header).writeto(path, overwrite=True)
        if bunit == "bananas":
            with pytest.warns(UserWarning, match="'bananas' is not a known unit"):
                (exp,) = pc.read_exposures(path)
        else:
            (exp,) = pc.read_exposures(path)
        assert exp.unit == unit


def test_unknown_instrument_is_refused():
    with pytest.raises(pc.InputError, match=r"ztf_.*unknown instrument 'hubble'.*rubin-afw, ZTF, SDSS, DECam"):
        pc.read_exposures(ZTF, instrument="hubble")


def test_identification_of_every_file():
    assert pc.instruments.identify(fits.open(SDSS), SDSS).name == "SDSS"
    assert pc.instruments.identify(fits.open(CALEXP), CALEXP).name == "rubin-afw"
    assert pc.instruments.identify(fits.open(HSC), HSC).name == "rubin-afw"
    for path in DECAM:
        assert pc.instruments.identify(fits.open(path), path).name == "DECam"
    assert pc.instruments.get("decam") is pc.instruments.get("DECam")


def test_bunit_mapping():
    import astropy.units as u

    parse = pc.instruments.parse_bunit
    assert parse("Data Value") == u.adu and parse("DN") == u.adu and parse("ADU") == u.adu
    assert parse("counts/s") == u.count / u.s
    assert parse("nanomaggy").to(u.nJy) == pytest.approx(3631.0)
    with pytest.warns(UserWarning, match="not a known unit"):
        assert parse("furlongs of light") == u.count
