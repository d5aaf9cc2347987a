"""Benchmark of the joint photometric calibration: time and peak memory at 1e5, 1e6 and 1e7 observations.

Peer, in the same run: the FGCM approach, scipy L-BFGS-B on the full χ² (star magnitudes and
calibration together) with an analytic gradient, on the same problem from the same start.

Problem: hsc-like camera with 100 detectors, 100 dithered and rotated visits, the catalog-level
simulator (:mod:`photocalib.sim.catalog`) with the star density scaled to the target number of
observations (about 10 per star); model ``reference-free`` (star flat of order 3 per detector,
one grey per visit: 1100 calibration parameters). The observation table and the WCSs
(:class:`photocalib.sim.catalog.CameraVisitWcs`, the camera's exact model: building 10⁴
SkyWcs from headers alone would take minutes) are built before timing; the timed fit includes everything from the table to the solution
(WCS evaluation, sorting, every Gauss–Newton and rejection iteration, parameter errors).

Usage::

    .venv/bin/python benchmarks/bench_joint.py [--max-obs 1e6] [--peer-max-seconds 300]
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

import numpy as np
import psutil

# No OPENBLAS_NUM_THREADS here: the fit limits BLAS threads itself (threadpoolctl), so the
# default configuration is the one measured.


def _cpu() -> float:
    """CPU seconds used by this process (all threads): the work done, whatever the machine's load."""
    t = psutil.Process(os.getpid()).cpu_times()
    return t.user + t.system


def _rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


class PeakRSS:
    """Samples the process's resident memory every 20 ms while active."""

    def __enter__(self):
        self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())


def timed_fit(calibrator, obs, wcs, bboxes):
    """Fit once and measure it: (solution, wall s, CPU s, peak RSS, RSS before; bytes)."""
    gc.collect()
    base = _rss()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        c0 = _cpu()
        sol = calibrator.fit(obs, wcs, bboxes=bboxes)
        wall = time.perf_counter() - t0
        cpu = _cpu() - c0
    return sol, wall, cpu, mem.peak, base


def make_problem(n_obs_target: float, seed: int = 1, outlier_fraction: float = 0.0):
    """Observations, WCSs and truth with about ``n_obs_target`` observations."""
    from photocalib.sim.camera import Camera
    from photocalib.sim.catalog import observations_from_truth
    from photocalib.sim.survey import make_survey

    camera = Camera.preset("hsc-like", n_detectors=100)
    survey = make_survey(camera, n_visits=100, seed=seed, dither_fraction=2.0)
    ra, dec, radius = survey.footprint()
    area = 2 * np.pi * (1 - np.cos(np.radians(radius))) * (180 / np.pi) ** 2
    # ~8.3 observations per star for this survey (measured), so density sets the size
    density = n_obs_target / 8.3 / area
    obs, wcs, truth = observations_from_truth(camera, survey, density=density, mag_range=(17.0, 23.0), seed=seed,
                                              wcs_factory="camera", outlier_fraction=outlier_fraction)
    return obs, wcs, truth


def fgcm_like(obs, wcs, star_flat_order: int, max_seconds: float, target_chi2: float | None, bboxes=None,
              return_fit: bool = False):
    """Reference-free fit the FGCM way: L-BFGS-B on the full χ² with an analytic gradient.

    Same model, data, weights and starting point as the Gauss–Newton fit; no outlier
    rejection (the data have none). Returns (seconds, iterations, final χ², seconds to reach
    ``target_chi2 × (1 + 1e-6)`` or None), and with ``return_fit`` also the fit's internal
    problem and its calibration parameters (for comparisons against truth).
    """
    from scipy.optimize import minimize

    from photocalib.fit.joint import JointCalibrator

    cal = JointCalibrator("reference-free", star_flat_order=star_flat_order, n_sigma=None)
    t0 = time.perf_counter()
    prob = cal._prepare(obs, wcs, None, bboxes)
    from photocalib.fit._joint_model import evaluate_blocks

    w = 1.0 / prob.sigma2.astype(np.float64)
    n_s = len(prob.ptr) - 1
    star = prob.star
    groups = {"epoch_detector": prob.epdet, "detector": prob.detector, "visit": prob.visit}
    coords = {"pixel": (prob.pu, prob.pv), "tangent": (prob.tu, prob.tv)}
    p0 = np.concatenate([b.initial() for b in prob.blocks])
    order = np.lexsort((prob.m, star))
    cnt = np.diff(prob.ptr)
    M0 = prob.m[order][prob.ptr[:-1] + cnt // 2]
    n_p = prob.n_p
    trace = []

    def fun(theta):
        M = theta[:n_s]
        p = theta[n_s:]
        logm, D, starts, ok = evaluate_blocks(prob.blocks, p, groups, coords, None)
        r = prob.m - logm - M[star]
        wr = w * r
        chi2 = float(np.dot(wr, r))
        if not ok.all():
            chi2 = float("inf")
        g = np.empty_like(theta)
        g[:n_s] = -2.0 * np.bincount(star, weights=wr, minlength=n_s)
        gp = np.zeros(n_p)
        c = 0
        for bi, b in enumerate(prob.blocks):
            for j in range(b.n_basis):
                gp += np.bincount(starts[:, bi] + j, weights=wr * D[:, c], minlength=n_p)
                c += 1
        g[n_s:] = -2.0 * gp
        trace.append((time.perf_counter(), chi2))
        return chi2, g

    theta0 = np.concatenate([M0, p0])
    t_start = time.perf_counter()
    deadline = t_start + max_seconds

    def callback(intermediate_result=None, *args):
        if time.perf_counter() > deadline:
            raise StopIteration

    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": 100000, "maxfun": 200000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20})
    t1 = time.perf_counter()
    reach = None
    if target_chi2 is not None:
        for tt, c in trace:
            if c <= target_chi2 * (1 + 1e-6):
                reach = tt - t0
                break
    if return_fit:
        return t1 - t0, int(res.nit), float(res.fun), reach, prob, res.x[n_s:]
    return t1 - t0, int(res.nit), float(res.fun), reach


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-obs", type=float, default=1e7, help="largest problem (default 1e7)")
    parser.add_argument("--peer-max-seconds", type=float, default=300.0,
                        help="time limit of each L-BFGS-B run (default 300 s)")
    parser.add_argument("--no-peer", action="store_true", help="skip the L-BFGS-B peer")
    args = parser.parse_args(argv)

    import numba

    from photocalib.fit.joint import JointCalibrator

    sizes = [s for s in (1e5, 1e6, 1e7) if s <= args.max_obs]
    print(f"# numba threads {numba.get_num_threads()}, CPUs {os.cpu_count()}")
    rows = []
    # compile the Numba kernels (cached on disk after the first run) outside the timings
    obs, wcs, truth = make_problem(2e4)
    JointCalibrator("reference-free", star_flat_order=3).fit(obs, wcs, bboxes=truth.bboxes)
    for target in sizes:
        t0 = time.perf_counter()
        obs, wcs, truth = make_problem(target)
        gen = time.perf_counter() - t0
        n_obs = len(obs)
        n_star = len(np.unique(np.asarray(obs["star"])))
        cal = JointCalibrator("reference-free", star_flat_order=3)
        sol, t_gn, cpu_gn, peak, base = timed_fit(cal, obs, wcs, truth.bboxes)
        # accuracy against truth (relative fluxes: the level is a gauge without standards)
        tf = dict(zip(np.asarray(truth.stars["star"]).tolist(), np.asarray(truth.stars["flux"]), strict=True))
        fs = np.asarray(sol.star_flux["star"]).tolist()
        d = -2.5 * np.log10(np.asarray(sol.star_flux["flux"]) / np.array([tf[s] for s in fs]))
        bright = np.asarray(sol.star_flux["mag_err"]) < 0.005
        rms_bright = float(np.std(d[bright] - np.median(d[bright])))
        row = dict(n_obs=n_obs, n_star=n_star, gen=gen, t_gn=t_gn, cpu_gn=cpu_gn, iters=sol.n_iter, peak=peak, base=base,
                   chi2=sol.chi2, dof=sol.dof, rms=rms_bright)
        if not args.no_peer:
            del sol
            gc.collect()
            c0 = _cpu()
            t_p, it_p, chi2_p, reach = fgcm_like(obs, wcs, 3, args.peer_max_seconds, row["chi2"])
            row.update(t_peer=t_p, it_peer=it_p, chi2_peer=chi2_p, reach=reach, cpu_peer=_cpu() - c0)
        rows.append(row)
        print(f"# n_obs={n_obs}: generated in {gen:.1f} s; GN {t_gn:.1f} s ({cpu_gn:.1f} CPU s), {row['iters']} iterations, "
              f"peak RSS {peak / 2**30:.2f} GiB (inputs {base / 2**30:.2f} GiB)", flush=True)
        del obs, wcs, truth
        gc.collect()

    print()
    print(f"# load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times scale with it)")
    print("| observations | stars | Gauss-Newton s | GN CPU s | GN iter | peak RSS GiB | s per 1e6 obs | bright-star rms mmag "
          "| L-BFGS-B s (iter) | L-BFGS-B s to GN χ² | ratio | L-BFGS-B χ² excess |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peer = "-"
        reach = "-"
        ratio = "-"
        excess = "-"
        if "t_peer" in r:
            peer = f"{r['t_peer']:.1f} ({r['it_peer']} it, {r['cpu_peer']:.0f} CPU s)"
            if r["reach"] is not None:
                reach = f"{r['reach']:.1f}"
                ratio = f"{r['reach'] / r['t_gn']:.1f}×"
            else:
                reach = f"not in {r['t_peer']:.0f}"
                ratio = f">{r['t_peer'] / r['t_gn']:.1f}×"
            excess = f"{(r['chi2_peer'] - r['chi2']) / r['chi2']:.1e}"
        print(f"| {r['n_obs']:,} | {r['n_star']:,} | {r['t_gn']:.1f} | {r['cpu_gn']:.1f} | {r['iters']} | {r['peak'] / 2**30:.2f} "
              f"| {r['t_gn'] / r['n_obs'] * 1e6:.2f} | {r['rms'] * 1e3:.2f} | {peer} | {reach} | {ratio} | {excess} |")


if __name__ == "__main__":
    main()
