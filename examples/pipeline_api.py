"""Run the photocalib pipeline from Python on a small simulated survey and print what it found.

    .venv/bin/python examples/pipeline_api.py --out /tmp/photocalib-example

The same steps as ``photocalib simulate`` + ``photocalib run``; see the README.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import photocalib as pc
from photocalib.pipeline import Config, find_inputs, run_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pipeline-example"))
    parser.add_argument("--visits", type=int, default=4)
    args = parser.parse_args(argv)

    # 1. A small survey with known truth (the simulator is the only part that uses GalSim).
    from photocalib.sim import simulate

    survey = args.out / "survey"
    if not (survey / "truth" / "config.json").is_file():
        simulate(survey, preset="hsc-like", n_visits=args.visits, detector_shape=(256, 256),
                 n_detectors=9, star_mag_range=(16.0, 21.5), star_density=3e5, num_workers=2)

    # 2. Configuration: defaults, with the joint model chosen here (TOML files work the same).
    config = Config().with_overrides(calibration={"joint_model": "separated", "star_flat_order": 2},
                                     warp={"coadd_size": 400})

    # 3. Run: a local Dask cluster with 2 workers; a rerun skips finished work.
    result = run_pipeline(find_inputs(survey), args.out / "run", config)
    print("timings (s):", result.timings)
    print("report:", result.report)

    # 4. Use the outputs with the library: a joint calibration applied to a star's flux.
    calib_path = next((args.out / "run" / "calib" / "joint").rglob("det-*.fits"))
    calib = pc.PhotoCalib.read(calib_path)
    print(f"{calib_path.name}: {calib.instflux_to_nanojansky(1000.0, 128.0, 128.0):.1f} nJy "
          f"for 1000 counts at the detector centre ({calib.kind.value} calibration)")
    for item in json.loads((args.out / "run" / "tables" / "headline.json").read_text()):
        if "RMS" in item["name"]:
            print(f"{item['name']}: {item['value']:.2f} {item['unit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
