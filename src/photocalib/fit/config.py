"""Options of the single-detector and the joint calibration fits.

The pipeline's ``[calibration]`` table is :class:`CalibrationConfig`, which is both a
:class:`SingleFitConfig` and a :class:`JointFitConfig`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .._config import LayerConfig

__all__ = ["SingleFitConfig", "JointFitConfig", "CalibrationConfig"]


class SingleFitConfig(LayerConfig):
    """The single-detector calibration against a reference catalog."""

    single_order: int = Field(0, ge=0, le=6, description="Chebyshev order of the single-detector fit")
    compare_legacy: bool = Field(
        True, description="also fit the legacy constant-on-surface-brightness calibration"
    )


class JointFitConfig(LayerConfig):
    """The multi-epoch joint calibration (see :func:`photocalib.fit.fit_joint`)."""

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
    stream_min_observations: int = Field(
        2_000_000, ge=0,
        description="from this many observations on, the pipeline writes them as a Parquet dataset "
        "partitioned by star (calib/joint/observations/) and streams the joint fit from it: about 50 "
        "bytes per observation held instead of about 1 KiB, the same answer (0: never)",
    )

    @model_validator(mode="after")
    def _grey_gradient_needs_grey(self) -> JointFitConfig:
        if self.joint_model == "monolithic" and self.grey_gradient:
            raise ValueError("calibration.grey_gradient applies to the separated and reference-free models")
        return self


class CalibrationConfig(SingleFitConfig, JointFitConfig):
    """Single-detector and joint calibration (the pipeline's ``[calibration]`` table)."""
