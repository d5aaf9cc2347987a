"""``photocalib run``: the whole chain from raw MEF files to a calibrated, coadded, reported run.

Per-detector steps run as Dask tasks with retries; the joint fit and the coadd run once. A step
that is switched off, or has nothing to work on, is skipped with a warning, and the report says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import fit, warp
from .._io import atomic_write, remove_stale_temporaries
from ..astrometry import mean_pointing
from ..errors import InputError, OutputError, PhotocalibError
from .catalogs import associate, read_table, write_parquet
from .config import Config, config_to_toml
from .execution import Executor, open_executor
from .inputs import RunInputs, Unit, read_image_wcs
from .layout import RunLayout, RunLock, fingerprint, read_json, write_json
from .steps import StepContext, StepSkipped, apply_unit, grid_wcs, process_unit

__all__ = ["RunResult", "run_pipeline"]

log = logging.getLogger("photocalib.pipeline")


@dataclass
class RunResult:
    """What a run did: where its outputs are, time per step, steps skipped and why."""

    root: Path
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    report: Path | None = None


#: Steps whose InputError means "these data cannot support this step", not a bad input file.
_DATA_STEPS = ("joint", "coadd")


class _Run:
    def __init__(self, inputs: RunInputs, out: Path, config: Config, executor: Executor,
                 force: bool) -> None:
        self.inputs = inputs
        self.run = RunLayout(out)
        self.config = config
        self.ex = executor
        self.force = force
        self.result = RunResult(out)
        self.ctx = StepContext(str(out), config, dict(inputs.flats), inputs.refcat, force)
        # Every input is fingerprinted by content once, here: tasks compare these digests, so
        # an edited raw file, flat or reference catalog redoes exactly what depends on it.
        for path in sorted({u.path for u in inputs.units} | set(inputs.flats.values())
                           | ({inputs.refcat} if inputs.refcat else set())):
            self.ctx.digest(path)

    # -- bookkeeping ------------------------------------------------------------------------------
    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        log.info("step %s", name)
        try:
            return fn()
        except StepSkipped as exc:
            log.warning("step %r skipped: %s", name, exc)
            self.result.skipped[name] = str(exc)
            return None
        except InputError as exc:
            if name not in _DATA_STEPS:
                raise
            # The data cannot constrain this step (e.g. a joint model with more parameters
            # than stars): say so, keep what the other steps made, and report it.
            log.error("step %r failed: %s", name, exc)
            self.result.failed[name] = str(exc)
            return None
        except OSError as exc:
            # A full disk, a read-only or vanished folder: stop with one clear line. Every
            # file is written atomically, so nothing partial is left and a rerun resumes.
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            raise PhotocalibError(
                f"step {name!r} stopped: {exc.strerror or exc}{where}; finished work is kept, "
                "fix the cause and rerun the same command to resume"
            ) from exc
        finally:
            self.result.timings[name] = round(time.perf_counter() - t0, 3)
            self.save_state()

    def save_state(self) -> None:
        cfg = self.config
        write_json(self.run.run_json, {
            "inputs": {"units": [[u.visit, u.detector, u.path, u.hdu, u.processed]
                                 for u in self.inputs.units],
                       "visits": self.inputs.visits, "detectors": self.inputs.detectors,
                       "refcat": self.inputs.refcat, "truth": self.inputs.truth,
                       "flats": {str(k): v for k, v in self.inputs.flats.items()}},
            "joint_model": cfg.calibration.joint_model if cfg.calibration.joint else None,
            "timings": self.result.timings, "skipped": self.result.skipped,
            "failed": self.result.failed,
            "counts": self.result.counts,
        })

    def units_done(self, step: str) -> list[Unit]:
        return [u for u in self.inputs.units if self.run.is_done(step, u.name, verify=False)]

    # -- steps -----------------------------------------------------------------------------------
    def process(self) -> None:
        infos = self.ex.map(process_unit, list(self.inputs.units), "process detectors", self.ctx)
        self.result.counts["units_processed"] = sum(i.get("status") == "done" for i in infos)
        self.result.counts["units_cached"] = sum(i.get("status") == "cached" for i in infos)
        self.result.counts["sources"] = int(sum(i.get("n_sources", 0) for i in infos))

    def observations(self) -> pd.DataFrame:
        frames = [read_table(self.run.catalog(u.visit, u.detector)) for u in self.units_done("process")]
        if not frames:
            raise StepSkipped("no detector was processed, so there is nothing to calibrate")
        df = pd.concat(frames, ignore_index=True)
        df["star"] = associate(df["ra"].to_numpy(), df["dec"].to_numpy(),
                               self.config.measure.match_radius_arcsec)
        return df

    def joint(self) -> None:
        cfg = self.config.calibration
        if not cfg.joint:
            raise StepSkipped("the joint fit is switched off ([calibration] joint = false)")
        step = "joint"
        fp = fingerprint(self.ctx.config_fingerprint,
                         [self.run.manifest_digest("process", u.name) for u in self.units_done("process")])
        if not self.force and self.run.is_done(step, "all", fingerprint=fp):
            self.result.counts["joint_cached"] = 1
            return
        # What an earlier fit (another model, configuration or input) made is not this fit's
        # result: it goes before fitting, so a fit that fails leaves no numbers under its name.
        self.retire_joint()
        df = self.observations()
        write_parquet(df, self.run.tables / "observations.parquet")
        good = (df["flags"] == 0) & (df["snr"] >= self.config.measure.min_snr) & (df["instflux"] > 0)
        obs = df.loc[good, ["visit", "detector", "star", "x", "y", "instflux", "instflux_err"]]
        # Stars seen once constrain nothing in a relative fit.
        seen = obs.groupby("star")["visit"].transform("nunique")
        obs = obs[seen >= 2].reset_index(drop=True)
        self._check_processed_joint(obs)
        from ..geom import Box

        wcs, bboxes = {}, {}
        for u in self.units_done("process"):
            w, (ny, nx) = read_image_wcs(self.run.exposure(u.visit, u.detector))
            wcs[(u.visit, u.detector)] = w
            bboxes[u.detector] = Box(0, 0, nx, ny)
        reference = None
        if self.inputs.refcat is not None and (df["ref_id"] >= 0).any():
            matched = df[(df["ref_id"] >= 0) & df["star"].isin(obs["star"])]
            first = matched.groupby("star").first()
            from astropy.table import Table

            reference = Table({"star": first.index.to_numpy(np.int64),
                               "flux": first["ref_flux"].to_numpy(float),
                               "flux_err": first["ref_flux_err"].to_numpy(float)})
        from ..image import ImageKind

        kwargs: dict[str, Any] = {"model": cfg.joint_model, "kind": ImageKind.FLUENCE,
                                  "reference": reference, "bboxes": bboxes}
        self.result.counts["joint_observations"] = len(obs)
        self.result.counts["joint_stars"] = int(obs["star"].nunique())
        # The fit runs here; its per-visit normal-equation accumulation (the map) runs on the
        # cluster through the client, and the reduce and solve here.
        mode = cfg.distributed
        if self.ex.client is not None and (mode == "always" or (mode == "auto" and len(obs) >= 200_000)):
            kwargs["client"] = self.ex.client
        streamed = bool(cfg.stream_min_observations) and len(obs) >= cfg.stream_min_observations
        if streamed:
            # A large run: the fit streams the observations from a star-partitioned dataset in
            # the run folder instead of holding them (see pipeline.joint_stream).
            from .joint_stream import write_star_partitions

            visits = write_star_partitions(obs, wcs, bboxes, self.run.joint_observations)
            self.result.counts["joint_streamed"] = 1

        def fit_once(kw):
            if streamed:
                return _fit_joint_streamed_task(self.run.joint_observations, visits, kw, self._joint_options())
            return _fit_joint_task(obs, wcs, kw, self._joint_options())

        t_fit = time.perf_counter()
        try:
            sol = fit_once(kwargs)
        except PhotocalibError:
            raise
        except Exception as exc:  # noqa: BLE001 - a cluster failure (e.g. a worker killed)
            if "client" not in kwargs:
                raise
            # The distributed accumulation lost data with a dead worker: the same fit in
            # this process gives the same answer, only slower.
            log.warning("distributed joint fit failed (%s: %s); fitting in process",
                        type(exc).__name__, exc)
            kwargs.pop("client")
            sol = fit_once(kwargs)
        seconds = time.perf_counter() - t_fit
        self.run.joint_dir.mkdir(parents=True, exist_ok=True)
        exact = {"wcs_by_detector": wcs} if streamed else {}
        sol.write(self.run.joint_solution, **exact)
        outputs = [self.run.joint_solution]
        outputs += self._compare_models(obs, wcs, kwargs, seconds)
        for (visit, detector) in sorted(wcs):
            try:
                calib = sol.photo_calib(visit, detector, **({"wcs": wcs[(visit, detector)]} if streamed else {}))
            except InputError as exc:
                log.warning("no joint calibration for visit %s detector %s: %s", visit, detector, exc)
                continue
            path = self.run.joint_calib(visit, detector)
            path.parent.mkdir(parents=True, exist_ok=True)
            calib.write(path)
            outputs.append(path)
        self.run.mark_done(step, "all", outputs, fingerprint=fp)

    def _compare_models(self, obs: pd.DataFrame, wcs, kwargs: dict[str, Any], seconds: float) -> list[Path]:
        """Fit the other two joint models on the same stars, for the report's comparison.

        Each solution goes to ``joint/models/<model>.fits`` and the fit times (s) to
        ``joint/models/models.json``; only the configured model writes calibrations. Runs when
        ``[report] compare_models`` says so (``auto``: a small problem).
        """
        mode = self.config.report.compare_models
        if mode == "never" or (mode == "auto" and len(obs) > self.config.report.compare_max_observations):
            return []
        chosen = kwargs["model"]
        folder = self.run.joint_dir / "models"
        folder.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"chosen": chosen, "observations": len(obs), "models": {chosen: {"seconds": seconds}}}
        outputs: list[Path] = []
        for model in ("monolithic", "separated", "reference-free"):
            if model == chosen:
                continue
            options = self._joint_options()
            if model == "monolithic":
                options["grey_gradient"] = False
            other = {k: v for k, v in kwargs.items() if k != "client"} | {"model": model}
            t0 = time.perf_counter()
            try:
                sol = _fit_joint_task(obs, wcs, other, options)
            except Exception as exc:  # noqa: BLE001 - a comparison model that cannot fit is reported, not fatal
                log.warning("joint model %s for the comparison failed: %s", model, exc)
                info["models"][model] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            info["models"][model] = {"seconds": time.perf_counter() - t0}
            path = folder / f"{model}.fits"
            sol.write(path)
            outputs.append(path)
        write_json(folder / "models.json", info)
        return outputs + [folder / "models.json"]

    def _check_processed_joint(self, obs: pd.DataFrame) -> None:
        """StepSkipped where survey-processed images cannot have a joint fit; each unit then
        gets its single-detector calibration, or its own (see :func:`apply_unit`)."""
        units = [u for u in self.units_done("process") if u.processed]
        if not units:
            return
        if self.inputs.refcat is None:
            own = [u for u in units if self.run.survey_calib(u.visit, u.detector).is_file()]
            if not own:
                raise StepSkipped("no reference catalog (--refcat) and the images carry no zero "
                                  "point of their own (e.g. MAGZERO): they stay uncalibrated; give "
                                  "a reference catalog")
            raise StepSkipped(f"no reference catalog (--refcat): {len(own)} of {len(units)} "
                              "images are calibrated with their own survey zero point "
                              "(calib/survey/), not fitted by photocalib; give a reference "
                              "catalog for a fitted calibration")
        from astropy.io import fits

        single = sum(self.run.single_calib(u.visit, u.detector).is_file() for u in units)
        fallback = (f"{single} of {len(units)} images have a single-detector calibration against "
                    "the reference, which is applied to them")
        bands = sorted({str(fits.getheader(self.run.exposure(u.visit, u.detector)).get("BAND", "?"))
                        for u in units})
        if len(bands) > 1:
            raise StepSkipped(f"the images span bands {', '.join(bands)} and a joint fit "
                              f"calibrates one band: run each band on its own; {fallback}")
        if obs.empty:
            raise StepSkipped("no star is measured in two visits, so there is nothing to fit "
                              f"jointly; {fallback}")

    def retire_joint(self) -> None:
        """Remove the joint fit's outputs for this run's detectors and everything made from them.

        Only this run's (visit, detector) units are touched: another run's detectors in the
        same folder keep their calibrations and calibrated exposures.
        """
        run = self.run
        for path in (run.manifest("joint", "all"), run.manifest("coadd", "all"), run.coadd,
                     run.joint_solution):
            path.unlink(missing_ok=True)
        # The other models fitted for the report's comparison belong to the retired fit too.
        models = run.joint_dir / "models"
        if models.is_dir():
            for path in models.iterdir():
                path.unlink(missing_ok=True)
        for u in self.inputs.units:
            for path in (run.manifest("apply", u.name), run.joint_calib(u.visit, u.detector),
                         run.calexp(u.visit, u.detector), run.calibrated_catalog(u.visit, u.detector),
                         run.warp(u.visit, u.detector)):
                path.unlink(missing_ok=True)

    def _joint_options(self) -> dict[str, Any]:
        cfg = self.config.calibration
        return {"star_flat_order": cfg.star_flat_order, "visit_order": cfg.visit_order,
                "grey_gradient": cfg.grey_gradient}

    def apply(self) -> None:
        if not (self.run.joint_dir.is_dir() and any(self.run.joint_dir.rglob("det-*.fits"))) \
                and not any(u.processed for u in self.inputs.units):
            raise StepSkipped("no joint calibration to apply")
        grid = self.grid_spec() if self.config.warp.enabled else None
        units = self.units_done("process")
        infos = self.ex.map(apply_unit, units, "calibrate + warp", self.ctx, grid)
        self.result.counts["units_calibrated"] = sum(i.get("status") in ("done", "cached") for i in infos)

    def grid_spec(self) -> dict[str, Any] | None:
        centres, scales = [], []
        for u in self.units_done("process"):
            w, (ny, nx) = read_image_wcs(self.run.exposure(u.visit, u.detector))
            ra, dec = w.pixel_to_sky((nx - 1) / 2, (ny - 1) / 2)
            centres.append((float(ra), float(dec)))
            scales.append(float(w.pixel_scale((nx - 1) / 2, (ny - 1) / 2)))
        if not centres:
            return None
        c = np.array(centres)
        ra0, dec0 = mean_pointing(c[:, 0], c[:, 1])
        scale = self.config.warp.pixel_scale_arcsec or float(np.median(scales))
        size = self.config.warp.coadd_size
        return {"ra": ra0, "dec": dec0, "pixel_scale": scale, "width": size, "height": size,
                "kernel": self.config.warp.kernel}

    def coadd(self) -> None:
        if not self.config.warp.enabled:
            raise StepSkipped("warps are switched off ([warp] enabled = false)")
        step = "coadd"
        grid = self.grid_spec()
        fp = fingerprint(self.ctx.config_fingerprint, grid,
                         [self.run.manifest_digest("apply", u.name) for u in self.inputs.units])
        if not self.force and self.run.is_done(step, "all", fingerprint=fp):
            return
        if grid is None:
            raise StepSkipped("no processed detector to coadd")
        # The warps the apply step wrote are on this grid already: stack them, never warp twice.
        inputs = [str(self.run.warp(u.visit, u.detector)) for u in self.inputs.units
                  if self.run.done_info("apply", u.name).get("warped")]
        if not inputs:
            raise StepSkipped("no calibrated exposure overlaps the coadd grid")
        self.result.counts["coadd_inputs"] = len(inputs)
        self.ex.run(_coadd_task, inputs, grid, self.config.warp.coadd_options(), str(self.run.coadd))
        self.run.mark_done(step, "all", [self.run.coadd], fingerprint=fp)

    def summary(self) -> None:
        from .summary import write_summary

        write_summary(self.run, self.inputs, self.config, counts=dict(self.result.counts))


def _fit_joint_task(obs: pd.DataFrame, wcs, kwargs: dict[str, Any], options: dict[str, Any]):
    """Run the joint fit with the configured model options."""
    from astropy.table import Table

    extra = dict(options)
    if not extra.get("grey_gradient"):
        extra.pop("grey_gradient")
    # Looked up on the module at call time, so a test can stand in a failing fitter.
    return fit.fit_joint(Table.from_pandas(obs), wcs, **kwargs, **extra)


def _fit_joint_streamed_task(folder: Path, visits: pd.DataFrame, kwargs: dict[str, Any], options: dict[str, Any]):
    """The streamed joint fit of the star-partitioned dataset the joint step wrote."""
    extra = dict(options)
    if not extra.get("grey_gradient"):
        extra.pop("grey_gradient")
    return fit.fit_joint(str(folder), None, visits=visits, **kwargs, **extra)


def _coadd_task(inputs: list[str], grid: dict[str, Any], options: dict[str, Any], out: str) -> str:
    from ..image import Exposure

    target, shape = grid_wcs(grid)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    exposures = [Exposure.read(p) for p in inputs]
    # the matched per-visit backgrounds are written into the coadd file (BGMATCH_* HDUs)
    result = warp.coadd(exposures, target, shape, warped=True, **options)
    result.write(out)
    return out


def absolute_inputs(inputs: RunInputs) -> RunInputs:
    """``inputs`` with every path absolute, so a record of them holds from any directory."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else os.path.abspath(path)

    return RunInputs(tuple(dataclasses.replace(u, path=os.path.abspath(u.path)) for u in inputs.units),
                     {k: os.path.abspath(v) for k, v in inputs.flats.items()},
                     absolute(inputs.refcat), absolute(inputs.truth))


def run_pipeline(inputs: RunInputs, out: str | os.PathLike, config: Config | None = None,
                 scheduler: str | None = None, force: bool = False, in_process: bool = False,
                 report: bool = True, wait: float = 0.0) -> RunResult:
    """Run the whole chain on ``inputs`` and write everything under ``out``.

    Parameters
    ----------
    inputs : RunInputs
        From :func:`photocalib.pipeline.find_inputs`.
    out : path
        Output directory (created); an existing one is resumed: finished units are skipped.
    config : Config, optional
        Defaults when not given.
    scheduler : str, optional
        Address of a running ``dask.distributed`` scheduler; default a LocalCluster.
    force : bool
        Redo every step even where its outputs are complete.
    in_process : bool
        Run without Dask (debugging).
    report : bool
        Write ``report/index.html`` at the end.
    wait : float
        Seconds to wait while another run holds ``out`` (``math.inf``: until it ends); by
        default a busy folder is refused at once.

    Returns
    -------
    RunResult

    Raises
    ------
    PhotocalibError
        For bad inputs (naming the file, HDU and keyword) or a task that failed after its retries.
    RunBusyError
        If another live run holds ``out`` (its host, PID and start time are named).
    """
    config = config or Config()
    out = Path(os.path.abspath(out))
    inputs = absolute_inputs(inputs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the run folder ({exc.strerror or exc}); "
                          "choose a writable --out") from exc
    # One run owns the folder at a time: two runs would each clean up as stale what the other
    # just made, and write config.toml and run.json for different configurations.
    lock = RunLock(out, wait=wait)
    try:
        lock.acquire()
    except OSError as exc:
        raise OutputError(f"{out}: cannot write in the run folder ({exc.strerror or exc}); "
                          "choose a writable --out") from exc
    try:
        # Debris of writers killed on this host (a kill -9 mid-write) goes first.
        remove_stale_temporaries(out, recursive=True)
        return _run_locked(inputs, out, config, scheduler, force, in_process, report)
    finally:
        lock.release()


def _run_locked(inputs: RunInputs, out: Path, config: Config, scheduler: str | None, force: bool,
                in_process: bool, report: bool) -> RunResult:
    layout = RunLayout(out)
    with atomic_write(out / "config.toml") as tmp:
        tmp.write_text(config_to_toml(config), encoding="utf-8")
    if force:
        for step in ("process", "joint", "apply", "coadd"):
            layout.clear(step)
    with open_executor(config.dask, scheduler=scheduler, in_process=in_process) as ex:
        r = _Run(inputs, out, config, ex, force)
        r.step("process", r.process)
        r.step("joint", r.joint)
        r.step("apply", r.apply)
        r.step("coadd", r.coadd)
    r.step("summary", r.summary)
    if report and config.report.enabled:
        from .report import write_report

        t0 = time.perf_counter()
        r.result.report = write_report(out, cutout_size=config.report.cutout_size, dpi=config.report.dpi)
        # Recorded in run.json (the report cannot contain its own drawing time).
        r.result.timings["report"] = round(time.perf_counter() - t0, 3)
        r.save_state()
    return r.result


def previous_inputs(out: str | os.PathLike) -> RunInputs:
    """The inputs a previous run in ``out`` recorded in its ``run.json``.

    Raises
    ------
    InputError
        If ``out`` has no readable run record.
    """
    path = RunLayout(Path(out)).run_json
    if not path.is_file():
        raise InputError(f"{out}: no run.json; is it the output directory of `photocalib run`?")
    try:
        rec = dict(read_json(path).get("inputs", {}))
        root = Path(out)

        def where(p: str | None) -> str | None:
            # Runs record absolute paths; an older record's relative path is tried from here,
            # then from the run folder.
            if p is None or os.path.isabs(p) or os.path.exists(p):
                return p
            return str(root / p)

        units = tuple(Unit(int(v), int(d), str(where(str(p))), int(h), bool(rest and rest[0]))
                      for v, d, p, h, *rest in rec["units"])
        flats = {int(k): str(where(str(v))) for k, v in dict(rec.get("flats", {})).items()}
        return RunInputs(units, flats, where(rec.get("refcat")), where(rec.get("truth")))
    except (AttributeError, KeyError, TypeError, ValueError, PhotocalibError) as exc:
        raise InputError(f"{path}: unreadable run record ({exc})") from exc


def refresh_report(out: str | os.PathLike, config: Config | None = None) -> Path:
    """Recompute the summary tables of a finished run and redraw its report."""
    from .report import write_report
    from .summary import write_summary

    config = config or Config()
    layout = RunLayout(Path(out))
    counts = {}
    try:
        counts = dict(read_json(layout.run_json).get("counts", {}))
    except (InputError, AttributeError):
        counts = {}
    write_summary(layout, previous_inputs(out), config, counts=counts)
    return write_report(out, cutout_size=config.report.cutout_size, dpi=config.report.dpi)
