"""Benchmark: the joint fit with BLAS threads limited by the fit itself (the default) against the
same fit with BLAS left at its own thread count (what a user got before without
OPENBLAS_NUM_THREADS=1), alternately in one run.

Problem: :func:`bench_joint.make_problem` (hsc-like camera, 100 detectors, 100 visits,
reference-free, 1100 parameters). The "unlimited" runs replace the fit's
``threadpoolctl.threadpool_limits`` by a no-op.

Usage::

    .venv/bin/python benchmarks/bench_joint_threads.py [--n-obs 1e5] [--repeat 2]

Measured (2-core machine shared with other jobs, load average 8.7; two OpenBLAS pools of 2
threads): 98,446 observations, limited 13.0 s wall / 5.8 CPU s, unlimited 30.7 s / 14.3 CPU s
(best of 2 each): 2.36× slower when BLAS threads fight the fit's own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import threadpoolctl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_joint import _cpu, make_problem  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-obs", type=float, default=1e5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    from photocalib.fit.joint import JointCalibrator

    obs, wcs, truth = make_problem(args.n_obs)
    blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    JointCalibrator("reference-free").fit(obs, wcs, bboxes=truth.bboxes)  # compile the kernels
    real = threadpoolctl.threadpool_limits
    best = {"limited (default)": [], "BLAS unlimited": []}
    for _ in range(args.repeat):
        for name in best:
            if name == "BLAS unlimited":
                threadpoolctl.threadpool_limits = lambda *a, **k: contextlib.nullcontext()
            try:
                t0, c0 = time.perf_counter(), _cpu()
                JointCalibrator("reference-free").fit(obs, wcs, bboxes=truth.bboxes)
                best[name].append((time.perf_counter() - t0, _cpu() - c0))
            finally:
                threadpoolctl.threadpool_limits = real
    print(f"# {len(obs):,} observations; BLAS thread pools {blas}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (wall times scale with it)")
    print("| configuration | best wall s | its CPU s |")
    print("|---|---|---|")
    for name, runs in best.items():
        t, c = min(runs)
        print(f"| {name} | {t:.2f} | {c:.2f} |")
    ratio = min(best["BLAS unlimited"])[0] / min(best["limited (default)"])[0]
    print(f"\nratio unlimited / limited: {ratio:.2f}×")


if __name__ == "__main__":
    main()
