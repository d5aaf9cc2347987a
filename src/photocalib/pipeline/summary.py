"""The small tables a run leaves for its report: focal-plane maps, grey terms, residuals,
headline numbers (``tables/*.parquet``, ``tables/headline.json``).

Positions are in focal-plane coordinates: the tangent plane about each visit's centre, rotated
so that the detectors' +y axis points up, so that visits with different rotations line up.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .._io import open_fits
from ..astrometry import mean_pointing
from ..errors import InputError
from .catalogs import match_nearest, read_reference, read_table, tangent_xy, write_parquet
from .config import Config
from .inputs import RunInputs, Unit, read_image_wcs
from .layout import RunLayout, write_json
from .truth import read_truth

__all__ = ["write_summary", "VisitFrame"]

log = logging.getLogger("photocalib.pipeline")

#: Focal-plane map resolution per detector (grid nodes along each side).
_GRID = 9


class VisitFrame:
    """Focal-plane coordinates of one visit: tangent plane about its centre, rotated to the
    detectors' pixel axes (arcsec)."""

    def __init__(self, wcs_list: list[Any], shapes: list[tuple[int, int]]) -> None:
        ras, decs, angles = [], [], []
        for w, (ny, nx) in zip(wcs_list, shapes, strict=True):
            cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
            ra, dec = w.pixel_to_sky(cx, cy)
            ras.append(float(ra))
            decs.append(float(dec))
            jac = np.asarray(w.jacobian(cx, cy))
            # Position angle of the pixel +y axis (east of north) from the Jacobian's y column.
            angles.append(np.arctan2(jac[0, 1], jac[1, 1]))
        self.ra0, self.dec0 = mean_pointing(ras, decs)
        self.angle = float(np.arctan2(np.mean(np.sin(angles)), np.mean(np.cos(angles))))

    def __call__(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        xi, eta = tangent_xy(ra, dec, self.ra0, self.dec0)
        c, s = np.cos(self.angle), np.sin(self.angle)
        # Rotate so that the pixel +y direction (at position angle `angle`) points to +v.
        u = c * xi - s * eta
        v = s * xi + c * eta
        return -u, v  # east-left display is handled by the plot; keep +x of pixels to +u


def _compared(run: RunLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    """The other joint models fitted for the comparison: ``{model: JointSolution}`` and the
    comparison's record (``joint/models/models.json``); empty when there was none."""
    from ..fit.joint import JointSolution
    from .layout import read_json

    folder = run.joint_dir / "models"
    if not (folder / "models.json").is_file():
        return {}, {}
    info = read_json(folder / "models.json")
    sols = {}
    for model in info.get("models", {}):
        path = folder / f"{model}.fits"
        if model != info.get("chosen") and path.is_file():
            sols[model] = _CachedSolution(JointSolution.read(path))
    return sols, info


class _CachedSolution:
    """A joint solution whose per-detector calibrations are built once (the star flat, grey
    and residual tables each ask for them)."""

    def __init__(self, sol) -> None:
        self._sol = sol
        self._calibs: dict[tuple[int, int], Any] = {}

    def photo_calib(self, visit: int, detector: int):
        key = (visit, detector)
        if key not in self._calibs:
            try:
                self._calibs[key] = self._sol.photo_calib(visit, detector)
            except Exception:  # noqa: BLE001 - a detector the model left without a calibration
                self._calibs[key] = None
        return self._calibs[key]


def _model_calib(sol, unit: Unit):
    try:
        return sol.photo_calib(unit.visit, unit.detector)
    except Exception:  # noqa: BLE001 - a detector the model left without a calibration
        return None


def _units_with(run: RunLayout, units: list[Unit], step: str) -> list[Unit]:
    return [u for u in units if run.is_done(step, u.name, verify=False)]


def _frames(run: RunLayout, units: list[Unit]) -> tuple[dict[int, VisitFrame], dict[tuple[int, int], Any]]:
    wcs: dict[tuple[int, int], Any] = {}
    by_visit: dict[int, list[tuple[Any, tuple[int, int]]]] = {}
    for u in units:
        w, shape = read_image_wcs(run.exposure(u.visit, u.detector))
        wcs[(u.visit, u.detector)] = (w, shape)
        by_visit.setdefault(u.visit, []).append((w, shape))
    frames = {v: VisitFrame([a for a, _ in items], [b for _, b in items]) for v, items in by_visit.items()}
    return frames, wcs


def _calib_value(run: RunLayout, unit: Unit, x, y) -> np.ndarray | None:
    from ..calib import PhotoCalib

    path = run.joint_calib(unit.visit, unit.detector)
    if not path.is_file():
        return None
    calib = PhotoCalib.read(path)
    return np.asarray(calib.instflux_to_nanojansky(np.ones_like(x), x, y), float)


def _truth_star_flat(truth_dir, detector: int, gx: np.ndarray, gy: np.ndarray) -> np.ndarray | None:
    """The simulator's true star flat (truth/maps-DDD.fits, STARFLAT) at the nearest pixels."""
    if truth_dir is None:
        return None
    from pathlib import Path

    path = Path(truth_dir) / f"maps-{int(detector):03d}.fits"
    if not path.is_file():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_fits(path) as hdul:
            if "STARFLAT" not in hdul:
                return None
            sf = np.asarray(hdul["STARFLAT"].data, float)
    iy = np.clip(np.rint(gy).astype(int), 0, sf.shape[0] - 1)
    ix = np.clip(np.rint(gx).astype(int), 0, sf.shape[1] - 1)
    return sf[iy, ix]


def _focal_plane(run: RunLayout, units: list[Unit], frames, wcs, truth_dir=None, others=None) -> None:
    first_visit = min(u.visit for u in units)
    rows = []
    for u in (u for u in units if u.visit == first_visit):
        w, (ny, nx) = wcs[(u.visit, u.detector)]
        gy, gx = np.meshgrid(np.linspace(0, ny - 1, _GRID), np.linspace(0, nx - 1, _GRID), indexing="ij")
        ra, dec = w.pixel_to_sky(gx, gy)
        fu, fv = frames[u.visit](ra, dec)
        calib = _calib_value(run, u, gx, gy)
        true_sf = _truth_star_flat(truth_dir, u.detector, gx, gy)
        extra = {}
        for model, sol in (others or {}).items():
            c = _model_calib(sol, u)
            extra[f"calib__{model}"] = (np.asarray(c.instflux_to_nanojansky(np.ones_like(gx), gx, gy), float).ravel()
                                        if c is not None else np.nan)
        rows.append(pd.DataFrame({
            **extra,
            "detector": u.detector,
            "row": np.repeat(np.arange(_GRID), _GRID), "col": np.tile(np.arange(_GRID), _GRID),
            "xi": fu.ravel(), "eta": fv.ravel(), "area": np.asarray(w.pixel_area(gx, gy)).ravel(),
            "calib": calib.ravel() if calib is not None else np.nan,
            "true_sf": true_sf.ravel() if true_sf is not None else np.nan,
        }))
    df = pd.concat(rows, ignore_index=True)
    if np.isfinite(df["calib"]).any():
        # Calibration relative to its median: the star flat (mmag) for this visit.
        df["star_flat_mmag"] = 2500.0 * np.log10(df["calib"] / np.nanmedian(df["calib"]))
    for col in [c for c in df.columns if c.startswith("calib__")]:
        if np.isfinite(df[col]).any():
            df[f"star_flat_mmag__{col[7:]}"] = 2500.0 * np.log10(df[col] / np.nanmedian(df[col]))
        df = df.drop(columns=[col])
    if np.isfinite(df["true_sf"]).any():
        # A response S needs a calibration ∝ 1/S: in the same sense as the fitted map.
        df["truth_star_flat_mmag"] = -2500.0 * np.log10(df["true_sf"] / np.nanmedian(df["true_sf"]))
    write_parquet(df.drop(columns=["calib", "true_sf"]), run.tables / "focal_plane.parquet")


def _grey_series(values: list[tuple[int, int, float]]):
    df = pd.DataFrame(values, columns=["visit", "detector", "mean"])
    df["mmag"] = 2500.0 * np.log10(df["mean"])
    # Only detectors seen in every visit, so the star flat cancels exactly in the mean.
    n_vis = df["visit"].nunique()
    common = df.groupby("detector")["visit"].transform("nunique") == n_vis
    grey = df[common].groupby("visit")["mmag"].mean()
    return grey - grey.mean()


def _grid_mean(calib, shape: tuple[int, int], n: int = 17) -> float:
    """Mean of a calibration over a detector from an n × n grid of pixel centres: a smooth
    field's mean to far below a mmag, without integrating a composite field exactly."""
    ny, nx = shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return float(np.mean(calib.instflux_to_nanojansky(np.ones_like(gx), gx, gy)))


def _grey(run: RunLayout, units: list[Unit], truth, others=None, wcs=None) -> None:
    """Per-visit grey term: mean over detectors of the calibration (the star flat cancels)."""
    from ..calib import PhotoCalib

    values = []
    for u in units:
        path = run.joint_calib(u.visit, u.detector)
        if not path.is_file():
            continue
        values.append((u.visit, u.detector, PhotoCalib.read(path).mean()))
    if not values:
        return
    grey = _grey_series(values)
    out = pd.DataFrame({"visit": grey.index.to_numpy(np.int64), "grey_mmag": grey.to_numpy()})
    for model, sol in (others or {}).items():
        calibs = [(u.visit, u.detector, _grid_mean(c, wcs[(u.visit, u.detector)][1]) if wcs else c.mean())
                  for u in units if (c := _model_calib(sol, u)) is not None]
        if calibs:
            out[f"grey_mmag__{model}"] = _grey_series(calibs).reindex(out["visit"]).to_numpy()
    if truth is not None and truth.visits is not None:
        t = truth.visits.set_index("visit")["grey_mag"] * 1000.0
        t = t.reindex(out["visit"]).to_numpy()
        out["truth_mmag"] = t - np.nanmean(t)
    write_parquet(out, run.tables / "grey.parquet")


def _residuals(run: RunLayout, units: list[Unit], frames, config: Config, truth, refcat,
               others=None) -> pd.DataFrame:
    frames_out = []
    if truth is not None:
        against, ref = "truth", truth.stars
    elif refcat is not None:
        against, ref = "reference catalog", refcat
    else:
        return pd.DataFrame()
    model = config.calibration.joint_model
    for u in units:
        cal_path = run.calibrated_catalog(u.visit, u.detector)
        df = read_table(cal_path if cal_path.is_file() else run.catalog(u.visit, u.detector))
        # Bright stars only: the plots are about calibration errors, not photon noise.
        good = (df["flags"] == 0) & (df["snr"] >= max(config.measure.min_snr, 50.0))
        df = df[good]
        if df.empty:
            continue
        idx, _ = match_nearest(df["ra"], df["dec"], ref["ra"], ref["dec"], config.measure.match_radius_arcsec)
        df = df[idx >= 0]
        idx = idx[idx >= 0]
        true_flux = ref["flux"].to_numpy(float)[idx]
        colour = ref["colour"].to_numpy(float)[idx] if "colour" in ref.columns else np.full(idx.size, np.nan)
        fu, fv = frames[u.visit](df["ra"].to_numpy(), df["dec"].to_numpy())
        # The noise floor of each star: photon + read noise of its own measurement (from the
        # variance plane, through instflux_err), plus the reference's error when that is the
        # comparison; the calibration scales flux and error alike, so the instrumental ratio holds.
        ref_err = (ref["flux_err"].to_numpy(float)[idx] / true_flux if against != "truth" and "flux_err" in ref.columns
                   else np.zeros(idx.size))
        for other, sol in (others or {}).items():
            c = _model_calib(sol, u)
            if c is not None and "instflux" in df.columns:
                df = df.assign(**{f"flux__{other}": c.instflux_to_nanojansky(
                    df["instflux"].to_numpy(float), df["x"].to_numpy(float), df["y"].to_numpy(float))})
        compared = [(f"flux__{m}", f"joint ({m})", "instflux") for m in (others or {})]
        for column, name, inst in [("flux_nJy", f"joint ({model})", "instflux"), *compared,
                                   ("flux_jacobian_aware", "single, Jacobian-aware", "instflux"),
                                   ("flux_legacy", "single, legacy (constant on SB)", "instflux_sb")]:
            if column not in df.columns:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                r = -2500.0 * np.log10(df[column].to_numpy(float) / true_flux)
                if {inst, f"{inst}_err"} <= set(df.columns):
                    rel = df[f"{inst}_err"].to_numpy(float) / df[inst].to_numpy(float)
                else:
                    rel = np.full(idx.size, np.nan)
                noise = 2500.0 / np.log(10.0) * np.hypot(rel, ref_err)
            frames_out.append(pd.DataFrame({
                "calibration": name, "visit": u.visit, "detector": u.detector,
                "xi": fu, "eta": fv, "radius_arcmin": np.hypot(fu, fv) / 60.0,
                "colour": colour, "snr": df["snr"].to_numpy(float), "residual_mmag": r,
                "noise_mmag": noise, "against": against}))
    if not frames_out:
        return pd.DataFrame()
    res = pd.concat(frames_out, ignore_index=True)
    res = res[np.isfinite(res["residual_mmag"])]
    # The overall zero point is not what the plots compare (the reference-free model fixes it
    # by convention): remove each calibration's median.
    res["residual_mmag"] -= res.groupby("calibration")["residual_mmag"].transform("median")
    if truth is not None:
        res["colour_name"] = truth.colour_name
    elif "colour_name" in getattr(ref, "attrs", {}):
        # A survey reference carried into the band by a colour term: residuals against its
        # colour show how well the term fits (flat when it does).
        res["colour_name"] = ref.attrs["colour_name"]
    write_parquet(res.reset_index(drop=True), run.tables / "residuals.parquet")
    return res


def _colour_term_offsets(run: RunLayout, units: list[Unit], config: Config, ref, band: str | None) -> None:
    """``tables/colour_term.parquet``: for bright stars matched to a survey reference carried
    into the band by a colour term, the reference colour and the measured offset (mag)
    calibrated instrument magnitude − reference-band magnitude before the term, for the
    images in ``band`` (the band ``ref`` was made for)."""
    from ..refcat import ColourTerm

    if ref is None or "flux_reference_band" not in ref.columns:
        return
    frames = []
    for u in units:
        term_path = run.colour_term(u.visit, u.detector)
        if not term_path.is_file() or ColourTerm.read(term_path).target_band != band:
            continue
        cal_path = run.calibrated_catalog(u.visit, u.detector)
        if not cal_path.is_file():
            continue
        df = read_table(cal_path)
        if "flux_nJy" not in df.columns:
            continue
        good = (df["flags"] == 0) & (df["snr"] >= max(config.measure.min_snr, 50.0))
        df = df[good]
        idx, _ = match_nearest(df["ra"], df["dec"], ref["ra"], ref["dec"], config.measure.match_radius_arcsec)
        df, idx = df[idx >= 0], idx[idx >= 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = -2.5 * np.log10(df["flux_nJy"].to_numpy(float) / ref["flux_reference_band"].to_numpy(float)[idx])
        frames.append(pd.DataFrame({"visit": u.visit, "detector": u.detector, "band": band,
                                    "colour": ref["colour"].to_numpy(float)[idx], "offset_mag": offset}))
    if frames:
        out = pd.concat(frames, ignore_index=True)
        out = out[np.isfinite(out["offset_mag"]) & np.isfinite(out["colour"])].reset_index(drop=True)
        write_parquet(out, run.tables / "colour_term.parquet")


def _headline(res: pd.DataFrame, counts: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for key, value in counts.items():
        items.append({"name": key.replace("_", " "), "value": value, "unit": ""})
    if res.empty:
        return items
    for name, g in res.groupby("calibration", sort=False):
        bright = g[g["snr"] >= 100] if (g["snr"] >= 100).sum() >= 20 else g
        r = bright["residual_mmag"].to_numpy()
        mad = 1.4826 * np.median(np.abs(r - np.median(r)))
        kept = np.abs(r) < 5 * mad + 1e-9
        rms = float(np.sqrt(np.mean(r[kept] ** 2))) if r.size else np.nan
        per_det = bright.groupby(["visit", "detector"])["residual_mmag"].median()
        item = {"name": f"{name}: RMS residual, bright stars (5σ-clipped)", "value": rms, "unit": "mmag"}
        if "noise_mmag" in bright.columns:
            noise = bright["noise_mmag"].to_numpy(float)[kept]
            noise = noise[np.isfinite(noise)]
            if noise.size:
                # what photon and read noise alone give for the same stars: the RMS's floor
                item["floor"] = float(np.sqrt(np.mean(noise**2)))
        items.append(item)
        items.append({"name": f"{name}: uniformity (scatter of per-detector medians)",
                      "value": float(per_det.std()) if per_det.size > 1 else np.nan, "unit": "mmag"})
        items.append({"name": f"{name}: stars compared", "value": int(r.size), "unit": ""})
    return items


def _survey_reference(run: RunLayout, unit: Unit, path, band):
    """The survey catalog in ``band`` with its colour-term colour, or None when it cannot be made."""
    from astropy.io import fits

    from ..instruments import get as get_instrument
    from .catalogs import reference_for

    try:
        header = fits.getheader(run.exposure(unit.visit, unit.detector))
        instrument = get_instrument(str(header.get("PCINSTR", "generic")))
        ref, _ = reference_for(path, band, bandpass=instrument.bandpass(band), mjd=header.get("MJD"))
    except (InputError, OSError, KeyError):
        return None
    return ref


def write_summary(run: RunLayout, inputs: RunInputs, config: Config,
                  counts: dict[str, Any] | None = None) -> None:
    """Write ``tables/`` for the report from whatever the run produced.

    Raises
    ------
    InputError
        Only for unreadable outputs of this run (damaged files); missing pieces are skipped.
    """
    units = _units_with(run, list(inputs.units), "process")
    run.tables.mkdir(parents=True, exist_ok=True)
    if not units:
        write_json(run.tables / "headline.json", _headline(pd.DataFrame(), counts or {}))
        return
    frames, wcs = _frames(run, units)
    others, compared = _compared(run)
    _focal_plane(run, units, frames, wcs, inputs.truth, others)
    band = None
    try:
        from astropy.io import fits

        header = fits.getheader(run.exposure(units[0].visit, units[0].detector))
        band = str(header.get("BAND", header.get("FILTER", ""))).strip() or None
    except (OSError, KeyError):
        band = None
    truth = read_truth(inputs.truth, band or "r")
    refcat = None
    if inputs.refcat:
        try:
            refcat = read_reference(inputs.refcat, band=band)
        except InputError:
            # A survey catalog in magnitudes (Gaia, PS1, ...): converted into the band as the
            # processing step did (its colour term), at the first exposure's epoch (proper
            # motions over the run's span are far below the match radius).
            refcat = _survey_reference(run, units[0], inputs.refcat, band)
    _grey(run, units, truth, others, wcs)
    res = _residuals(run, units, frames, config, truth, refcat, others)
    _colour_term_offsets(run, units, config, refcat, band)
    base = {"visits": len({u.visit for u in units}), "detectors": len({u.detector for u in units})}
    base.update(counts or {})
    items = _headline(res, base)
    for model, rec in compared.get("models", {}).items():
        label = f"joint ({model})" + (": the run's calibration" if model == compared.get("chosen") else "")
        if "seconds" in rec:
            items.append({"name": f"{label}: fit time", "value": float(rec["seconds"]), "unit": "s"})
        else:
            items.append({"name": f"{label}: fit failed", "value": str(rec.get("error", "")), "unit": ""})
    fp = read_table(run.tables / "focal_plane.parquet")
    chosen = config.calibration.joint_model
    for col in [c for c in fp.columns if c.startswith("star_flat_mmag")]:
        if "truth_star_flat_mmag" not in fp.columns:
            break
        d = (fp[col] - fp["truth_star_flat_mmag"]).to_numpy(float)
        d = d[np.isfinite(d)]
        name = col.split("__")[1] if "__" in col else chosen
        if d.size:
            items.append({"name": f"joint ({name}) star flat − true star flat: RMS over the focal plane",
                          "value": float(np.sqrt(np.mean((d - d.mean()) ** 2))), "unit": "mmag"})
    write_json(run.tables / "headline.json", items)
