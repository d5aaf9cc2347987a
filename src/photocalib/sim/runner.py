"""Run a whole simulation: camera, survey, stars, rendering through an Executor, and the on-disk layout.

:func:`simulate` writes raw visits, flats, the reference catalog and the truth; :class:`SimulationResult`
holds their paths and the in-memory truth, and :meth:`SimulationResult.load` reads a run back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from .._io import atomic_write, atomic_write_hdulist
from ..errors import InputError
from ..execution import Executor, ThreadExecutor, as_executor
from . import render
from .camera import Camera, sky_to_tangent
from .stars import StarCatalog, make_refcat, make_stars, write_parquet
from .survey import Survey, SurveyConfig, make_survey

__all__ = ["SimulationResult", "simulate", "DEFAULT_DEMO"]

#: The default demo survey (hsc-like, 16 detectors of 512 x 512, 10 visits).
DEFAULT_DEMO: dict[str, Any] = dict(preset="hsc-like", n_visits=10, detector_shape=(512, 512), n_detectors=16)


@dataclass
class SimulationResult:
    """Paths of everything :func:`simulate` wrote, and the truth in memory.

    Attributes
    ----------
    out_dir : Path
    camera : Camera
    survey : Survey
    stars : StarCatalog
        All true stars (fluxes in nJy per band).
    refcat : pyarrow.Table
        The reference catalog written to ``refcat.parquet``.
    observations : pyarrow.Table
        One row per (visit, detector, star) whose centre falls on a detector: the star truth
        columns documented in the package docstring.
    raw_paths : dict int -> Path
        ``raw/visit-XXXXXX.fits`` by visit number.
    dome_flat_paths : dict int -> Path
        ``flats/dome-<band>-DDD.fits`` by detector.
    mono_flat_paths : dict int -> Path
        ``flats/mono-<band>-DDD.fits`` by detector (empty when monochromatic flats are off).
    truth_map_paths : dict int -> Path
        ``truth/maps-DDD.fits`` by detector (empty when truth maps are off).
    elapsed_s : float
        Wall time of the rendering (0 when loaded).
    """

    out_dir: Path
    camera: Camera
    survey: Survey
    stars: StarCatalog
    refcat: pa.Table
    observations: pa.Table
    raw_paths: dict[int, Path] = field(default_factory=dict)
    dome_flat_paths: dict[int, Path] = field(default_factory=dict)
    mono_flat_paths: dict[int, Path] = field(default_factory=dict)
    truth_map_paths: dict[int, Path] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def refcat_path(self) -> Path:
        return self.out_dir / "refcat.parquet"

    @property
    def truth_dir(self) -> Path:
        return self.out_dir / "truth"

    @property
    def visits(self) -> list[int]:
        return [v.visit for v in self.survey.visits]

    @property
    def detectors(self) -> list[int]:
        return [d.id for d in self.camera.detectors]

    def header(self, visit: int, detector: int) -> fits.Header:
        """The raw header (with WCS) of one detector of one visit, without reading pixels."""
        return render.raw_header(self.camera, self.survey, visit, detector)

    def read_raw(self, visit: int, detector: int) -> tuple[np.ndarray, fits.Header]:
        """Raw pixels (float32 ADU) and header of one detector of one visit, from disk."""
        from .._io import open_fits

        path = self.raw_paths.get(int(visit))
        if path is None:
            raise InputError(f"visit {visit}: not in this simulation (visits {sorted(self.raw_paths)})")
        with open_fits(path) as hdul:
            name = f"DET{int(detector):03d}"
            if name not in hdul:
                raise InputError(f"{path}: no HDU {name} for detector {detector}")
            return np.asarray(hdul[name].data), hdul[name].header.copy()

    def read_dome_flat(self, detector: int) -> tuple[np.ndarray, fits.Header]:
        """Master dome flat (electrons) and its header (``LAMPLVL``), from disk."""
        from .._io import open_fits

        path = self.dome_flat_paths[int(detector)]
        with open_fits(path) as hdul:
            return np.asarray(hdul[0].data), hdul[0].header.copy()

    def truth_map(self, detector: int, name: str) -> np.ndarray:
        """A truth map of a detector (``AREA``, ``AREA_WCS``, ``QE``, ``ILLUM_SKY``, ``ILLUM_DOME``,
        ``STARFLAT``, ``RHO_*``): from ``truth/maps-DDD.fits`` when written, else computed."""
        path = self.truth_map_paths.get(int(detector))
        if path is not None and path.exists():
            from .._io import open_fits

            with open_fits(path) as hdul:
                if name in hdul:
                    return np.asarray(hdul[name].data, dtype=np.float64)
        maps = truth_maps(self.camera, int(detector), self.survey.band)
        if name not in maps:
            raise InputError(f"truth map {name!r}: unknown; use one of {', '.join(maps)}")
        return maps[name]

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> SimulationResult:
        """Read a simulation back from ``out_dir`` (no pickle: JSON and Parquet).

        Raises
        ------
        InputError
            If ``out_dir/truth/config.json`` or another truth file is missing.
        """
        out = Path(out_dir)
        cfg_path = out / "truth" / "config.json"
        if not cfg_path.exists():
            raise InputError(f"{cfg_path}: missing; is {out} the output of `photocalib simulate`?")
        cfg = json.loads(cfg_path.read_text())
        camera = Camera.from_dict(cfg["camera"])
        scfg = SurveyConfig.from_dict(cfg["survey"]["config"])
        opts = dataclasses.asdict(scfg)
        survey = make_survey(camera, **opts)
        stars = StarCatalog.from_arrow(pq.read_table(out / "truth" / "stars.parquet"))
        band = scfg.band
        res = cls(out_dir=out, camera=camera, survey=survey, stars=stars,
                  refcat=pq.read_table(out / "refcat.parquet"),
                  observations=pq.read_table(out / "truth" / "observations.parquet"))
        res.raw_paths = {v.visit: out / "raw" / f"visit-{v.visit:06d}.fits" for v in survey.visits}
        for d in camera.detectors:
            p = out / "flats" / f"dome-{band}-{d.id:03d}.fits"
            if p.exists():
                res.dome_flat_paths[d.id] = p
            p = out / "flats" / f"mono-{band}-{d.id:03d}.fits"
            if p.exists():
                res.mono_flat_paths[d.id] = p
            p = out / "truth" / f"maps-{d.id:03d}.fits"
            if p.exists():
                res.truth_map_paths[d.id] = p
        return res


def _stars_for_visit(camera: Camera, survey: Survey, visit: int, stars: StarCatalog) -> dict[str, np.ndarray]:
    v = survey.visit(visit)
    xi, eta = sky_to_tangent(stars.ra, stars.dec, v.ra, v.dec)
    reach = camera.field_radius_arcsec * 1.1 + 20 * v.seeing_fwhm
    m = np.hypot(xi, eta) < reach
    return {"star": stars.star[m], "ra": stars.ra[m], "dec": stars.dec[m], "template": stars.template[m],
            "flux": stars.flux[survey.band][m]}


def _write_visit(path: Path, camera: Camera, survey: Survey, visit: int,
                 rendered: list[render.RenderedDetector]) -> dict[str, np.ndarray]:
    v = survey.visit(visit)
    primary = fits.PrimaryHDU()
    for key, val in (("VISIT", v.visit), ("FILTER", survey.band), ("EXPTIME", v.exptime), ("MJD-OBS", v.mjd),
                     ("AIRMASS", v.airmass), ("BORE-RA", v.ra), ("BORE-DEC", v.dec), ("ROTANG", v.rotation_deg),
                     ("INSTRUME", camera.config.name), ("NDETS", len(rendered))):
        primary.header[key] = val
    hdus = [primary] + [fits.ImageHDU(r.image, header=r.header) for r in sorted(rendered, key=lambda r: r.detector)]
    atomic_write_hdulist(fits.HDUList(hdus), path)
    cols = rendered[0].stars.keys()
    return {k: np.concatenate([r.stars[k] for r in rendered]) for k in cols}


def _write_dome(path: Path, camera: Camera, detector: int, band: str, level: float, seed: int) -> Path:
    img, hdr = render.dome_flat(camera, detector, band, level, seed)
    atomic_write_hdulist(fits.HDUList([fits.PrimaryHDU(img, header=hdr)]), path)
    return path


def _write_mono(path: Path, camera: Camera, detector: int, band: str, step: float, level: float, seed: int) -> Path:
    # The response itself, scanned far enough bluewards to cover the filter edge where it has
    # shifted (cube / T0 would be undefined there); read with cube_is_response=True.
    wl, t0, cube = render.monochromatic_flats(camera, detector, band, step, level, seed, response=True)
    hdr = fits.Header()
    hdr["DETECTOR"] = detector
    hdr["FILTER"] = band
    hdr["BUNIT"] = "electron"
    hdr["LAMPLVL"] = render.lamp_level(camera, level)
    hdr["CUBETYPE"] = ("RESPONSE", "cube is T(lambda; x, y) x flat, not divided by T0")
    hdr["COMMENT"] = "cube[k] = LAMPLVL*A*QE*I_dome*T(lambda_k; x, y); see photocalib.sim"
    table = fits.BinTableHDU.from_columns(
        [fits.Column("wavelength_nm", "D", array=wl), fits.Column("throughput", "D", array=t0)], name="WAVELENGTH")
    atomic_write_hdulist(fits.HDUList([fits.PrimaryHDU(cube, header=hdr), table]), path)
    return path


def truth_maps(camera: Camera, detector: int, band: str) -> dict[str, np.ndarray]:
    """True maps of a detector [ny, nx]: AREA (with tree rings), AREA_WCS, QE, ILLUM_SKY,
    ILLUM_DOME, STARFLAT (fiducial SED), and for chromatic cameras RHO_SKY, RHO_LAMP, RHO_FID."""
    ny, nx = camera.detector(detector).shape
    xx, yy = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64))
    maps = {
        "AREA": camera.pixel_area(detector, xx, yy),
        "AREA_WCS": camera.pixel_area(detector, xx, yy, tree_rings=False),
        "QE": camera.qe(detector),
        "ILLUM_SKY": camera.illumination_sky(detector, xx, yy),
        "ILLUM_DOME": camera.illumination_dome(detector, xx, yy),
        "STARFLAT": camera.star_flat(detector, xx, yy, band, "fiducial"),
    }
    if camera.is_chromatic:
        for sed in ("sky", "lamp", "fiducial"):
            maps[f"RHO_{sed.upper()[:4] if sed != 'fiducial' else 'FID'}"] = camera.rho(detector, xx, yy, sed, band)
    return maps


def _write_truth_maps(path: Path, camera: Camera, detector: int, band: str) -> Path:
    hdus: list[fits.hdu.base.ExtensionHDU] = [fits.PrimaryHDU()]
    hdus[0].header["DETECTOR"] = detector
    hdus[0].header["FILTER"] = band
    for name, arr in truth_maps(camera, detector, band).items():
        hdus.append(fits.ImageHDU(arr.astype(np.float32), name=name))
    atomic_write_hdulist(fits.HDUList(hdus), path)
    return path


def _executor(client, scheduler: str | None, num_workers: int | None) -> tuple[Executor, Any]:
    """The executor the rendering runs on, and a local cluster to close afterwards (or None)."""
    if client is not None:
        return as_executor(client), None
    workers = num_workers or min(2, os.cpu_count() or 1)
    if scheduler in (None, "threads"):
        return ThreadExecutor(workers), None
    if scheduler == "synchronous":
        return ThreadExecutor(1), None
    if scheduler == "processes":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return as_executor(Client(cluster)), cluster
    raise InputError(f"simulate: scheduler={scheduler!r} is not one of 'threads', 'synchronous', "
                     "'processes'; or pass client= for a dask.distributed cluster")


def _render_visit(path: Path, camera: Camera, survey: Survey, visit: int, vstars: dict[str, np.ndarray],
                  seed: int) -> dict[str, np.ndarray]:
    dets = [render.render_detector(camera, survey, visit, d.id, vstars, seed) for d in camera.detectors]
    return _write_visit(path, camera, survey, visit, dets)


def _sim_task(task: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
    fn, args = task
    return fn(*args)


def simulate(
    out_dir: str | os.PathLike,
    preset: str = "hsc-like",
    n_visits: int = 10,
    detector_shape: tuple[int, int] | None = (512, 512),
    n_detectors: int | None = 16,
    seed: int = 1,
    band: str = "r",
    star_density: float = 1.0e5,
    star_mag_range: tuple[float, float] = (16.0, 24.0),
    refcat_mag_max: float = 21.0,
    tree_rings: bool = False,
    mono_flats: bool | None = None,
    mono_step_nm: float = 5.0,
    flat_level_e: float = 1.0e6,
    truth_maps_on: bool = True,
    camera: Camera | None = None,
    survey_options: dict[str, Any] | None = None,
    camera_options: dict[str, Any] | None = None,
    client=None,
    scheduler: str | None = None,
    num_workers: int | None = None,
) -> SimulationResult:
    """Simulate a survey and write it to ``out_dir`` (see the package docstring for the layout).

    Parameters
    ----------
    out_dir : path
    preset : str
        Camera preset (ignored when ``camera`` is given).
    n_visits : int
    detector_shape : (ny, nx) or None
        None: the real camera's detectors.
    n_detectors : int or None
        None: the real camera's count.
    seed : int
        Seeds the camera, survey, stars and every noise draw.
    band : str
    star_density : float
        Stars per square degree within ``star_mag_range`` (AB, in ``band``).
    star_mag_range : (bright, faint)
    refcat_mag_max : float
        Reference-catalog limit in ``band``.
    tree_rings : bool
    mono_flats : bool or None
        Write monochromatic flats (default: when the camera is chromatic).
    mono_step_nm : float
    flat_level_e : float
        Electrons per on-axis pixel in the master flats.
    truth_maps_on : bool
        Write ``truth/maps-DDD.fits``.
    camera : Camera, optional
    survey_options, camera_options : dict, optional
        Extra :class:`SurveyConfig` / :class:`CameraConfig` fields.
    client : dask.distributed.Client or photocalib.execution.Executor, optional
        Run the tasks there; otherwise in this process.
    scheduler : {"threads", "synchronous", "processes"}, optional
        Without ``client``: threads of this process (default), one thread, or a temporary
        local Dask cluster of processes (needs an ``if __name__ == "__main__"`` guard in scripts).
    num_workers : int, optional
        Local workers (default ``min(2, cpu_count)``).

    Returns
    -------
    SimulationResult

    Raises
    ------
    InputError
        For invalid options.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    if camera is None:
        camera = Camera.preset(preset, detector_shape=detector_shape, n_detectors=n_detectors,
                               tree_rings=tree_rings, seed=seed, **(camera_options or {}))
    survey = make_survey(camera, n_visits=n_visits, seed=seed, band=band, **(survey_options or {}))
    ra0, dec0, radius = survey.footprint()
    stars = make_stars(ra0, dec0, radius, density=star_density, mag_range=star_mag_range, band=band, seed=seed)
    refcat = make_refcat(stars, band, refcat_mag_max, seed=seed)
    if mono_flats is None:
        mono_flats = camera.is_chromatic
    for sub in ("raw", "flats", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    res = SimulationResult(out_dir=out, camera=camera, survey=survey, stars=stars, refcat=refcat,
                           observations=pa.table({}))
    # One task per visit (its detectors, then its file) and one per flat or truth map.
    visit_tasks = []
    for v in survey.visits:
        vstars = _stars_for_visit(camera, survey, v.visit, stars)
        path = out / "raw" / f"visit-{v.visit:06d}.fits"
        res.raw_paths[v.visit] = path
        visit_tasks.append((_render_visit, (path, camera, survey, v.visit, vstars, seed)))
    other = []
    for d in camera.detectors:
        p = out / "flats" / f"dome-{band}-{d.id:03d}.fits"
        res.dome_flat_paths[d.id] = p
        other.append((_write_dome, (p, camera, d.id, band, flat_level_e, seed)))
        if mono_flats:
            p = out / "flats" / f"mono-{band}-{d.id:03d}.fits"
            res.mono_flat_paths[d.id] = p
            other.append((_write_mono, (p, camera, d.id, band, mono_step_nm, flat_level_e, seed)))
        if truth_maps_on:
            p = out / "truth" / f"maps-{d.id:03d}.fits"
            res.truth_map_paths[d.id] = p
            other.append((_write_truth_maps, (p, camera, d.id, band)))
    ex, cluster = _executor(client, scheduler, num_workers)
    try:
        results = ex.map(_sim_task, visit_tasks + other, desc="simulate")
    finally:
        if cluster is not None:
            ex.client.close()
            cluster.close()
    obs_parts = results[: len(visit_tasks)]
    cols = obs_parts[0].keys()
    obs = pa.table({k: np.concatenate([p[k] for p in obs_parts]) for k in cols})
    res.observations = obs

    write_parquet(obs, out / "truth" / "observations.parquet")
    write_parquet(stars.to_arrow(), out / "truth" / "stars.parquet")
    vt = survey.visits_table()
    vt["sky_rate_e_per_s_arcsec2"] = [survey.sky_rate(v.visit) for v in survey.visits]
    vt["transmission_center"] = [float(survey.transmission(v.visit, 0.0, 0.0)) for v in survey.visits]
    write_parquet(pa.table({c: np.asarray(vt[c]) for c in vt.colnames}), out / "truth" / "visits.parquet")
    write_parquet(refcat, out / "refcat.parquet")
    config = {
        "camera": camera.to_dict(),
        "survey": survey.to_dict(),
        "stars": {"density_per_deg2": star_density, "mag_range": list(star_mag_range), "band": band,
                  "refcat_mag_max": refcat_mag_max, "n_stars": len(stars), "seed": seed},
        "electrons_per_njy_s": survey.electrons_per_njy_s,
        "flat_level_e": flat_level_e,
        "lamp_level_e_per_arcsec2": render.lamp_level(camera, flat_level_e),
        "mono_step_nm": mono_step_nm if mono_flats else None,
        "stamp_fwhm": render.STAMP_FWHM,
    }
    with atomic_write(out / "truth" / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=1))
    res.elapsed_s = time.perf_counter() - t_start
    return res


