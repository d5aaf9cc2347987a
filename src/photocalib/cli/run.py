"""Pipeline commands: ``run`` (raw MEF files to a calibrated, coadded, reported run),
``report`` (redraw a run's report) and ``demo`` (simulate the default survey, run, report)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import click

from . import main


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("photocalib").setLevel(level)


def _config(path: str | None, model: str | None, workers: int | None, progress: bool):
    from ..pipeline.config import load_config

    cfg = load_config(path)
    if model is not None:
        cfg = cfg.with_overrides(calibration={"joint_model": model})
    if workers is not None:
        cfg = cfg.with_overrides(dask={"n_workers": workers})
    if not progress:
        cfg = cfg.with_overrides(dask={"progress": False})
    return cfg


_common = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="TOML configuration file (default: built-in defaults)."),
    click.option("--scheduler", default=None, metavar="ADDRESS",
                 help="Address of a running dask.distributed scheduler (default: a local cluster)."),
    click.option("--workers", type=int, default=None,
                 help="Workers of the local cluster (default: [dask] n_workers, 2)."),
    click.option("--model", type=click.Choice(["monolithic", "separated", "reference-free"]),
                 default=None, help="Joint calibration model (overrides [calibration] joint_model)."),
    click.option("--force", is_flag=True, help="Redo every step, even those already finished."),
    click.option("--in-process", is_flag=True, help="Run without Dask (for debugging)."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bars."),
    click.option("-v", "--verbose", count=True, help="More log messages (-vv for debug)."),
]


def _with_common(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


@main.command("run")
@click.argument("survey", required=False, type=click.Path(file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Output directory (a rerun resumes it).")
@click.option("--raw", multiple=True, type=click.Path(),
              help="Raw MEF file or folder of them (repeatable; default SURVEY/raw).")
@click.option("--flats", type=click.Path(file_okay=False), default=None,
              help="Folder of dome flats, one per detector (DETECTOR keyword; default SURVEY/flats).")
@click.option("--refcat", type=click.Path(dir_okay=False), default=None,
              help="Reference catalog, Parquet or FITS: ra, dec, flux [nJy] (default SURVEY/refcat.parquet).")
@click.option("--truth", type=click.Path(file_okay=False), default=None,
              help="Simulator truth folder, for residuals against truth (default SURVEY/truth).")
@click.option("--no-report", is_flag=True, help="Do not write report/index.html.")
@click.option("--processed", is_flag=True, default=None,
              help="The --raw images are already flat-fielded by their survey (DECam CP InstCal, "
                   "ZTF sciimg, SDSS frame, Rubin calexp): no ISR or flats, their weights and "
                   "masks kept. Default: decided from the instrument of the first image.")
@click.option("--wait", is_flag=True,
              help="If another run is using --out, wait for it to end instead of refusing.")
@_with_common
def run_cmd(survey, out, raw, flats, refcat, truth, no_report, processed, wait, config_path, scheduler,
            workers, model, force, in_process, no_progress, verbose) -> None:
    """Calibrate raw MEF exposures: ISR, background on surface brightness, photometry on
    fluence, single-detector and joint calibration, calibrated exposures and catalogs, warps,
    coadd and report.

    SURVEY is a folder laid out as `photocalib simulate` writes it (raw/, flats/,
    refcat.parquet, truth/); --raw/--flats/--refcat give the inputs one by one instead, e.g.
    for DECam or HSC files (one image HDU per detector with VISIT or EXPNUM, DETECTOR or
    CCDNUM, and a celestial WCS; TAN, TAN-SIP and TPV are understood).
    """
    from ..pipeline.inputs import find_inputs
    from ..pipeline.runner import run_pipeline

    _logging(verbose)
    if survey is None and not raw:
        raise click.UsageError("give a SURVEY folder or --raw files")
    cfg = _config(config_path, model, workers, not no_progress)
    inputs = find_inputs(survey, raw=list(raw), flats=flats, refcat=refcat, truth=truth,
                         processed=processed or None)
    t0 = time.perf_counter()
    result = run_pipeline(inputs, out, cfg, scheduler=scheduler, force=force, in_process=in_process,
                          report=not no_report, wait=math.inf if wait else 0.0)
    for step, why in result.skipped.items():
        click.echo(f"skipped {step}: {why}", err=True)
    click.echo(f"run finished in {time.perf_counter() - t0:.1f} s: {Path(out).resolve()}")
    if result.report is not None:
        click.echo(f"report: {result.report.resolve()}")
    _exit_on_failure(result)


def _exit_on_failure(result) -> None:
    """Exit status 3 when a step failed on these data while the others completed."""
    for step, why in result.failed.items():
        click.echo(f"photocalib: error: step {step} failed: {why}", err=True)
    if result.failed:
        raise SystemExit(3)


@main.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration (for [report] and the star selection; default: built-in).")
@click.option("--redraw-only", is_flag=True,
              help="Only redraw the plots from RUN_DIR/tables, without recomputing them.")
def report_cmd(run_dir: str, config_path: str | None, redraw_only: bool) -> None:
    """(Re)write RUN_DIR/report/index.html of a `photocalib run`: recompute its summary tables
    from the run's outputs (and the truth, when the run had one), then draw the plots."""
    from ..pipeline.config import load_config
    from ..pipeline.report import write_report
    from ..pipeline.runner import refresh_report

    cfg = load_config(config_path)
    if redraw_only or not (Path(run_dir) / "run.json").is_file():
        path = write_report(run_dir, cutout_size=cfg.report.cutout_size, dpi=cfg.report.dpi)
    else:
        path = refresh_report(run_dir, cfg)
    click.echo(str(path.resolve()))


@main.command("demo")
@click.option("--out", "-o", default="demo-output", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the simulated survey (OUT/survey) and the run (OUT/run).")
@click.option("--visits", type=int, default=None, help="Visits to simulate (default: [simulate] visits).")
@click.option("--detector-size", type=int, default=None,
              help="Pixels per detector side (default: [simulate] detector_size).")
@_with_common
def demo_cmd(out, visits, detector_size, config_path, scheduler, workers, model, force,
             in_process, no_progress, verbose) -> None:
    """Simulate the default survey, calibrate it with `run`, write the report; print its path."""
    from ..pipeline.demo import run_demo

    _logging(verbose)
    cfg = _config(config_path, model, workers, not no_progress)
    overrides = {}
    if visits is not None:
        overrides["visits"] = visits
    if detector_size is not None:
        overrides["detector_size"] = detector_size
    if overrides:
        cfg = cfg.with_overrides(simulate=overrides)
    result = run_demo(out, cfg, scheduler=scheduler, force=force, in_process=in_process)
    for step, why in result.skipped.items():
        click.echo(f"skipped {step}: {why}", err=True)
    for step, seconds in result.timings.items():
        click.echo(f"  {step:<10s} {seconds:8.1f} s")
    click.echo(f"demo finished in {sum(result.timings.values()):.1f} s")
    if result.report is not None:
        click.echo(f"report: {result.report.resolve()}")
    _exit_on_failure(result)
