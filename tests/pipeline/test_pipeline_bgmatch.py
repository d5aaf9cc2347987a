"""`photocalib run` with [warp] background_matching: the matched fields reach the coadd file
and the report's background-matching panel; the three joint models are compared in one run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from click.testing import CliRunner
from mini_survey import astropy_header, mini_config, write_mini_survey
from pipeline_chromium import chromium_path, probe_page

from photocalib import PhotoCalib
from photocalib.cli import main
from photocalib.fit.joint import JointSolution
from photocalib.warp.coadd import read_background_fields

pytestmark = pytest.mark.slow

CONFIG = mini_config(background={"order": 0},
                     warp={"background_matching": True, "match_order": 1})


def test_run_with_background_matching(tmp_path):
    survey = tmp_path / "survey"
    write_mini_survey(survey, astropy_header("siponly.hdr"), seed=5)
    config = tmp_path / "bg.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(survey), "--out", str(out), "--config", str(config),
                                       "--no-progress", "--in-process"])
    assert result.exit_code == 0, result.output
    fields = read_background_fields(out / "coadd" / "coadd.fits")
    assert set(fields) == {1000, 1001, 1002}
    with fits.open(out / "coadd" / "coadd.fits") as hdul:
        ref = int(hdul["BGMATCH_1000"].header["BGREF"])
        assert any(h.header.get("PCBGMAT") is True for h in hdul[:2])
    assert fields[ref].evaluate(10.0, 10.0) == 0.0
    assert all(np.isfinite(f.evaluate(128.0, 128.0)) for f in fields.values())
    # the three joint models side by side: the configured one wrote the calibrations
    info = json.loads((out / "calib" / "joint" / "models" / "models.json").read_text())
    assert info["chosen"] == "separated" and set(info["models"]) == {"monolithic", "separated", "reference-free"}
    fitted = [m for m, rec in info["models"].items() if "seconds" in rec]
    assert "separated" in fitted and len(fitted) >= 2
    res = pd.read_parquet(out / "tables" / "residuals.parquet")
    assert {f"joint ({m})" for m in fitted} <= set(res["calibration"])
    chosen = JointSolution.read(out / "calib" / "joint" / "solution.fits").photo_calib(1000, 0)
    written = PhotoCalib.read(out / "calib" / "joint" / "visit-001000" / "det-000.fits")
    assert chosen.instflux_to_nanojansky(1.0, 50.0, 60.0) == pytest.approx(written.instflux_to_nanojansky(1.0, 50.0, 60.0))
    headline = (out / "report" / "index.html").read_text()
    assert "joint (reference-free): RMS residual" in headline and "fit time" in headline
    report = out / "report" / "index.html"
    assert "src='background_matching.png'" in report.read_text()
    if chromium_path() is not None:
        n_images, n_loaded, _ = probe_page(report)
        assert n_images == 8 and n_loaded == 8
