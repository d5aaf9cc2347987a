"""The pipeline's steps, each a plain function of paths and configuration that Dask can run.

``process_unit`` (per detector): the library's chain (:func:`photocalib.fit.process_detector`:
ISR → background on surface brightness → fluence → detection and photometry → single-detector
calibration) on one raw detector, written to the run's layout; ``apply_unit`` (per detector): calibrated
exposure, calibrated catalog and warp; the joint fit and the coadd run once per run. Each unit
writes its files atomically and then a manifest, so a rerun skips it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import open_fits
from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError, PhotocalibError
from ..fit import DetectorResult
from .catalogs import read_reference, read_table, reference_for, write_parquet
from .config import Config
from .inputs import Unit
from .layout import RunLayout, content_fingerprint, fingerprint

__all__ = ["StepContext", "StepSkipped", "process_unit", "apply_unit"]

log = logging.getLogger("photocalib.pipeline")


class StepSkipped(PhotocalibError):
    """A step has nothing to do, or is switched off in the configuration; the run goes on and
    the report says why."""


@dataclass(frozen=True)
class StepContext:
    """What every per-detector task needs (small and picklable: paths, not data)."""

    root: str
    config: Config
    flats: dict[int, str]
    refcat: str | None
    force: bool = False
    #: Content fingerprint of every input file by path (see ``layout.content_fingerprint``),
    #: computed once by the driver so that a changed file, not a changed path, redoes work.
    digests: dict[str, str] = field(default_factory=dict)

    def digest(self, path: str | None) -> str | None:
        """The content fingerprint of an input file (``path[hdu]`` for an HDU of it)."""
        if path is None:
            return None
        if path not in self.digests:
            file, hdu = _flat_spec(path) if path.endswith("]") else (path, None)
            self.digests[path] = f"{content_fingerprint(file)}[{hdu}]" if hdu is not None \
                else content_fingerprint(file)
        return self.digests[path]

    @property
    def run(self) -> RunLayout:
        return RunLayout(Path(self.root))

    @property
    def config_fingerprint(self) -> str:
        """The configuration that shapes outputs (not where or how verbosely they are run)."""
        data = self.config.model_dump(exclude={"dask", "report", "simulate"})
        return fingerprint(data)

    def process_fingerprint(self, unit: Unit) -> str:
        # Only what per-detector processing reads: changing the joint model keeps detectors.
        cfg = self.config
        data = cfg.model_dump(include={"isr", "background", "measure"})
        data["single"] = [cfg.calibration.single_order, cfg.calibration.compare_legacy]
        # Bumped when the library's chain changes what it makes from the same options.
        data["chain"] = 2
        return fingerprint(data, self.digest(unit.path), unit.hdu, unit.processed,
                           self.digest(self.flats.get(unit.detector)), self.digest(self.refcat))

    def apply_fingerprint(self, unit: Unit, grid: dict[str, Any] | None) -> str:
        run = self.run
        return fingerprint(self.config_fingerprint, run.manifest_digest("joint", "all"),
                           run.manifest_digest("process", unit.name), grid)


# -- per-detector processing ------------------------------------------------------------------
def _flat_spec(spec: str) -> tuple[str, int | None]:
    path, _, rest = spec.partition("[")
    return path, (int(rest.rstrip("]")) if rest else None)


def _unit_where(unit: Unit) -> str:
    return f"{unit.path}[{unit.hdu}] (visit {unit.visit}, detector {unit.detector})"


def process_raw_unit(unit: Unit, flat_spec: str | None, refcat: str | None,
                     config: Config) -> DetectorResult:
    """One raw detector through the library's chain (:func:`photocalib.fit.process_detector`).

    Reads the raw HDU, its WCS (with the file's distortion lookup tables), its dome flat and
    the reference catalog for its band; the chain does everything else.

    Raises
    ------
    InputError
        For an unreadable raw HDU, a header without a celestial WCS or ISR keywords, or a
        detector without a dome flat; the message names the file, HDU, visit and detector.
    """
    from ..astrometry import SkyWcs
    from ..fit import process_detector
    from ..isr import DomeFlat

    where = _unit_where(unit)
    if flat_spec is None:
        raise InputError(f"{where}: no dome flat for detector {unit.detector}; give a flats "
                         "folder (--flats) with a FITS file whose DETECTOR keyword is "
                         f"{unit.detector}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_fits(unit.path) as hdul:
            hdu = hdul[unit.hdu]
            header = hdu.header
            try:
                wcs = SkyWcs.from_header(header, hdulist=hdul)
                flat_path, flat_hdu = _flat_spec(flat_spec)
                flat = DomeFlat.read(flat_path, hdu=flat_hdu or 0, wcs=wcs)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from exc
            try:
                if hdu.data is None:
                    raise InputError(f"{where}: has no image data")
                np.asarray(hdu.data)  # a truncated file fails here, not mid-chain
            except (TypeError, ValueError, OSError) as exc:
                raise InputError(f"{where}: cannot read the raw pixels ({exc}); "
                                 "the file may be truncated") from exc
            band = str(header.get("FILTER", hdul[0].header.get("FILTER", ""))) or None
            ref = None if refcat is None else read_reference(refcat, band=band)
            try:
                result = process_detector(hdu, flat, ref, wcs=wcs, isr=config.isr,
                                          background=config.background, measure=config.measure,
                                          single=config.calibration)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from exc
    return result


def process_processed_unit(unit: Unit, refcat: str | None, config: Config):
    """One image its survey already flat-fielded through the library's chain, without ISR or
    flat: read with :func:`photocalib.instruments.read_exposures` (its weights become the
    variance, its quality map the mask). Returns the chain's result, the image's own
    calibration (its survey's zero point; None when it has none) and the colour term that
    carried a survey reference into its band (None when none was needed)."""
    from ..fit import process_detector
    from ..instruments import read_exposures

    where = _unit_where(unit)
    try:
        exp = read_exposures(unit.path, hdu=unit.hdu)[0]
        if exp.wcs is None:
            raise InputError("the image has no celestial WCS; photocalib needs one")
        meta = exp.metadata
        band = str(meta.get("BAND", meta.get("FILTER", ""))).strip() or None
        ref = None
        colour_term = None
        if refcat is not None:
            from ..instruments import get as get_instrument

            instrument = get_instrument(str(meta.get("PCINSTR", "generic")))
            ref, note = reference_for(refcat, band, bandpass=instrument.bandpass(band),
                                      mjd=meta.get("MJD"))
            log.info("%s: reference %s", where, note)
            colour_term = ref.attrs.get("colour_term")
        background = config.background
        small = min(exp.shape)
        if background.enabled and small < 2 * background.mesh_size:
            # Survey cutouts can be smaller than two background meshes: a few smaller meshes
            # still give the sky, where one mesh cannot constrain even a constant robustly.
            mesh = max(8, small // 3)
            log.info("%s: %d-pixel image: background meshes of %d pixels", where, small, mesh)
            background = background.model_copy(update={"mesh_size": mesh})
        result = process_detector(exp, None, ref, isr=config.isr, background=background,
                                  measure=config.measure, single=config.calibration)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    return result, exp.photo_calib, colour_term


def process_unit(unit: Unit, ctx: StepContext) -> dict[str, Any]:
    """Process one raw detector image to a background-subtracted fluence exposure and catalog.

    Writes ``exposures/…fits`` (FLUENCE, counts), ``catalogs/…parquet`` (the chain's catalog
    with the unit's visit and detector) and the single-detector calibrations, then the
    manifest. Skipped when its manifest says it is done (unless ``ctx.force``).

    Returns
    -------
    dict
        ``visit``, ``detector``, ``n_sources``, ``n_matched``, ``seconds``, ``status``.
    """
    run = ctx.run
    step = "process"
    fp = ctx.process_fingerprint(unit)
    if not ctx.force and run.is_done(step, unit.name, fingerprint=fp):
        return {**run.done_info(step, unit.name), "status": "cached"}
    t0 = time.perf_counter()
    own = colour_term = None
    if unit.processed:
        result, own, colour_term = process_processed_unit(unit, ctx.refcat, ctx.config)
    else:
        result = process_raw_unit(unit, ctx.flats.get(unit.detector), ctx.refcat, ctx.config)
    df = result.catalog.to_pandas()
    df.insert(0, "detector", np.int32(unit.detector))
    df.insert(0, "visit", np.int32(unit.visit))
    outputs = []
    for name, calib in result.calibrations.items():
        path = run.single_calib(unit.visit, unit.detector, legacy=(name == "legacy"))
        path.parent.mkdir(parents=True, exist_ok=True)
        calib.write(path)
        outputs.append(path)
    calibrations = sorted(result.calibrations)
    if colour_term is not None:
        # Recorded where it was used, so the report draws the term this image was calibrated with.
        path = run.colour_term(unit.visit, unit.detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        colour_term.write(path)
        outputs.append(path)
    if own is not None:
        # Kept beside the fitted ones, and applied when no reference catalog calibrates the run.
        from ..image import ImageKind

        survey = own.to_kind(ImageKind.FLUENCE, result.exposure.wcs)
        path = run.survey_calib(unit.visit, unit.detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        survey.write(path)
        outputs.append(path)
        df["flux_survey"] = survey.instflux_to_nanojansky(
            df["instflux"].to_numpy(), df["x"].to_numpy(), df["y"].to_numpy())
        calibrations.append("survey")
    fluence = result.exposure.replace(photo_calib=None)
    if unit.hdu != 0 and "VISIT" not in fluence.metadata:
        # VISIT often lives only in the primary header of an MEF; keep it with the exposure.
        meta = fluence.metadata.copy()
        meta["VISIT"] = unit.visit
        fluence = fluence.replace(metadata=meta)
    exp_path = run.exposure(unit.visit, unit.detector)
    exp_path.parent.mkdir(parents=True, exist_ok=True)
    fluence.write(exp_path)
    cat_path = run.catalog(unit.visit, unit.detector)
    write_parquet(df, cat_path)
    outputs += [exp_path, cat_path]
    info = {"visit": unit.visit, "detector": unit.detector, "n_sources": len(df),
            "n_matched": int((df["ref_index"] >= 0).sum()), "seconds": time.perf_counter() - t0,
            "calibrations": calibrations}
    run.mark_done(step, unit.name, outputs, info, fingerprint=fp)
    return {**info, "status": "done"}


def apply_unit(unit: Unit, ctx: StepContext, grid: dict[str, Any] | None) -> dict[str, Any]:
    """Apply the joint calibration to one detector: calibrated exposure (nJy), calibrated
    catalog, and (when ``grid`` is given) its warp onto the coadd grid."""
    from ..calib import PhotoCalib
    from ..image import Exposure

    run = ctx.run
    step = "apply"
    fp = ctx.apply_fingerprint(unit, grid)
    if not ctx.force and run.is_done(step, unit.name, fingerprint=fp):
        return {**run.done_info(step, unit.name), "status": "cached"}
    calib_path = run.joint_calib(unit.visit, unit.detector)
    source = "joint"
    if not calib_path.is_file() and unit.processed:
        # No joint fit (one visit, one band at a time, or no reference): the single-detector
        # fit against the reference, else the image's own calibration.
        candidates = (("single", run.single_calib(unit.visit, unit.detector)),
                      ("survey", run.survey_calib(unit.visit, unit.detector)))
        source, calib_path = next(((s, p) for s, p in candidates if p.is_file()), candidates[-1])
    if not calib_path.is_file():
        return {"visit": unit.visit, "detector": unit.detector, "status": "no-calibration"}
    t0 = time.perf_counter()
    calib = PhotoCalib.read(calib_path)
    exp = Exposure.read(run.exposure(unit.visit, unit.detector))
    calexp = calib.calibrate_image(exp.to_kind(calib.kind))
    out_exp = run.calexp(unit.visit, unit.detector)
    out_exp.parent.mkdir(parents=True, exist_ok=True)
    calexp.write(out_exp)
    df = read_table(run.catalog(unit.visit, unit.detector))
    instflux = df["instflux"] if calib.kind.value == "FLUENCE" else df["instflux_sb"]
    err = df["instflux_err"] if calib.kind.value == "FLUENCE" else df["instflux_sb_err"]
    flux, flux_err = calib.instflux_to_nanojansky(instflux.to_numpy(), df["x"].to_numpy(),
                                                  df["y"].to_numpy(), instflux_err=err.to_numpy())
    df["flux_nJy"] = flux
    df["flux_nJy_err"] = flux_err
    with np.errstate(divide="ignore", invalid="ignore"):
        df["mag"] = -2.5 * np.log10(flux) + AB_ZERO_POINT_NJY_MAG
        df["mag_err"] = 2.5 / np.log(10.0) * flux_err / flux
    out_cat = run.calibrated_catalog(unit.visit, unit.detector)
    write_parquet(df, out_cat)
    outputs = [out_exp, out_cat]
    warped = False
    if grid is not None:
        warped = _warp_unit(calexp, grid, run.warp(unit.visit, unit.detector))
        if warped:
            outputs.append(run.warp(unit.visit, unit.detector))
    info = {"visit": unit.visit, "detector": unit.detector, "warped": warped,
            "seconds": time.perf_counter() - t0, "calibration": source}
    run.mark_done(step, unit.name, outputs, info, fingerprint=fp)
    return {**info, "status": "done"}


def make_grid(spec: dict[str, Any]):
    """A SkyGrid from its plain description (so tasks receive a dict, not an object)."""
    from ..warp import SkyGrid

    return SkyGrid(spec["ra"], spec["dec"], spec["pixel_scale"], spec["width"], spec["height"],
                   patch_size=max(spec["width"], spec["height"]))


def grid_wcs(spec: dict[str, Any]):
    """(SkyWcs, shape) of the coadd grid."""
    from ..astrometry import SkyWcs

    grid = make_grid(spec)
    return SkyWcs.from_header(grid.header()), grid.shape


def _footprint_overlaps(exp, wcs, shape) -> bool:
    ny, nx = exp.shape
    xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2], float)
    ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2], float)
    ra, dec = exp.wcs.pixel_to_sky(xs, ys)
    gx, gy = wcs.sky_to_pixel(ra, dec)
    H, W = shape
    return bool(np.nanmax(gx) >= 0 and np.nanmin(gx) <= W - 1 and np.nanmax(gy) >= 0
                and np.nanmin(gy) <= H - 1)


def _warp_unit(calexp, grid: dict[str, Any], path: Path) -> bool:
    from ..warp import warp_exposure

    target, shape = grid_wcs(grid)
    if not _footprint_overlaps(calexp, target, shape):
        return False
    exp = warp_exposure(calexp, target, shape, kernel=grid.get("kernel", "lanczos3"))
    path.parent.mkdir(parents=True, exist_ok=True)
    exp.write(path)
    return True
