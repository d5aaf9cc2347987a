"""Benchmark: the joint fit with 1 % gross outliers, outliers down-weighted inside the solve (IRLS)
against the previous solver's rounds of reject-and-resolve, on the same data in the same run.

Problem: :func:`bench_joint.make_problem` (hsc-like camera, 100 detectors, 100 dithered visits,
reference-free model, 1100 calibration parameters) with ``--outlier-fraction`` of the
observations given a gross error of 0.2–1.5 mag. Both fits take the same table; the timed part is
the whole fit. Accuracy: rms of the bright stars' fitted magnitudes against the truth (the level
removed), and the good observations each method lost.

Usage::

    .venv/bin/python benchmarks/bench_joint_outliers.py [--max-obs 1e6] [--outlier-fraction 0.01]

Measured (2-core machine shared with other jobs, load average 11, so wall times are ~4× the CPU
times; ``--max-obs 1e5``): 98,446 observations, IRLS 22.5 s wall / 7.8 CPU s in 36 iterations,
reject-and-resolve rounds 33.4 s / 11.8 CPU s in 71 iterations and 7 rounds (1.48× wall), both
2.96 mmag bright-star rms against the truth, 3e-5 of good observations lost. The issue's targets
(10⁷ observations and 10⁴ visits in 60 s; 10⁸ streamed from Parquet) were not run: the reduced
system is still solved densely, which at 10⁴ visits is a 10⁴ × 10⁴ Cholesky per assembled
Hessian, and the input is gathered into one process.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_joint import make_problem, timed_fit  # noqa: E402


def _accuracy(sol, obs, truth) -> tuple[float, float, float]:
    """(bright-star rms vs truth in mmag, fraction of good observations lost, of outliers > 0.3 mag kept)."""
    tf = dict(zip(np.asarray(truth.stars["star"]).tolist(), np.asarray(truth.stars["flux"]), strict=True))
    fs = np.asarray(sol.star_flux["star"]).tolist()
    d = -2.5 * np.log10(np.asarray(sol.star_flux["flux"]) / np.array([tf[s] for s in fs]))
    bright = np.asarray(sol.star_flux["mag_err"]) < 0.005
    rms = float(np.std(d[bright] - np.median(d[bright]))) * 1e3
    rows = np.asarray(sol.residuals["input_row"])
    used = np.asarray(sol.residuals["used"])
    out = np.asarray(truth.observations["outlier"])[rows]
    size = np.abs(2.5 * np.log10(np.asarray(obs["instflux"])[rows]
                                 / np.asarray(truth.observations["true_instflux"])[rows]))
    big = out & (size > 0.3)
    return rms, float(np.mean(~used[~out])), float(np.mean(used[big])) if big.any() else 0.0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-obs", type=float, default=1e6, help="largest problem (default 1e6)")
    parser.add_argument("--outlier-fraction", type=float, default=0.01)
    args = parser.parse_args(argv)

    from photocalib.fit.joint import JointCalibrator

    sizes = [s for s in (1e5, 1e6, 1e7) if s <= args.max_obs]
    obs, wcs, truth = make_problem(2e4, outlier_fraction=args.outlier_fraction)  # compile the kernels
    JointCalibrator("reference-free").fit(obs, wcs, bboxes=truth.bboxes)
    rows = []
    for target in sizes:
        obs, wcs, truth = make_problem(target, outlier_fraction=args.outlier_fraction)
        row = {"n_obs": len(obs)}
        for name, scale in (("irls", 3.0), ("rounds", None)):
            sol, wall, cpu, peak, base = timed_fit(JointCalibrator("reference-free", robust_scale=scale),
                                                   obs, wcs, truth.bboxes)
            row[name] = dict(t=wall, cpu=cpu, it=sol.n_iter, rounds=sol.n_rejection_rounds,
                             peak=(peak - base) / 2**30, acc=_accuracy(sol, obs, truth))
            del sol
            print(f"# {len(obs)} obs, {name}: {row[name]['t']:.1f} s", flush=True)
        rows.append(row)
        del obs, wcs, truth
    print(f"\n# load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times scale with it)")
    print(f"# outlier fraction {args.outlier_fraction}; rms: bright stars vs truth; lost: good observations "
          "rejected; kept: outliers > 0.3 mag left in")
    print("| observations | method | wall s | CPU s | iterations | rounds | peak GiB above input | rms mmag "
          "| good lost | big outliers kept | time ratio rounds/IRLS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for name in ("irls", "rounds"):
            m = r[name]
            ratio = f"{r['rounds']['t'] / r['irls']['t']:.2f}×" if name == "irls" else "-"
            print(f"| {r['n_obs']:,} | {name} | {m['t']:.1f} | {m['cpu']:.1f} | {m['it']} | {m['rounds']} "
                  f"| {m['peak']:.2f} | {m['acc'][0]:.3f} | {m['acc'][1]:.1e} | {m['acc'][2]:.1e} | {ratio} |")


if __name__ == "__main__":
    main()
