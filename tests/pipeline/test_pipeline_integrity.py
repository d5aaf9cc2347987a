"""Issue 18, pipeline level: a rerun redoes what changed, a failed refit leaves no stale
numbers, and one run at a time owns a run folder.

The survey is mini_survey.py's (astropy's real SIP header, simulated pixels, known truth);
each check compares what the run wrote with what its inputs say it must be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from click.testing import CliRunner
from mini_survey import astropy_header, mini_config, write_mini_survey

from photocalib.cli import main
from photocalib.pipeline.layout import RunLock, _process_start

CONFIG = mini_config(warp={"coadd_size": 128}, report={"enabled": False},
                     dask={"n_workers": None, "memory_limit": None})


def _record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _fluxes(out: Path) -> pd.Series:
    frames = [pd.read_parquet(p) for p in sorted((out / "catalogs").rglob("*.calibrated.parquet"))]
    df = pd.concat(frames, ignore_index=True)
    return df.set_index(["visit", "detector", "x", "y"])["flux_nJy"]


@pytest.fixture()
def survey(tmp_path) -> Path:
    path = tmp_path / "survey"
    write_mini_survey(path, astropy_header(), seed=5)
    (tmp_path / "cfg.toml").write_text(CONFIG)
    return path


def _run(survey: Path, out: Path, *extra: str):
    cfg = survey.parent / "cfg.toml"
    return CliRunner().invoke(main, ["run", str(survey), "--out", str(out), "--config", str(cfg),
                                     "--no-progress", "--in-process", *extra])


def test_changed_inputs_redo_exactly_what_depends_on_them(survey, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = _run(survey, out)
    assert first.exit_code == 0, first.output
    before = _fluxes(out)
    assert np.isfinite(before).sum() > 50
    rec = _record(out)
    # Paths in run.json are absolute: `report` works from any directory.
    assert all(os.path.isabs(u[2]) for u in rec["inputs"]["units"])
    assert os.path.isabs(rec["inputs"]["refcat"])

    # The same survey named by a relative path, from another directory: nothing is redone.
    monkeypatch.chdir(survey.parent)
    again = _run(Path("survey"), Path("run"))
    assert again.exit_code == 0, again.output
    counts = _record(out)["counts"]
    assert counts["units_cached"] == 6 and counts["units_processed"] == 0
    assert counts.get("joint_cached") == 1
    monkeypatch.chdir(tmp_path.parent)
    assert CliRunner().invoke(main, ["report", str(out)]).exit_code == 0

    # Double the reference fluxes in place (same path, same size): every detector is matched
    # again, the joint fit redone, and the calibrated fluxes double.
    ref = pd.read_parquet(survey / "refcat.parquet")
    flux_cols = [c for c in ref.columns if "flux" in c]
    assert flux_cols
    for c in flux_cols:
        ref[c] = ref[c] * 2.0
    ref.to_parquet(survey / "refcat.parquet", index=False)
    redo = _run(survey, out)
    assert redo.exit_code == 0, redo.output
    counts = _record(out)["counts"]
    assert counts["units_processed"] == 6 and "joint_cached" not in counts
    after = _fluxes(out)
    common = before.index.intersection(after.index)
    ratio = (after[common] / before[common]).to_numpy()
    ratio = ratio[np.isfinite(ratio)]
    assert ratio.size > 50
    np.testing.assert_allclose(np.median(ratio), 2.0, rtol=2e-3)

    # Zero the pixels of one raw file: its two detectors (and only they) are processed again.
    raw = survey / "raw" / "visit-001001.fits"
    with fits.open(raw, mode="update") as hdul:
        for hdu in hdul[1:]:
            hdu.data[...] = 0
    zeroed = _run(survey, out)
    counts = _record(out)["counts"]
    assert counts["units_processed"] == 2 and counts["units_cached"] == 4, (zeroed.output, counts)


def test_failed_refit_leaves_no_stale_numbers(survey, tmp_path):
    out = tmp_path / "run"
    first = _run(survey, out)
    assert first.exit_code == 0, first.output
    assert len(list((out / "calexp").rglob("det-*.fits"))) == 6
    assert len(list((out / "calib" / "joint").rglob("det-*.fits"))) == 6
    headline = json.loads((out / "tables" / "headline.json").read_text())
    assert [h for h in headline if str(h["name"]).startswith("joint (separated)")], headline
    # Monolithic with visit order 7 cannot be constrained by 3 visits: the joint step fails.
    failed = _run(survey, out, "--model", "monolithic")
    assert failed.exit_code == 3, failed.output
    rec = _record(out)
    assert rec["joint_model"] == "monolithic" and "joint" in rec["failed"]
    # Nothing of the separated fit is left to be read as the monolithic one.
    assert not list((out / "calexp").rglob("*.fits"))
    assert not list((out / "calib" / "joint").rglob("*.fits"))
    assert not list((out / "catalogs").rglob("*.calibrated.parquet"))
    assert not (out / "coadd" / "coadd.fits").exists()
    headline = json.loads((out / "tables" / "headline.json").read_text())
    assert not [h for h in headline if str(h["name"]).startswith("joint (")], headline
    # The configuration file and the run record agree on the model.
    assert 'joint_model = "monolithic"' in (out / "config.toml").read_text()
    # Back to the separated model: refitted, all outputs back, detectors not reprocessed.
    back = _run(survey, out)
    assert back.exit_code == 0, back.output
    assert _record(out)["counts"]["units_cached"] == 6
    assert len(list((out / "calexp").rglob("det-*.fits"))) == 6


def test_a_busy_run_folder_is_refused_naming_the_holder(survey, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = RunLock(out)
        lock.record["pid"] = holder.pid
        lock.record["pid_start"] = _process_start(holder.pid)
        assert lock._try_create()
        result = _run(survey, out)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and f"PID {holder.pid}" in lines[0] and "--wait" in lines[0]
        assert sorted(p.name for p in out.iterdir()) == [RunLock.NAME]  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: its lock is stale and the next run takes it over.
    result = _run(survey, out)
    assert result.exit_code == 0, result.output
    assert not (out / RunLock.NAME).exists()


@pytest.mark.slow
def test_concurrent_runs_into_one_folder_lose_nothing(survey, tmp_path):
    """The issue's recipe: visits 1000-1002 and 1001-1003 into one --out at once."""
    big = tmp_path / "survey4"
    write_mini_survey(big, astropy_header(), n_visits=4, seed=5)
    cfg = survey.parent / "cfg.toml"
    out = tmp_path / "run"
    script = Path(sys.executable).with_name("photocalib")

    def start(visits: list[int], *extra: str) -> subprocess.Popen:
        raw = [a for v in visits for a in ("--raw", str(big / "raw" / f"visit-{v:06d}.fits"))]
        return subprocess.Popen([str(script), "run", str(big), *raw, "--out", str(out), "--config",
                                 str(cfg), "--no-progress", "--in-process", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Both queue (--wait): whichever takes the folder first, the other runs after it. (Without
    # --wait the second refuses, naming the holder: test_a_busy_run_folder_is_refused...)
    a = start([1000, 1001, 1002], "--wait")
    b = start([1001, 1002, 1003], "--wait")
    out_a, err_a = a.communicate(600)
    out_b, err_b = b.communicate(600)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    for v in (1000, 1001, 1002, 1003):
        for d in (0, 1):
            name = f"visit-{v:06d}/det-{d:03d}.fits"
            assert (out / "calexp" / name).is_file(), name
            assert (out / "calib" / "joint" / name).is_file(), name
    rec = _record(out)
    assert f'joint_model = "{rec["joint_model"]}"' in (out / "config.toml").read_text()
