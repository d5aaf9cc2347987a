"""The CLI file commands on real survey files: they read through read_exposures, so a ZTF
sciimg (BUNIT 'Data Value', no PCKIND) converts and calibrates like photocalib's own files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from click.testing import CliRunner

import photocalib as pc
from photocalib.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
ZTF = DATA / "ztf" / "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"


def test_to_fluence_of_a_ztf_sciimg(tmp_path):
    out = tmp_path / "fluence.fits"
    result = CliRunner().invoke(main, ["to-fluence", str(ZTF), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (exp,) = pc.read_exposures(ZTF)
    back = pc.Exposure.read(out)
    assert back.kind is pc.ImageKind.FLUENCE and str(back.unit) == "adu"
    area = exp.wcs.pixel_area_field(exp.bbox).fill()
    np.testing.assert_allclose(back.image, exp.image * area, rtol=1e-6)
    np.testing.assert_array_equal(back.mask, exp.mask)


def test_calibrate_a_ztf_sciimg_with_its_own_zero_point(tmp_path):
    (exp,) = pc.read_exposures(ZTF)
    calib_path = tmp_path / "calib.fits"
    exp.photo_calib.write(calib_path)
    out = tmp_path / "calexp.fits"
    result = CliRunner().invoke(main, ["calibrate", str(ZTF), str(calib_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    header = fits.getheader(ZTF)
    njy = pc.Exposure.read(out)
    np.testing.assert_allclose(njy.image, fits.getdata(ZTF) * 10 ** (-0.4 * (header["MAGZP"] - 31.4)),
                               rtol=1e-6)
