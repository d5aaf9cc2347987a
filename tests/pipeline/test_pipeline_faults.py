"""Faults during `photocalib run`: a Dask worker killed mid-run, damaged outputs, a full disk."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import astropy
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from mini_survey import write_mini_survey

from photocalib.errors import PhotocalibError
from photocalib.pipeline.config import Config
from photocalib.pipeline.inputs import find_inputs
from photocalib.pipeline.runner import run_pipeline

DATA = Path(astropy.__file__).parent / "wcs" / "tests" / "data"


def _config(**dask) -> Config:
    return Config().with_overrides(
        measure={"aperture_arcsec": 8.0},
        background={"mesh_size": 50}, calibration={"star_flat_order": 1},
        warp={"coadd_size": 128}, report={"enabled": False},
        dask={"progress": False, "memory_limit": "1GiB", **dask})


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "survey"
    header = fits.Header.fromfile(DATA / "siponly.hdr", sep="", endcard=True, padding=False)
    write_mini_survey(path, header, seed=11)
    return path


def _content(path: Path) -> str:
    """Digest of a file's content: FITS headers (but the CHECKSUM card, whose comment carries
    the time of writing) and data; Parquet values."""
    digest = hashlib.sha256()
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        digest.update(",".join(df.columns).encode())
        digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
        return digest.hexdigest()
    with fits.open(path) as hdul:
        for hdu in hdul:
            for card in hdu.header.cards:
                if card.keyword not in ("CHECKSUM", "DATASUM"):
                    digest.update(str(card).encode())
            if hdu.data is not None:
                digest.update(np.ascontiguousarray(hdu.data).tobytes() if hdu.is_image
                              else hdu.data.tobytes())
    return digest.hexdigest()


def _digests(root: Path, patterns=("exposures/**/*.fits", "catalogs/**/*.parquet",
                                   "calib/**/*.fits", "calexp/**/*.fits")) -> dict[str, str]:
    out = {}
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            out[str(p.relative_to(root))] = _content(p)
    return out


@pytest.fixture(scope="module")
def reference_run(survey, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "reference"
    run_pipeline(find_inputs(survey), out, _config(), in_process=True, report=False)
    return out


def test_damaged_outputs_are_redone_identically(survey, reference_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    before = _digests(out)
    assert len(before) >= 30
    # A truncated catalog (a crash after the manifest could not cause this, a disk error can),
    # a unit whose manifest was never written, and a half-finished calexp.
    cat = next((out / "catalogs").rglob("det-000.parquet"))
    cat.write_bytes(cat.read_bytes()[:100])
    next((out / "manifest" / "process").glob("*det-001.json")).unlink()
    calexp = sorted((out / "calexp").rglob("*.fits"))[-1]
    calexp.write_bytes(calexp.read_bytes()[: 2880 * 2])
    result = run_pipeline(find_inputs(survey), out, _config(), in_process=True, report=False)
    assert result.counts["units_processed"] == 2 and result.counts["units_cached"] == 4
    assert _digests(out) == before


def test_full_disk_is_one_clear_error(survey, tmp_path, monkeypatch):
    import errno

    from photocalib.image import Exposure

    real_write = Exposure.write
    calls = {"n": 0}

    def failing_write(self, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(self, path, *args, **kwargs)

    monkeypatch.setattr(Exposure, "write", failing_write)
    out = tmp_path / "run"
    with pytest.raises(PhotocalibError, match="No space left on device.*rerun"):
        run_pipeline(find_inputs(survey), out, _config(), in_process=True, report=False)
    # Nothing partial: no temporary files left, every finished unit is complete.
    assert not [p for p in out.rglob("*.tmp")]
    monkeypatch.setattr(Exposure, "write", real_write)
    result = run_pipeline(find_inputs(survey), out, _config(), in_process=True, report=False)
    assert result.counts["units_cached"] == 2 and result.counts["units_processed"] == 4


@pytest.mark.slow
def test_killed_worker_run_completes_with_identical_outputs(survey, reference_run, tmp_path):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        out = tmp_path / "run"
        errors: list[BaseException] = []

        def target():
            try:
                run_pipeline(find_inputs(survey), out, _config(retries=3), scheduler=cluster.scheduler_address,
                             report=False)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and thread.is_alive():
            busy = [w for w, tasks in client.processing().items() if any("process_unit" in str(t) for t in tasks)]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.05)
        thread.join(300)
        assert killed is not None, "no worker was busy with a detector task to kill"
        assert not errors, errors
        assert _digests(out) == _digests(reference_run)
        ref = pd.read_parquet(next((reference_run / "catalogs").rglob("*.calibrated.parquet")))
        assert np.isfinite(ref["flux_nJy"]).any()
    finally:
        client.close()
        cluster.close()


def test_distributed_joint_fit_failure_falls_back_in_process(survey, reference_run, tmp_path, monkeypatch):
    import shutil

    import photocalib.fit as fit_layer
    from photocalib.pipeline.execution import Executor
    from photocalib.pipeline.runner import _Run

    real = fit_layer.fit_joint
    calls = []

    def flaky(*args, **kwargs):
        calls.append("client" in kwargs)
        if "client" in kwargs:
            raise RuntimeError("lost the chunks held by a dead worker")  # as distributed would
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_layer, "fit_joint", flaky)
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    cfg = _config().with_overrides(calibration={"distributed": "always"})
    runner = _Run(find_inputs(survey), out, cfg, Executor(object(), progress=False), force=True)
    runner.step("joint", runner.joint)
    # the configured model: distributed, then in process; then the other two models, fitted in
    # process for the report's comparison (never on the cluster)
    assert calls == [True, False, False, False]
    assert runner.result.failed == {} and runner.result.skipped == {}
    assert _digests(out, ("calib/joint/**/*.fits",)) == _digests(reference_run, ("calib/joint/**/*.fits",))


def test_a_large_run_streams_the_joint_fit_with_the_same_calibrations(survey, reference_run, tmp_path):
    """Above ``stream_min_observations`` the joint step writes the matched observations by star
    under calib/joint/observations/ and streams the fit: every calibration and star flux is the
    in-memory run's (to 1e-6 mag), and the solution file reads back as a normal one."""
    import shutil

    from photocalib.calib import PhotoCalib
    from photocalib.fit.joint import JointSolution
    from photocalib.pipeline.execution import Executor
    from photocalib.pipeline.runner import _Run

    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    cfg = _config().with_overrides(calibration={"stream_min_observations": 1})
    runner = _Run(find_inputs(survey), out, cfg, Executor(object(), progress=False), force=True)
    runner.step("joint", runner.joint)
    assert runner.result.failed == {} and runner.result.counts.get("joint_streamed") == 1
    assert list((out / "calib" / "joint" / "observations").glob("part-*.parquet"))
    calibs = sorted((reference_run / "calib" / "joint").rglob("det-*.fits"))
    assert calibs
    g = np.linspace(0.0, 1.0, 5)
    for path in calibs:
        ref, got = PhotoCalib.read(path), PhotoCalib.read(out / path.relative_to(reference_run))
        box = ref.field.bbox
        x, y = np.meshgrid(box.x0 + g * (box.width - 1), box.y0 + g * (box.height - 1))
        np.testing.assert_allclose(2.5 * np.log10(got.field.evaluate(x, y) / ref.field.evaluate(x, y)), 0.0,
                                   atol=1e-6)
    a = JointSolution.read(reference_run / "calib" / "joint" / "solution.fits")
    b = JointSolution.read(out / "calib" / "joint" / "solution.fits")
    np.testing.assert_array_equal(a.star_flux["star"], b.star_flux["star"])
    np.testing.assert_allclose(a.star_flux["mag"], b.star_flux["mag"], rtol=0, atol=1e-6)
