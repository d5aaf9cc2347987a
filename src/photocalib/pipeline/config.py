"""The pipeline's configuration: one TOML file, validated, with defaults that run the demo.

Each table is the frozen configuration of the layer that uses it (``[isr]`` is
:class:`photocalib.isr.IsrConfig`, ``[background]`` :class:`photocalib.background.BackgroundConfig`,
``[measure]`` :class:`photocalib.measure.MeasureConfig`, ``[calibration]``
:class:`photocalib.fit.CalibrationConfig`, ``[warp]`` :class:`photocalib.warp.WarpConfig`); the
pipeline adds ``[simulate]``, ``[dask]`` and ``[report]``. Unknown keys are refused; :func:`load_config` turns
any validation failure into an :class:`~photocalib.errors.InputError` naming the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from .._config import LayerConfig
from ..background.config import BackgroundConfig
from ..errors import InputError
from ..fit.config import CalibrationConfig
from ..isr.config import IsrConfig
from ..measure.config import MeasureConfig
from ..warp.config import WarpConfig

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


class _Section(LayerConfig):
    """A pipeline-only table (the library layers own the others)."""


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
    compare_models: Literal["auto", "always", "never"] = Field(
        "auto",
        description="fit all three joint models on the same stars for the report's side-by-side "
        "comparison (auto: when the joint fit has at most compare_max_observations observations); "
        "the configured [calibration] joint_model alone writes the calibrations",
    )
    compare_max_observations: int = Field(100_000, ge=0, description="the 'auto' limit of compare_models")


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
    except RecursionError as exc:
        raise InputError(f"{path}: tables or arrays nested too deeply to read; a photocalib "
                         "configuration is two levels deep ([section] key = value)") from exc
    try:
        return _validate(data, str(path))
    except RecursionError as exc:
        raise InputError(f"{path}: tables or arrays nested too deeply; a photocalib "
                         "configuration is two levels deep ([section] key = value)") from exc


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
