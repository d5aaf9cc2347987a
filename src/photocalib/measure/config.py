"""Options of detection, aperture photometry, aperture corrections and reference matching."""

from __future__ import annotations

from pydantic import Field, model_validator

from .._config import LayerConfig

__all__ = ["MeasureConfig"]


class MeasureConfig(LayerConfig):
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

    @model_validator(mode="after")
    def _apertures_nest(self) -> MeasureConfig:
        if self.apcorr_radius_arcsec is not None and self.aperture_arcsec is not None \
                and self.apcorr_radius_arcsec <= self.aperture_arcsec:
            raise ValueError("measure.apcorr_radius_arcsec must exceed measure.aperture_arcsec")
        return self
