"""`photocalib run` on images their survey already flat-fielded (real files in tests/data):
no ISR and no flats; the survey's weights, masks and zero point are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from click.testing import CliRunner

from photocalib.cli import main
from photocalib.pipeline import find_inputs
from photocalib.pipeline.config import Config
from photocalib.pipeline.runner import run_pipeline

DATA = Path(__file__).resolve().parents[1] / "data"
ZTF_DIR = DATA / "ztf"
ZTF = ZTF_DIR / "ztf_20200924431759_000655_zr_c13_o_q3_sciimg.fits"
DECAM6 = DATA / "decam-cp" / "testcase6"
DECAM3 = DATA / "decam-cp" / "testcase3"  # 41 x 51 cutouts: smaller than one background mesh

CONFIG = Config().with_overrides(dask={"progress": False}, warp={"coadd_size": 256})


@pytest.fixture(scope="module")
def ztf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ztf-run")
    inputs = find_inputs(raw=[str(ZTF_DIR)])  # processed: decided from the instrument
    result = run_pipeline(inputs, out, CONFIG, in_process=True, report=True)
    return inputs, result, out


def test_ztf_quadrant_runs_with_its_own_zero_point(ztf_run):
    inputs, result, out = ztf_run
    (unit,) = inputs.units
    assert unit.processed and inputs.flats == {}
    header = fits.getheader(ZTF)
    assert (unit.visit, unit.detector) == (header["EXPID"], header["RCID"])
    assert result.report is not None and result.report.is_file()
    assert "no reference catalog" in result.skipped["joint"]
    assert "own survey zero point" in (out / "report" / "index.html").read_text()
    assert not result.failed
    for sub in ("calexp", "warps", "calib/survey"):
        assert list((out / sub).rglob("det-*.fits")), sub
    assert (out / "coadd" / "coadd.fits").is_file()
    # The calibrated fluxes are the survey's: MAGZP per DN of the file, where the fluence image
    # holds DN × A(x, y) / A_ref (flat-fielded per nominal pixel, times the true pixel area).
    cat = pd.read_parquet(next((out / "catalogs").rglob("*.calibrated.parquet")))
    assert len(cat) > 50
    a_ref = fits.getheader(next((out / "exposures").rglob("det-*.fits")))["PCAREF"]
    dn = cat["instflux"] * a_ref / cat["pixel_area"]
    np.testing.assert_allclose(cat["flux_nJy"], dn * 10 ** (-0.4 * (header["MAGZP"] - 31.4)),
                               rtol=1e-9)
    info = json.loads(next((out / "manifest" / "apply").rglob("*.json")).read_text())
    assert "survey" in json.dumps(info)


def test_ztf_quadrant_with_a_reference_recovers_the_zero_point(ztf_run, tmp_path):
    """A reference made of the survey-calibrated fluxes of its own bright stars: the
    single-detector fit against it must give back MAGZP (to the photometric noise)."""
    _, _, first = ztf_run
    cat = pd.read_parquet(next((first / "catalogs").rglob("*.calibrated.parquet")))
    bright = cat[(cat["flags"] == 0) & (cat["snr"] > 50)]
    ref = pd.DataFrame({"id": np.arange(len(bright)), "ra": bright["ra"], "dec": bright["dec"],
                        "r_flux": bright["flux_survey"], "r_flux_err": 0.001 * bright["flux_survey"]})
    ref.to_parquet(tmp_path / "ref.parquet")
    out = tmp_path / "run"
    inputs = find_inputs(raw=[str(ZTF)], refcat=tmp_path / "ref.parquet", processed=True)
    result = run_pipeline(inputs, out, CONFIG.with_overrides(report={"enabled": False}), in_process=True)
    assert "two visits" in result.skipped["joint"]
    got = pd.read_parquet(next((out / "catalogs").rglob("*.calibrated.parquet")))
    good = got[(got["flags"] == 0) & (got["snr"] > 50)]
    dmag = -2.5 * np.log10(good["flux_nJy"] / good["flux_survey"])
    assert len(good) > 20
    assert abs(float(np.median(dmag))) < 1e-3
    info = json.loads(next((out / "manifest" / "apply").rglob("*.json")).read_text())
    assert '"single"' in json.dumps(info)


def test_decam_cp_cutouts_with_the_gaia_chunk(tmp_path):
    """The Gaia chunk (legacypipe's DR2 file) as the reference: read by photocalib.refcat,
    turned into each exposure's DECam band by the published Gaia → DECam colour term. These 100-pixel cutouts
    hold one saturated bright star each, so nothing calibrates, and the run says so."""
    gaia = DECAM6 / "gaia" / "chunk-03687.fits"
    out = tmp_path / "run"
    inputs = find_inputs(raw=[str(DECAM6)], refcat=gaia)
    assert all(u.processed for u in inputs.units) and len(inputs.units) == 6
    result = run_pipeline(inputs, out, CONFIG, in_process=True, report=True)
    assert "span bands g, r, z" in result.skipped["joint"]
    assert "0 of 6 images have a single-detector calibration" in result.skipped["joint"]
    assert result.report.is_file() and not result.failed


def test_decam_cp_cutouts_run_and_report(tmp_path):
    result = CliRunner().invoke(main, ["run", "--raw", str(DECAM3), "--processed", "--out", str(tmp_path / "run"),
                                       "--in-process", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    run = json.loads((out / "run.json").read_text())
    units = run["inputs"]["units"]
    assert len(units) == 8  # 8 exposures; oow/ood files are read with their ooi, not as units
    assert all("_ooi_" in u[2] for u in units)
    assert "carry no zero point" in run["skipped"]["joint"]  # these cutouts have no MAGZERO
    assert (out / "report" / "index.html").is_file()
    for u in units:
        exp = fits.getheader(out / "exposures" / f"visit-{u[0]:06d}" / f"det-{u[1]:03d}.fits")
        assert exp["PCKIND"] == "FLUENCE" and exp["INSTRUMENT"] == "DECam"
