"""End to end: `photocalib run` on MEF files carrying astropy's real PTF TPV and SIP headers.

The pixels are simulated (mini_survey.py) through astropy's own WCS, so the truth is known:
calibrated fluxes of isolated bright stars must match it within their photon noise, and the
fitted grey terms must match the injected ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from click.testing import CliRunner
from mini_survey import astropy_header, mini_config, write_mini_survey
from pipeline_chromium import chromium_path, probe_page
from scipy.spatial import cKDTree

from photocalib.cli import main
from photocalib.pipeline.catalogs import match_nearest

CONFIG = mini_config()


def _isolated_residuals(run: Path, survey: Path) -> pd.DataFrame:
    """Calibrated − true magnitude (mmag) of bright stars with no true neighbour within 10"."""
    truth = pd.read_parquet(survey / "truth" / "stars.parquet")
    xyz = np.c_[truth["ra"] * np.cos(np.radians(truth["dec"])), truth["dec"]]
    nn = cKDTree(xyz).query(xyz, k=2)[0][:, 1] * 3600.0
    rows = []
    for path in sorted((run / "catalogs").rglob("*.calibrated.parquet")):
        cat = pd.read_parquet(path)
        idx, _ = match_nearest(cat["ra"], cat["dec"], truth["ra"], truth["dec"], 1.0)
        keep = (idx >= 0) & (cat["flags"] == 0) & (cat["snr"] > 200)
        cat, idx = cat[keep], idx[keep]
        keep = nn[idx] > 10.0
        cat, idx = cat[keep], idx[keep]
        rows.append(pd.DataFrame({
            "res": -2500.0 * np.log10(cat["flux_nJy"].to_numpy() / truth["r_flux"].to_numpy()[idx]),
            "noise": 1085.7 / cat["snr"].to_numpy(),
            "x": cat["x"].to_numpy(), "detector": cat["detector"].to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def _check_run(out: Path, survey: Path) -> None:
    for sub in ("calexp", "catalogs", "calib/joint", "calib/single", "calib/legacy"):
        assert any((out / sub).rglob("*")), sub
    assert len(list((out / "calexp").rglob("det-*.fits"))) == 6
    assert (out / "coadd" / "coadd.fits").is_file()
    assert (out / "report" / "index.html").is_file()
    record = json.loads((out / "run.json").read_text())
    assert record["skipped"] == {}
    with fits.open(next((out / "calexp").rglob("det-*.fits"))) as hdul:
        assert hdul[0].header["PCKIND"] == "FLUENCE" and hdul[0].header["BUNIT"] == "nJy"
    res = _isolated_residuals(out, survey)
    assert len(res) >= 40
    # Robust scatter within twice the photon noise, median within 3 mmag: the calibration
    # adds little to the noise of SNR > 200 stars.
    mad_sigma = 1.4826 * np.median(np.abs(res["res"] - res["res"].median()))
    assert mad_sigma <= 2.0 * np.sqrt(np.mean(res["noise"] ** 2)), (mad_sigma, res.describe())
    assert abs(res["res"].median()) <= 3.0
    grey = pd.read_parquet(out / "tables" / "grey.parquet")
    np.testing.assert_allclose(grey["grey_mmag"], grey["truth_mmag"], atol=3.0)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "test.toml"
    path.write_text(CONFIG)
    return path


def test_run_on_tpv_headers_with_dask(tmp_path, config_file):
    # The joint fit's per-visit accumulation runs as a map-reduce on the same cluster.
    config = tmp_path / "dask.toml"
    config.write_text(config_file.read_text().replace("star_flat_order = 1",
                                                     "star_flat_order = 1\ndistributed = \"always\""))
    survey = tmp_path / "survey"
    write_mini_survey(survey, astropy_header("tpvonly.hdr"))
    with fits.open(survey / "raw" / "visit-001000.fits") as hdul:
        assert hdul[1].header["CTYPE1"] == "RA---TPV"
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(survey), "--out", str(out), "--config",
                                       str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    _check_run(out, survey)
    if chromium_path() is not None:
        n_images, n_loaded, _ = probe_page(out / "report" / "index.html")
        assert n_images == 7 and n_loaded == 7


def test_run_on_sip_headers_and_rerun_skips(tmp_path, config_file):
    survey = tmp_path / "survey"
    write_mini_survey(survey, astropy_header("siponly.hdr"), seed=5)
    with fits.open(survey / "raw" / "visit-001000.fits") as hdul:
        assert hdul[1].header["CTYPE1"] == "RA---TAN-SIP"
    out = tmp_path / "run"
    args = ["run", str(survey), "--out", str(out), "--config", str(config_file), "--no-progress",
            "--in-process"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    _check_run(out, survey)
    before = {p: p.stat().st_mtime_ns for p in (out / "calexp").rglob("*.fits")}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["units_cached"] == 6 and counts["units_processed"] == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten
    # A joint model these 3 visits cannot constrain (monolithic, visit order 7): exit status 3,
    # the failure named in run.json and the report, the detectors not reprocessed.
    other = CliRunner().invoke(main, args + ["--model", "monolithic"])
    assert other.exit_code == 3, other.output
    assert "step joint failed" in other.output
    record = json.loads((out / "run.json").read_text())
    assert "joint" in record["failed"] and record["counts"]["units_cached"] == 6
    assert "Steps that failed" in (out / "report" / "index.html").read_text()
    # A changed joint configuration refits (and recalibrates) without reprocessing detectors.
    cfg2 = out.parent / "order0.toml"
    cfg2.write_text(CONFIG.replace("star_flat_order = 1", "star_flat_order = 0"))
    args2 = [a if a != str(args[args.index("--config") + 1]) else str(cfg2) for a in args]
    redo = CliRunner().invoke(main, args2)
    assert redo.exit_code == 0, redo.output
    record = json.loads((out / "run.json").read_text())
    assert record["counts"]["units_cached"] == 6 and "joint_cached" not in record["counts"]
    assert record["failed"] == {}
    assert {p: p.stat().st_mtime_ns for p in before} != before  # calexps recalibrated
    _check_run(out, survey)
    # `photocalib report` recomputes the tables from the outputs and redraws the same report.
    grey = pd.read_parquet(out / "tables" / "grey.parquet")
    (out / "tables" / "grey.parquet").unlink()
    (out / "report" / "grey.png").unlink()
    redo = CliRunner().invoke(main, ["report", str(out)])
    assert redo.exit_code == 0, redo.output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / "grey.parquet"), grey)
    assert (out / "report" / "grey.png").is_file()
    # Without a truth (real data) the residuals are against the reference catalog.
    import dataclasses

    from photocalib.pipeline.config import Config
    from photocalib.pipeline.layout import RunLayout
    from photocalib.pipeline.runner import previous_inputs
    from photocalib.pipeline.summary import write_summary

    inputs = dataclasses.replace(previous_inputs(out), truth=None)
    write_summary(RunLayout(out), inputs, Config())
    res = pd.read_parquet(out / "tables" / "residuals.parquet")
    assert (res["against"] == "reference catalog").all() and len(res) > 50
    assert "truth_mmag" not in pd.read_parquet(out / "tables" / "grey.parquet").columns
