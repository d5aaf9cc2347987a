"""Benchmark: what background matching adds to the coadd step.

Simulates (photocalib.sim) visits whose skies differ by a level and a gradient, calibrates
every detector with the simulator's true calibration, and times ``coadd`` on the same inputs
with and without ``background_matching=True`` (plus the one coadd background), interleaved
for ``--repeat`` rounds, best round each (the machine is shared). Prints a table with the
ratio. Usage: ``python benchmarks/bench_bgmatch.py [--visits 6] [--detectors 9] [--size 512]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_time  # noqa: E402

import photocalib as pc  # noqa: E402
from photocalib.fields import BoundedField  # noqa: E402
from photocalib.geom import Box  # noqa: E402
from photocalib.warp import SkyGrid, coadd  # noqa: E402


class _TrueCalibration(BoundedField):
    def __init__(self, sim, visit, detector, box):
        self._sim, self._visit, self._detector, self._box = sim, visit, detector, box

    @property
    def bbox(self):
        return self._box

    def _evaluate(self, x, y):
        s = self._sim.survey
        t = s.transmission_at_pixel(self._visit, self._detector, x, y)
        sf = self._sim.camera.star_flat(self._detector, x, y, s.band, "fiducial")
        return 1.0 / (s.electrons_per_njy_s * s.visit(self._visit).exptime * t * sf)


def _inputs(sim):
    out = []
    for v in sim.visits:
        for d in sim.detectors:
            det = sim.camera.detector(d)
            raw, header = sim.read_raw(v, d)
            flat, fh = sim.read_dome_flat(d)
            e = (raw.astype(np.float64) - det.bias) * det.gain
            resp = flat / fh["LAMPLVL"]
            sb = pc.Exposure(e / resp, variance=(np.maximum(e, 0) + det.read_noise**2) / resp**2,
                             wcs=pc.SkyWcs.from_header(header), kind="SURFACE_BRIGHTNESS",
                             unit="electron/arcsec2", metadata={"VISIT": v, "DETECTOR": d})
            f = sb.to_fluence()
            ny, nx = f.shape
            cal = f.replace(photo_calib=pc.PhotoCalib(_TrueCalibration(sim, v, d, Box(0, 0, nx, ny)), kind="FLUENCE"))
            out.append(cal.photo_calib.calibrate_image(cal))  # calibrate once, time the coadd alone
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=6)
    ap.add_argument("--detectors", type=int, default=9)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from photocalib.sim.testing import small_survey

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = small_survey(tmp, n_visits=args.visits, n_detectors=args.detectors,
                           detector_shape=(args.size, args.size), star_density=3e4, star_mag_range=(18.0, 24.0),
                           seed=5, survey_options={"dither_fraction": 0.25, "rotation_range_deg": 20.0,
                                                   "exptime": 300.0, "sky_gradient_fraction": 0.03})
        exposures = _inputs(sim)
        print(f"simulated and calibrated {len(exposures)} detectors in {time.perf_counter() - t0:.1f} s")
    survey = sim.survey
    n = int(1.6 * sim.camera.field_radius_arcsec / 0.2)
    wcs, box = SkyGrid(survey.config.ra, survey.config.dec, 0.2, n, n, patch_size=n, rotation=17.0).patch(0, 0)
    runs = {
        "coadd": dict(),
        "coadd + background matching": dict(background_matching=True),
        "coadd + matching + coadd background": dict(background_matching=True, coadd_background_order=1),
    }
    coadd(exposures, wcs, box.shape)  # compile the kernels outside the timings
    best = {k: (float("inf"), float("inf")) for k in runs}
    for _ in range(args.repeat):
        for name, kw in runs.items():
            wall, cpu, _ = best_time(lambda kw=kw: coadd(exposures, wcs, box.shape, **kw), repeat=1)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    base = best["coadd"][0]
    print(f"\n{len(exposures)} inputs of {args.size}x{args.size} onto a {n}x{n} grid; best of {args.repeat}")
    print(f"{'step':40s} {'wall s':>8s} {'CPU s':>8s} {'wall / coadd':>13s}")
    for name, (wall, cpu) in best.items():
        print(f"{name:40s} {wall:8.2f} {cpu:8.2f} {wall / base:13.2f}")


if __name__ == "__main__":
    main()
