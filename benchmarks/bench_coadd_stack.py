"""Benchmark: the pipeline's coadd step, stacking the warps already written against warping the
calibrated exposures again inside ``coadd()`` (what the step did before issue 12).

Needs a finished run (``photocalib demo --out DIR`` makes one in ``DIR/run``). Both ways read
their inputs from disk and coadd onto the run's grid; they run interleaved for ``--repeat``
rounds and each timing is its best round (the machine is shared). Also prints the largest
difference between the two coadds, relative to the coadd's RMS.
Usage: ``python benchmarks/bench_coadd_stack.py [demo-output/run] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _timing import best_times_interleaved

from photocalib.image import Exposure
from photocalib.pipeline.layout import RunLayout
from photocalib.warp import coadd


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print a table, return the best wall times (seconds)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, nargs="?", default=Path("demo-output/run"),
                        help="output folder of a finished `photocalib run` (default: make demo's)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    run = RunLayout(args.run)
    if not run.run_json.is_file() or not run.coadd.is_file():
        print(f"{args.run}: no finished run with a coadd; run `make demo` first (skipped)")
        return {}
    record = json.loads(run.run_json.read_text())
    units = [(int(v), int(d)) for v, d, *_ in record["inputs"]["units"]]
    warped = [u for u in units if run.warp(*u).is_file()]
    if not warped:
        raise SystemExit(f"{args.run}: no warps; run the pipeline with [warp] enabled first")
    import tomllib

    cfg = tomllib.loads((args.run / "config.toml").read_text())
    target, shape = _grid_from_coadd(run)
    kernel = cfg.get("warp", {}).get("kernel", "lanczos3")

    def stack_warps():
        return coadd([Exposure.read(run.warp(*u)) for u in warped], target, shape, kernel=kernel,
                     warped=True)

    def warp_again():
        return coadd([Exposure.read(run.calexp(*u)) for u in warped], target, shape, kernel=kernel)

    res = best_times_interleaved({"stack written warps": stack_warps, "warp calexps again": warp_again},
                                 repeat=args.repeat)
    a, b = res["stack written warps"][2], res["warp calexps again"][2]
    used = (a.count > 0) & (b.count > 0)
    rms = float(np.sqrt(np.nanmean(b.exposure.image[used] ** 2)))
    diff = float(np.nanmax(np.abs(a.exposure.image[used] - b.exposure.image[used]))) / rms
    ref = res["warp calexps again"][0]
    print(f"coadd of {len(warped)} inputs onto {shape[1]} x {shape[0]} pixels ({args.run})")
    print(f"{'method':<22} {'wall s':>8} {'cpu s':>8} {'speed-up':>9}")
    for name, (wall, cpu, _) in res.items():
        print(f"{name:<22} {wall:8.2f} {cpu:8.2f} {ref / wall:8.2f}x")
    print(f"max |difference| / coadd RMS: {diff:.2e}")
    return {name: wall for name, (wall, _, _) in res.items()}


def _grid_from_coadd(run: RunLayout):
    """The run's coadd grid (SkyWcs, shape), from the coadd's own header."""
    from astropy.io import fits

    from photocalib import SkyWcs

    with fits.open(run.coadd) as hdul:
        h = hdul[0].header
        return SkyWcs.from_header(h), (int(h["NAXIS2"]), int(h["NAXIS1"]))


if __name__ == "__main__":
    main()
