"""The pipeline's configuration: one TOML file, validated, with defaults that run the demo.

Every section is a frozen pydantic model that forbids unknown keys; :func:`load_config` turns
any validation failure into an :class:`~photocalib.errors.InputError` naming the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InputError

__all__ = [
    "BackgroundConfig",
    "CalibrationConfig",
    "Config",
    "DaskConfig",
    "IsrConfig",
    "MeasureConfig",
    "ReportConfig",
    "SimulateConfig",
    "WarpConfig",
    "load_config",
    "config_to_toml",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SimulateConfig(_Section):
    """The simulated survey that ``photocalib demo`` makes (see :func:`photocalib.sim.simulate`)."""

    preset: Literal["hsc-like", "megacam-like", "decam-like"] = "hsc-like"
    visits: int = Field(10, ge=1, le=1000, description="number of visits")
    detector_size: int = Field(
        512, ge=32, le=8192, description="pixels along each side of a detector (small for the demo)"
    )
    n_detectors: int = Field(16, ge=1, le=500, description="detectors in the focal plane")
    band: Literal["u", "g", "r", "i", "z", "y"] = "r"
    star_density: float = Field(
        1.5e5, gt=0, description="stars per square degree within star_mag_range"
    )
    star_mag_range: tuple[float, float] = Field(
        (16.0, 21.5), description="(bright, faint) AB magnitudes of the simulated stars"
    )
    refcat_mag_max: float = Field(21.0, description="faint limit of the reference catalog (AB mag)")
    seed: int = Field(1, description="random seed; the same seed gives the same survey")

    def simulate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`photocalib.sim.simulate`."""
        kwargs: dict[str, Any] = {
            "preset": self.preset, "n_visits": self.visits,
            "detector_shape": (self.detector_size, self.detector_size),
            "n_detectors": self.n_detectors, "seed": self.seed, "band": self.band,
            "star_density": self.star_density, "star_mag_range": tuple(self.star_mag_range),
            "refcat_mag_max": self.refcat_mag_max,
        }
        return kwargs


class IsrConfig(_Section):
    """Instrument-signature removal."""

    saturation: float | None = Field(
        None, gt=0, description="saturation level in ADU (None: the SATURATE header keyword)"
    )
    flat_kind: Literal["dome", "fiducial-sed"] = "dome"


class BackgroundConfig(_Section):
    """Sky background, always modelled on the surface-brightness image (rule 3)."""

    enabled: bool = True
    mesh_size: int = Field(64, ge=8, description="background mesh cell in pixels")
    order: int = Field(
        4, ge=0, le=12,
        description="Chebyshev order of the sky model (lowered when a small image has too few meshes)",
    )


class MeasureConfig(_Section):
    """Detection and aperture photometry, always on the fluence image (rule 1)."""

    threshold: float = Field(5.0, gt=0, description="detection threshold in sigma")
    aperture_arcsec: float | None = Field(
        2.0, gt=0, description="aperture radius in arcsec (None: use aperture_pixels)"
    )
    aperture_pixels: float = Field(5.0, gt=0, description="aperture radius in pixels")
    apcorr_radius_arcsec: float | None = Field(
        None, gt=0,
        description="large aperture the fluxes are corrected to, from bright isolated stars "
        "(None, the default: no correction; a PSF constant across a visit makes the aperture "
        "loss a per-visit constant, which the joint fit's grey term absorbs)",
    )
    apcorr_order: int = Field(0, ge=0, le=4, description="Chebyshev order of the aperture correction")
    match_radius_arcsec: float = Field(
        1.0, gt=0, description="radius for matching detections to stars and the reference"
    )
    min_snr: float = Field(20.0, ge=0, description="S/N cut for stars used in calibration")


class CalibrationConfig(_Section):
    """Single-detector and joint calibration."""

    single_order: int = Field(0, ge=0, le=6, description="Chebyshev order of the single-detector fit")
    compare_legacy: bool = Field(
        True, description="also fit the legacy constant-on-surface-brightness calibration"
    )
    joint: bool = True
    joint_model: Literal["monolithic", "separated", "reference-free"] = "separated"
    star_flat_order: int = Field(3, ge=0, le=10, description="order of the per-detector star flat")
    visit_order: int = Field(7, ge=0, le=12, description="order of the per-visit polynomial (monolithic)")
    grey_gradient: bool = Field(False, description="fit a linear gradient with each visit's grey term")
    distributed: Literal["auto", "always", "never"] = Field(
        "auto",
        description="accumulate the joint fit's normal equations per visit on the Dask cluster "
        "(auto: when there are at least 200000 observations; below that the task overhead dominates)",
    )


class WarpConfig(_Section):
    """Warps onto a sky grid and the coadd (rule 2: fluence images)."""

    enabled: bool = True
    kernel: Literal["lanczos3", "bilinear"] = "lanczos3"
    pixel_scale_arcsec: float | None = Field(
        None, gt=0, description="coadd pixel scale (None: the median input pixel scale)"
    )
    coadd_size: int = Field(
        512, ge=16, le=20000, description="pixels along each side of the coadd around the survey centre"
    )
    clip: bool = Field(False, description="clipped mean against transients")


class DaskConfig(_Section):
    """Where the per-detector tasks run."""

    scheduler: str | None = Field(
        None, description="address of an existing dask.distributed scheduler (None: a LocalCluster)"
    )
    n_workers: int = Field(2, ge=1, le=512)
    threads_per_worker: int = Field(1, ge=1, le=64)
    memory_limit: str = Field("3GiB", description="per-worker memory limit of the LocalCluster")
    retries: int = Field(3, ge=0, le=20, description="times a failed task is retried")
    progress: bool = True


class ReportConfig(_Section):
    """The HTML report."""

    enabled: bool = True
    cutout_size: int = Field(200, ge=16, description="coadd cutout side in pixels")
    dpi: int = Field(90, ge=30, le=300)


class Config(_Section):
    """The whole pipeline configuration (one TOML file, one table per section)."""

    simulate: SimulateConfig = SimulateConfig()
    isr: IsrConfig = IsrConfig()
    background: BackgroundConfig = BackgroundConfig()
    measure: MeasureConfig = MeasureConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    warp: WarpConfig = WarpConfig()
    dask: DaskConfig = DaskConfig()
    report: ReportConfig = ReportConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        m = self.measure
        if m.apcorr_radius_arcsec is not None and m.aperture_arcsec is not None \
                and m.apcorr_radius_arcsec <= m.aperture_arcsec:
            raise ValueError("measure.apcorr_radius_arcsec must exceed measure.aperture_arcsec")
        if self.calibration.joint_model == "monolithic" and self.calibration.grey_gradient:
            raise ValueError("calibration.grey_gradient applies to the separated and reference-free models")
        return self

    def with_overrides(self, **sections: dict[str, Any]) -> Config:
        """A new Config with some keys of some sections replaced (validated again)."""
        data = self.model_dump()
        for name, values in sections.items():
            if name not in data:
                raise InputError(f"unknown configuration section {name!r}")
            data[name].update(values)
        return _validate(data, "overrides")


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ())) or "(top level)"
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown key {loc!r}: remove it or check its spelling (see `photocalib run --help`)"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"key {loc!r}: {error.get('msg', 'invalid')}{shown}"


def _validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise InputError(f"{source}: invalid configuration: {problems}") from exc


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate a TOML configuration file; ``None`` gives the defaults.

    Parameters
    ----------
    path : str or path-like, optional
        A TOML file with tables ``[simulate]``, ``[isr]``, ``[background]``, ``[measure]``,
        ``[calibration]``, ``[warp]``, ``[dask]`` and ``[report]``; every key is optional.

    Returns
    -------
    Config

    Raises
    ------
    InputError
        If the file is missing or not TOML, or a key is unknown or has the wrong type; the
        message names the key and what was expected.
    """
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: configuration file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: configuration file is not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    return _validate(data, str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_to_toml(config: Config) -> str:
    """The configuration as TOML text (keys whose value is None are left out: they default)."""
    lines: list[str] = []
    for section, values in config.model_dump().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
