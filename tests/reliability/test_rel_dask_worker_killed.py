"""Reliability (slow): a Dask worker killed during a distributed joint fit. The chunks are
scattered once (no lineage), so when the worker holding some of them dies the next iteration's
tasks depend on lost data. The run must complete with the in-process answer (re-scatter the lost
chunks) or stop with a PhotocalibError that says what happened, never a raw distributed error.

(A worker killed during the per-detector pipeline tasks: tests/pipeline/test_pipeline_faults.py.)
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from astropy.table import Table

from photocalib.errors import PhotocalibError
from photocalib.fit import fit_joint


@pytest.mark.slow
def test_worker_killed_during_distributed_joint_fit():
    from distributed import Client, LocalCluster

    from photocalib.sim.camera import Camera
    from photocalib.sim.catalog import observations_from_truth
    from photocalib.sim.survey import make_survey

    camera = Camera.preset("hsc-like", n_detectors=6)
    survey = make_survey(camera, n_visits=8, seed=4)
    obs, wcs, truth = observations_from_truth(camera, survey, density=1.5e4, seed=6)
    flux = np.asarray(truth.stars["flux"])
    ref = Table({"star": truth.stars["star"], "flux": flux, "flux_err": 0.01 * flux})
    kw = dict(reference=ref, bboxes=truth.bboxes, star_flat_order=2, chunk_size=500)
    expected = fit_joint(obs, wcs, **kw)

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                           dashboard_address=None)
    client = Client(cluster)
    try:
        out: dict = {}

        def target():
            try:
                out["sol"] = fit_joint(obs, wcs, client=client, **kw)
            except BaseException as exc:  # noqa: BLE001 - examined below
                out["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            holders = [w for w, keys in client.has_what().items() if keys]
            if holders:
                pid = client.run(os.getpid, workers=[holders[0]])[holders[0]]
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.01)
        thread.join(300)
        assert killed is not None, "the fit ended before a worker held any data"
        if "error" in out:
            assert isinstance(out["error"], PhotocalibError), repr(out["error"])
            assert "worker" in str(out["error"]).lower()
        else:
            np.testing.assert_allclose(out["sol"].parameters, expected.parameters, rtol=1e-9, atol=1e-12)
    finally:
        client.close()
        cluster.close()
