"""The CLI on bad input: one line on stderr naming the input, exit status 2, no traceback; with
--debug the traceback. Through click's CliRunner and through the installed `photocalib` script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from photocalib.cli import main

SCRIPT = Path(sys.executable).with_name("photocalib")


def _one_line_error(result, *names: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert err.startswith("photocalib: error: "), err
    assert "\n" not in err, f"more than one line on stderr: {err!r}"
    assert "Traceback" not in result.output
    for name in names:
        assert name in err, (name, err)


def _bad_files(tmp: Path, files: dict[str, Path], sip_header) -> dict[str, tuple[Path, str]]:
    """Damaged image files and what the error must name (beyond the path)."""
    data = files["exposure"].read_bytes()
    out = {}

    def put(name: str, content: bytes | None = None, hdul: fits.HDUList | None = None, word: str = ""):
        path = tmp / f"{name}.fits"
        if hdul is not None:
            hdul.writeto(path)
        elif content is not None:
            path.write_bytes(content)
        out[name] = (path, word)

    put("missing")
    put("empty", b"")
    put("truncated", data[: len(data) - 2880], word="truncated")
    put("text", b"not a FITS file at all\n" * 200)
    put("header-only", hdul=fits.HDUList([fits.PrimaryHDU(header=sip_header)]), word="HDU")
    spectral = fits.Header({"CTYPE1": "WAVE", "CRVAL1": 5000.0, "CDELT1": 1.0, "CRPIX1": 1.0})
    put("spectral", hdul=fits.HDUList([fits.PrimaryHDU(np.ones((8, 8), np.float32), header=spectral)]),
        word="celestial")
    sip = sip_header.copy()
    sip["A_ORDER"] = 2
    for key in ("NAXIS1", "NAXIS2", "NAXIS"):
        sip.remove(key, ignore_missing=True)
    put("sip-order", hdul=fits.HDUList([fits.PrimaryHDU(np.ones((48, 64), np.float32), header=sip)]),
        word="A_ORDER")
    return out


CASES = ["missing", "empty", "truncated", "text", "header-only", "spectral", "sip-order"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["area-map", "to-fluence", "to-surface-brightness"])
def test_file_commands_give_one_line(tmp_path, files, sip_header, case, command):
    path, word = _bad_files(tmp_path, files, sip_header)[case]
    result = CliRunner().invoke(main, [command, str(path), "--out", str(tmp_path / "out.fits")])
    _one_line_error(result, str(path), word)
    assert not (tmp_path / "out.fits").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "text", "field-file"])
def test_calibrate_with_a_bad_calibration_file(tmp_path, files, case):
    calib = {"field-file": files["field"]}.get(case)
    if calib is None:
        calib = tmp_path / f"{case}.fits"
        data = files["calib"].read_bytes()
        content = {"missing": None, "empty": b"", "truncated": data[: len(data) // 2],
                   "text": b"calibration!\n" * 300}[case]
        if content is not None:
            calib.write_bytes(content)
    out = tmp_path / "cal.fits"
    result = CliRunner().invoke(main, ["calibrate", str(files["exposure"]), str(calib), "--out", str(out)])
    _one_line_error(result, str(calib))
    assert not out.exists()


def test_calibrate_of_the_wrong_kind_says_which_conversion(tmp_path, files):
    # The exposure is SURFACE_BRIGHTNESS; a FLUENCE calibration needs a fluence image. The CLI
    # either converts (the result is then a fluence image) or says what to run.
    out = tmp_path / "cal.fits"
    result = CliRunner().invoke(main, ["calibrate", str(files["exposure"]), str(files["calib"]), "--out", str(out)])
    if result.exit_code == 0:
        with fits.open(out) as hdul:
            assert hdul[0].header["PCKIND"] == "FLUENCE"
    else:
        _one_line_error(result, "fluence")


@pytest.mark.parametrize("text, words", [
    ("[measure]\naperture_arcsec = 'wide'\n", ["measure.aperture_arcsec"]),
    ("[dask]\nn_workers = 2.5\n", ["dask.n_workers"]),
    ("[dask]\nn_workers = [2]\n", ["dask.n_workers"]),
    ("[measure]\nthreshold = {value = 5}\n", ["measure.threshold"]),
    ("measure = 3\n", ["measure"]),
    ("debug = true\n", ["debug", "unknown key"]),
    ("[calibration.extra]\nx = 1\n", ["calibration.extra", "unknown key"]),
    ("[measure]\naperture_arcsec = 3.0\naperture_arcsec = 4.0\n", ["TOML"]),
])
def test_run_with_a_bad_config(tmp_path, text, words):
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "survey"), "--out", str(tmp_path / "o"),
                                       "--config", str(config), "--in-process", "--no-progress"])
    _one_line_error(result, str(config), *words)


# -- the installed script ------------------------------------------------------------------------------
def _script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def test_script_prints_one_line_and_exits_2(tmp_path, files):
    data = files["exposure"].read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(data[:-2880])
    proc = _script("to-fluence", str(path), "--out", str(tmp_path / "f.fits"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("photocalib: error: ") and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "f.fits").exists()


def test_script_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "absent.fits"
    proc = _script("--debug", "area-map", str(path))
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "InputError" in proc.stderr and str(path) in proc.stderr


def test_script_bad_config_through_run(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[calibration]\nstar_flat_ordre = 2\n")
    proc = _script("run", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(config), "--in-process")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "calibration.star_flat_ordre" in lines[0] and str(config) in lines[0], proc.stderr
