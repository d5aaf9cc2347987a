"""`photocalib demo`: the simulator entry point and options it relies on, and a tiny demo."""

from __future__ import annotations

import inspect
import json

import pytest
from click.testing import CliRunner

from photocalib.cli import main
from photocalib.pipeline.config import Config
from photocalib.sim import simulate


def test_demo_simulator_accepts_the_configured_options():
    kwargs = Config().simulate.simulate_kwargs()
    inspect.signature(simulate).bind("out", num_workers=2, **kwargs)
    inspect.signature(simulate).bind("out", scheduler="synchronous", **kwargs)
    inspect.signature(simulate).bind("out", client=None, **kwargs)


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[simulate]\nvisits = 3\ndetector_size = 192\nn_detectors = 4\n"
                   "[calibration]\nstar_flat_order = 1\n[warp]\ncoadd_size = 256\n"
                   "[dask]\nmemory_limit = \"1GiB\"\n")
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--config", str(cfg), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    record = json.loads((out / "run" / "run.json").read_text())
    assert record["skipped"] == {} and record["failed"] == {}
    assert len(list((out / "run" / "report").glob("*.png"))) == 7
    # A second demo resumes: nothing is simulated or processed again.
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--config", str(cfg), "--no-progress"])
    assert again.exit_code == 0, again.output
    record = json.loads((out / "run" / "run.json").read_text())
    assert record["counts"]["units_processed"] == 0 and record["counts"]["units_cached"] == 12
