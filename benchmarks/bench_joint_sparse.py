"""Benchmark of the joint fit's sparse reduced system against the dense one, at growing visit counts.

Peer, in the same run: the dense solver (``solver="dense"``: the reduced Hessian summed densely
by the Numba kernels and factorised by Cholesky), on the same problem, up to ``--dense-max``
visits; above that only the sparse solver runs.

Problem: a wide survey, not a deep field: ``n`` visits of a 4-detector hsc-like camera pointed
uniformly within a disc whose area grows with ``n`` (``make_survey(dither_fraction=√(n/8))``),
so every point of sky is seen about 8 times whatever ``n``, and each visit shares stars only
with its neighbours: the reduced system's coupling is sparse. Star density is set for about
``--obs-per-visit`` observations per visit. Model ``reference-free`` with a first-order star
flat per detector (3 parameters each) and one grey per visit: ``n + 12`` parameters.
Observations, WCSs (the camera's exact model) are built before timing; the timed fit is
everything from the table to the solution, with ``compute_errors`` as given (``--errors``).

Usage::

    .venv/bin/python benchmarks/bench_joint_sparse.py [--visits 250,500,1000,2000,4000,10000]
        [--dense-max 4000] [--obs-per-visit 100] [--errors]

Measured (2-core machine shared with other jobs, load average 3–6, so wall times are noisy:
the CPU seconds are the steadier number; peak memory is the fit's growth over the inputs).
``--visits 1000,2000,4000,10000,30000`` (``compute_errors=False``):

=======  ============  ==========  ================  ===============  ==========  ===========  ==========
visits   observations  parameters  sparse s (CPU s)  dense s (CPU s)  dense/sparse sparse MiB   dense MiB
=======  ============  ==========  ================  ===============  ==========  ===========  ==========
1,000    49,552        1,012       3.9 (1.6)         6.3 (2.3)        1.63×       39           103
2,000    98,939        2,012       9.3 (3.4)         18.6 (6.9)       2.00×       82           320
4,000    198,806       4,012       23.5 (7.4)        43.0 (25.2)      1.83×       176          1137
10,000   494,756       10,012      50.4 (22.8)       not run          –           236          –
30,000   1,486,026     30,012      94.9 (93.0)       not run          –           806          –
=======  ============  ==========  ================  ===============  ==========  ===========  ==========

Both solvers give the same star magnitudes to 7e-15 mag and residuals to 2e-9 mag. The dense
peak grows as the square of the parameters (1.1 GiB at 4,000; about 7 GiB would be needed at
10,000); the sparse one with the observations and the fill of the factorisation. With
``--visits 500,1000,2000 --errors`` (parameter errors and the calibration part of every
star's variance, from ``n_p`` sparse solves in batches): 2,000 visits sparse 14.0 s (4.9 CPU
s), dense 27.3 s (7.2 CPU s), 1.95×. Not measured: 10⁵ visits. ``--visits 100000
--dense-max 0 --obs-per-visit 30`` did not finish within 11 minutes (simulation and fit
together, peak 1.5 GB when stopped); from 10⁴ to 3·10⁴ visits the sparse CPU time grew 4.1×
(the factorisation's fill grows faster than the parameters), so 10⁵ visits would be several
CPU minutes on this machine, not yet measured.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_joint import timed_fit  # noqa: E402


def make_problem(n_visits: int, obs_per_visit: float, seed: int = 1):
    """Observations, WCSs and truth of a wide survey of ``n_visits`` visits about 8 deep."""
    from photocalib.sim.camera import Camera
    from photocalib.sim.catalog import observations_from_truth
    from photocalib.sim.survey import make_survey

    camera = Camera.preset("hsc-like", n_detectors=4)
    survey = make_survey(camera, n_visits=n_visits, seed=seed, dither_fraction=max(1.0, np.sqrt(n_visits / 8)))
    # stars per visit ≈ density × field area (the detectors cover part of it: the table says
    # how many observations there were)
    density = obs_per_visit / (np.pi * (camera.field_radius_arcsec / 3600.0) ** 2)
    obs, wcs, truth = observations_from_truth(camera, survey, density=density, mag_range=(17.0, 23.0), seed=seed,
                                              wcs_factory="camera")
    return obs, wcs, truth


def run_one(obs, wcs, truth, solver: str, errors: bool) -> dict:
    from photocalib.fit.joint import JointCalibrator

    cal = JointCalibrator("reference-free", star_flat_order=1, solver=solver, compute_errors=errors)
    sol, wall, cpu, peak, base = timed_fit(cal, obs, wcs, truth.bboxes)
    return dict(sol=sol, wall=wall, cpu=cpu, peak=peak - base, iters=sol.n_iter, n_p=len(sol._perr))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visits", default="250,500,1000,2000,4000,10000", help="comma-separated visit counts")
    parser.add_argument("--dense-max", type=int, default=4000, help="largest visit count the dense peer runs at")
    parser.add_argument("--obs-per-visit", type=float, default=100.0)
    parser.add_argument("--errors", action="store_true", help="also compute parameter and star errors")
    args = parser.parse_args(argv)

    import numba

    print(f"# numba threads {numba.get_num_threads()}, CPUs {os.cpu_count()}, errors={args.errors}")
    obs, wcs, truth = make_problem(50, args.obs_per_visit)
    for solver in ("dense", "sparse"):  # compile the kernels outside the timings
        run_one(obs, wcs, truth, solver, args.errors)
    rows = []
    for n in (int(v) for v in args.visits.split(",")):
        t0 = time.perf_counter()
        obs, wcs, truth = make_problem(n, args.obs_per_visit)
        gen = time.perf_counter() - t0
        row = dict(n_visits=len(np.unique(np.asarray(obs["visit"]))), n_obs=len(obs), gen=gen)
        sp = run_one(obs, wcs, truth, "sparse", args.errors)
        row.update(n_p=sp["n_p"], t_sp=sp["wall"], cpu_sp=sp["cpu"], mem_sp=sp["peak"], it_sp=sp["iters"])
        if n <= args.dense_max:
            de = run_one(obs, wcs, truth, "dense", args.errors)
            row.update(t_de=de["wall"], cpu_de=de["cpu"], mem_de=de["peak"], it_de=de["iters"])
            a, b = sp["sol"], de["sol"]
            row["dmag"] = float(np.max(np.abs(np.asarray(a.star_flux["mag"]) - np.asarray(b.star_flux["mag"]))))
            row["dres"] = float(np.max(np.abs(np.asarray(a.residuals["residual"], dtype=float)
                                              - np.asarray(b.residuals["residual"], dtype=float))))
            del de
        del sp
        rows.append(row)
        print(f"# {row}", flush=True)
        del obs, wcs, truth
        gc.collect()

    print()
    print(f"# load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times scale with it)")
    print("| visits | observations | parameters | sparse s (CPU s) | dense s (CPU s) | dense/sparse wall | "
          "sparse peak MiB | dense peak MiB | max |Δmag| star | max |Δ| residual |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "t_de" in r:
            dense = f"{r['t_de']:.1f} ({r['cpu_de']:.1f})"
            ratio = f"{r['t_de'] / r['t_sp']:.2f}×"
            mem_de = f"{r['mem_de'] / 2**20:.0f}"
            dm, dr = f"{r['dmag']:.1e}", f"{r['dres']:.1e}"
        else:
            dense = ratio = mem_de = dm = dr = "-"
        print(f"| {r['n_visits']:,} | {r['n_obs']:,} | {r['n_p']:,} | {r['t_sp']:.1f} ({r['cpu_sp']:.1f}) | {dense} "
              f"| {ratio} | {r['mem_sp'] / 2**20:.0f} | {mem_de} | {dm} | {dr} |")


if __name__ == "__main__":
    main()
