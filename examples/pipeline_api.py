"""
Run the pipeline from Python
============================

The same steps as ``photocalib simulate`` followed by ``photocalib run``, from Python: simulate a
small survey with known truth, run the whole calibration chain on it on a local Dask cluster,
then use what it wrote with the library. From the command line::

    python examples/pipeline_api.py --out /tmp/photocalib-example

A rerun with the same ``--out`` skips the simulation and every finished unit of work.

The steps are functions called at the end under ``if __name__ == "__main__"``: Dask starts its
worker processes by importing the main script, and they must not run the example again.
"""

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import photocalib as pc
from photocalib.pipeline import Config, find_inputs, run_pipeline


# %%
# A small survey with known truth
# -------------------------------
# Nine 256 × 256 detectors of the ``hsc-like`` camera, whose pixel area falls by about 10 % from
# the centre of the field to its corners. The simulator is the only part of photocalib that
# uses GalSim, so it is imported only here.
def simulate_survey(out: Path, n_visits: int) -> Path:
    from photocalib.sim import simulate

    survey = out / "survey"
    if not (survey / "truth" / "config.json").is_file():
        simulate(survey, preset="hsc-like", n_visits=n_visits, detector_shape=(256, 256),
                 n_detectors=9, star_mag_range=(16.0, 21.5), star_density=3e5, num_workers=2)
    return survey


# %%
# Configure and run
# -----------------
# The defaults, with the joint model chosen here and a first-order star flat (four visits of
# nine small detectors constrain little more); a TOML file with the same sections does the
# same on the command line. The run starts a local Dask cluster of two workers; pass
# ``scheduler="tcp://host:8786"`` to use an existing one.
def run(survey: Path, out: Path) -> Path:
    config = Config().with_overrides(
        calibration={"joint_model": "separated", "star_flat_order": 1}, warp={"coadd_size": 400},
        dask={"progress": False})
    result = run_pipeline(find_inputs(survey), out / "run", config)
    print("timings (s):", {k: round(v, 1) for k, v in result.timings.items()})
    print("report:", result.report)
    return out / "run"


# %%
# Use the outputs
# ---------------
# Every calibration is a FITS table that :meth:`photocalib.PhotoCalib.read` loads; here one
# joint calibration is applied to a star's instrumental flux.
def use_outputs(run_dir: Path) -> None:
    calib_path = sorted((run_dir / "calib" / "joint").rglob("det-*.fits"))[0]
    calib = pc.PhotoCalib.read(calib_path)
    print(f"{calib_path.parent.name}/{calib_path.name}: "
          f"{calib.instflux_to_nanojansky(1000.0, 128.0, 128.0):.1f} nJy for 1000 counts at the "
          f"detector centre ({calib.kind.value} calibration)")
    for item in json.loads((run_dir / "tables" / "headline.json").read_text()):
        if "RMS" in item["name"]:
            print(f"{item['name']}: {item['value']:.2f} {item['unit']}")


# %%
# Residuals against the truth
# ---------------------------
# The run keeps the small tables its report is drawn from. Calibrated minus true magnitudes of
# bright stars across the focal plane, for each calibration the run made. The legacy one (a
# constant per detector, fitted on the surface-brightness image) absorbs the pixel-area pattern
# of each detector into its constant, and its scatter is about twice that of the
# Jacobian-aware single-detector calibration; the joint calibrations, which take the Jacobian
# from the WCS and share a star flat between visits, scatter least. On a survey this small
# photon noise blurs the pattern itself; ``make demo`` (16 larger detectors, 10 visits) shows it
# plainly (see :doc:`/guide/joint`).
def plot_residuals(run_dir: Path) -> None:
    residuals = pd.read_parquet(run_dir / "tables" / "residuals.parquet")
    names = list(dict.fromkeys(residuals["calibration"]))  # joint, Jacobian-aware, legacy
    ncol = min(len(names), 2)
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol, 4.3 * nrow), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        rows = residuals[residuals["calibration"] == name]
        sc = ax.scatter(rows["xi"] / 60, rows["eta"] / 60, c=rows["residual_mmag"], s=6,
                        cmap="RdBu_r", vmin=-30, vmax=30)
        r = rows["residual_mmag"]
        rms = 1.4826 * np.median(np.abs(r - np.median(r)))
        ax.set_title(f"{name}\nrobust RMS {rms:.1f} mmag", fontsize=10)
        ax.set_xlabel("ξ (arcmin)")
        ax.set_ylabel("η (arcmin)")
        ax.set_aspect("equal")
    fig.colorbar(sc, ax=axes, label="calibrated − true (mmag)", shrink=0.8)


# %%
# All together
# ------------
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the photocalib pipeline on a small survey.")
    parser.add_argument("--out", type=Path, default=Path("pipeline-example"))
    parser.add_argument("--visits", type=int, default=4)
    args = parser.parse_args()

    survey = simulate_survey(args.out, args.visits)
    run_dir = run(survey, args.out)
    use_outputs(run_dir)
    plot_residuals(run_dir)
    plt.savefig(args.out / "residuals.png", dpi=80)
