"""Benchmark: wall time of the default demo simulation (target: <= 120 s on 2 cores).

Runs ``photocalib.sim.simulate`` with the default demo configuration (hsc-like, 16 detectors of
512 x 512, 10 visits) on the local threaded Dask scheduler with 2 workers, and, in the same run,
on the synchronous scheduler (one core) for the parallel speed-up. Usage:
``.venv/bin/python benchmarks/bench_simulate.py [--visits N] [--skip-serial]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

TARGET_S = 120.0


def _run(out: str, scheduler: str, workers: int, n_visits: int) -> tuple[float, float, object]:
    from photocalib.sim import DEFAULT_DEMO, simulate

    kw = dict(DEFAULT_DEMO)
    kw["n_visits"] = n_visits
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = simulate(out, scheduler=scheduler, num_workers=workers, **kw)
    return time.perf_counter() - t0, time.process_time() - c0, res


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print a table, return the timings (seconds)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--visits", type=int, default=10)
    parser.add_argument("--skip-serial", action="store_true", help="Skip the one-core reference run.")
    args = parser.parse_args(argv)
    import photocalib.sim  # noqa: F401  (import cost outside the timings)

    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t_par, c_par, res = _run(os.path.join(tmp, "par"), "threads", 2, args.visits)
        times["dask threads x2"], cpu["dask threads x2"] = t_par, c_par
        if not args.skip_serial:
            t_ser, c_ser, _ = _run(os.path.join(tmp, "ser"), "synchronous", 1, args.visits)
            times["synchronous x1"], cpu["synchronous x1"] = t_ser, c_ser
    cam = res.camera
    pixels = cam.n_detectors * cam.config.detector_shape[0] * cam.config.detector_shape[1] * args.visits
    print(f"demo survey: {cam.config.name}, {cam.n_detectors} detectors of {cam.config.detector_shape[1]}x"
          f"{cam.config.detector_shape[0]}, {args.visits} visits, {len(res.stars)} stars, "
          f"{res.observations.num_rows} star images, {pixels / 1e6:.1f} Mpix; load average {os.getloadavg()[0]:.1f}")
    # CPU seconds matter on a shared machine: wall time there reflects other users' load.
    print(f"{'run':<20}{'wall s':>10}{'CPU s':>10}{'Mpix/s':>10}{'wall / 120 s':>14}{'speed-up vs sync':>18}")
    for name, t in times.items():
        ratio = times.get("synchronous x1", float("nan")) / t
        print(f"{name:<20}{t:>10.1f}{cpu[name]:>10.1f}{pixels / 1e6 / t:>10.2f}{t / TARGET_S:>14.2f}{ratio:>18.2f}")
    return times


if __name__ == "__main__":
    main()
