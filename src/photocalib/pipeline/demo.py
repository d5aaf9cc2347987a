"""``photocalib demo``: simulate the default survey, run the pipeline on it, write the report.

The simulation is skipped when its output is already complete (a rerun resumes).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import InputError
from .config import Config
from .inputs import find_inputs
from .layout import RunLayout
from .runner import RunResult, run_pipeline

__all__ = ["run_demo"]

log = logging.getLogger("photocalib.pipeline")


def run_demo(out: str | os.PathLike, config: Config | None = None, scheduler: str | None = None,
             force: bool = False, in_process: bool = False) -> RunResult:
    """Simulate ``config.simulate`` into ``out/survey``, run into ``out/run``; returns the result.

    Raises
    ------
    PhotocalibError
        When the simulator is missing or a step fails for good.
    """
    config = config or Config()
    out = Path(out)
    survey = out / "survey"
    layout = RunLayout(out)
    t0 = time.perf_counter()
    from ..sim import simulate

    step_done = layout.is_done("simulate", "survey") and not force
    if not step_done:
        kwargs = config.simulate.simulate_kwargs()
        address = scheduler or config.dask.scheduler
        log.info("simulating %s", kwargs)
        if in_process:
            simulate(survey, scheduler="synchronous", **kwargs)
        elif address:
            from distributed import Client

            # Render on the same cluster the pipeline will use.
            try:
                client = Client(address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"cannot reach the Dask scheduler at {address!r} ({exc})") from exc
            with client:
                simulate(survey, client=client, **kwargs)
        else:
            simulate(survey, num_workers=config.dask.n_workers, **kwargs)
        outputs = [p for p in survey.rglob("*") if p.is_file()]
        layout.mark_done("simulate", "survey", outputs)
    t_sim = time.perf_counter() - t0
    inputs = find_inputs(survey)
    result = run_pipeline(inputs, out / "run", config, scheduler=scheduler, force=force,
                          in_process=in_process)
    result.timings = {"simulate": round(t_sim, 3), **result.timings}
    return result

