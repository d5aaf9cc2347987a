"""The pipeline's steps, each a plain function of paths and configuration that Dask can run.

``process_unit`` (per detector): ISR → background on surface brightness → fluence → detection
and photometry → single-detector calibration; ``apply_unit`` (per detector): calibrated
exposure, calibrated catalog and warp; the joint fit and the coadd run once per run. Each unit
writes its files atomically and then a manifest, so a rerun skips it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import open_fits
from ..errors import InputError, PhotocalibError
from .catalogs import match_nearest, read_reference, read_table, write_parquet
from .config import Config
from .inputs import Unit
from .layout import RunLayout, fingerprint

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
        return fingerprint(data, unit.path, unit.hdu, self.flats.get(unit.detector), self.refcat)

    def apply_fingerprint(self, unit: Unit, grid: dict[str, Any] | None) -> str:
        run = self.run
        return fingerprint(self.config_fingerprint, run.manifest_digest("joint", "all"),
                           run.manifest_digest("process", unit.name), grid)


# -- reading raw data and ISR -------------------------------------------------------------------
def _flat_spec(spec: str) -> tuple[str, int | None]:
    path, _, rest = spec.partition("[")
    return path, (int(rest.rstrip("]")) if rest else None)


def isr_unit(unit: Unit, flat_spec: str | None, config: Config):
    """Raw ADU of one detector → flat-fielded SURFACE_BRIGHTNESS Exposure (count/arcsec²).

    Uses :func:`photocalib.isr.isr_from_hdu` (GAIN, RDNOISE, BIAS or overscan, SATURATE from
    the header) with the detector's dome flat.

    Raises
    ------
    InputError
        For an unreadable raw HDU, a header without a celestial WCS or ISR keywords, or a
        detector without a dome flat; the message names the file, HDU, visit and detector.
    """
    from ..astrometry import SkyWcs
    from ..isr import DomeFlat, isr_from_hdu

    where = f"{unit.path}[{unit.hdu}] (visit {unit.visit}, detector {unit.detector})"
    if flat_spec is None:
        raise InputError(f"{where}: no dome flat for detector {unit.detector}; give a flats "
                         "folder (--flats) with a FITS file whose DETECTOR keyword is "
                         f"{unit.detector}")
    kwargs: dict[str, Any] = {}
    if config.isr.saturation is not None:
        kwargs["saturation"] = config.isr.saturation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_fits(unit.path) as hdul:
            hdu = hdul[unit.hdu]
            header = hdu.header
            try:
                wcs = SkyWcs.from_header(header, hdulist=hdul)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from exc
            flat_path, flat_hdu = _flat_spec(flat_spec)
            try:
                flat = DomeFlat.read(flat_path, hdu=flat_hdu or 0, wcs=wcs)
                exp = isr_from_hdu(hdu, flat, wcs=wcs, **kwargs)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from exc
            except (TypeError, ValueError, OSError) as exc:
                raise InputError(f"{where}: cannot read the raw pixels ({exc}); "
                                 "the file may be truncated") from exc
    if unit.hdu != 0:
        # VISIT often lives only in the primary header of an MEF; keep it with the exposure.
        meta = exp.metadata
        if "VISIT" not in meta:
            meta = meta.copy()
            meta["VISIT"] = unit.visit
            exp = exp.replace(metadata=meta)
    return exp, wcs


# -- per-detector processing -----------------------------------------------------------------------
def _sources(exp_fluence, wcs, config: Config):
    """Detect and photometer on the FLUENCE image (rule 1); returns a DataFrame."""
    from ..measure import aperture_photometry, detect

    found = detect(exp_fluence, threshold=config.measure.threshold)
    x = np.asarray(found["x"], float)
    y = np.asarray(found["y"], float)
    if config.measure.aperture_arcsec is not None:
        phot = aperture_photometry(exp_fluence, x, y, radius_arcsec=config.measure.aperture_arcsec)
    else:
        phot = aperture_photometry(exp_fluence, x, y, radius=config.measure.aperture_pixels)
    apcorr = np.ones(x.size)
    m = config.measure
    if m.apcorr_radius_arcsec is not None and m.aperture_arcsec is not None and x.size:
        from scipy.spatial import cKDTree

        from ..measure import fit_aperture_correction

        # Only stars with no detected neighbour within twice the large aperture: in a crowded
        # field the large aperture of most stars holds a neighbour, which no clipping undoes.
        scale = float(np.asarray(wcs.pixel_scale(exp_fluence.shape[1] / 2, exp_fluence.shape[0] / 2)))
        nn = cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)[0][:, 1] if x.size > 1 else np.full(x.size, np.inf)
        iso = nn * scale > 2.0 * m.apcorr_radius_arcsec
        try:
            fit = fit_aperture_correction(exp_fluence, x[iso], y[iso], m.aperture_arcsec,
                                          m.apcorr_radius_arcsec, order=m.apcorr_order or None,
                                          min_snr=max(m.min_snr, 50.0))
            values = fit.field.evaluate(x, y)
            # A large aperture holds at least the small one's flux and, for any real PSF, not
            # half as much again: outside that the correction is measuring something else.
            if np.all((values >= 0.98) & (values <= 1.5)):
                apcorr = values
            else:
                log.info("aperture correction %.3f..%.3f rejected as implausible", values.min(), values.max())
        except InputError as exc:
            # Common on sparse detectors; the joint fit's grey term absorbs a per-visit PSF loss.
            log.info("no aperture correction for %s: %s", exp_fluence.metadata.get("EXTNAME", "?"), exc)
    ra, dec = wcs.pixel_to_sky(x, y)
    area = wcs.pixel_area(x, y) if x.size else np.empty(0)
    flags = np.asarray(phot["flags"]).astype(np.int64)
    if "saturated" in found.colnames:
        flags = flags | np.where(np.asarray(found["saturated"], bool), 1 << 20, 0)
    df = pd.DataFrame({
        "x": x, "y": y, "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
        "instflux": np.asarray(phot["instflux"], float) * apcorr,
        "instflux_err": np.asarray(phot["instflux_err"], float) * apcorr,
        "apcorr": apcorr,
        "flags": flags, "pixel_area": np.asarray(area, float),
    })
    # What the same aperture would sum on the surface-brightness image (fluence / A to first
    # order in the area's variation across the aperture): the legacy photometry.
    df["instflux_sb"] = df["instflux"] / df["pixel_area"]
    df["instflux_sb_err"] = df["instflux_err"] / df["pixel_area"]
    df["snr"] = df["instflux"] / df["instflux_err"]
    df["kind"] = "FLUENCE"
    return df


def _single_fits(df: pd.DataFrame, ref: pd.DataFrame | None, wcs, box, config: Config, where: str):
    """Single-detector calibrations: Jacobian-aware and legacy (constant on SB photometry).

    Returns ``{name: PhotoCalib}``; empty without a reference.
    """
    from ..fit import fit_single

    if ref is None:
        return {}
    good = (df["ref_index"] >= 0) & (df["flags"] == 0) & (df["snr"] >= config.measure.min_snr)
    sel = df[good]
    if len(sel) < 3:
        log.warning("%s: only %d stars matched to the reference: no single-detector calibration",
                    where, len(sel))
        return {}
    from astropy.table import Table

    table = Table({
        "x": sel["x"].to_numpy(), "y": sel["y"].to_numpy(),
        "instflux": sel["instflux"].to_numpy(), "instflux_err": sel["instflux_err"].to_numpy(),
        "ref_flux": sel["ref_flux"].to_numpy(), "ref_flux_err": sel["ref_flux_err"].to_numpy(),
        "instflux_sb": sel["instflux_sb"].to_numpy(), "instflux_sb_err": sel["instflux_sb_err"].to_numpy(),
    })
    out = {}
    try:
        out["jacobian-aware"] = _call_single(fit_single, table, wcs, box, "jacobian-aware",
                                             config.calibration.single_order)
        if config.calibration.compare_legacy:
            out["legacy"] = _call_single(fit_single, table, wcs, box, "legacy", 0)
    except InputError as exc:
        log.warning("%s: single-detector calibration failed: %s", where, exc)
    return out


def _call_single(fit_single, table, wcs, box, mode: str, order: int):
    """The single-detector calibration in one of the fitter's modes."""
    return fit_single(table, wcs=wcs, bbox=box, mode=mode, order=order).photo_calib


def _background_order(shape: tuple[int, int], mesh: int, order: int) -> int:
    """The configured order, lowered until the meshes can constrain it (twice over)."""
    n_mesh = -(-shape[0] // mesh) * -(-shape[1] // mesh)
    while order > 0 and (order + 1) * (order + 2) > n_mesh:
        order -= 1
    return order


def process_unit(unit: Unit, ctx: StepContext) -> dict[str, Any]:
    """Process one raw detector image to a background-subtracted fluence exposure and catalog.

    Writes ``exposures/…fits`` (FLUENCE, counts), ``catalogs/…parquet`` (sources with sky
    positions, pixel area, matched reference) and the single-detector calibrations, then the
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
    cfg = ctx.config
    where = f"{unit.path}[{unit.hdu}] (visit {unit.visit}, detector {unit.detector})"
    sb, wcs = isr_unit(unit, ctx.flats.get(unit.detector), cfg)
    band = str(sb.metadata.get("FILTER", "")) or None
    if cfg.background.enabled:
        from ..background import estimate, subtract

        # Rule 3: the sky is modelled on the surface-brightness image.
        bg = estimate(sb, mesh_size=cfg.background.mesh_size,
                      order=_background_order(sb.shape, cfg.background.mesh_size, cfg.background.order))
        sb = subtract(sb, bg)
    fluence = sb.to_fluence()
    df = _sources(fluence, wcs, cfg)
    df.insert(0, "detector", np.int32(unit.detector))
    df.insert(0, "visit", np.int32(unit.visit))
    ref = None
    df["ref_index"] = -1
    df["ref_id"] = -1
    df["ref_flux"] = np.nan
    df["ref_flux_err"] = np.nan
    if ctx.refcat is not None:
        ref = read_reference(ctx.refcat, band=band)
        idx, _ = match_nearest(df["ra"], df["dec"], ref["ra"], ref["dec"], cfg.measure.match_radius_arcsec)
        df["ref_index"] = idx
        ok = idx >= 0
        df.loc[ok, "ref_id"] = ref["ref_id"].to_numpy()[idx[ok]]
        df.loc[ok, "ref_flux"] = ref["flux"].to_numpy()[idx[ok]]
        df.loc[ok, "ref_flux_err"] = ref["flux_err"].to_numpy()[idx[ok]]
    outputs = []
    calibs = _single_fits(df, ref, wcs, fluence.bbox, cfg, where)
    for name, calib in calibs.items():
        path = run.single_calib(unit.visit, unit.detector, legacy=(name == "legacy"))
        path.parent.mkdir(parents=True, exist_ok=True)
        calib.write(path)
        outputs.append(path)
        instflux = df["instflux_sb"] if name == "legacy" else df["instflux"]
        df[f"flux_{name.replace('-', '_')}"] = calib.instflux_to_nanojansky(
            instflux.to_numpy(), df["x"].to_numpy(), df["y"].to_numpy())
    exp_path = run.exposure(unit.visit, unit.detector)
    exp_path.parent.mkdir(parents=True, exist_ok=True)
    fluence.write(exp_path)
    cat_path = run.catalog(unit.visit, unit.detector)
    write_parquet(df, cat_path)
    outputs += [exp_path, cat_path]
    info = {"visit": unit.visit, "detector": unit.detector, "n_sources": len(df),
            "n_matched": int((df["ref_index"] >= 0).sum()), "seconds": time.perf_counter() - t0,
            "calibrations": sorted(calibs)}
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
        df["mag"] = -2.5 * np.log10(flux) + 31.4
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
            "seconds": time.perf_counter() - t0}
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
