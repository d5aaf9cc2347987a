"""`photocalib run` and `report` on bad inputs: one line on stderr, exit 2, naming the input."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from photocalib.cli import main


def _raw(path, visit=None, detector=0, wcs=True):
    h = fits.Header()
    if wcs:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [10.0, 20.0]
        w.wcs.crpix = [16, 16]
        w.wcs.cd = [[-1e-4, 0], [0, 1e-4]]
        h.update(w.to_header())
    if visit is not None:
        h["VISIT"] = visit
    h["DETECTOR"] = detector
    h.update({"GAIN": 1.0, "RDNOISE": 3.0, "BIAS": 100.0})
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.full((32, 32), 200, np.float32), h)]).writeto(path)


def _run(*args):
    return CliRunner().invoke(main, ["run", *map(str, args), "--in-process", "--no-progress"])


def test_run_needs_inputs(tmp_path):
    result = _run("--out", tmp_path / "o")
    assert result.exit_code == 2 and "SURVEY" in result.output


def test_missing_survey_folder(tmp_path):
    result = _run(tmp_path / "nope", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.output.startswith("photocalib: error:") and "survey folder not found" in result.output


def test_raw_without_visit_names_the_hdu(tmp_path):
    _raw(tmp_path / "a.fits", visit=None)
    result = _run("--raw", tmp_path / "a.fits", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "a.fits[1]" in result.output and "VISIT" in result.output


def test_duplicate_units_and_truncated_raw(tmp_path):
    _raw(tmp_path / "a.fits", visit=1)
    _raw(tmp_path / "b.fits", visit=1)
    result = _run("--raw", tmp_path / "a.fits", "--raw", tmp_path / "b.fits", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "visit 1 detector 0" in result.output
    data = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(data[:3000])
    result = _run("--raw", tmp_path / "t.fits", "--out", tmp_path / "o2")
    assert result.exit_code == 2 and "t.fits" in result.output and "Traceback" not in result.output


def test_no_flat_names_the_detector(tmp_path):
    _raw(tmp_path / "a.fits", visit=7, detector=3)
    (tmp_path / "flats").mkdir()
    result = _run("--raw", tmp_path / "a.fits", "--flats", tmp_path / "flats", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "detector 3" in result.output and "dome flat" in result.output


def test_bad_config_names_the_key(tmp_path):
    _raw(tmp_path / "a.fits", visit=7)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[measure]\nthreshold = 'high'\n")
    result = _run("--raw", tmp_path / "a.fits", "--config", cfg, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "measure.threshold" in result.output


def test_report_of_missing_dir(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not a directory" in result.output
