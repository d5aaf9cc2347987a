"""CLI file tools: area-map on real PTF TPV and SIP headers, kind conversions, clean errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from photocalib.cli import main

DATA = Path(astropy.__file__).parent / "wcs" / "tests" / "data"


def _header(name: str) -> fits.Header:
    return fits.Header.fromfile(DATA / name, sep="", endcard=True, padding=False)


def _independent_area(header: fits.Header, x: np.ndarray, y: np.ndarray, h: float = 0.5) -> np.ndarray:
    """|det J| in arcsec² by central differences of astropy's all_pix2world on the unit sphere."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = WCS(header)

    def unit(xx, yy):
        ra, dec = np.radians(w.all_pix2world(xx, yy, 0))
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)

    dx = (unit(x + h, y) - unit(x - h, y)) / (2 * h)
    dy = (unit(x, y + h) - unit(x, y - h)) / (2 * h)
    return np.linalg.norm(np.cross(dx, dy), axis=-1) * np.degrees(1) ** 2 * 3600.0**2


@pytest.mark.parametrize("name", ["tpvonly.hdr", "siponly.hdr"])
def test_area_map_of_real_ptf_header(tmp_path, name, rng):
    header = _header(name)
    ny, nx = header["NAXIS2"], header["NAXIS1"]
    pixels = rng.normal(100.0, 5.0, (ny, nx)).astype(np.float32)
    path = tmp_path / "ptf.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(pixels, header=header, name="CCD01")]).writeto(path)
    result = CliRunner().invoke(main, ["area-map", str(path)])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip())
    assert out == tmp_path / "ptf.area.fits"
    with fits.open(out) as hdul:
        area = hdul["CCD01"].data
        assert hdul["CCD01"].header["BUNIT"] == "arcsec2"
    assert area.shape == (ny, nx)
    xs = rng.integers(0, nx, 200).astype(float)
    ys = rng.integers(0, ny, 200).astype(float)
    expected = _independent_area(header, xs, ys)
    got = area[ys.astype(int), xs.astype(int)]
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    # The distortion makes the area vary: the map is not a constant.
    assert np.ptp(area) / area.mean() > 1e-4


def test_area_map_without_wcs_is_one_line_error(tmp_path):
    path = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(path)
    result = CliRunner().invoke(main, ["area-map", str(path)])
    assert result.exit_code == 2
    assert "no WCS keywords" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("content", [None, b"", b"SIMPLE  = this is not FITS" * 20])
def test_missing_empty_and_non_fits(tmp_path, content):
    path = tmp_path / "x.fits"
    if content is not None:
        path.write_bytes(content)
    for command in (["area-map"], ["to-fluence"], ["to-surface-brightness"]):
        result = CliRunner().invoke(main, [*command, str(path)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("photocalib: error: ") and str(path) in result.output


def test_debug_shows_traceback(tmp_path):
    from photocalib.errors import InputError

    result = CliRunner().invoke(main, ["--debug", "area-map", str(tmp_path / "none.fits")])
    assert isinstance(result.exception, InputError)


def _tan_header(nx: int, ny: int) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    # A strongly non-uniform area away from the tangent point: the image sits 8 deg off axis.
    w.wcs.crpix = [nx / 2 - 40000.0, ny / 2]
    w.wcs.cd = [[-0.2 / 3600, 0.0], [0.0, 0.2 / 3600]]
    return w.to_header()


def test_fluence_roundtrip_through_cli(tmp_path, rng):
    ny, nx = 40, 50
    header = _tan_header(nx, ny)
    header["PCKIND"] = "SURFACE_BRIGHTNESS"
    header["BUNIT"] = "count / arcsec2"
    sb = rng.uniform(10, 20, (ny, nx))
    path = tmp_path / "sb.fits"
    fits.PrimaryHDU(sb, header=header).writeto(path)
    runner = CliRunner()
    r1 = runner.invoke(main, ["to-fluence", str(path)])
    assert r1.exit_code == 0, r1.output
    fluence_path = Path(r1.output.strip())
    with fits.open(fluence_path) as hdul:
        fluence = hdul[0].data
        assert hdul[0].header["PCKIND"] == "FLUENCE"
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    area = _independent_area(header, xx.ravel(), yy.ravel()).reshape(ny, nx)
    np.testing.assert_allclose(fluence, sb * area, rtol=2e-6)
    r2 = runner.invoke(main, ["to-surface-brightness", str(fluence_path), "-o", str(tmp_path / "back.fits")])
    assert r2.exit_code == 0, r2.output
    with fits.open(tmp_path / "back.fits") as hdul:
        np.testing.assert_allclose(hdul[0].data, sb, rtol=1e-12)


def test_every_command_has_help():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for name in main.commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output


def test_calibrate_applies_a_saved_calibration(tmp_path, rng):
    from photocalib.calib import PhotoCalib
    from photocalib.image import Exposure, ImageKind

    ny, nx = 30, 40
    header = _tan_header(nx, ny)
    from photocalib.astrometry import SkyWcs

    wcs = SkyWcs.from_header(header)
    counts = rng.uniform(100, 200, (ny, nx))
    exp = Exposure(counts, variance=counts.copy(), wcs=wcs, kind=ImageKind.FLUENCE, unit="count")
    exp.write(tmp_path / "exp.fits")
    PhotoCalib(2.5, kind=ImageKind.FLUENCE).write(tmp_path / "calib.fits")
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "exp.fits"), str(tmp_path / "calib.fits")])
    assert result.exit_code == 0, result.output
    out = Path(result.output.strip())
    assert out.name == "exp.calexp.fits"
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul[0].data, 2.5 * counts, rtol=1e-6)
        assert hdul[0].header["BUNIT"] == "nJy" and hdul[0].header["PCKIND"] == "FLUENCE"
    # A surface-brightness calibration applied to the same fluence image goes through the area.
    sb_calib = PhotoCalib(2.5, kind=ImageKind.FLUENCE).to_kind(ImageKind.SURFACE_BRIGHTNESS, wcs,
                                                                bbox=exp.bbox)
    sb_calib.write(tmp_path / "sb.fits")
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "exp.fits"), str(tmp_path / "sb.fits"),
                                       "-o", str(tmp_path / "b.fits")])
    assert result.exit_code == 0, result.output
    with fits.open(tmp_path / "b.fits") as hdul:
        np.testing.assert_allclose(hdul[0].data, 2.5 * counts, rtol=1e-6)
