"""Conversions between Exposure and astropy's NDData / CCDData.

The variance travels as a VarianceUncertainty, the kind as ``meta['PCKIND']``, the WCS as an
astropy WCS (or the object the SkyWcs wraps).
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.nddata import (
    CCDData,
    InverseVariance,
    NDData,
    StdDevUncertainty,
    VarianceUncertainty,
)

from ..errors import InputError
from .kind import ImageKind

__all__ = ["exposure_from_nddata", "exposure_to_nddata"]


def _variance_from(uncertainty) -> np.ndarray | None:
    if uncertainty is None:
        return None
    array = np.asarray(uncertainty.array, dtype=np.float64)
    if isinstance(uncertainty, VarianceUncertainty):
        return array
    if isinstance(uncertainty, StdDevUncertainty):
        return np.square(array)
    if isinstance(uncertainty, InverseVariance):
        with np.errstate(divide="ignore"):
            return 1.0 / array
    raise InputError(
        f"NDData uncertainty of type {type(uncertainty).__name__} cannot become a variance; "
        "use VarianceUncertainty, StdDevUncertainty or InverseVariance"
    )


def _wrap_wcs(wcs):
    if wcs is None or hasattr(wcs, "pixel_area_field"):
        return wcs
    from ..astrometry import SkyWcs

    return SkyWcs(wcs)


def exposure_from_nddata(nd, kind: ImageKind | str | None = None, wcs=None):
    """An :class:`Exposure` from an astropy ``NDData`` (see :meth:`Exposure.from_nddata`).

    Parameters
    ----------
    nd : astropy.nddata.NDData
        Data, with optional uncertainty, mask, wcs, unit and meta.
    kind : ImageKind or str, optional
        Default ``nd.meta['PCKIND']`` if present, else ``SURFACE_BRIGHTNESS``.
    wcs : SkyWcs, optional
        Overrides ``nd.wcs``.

    Raises
    ------
    InputError
        Not an NDData, an uncertainty that is not a variance in disguise, bad shapes or kind.
    """
    from .exposure import Exposure

    if not isinstance(nd, NDData):
        raise InputError(f"from_nddata needs an astropy NDData or CCDData, got {type(nd).__name__}")
    meta = nd.meta if nd.meta is not None else {}
    if kind is None:
        kind = meta.get("PCKIND", ImageKind.SURFACE_BRIGHTNESS)
    variance = _variance_from(nd.uncertainty)
    image = np.asarray(nd.data)
    if variance is not None and image.dtype == np.float32:
        variance = variance.astype(np.float32)
    metadata = fits.Header(meta) if isinstance(meta, fits.Header) else dict(meta)
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k != "PCKIND"}
    else:
        metadata.remove("PCKIND", ignore_missing=True)
    return Exposure(
        image,
        variance=variance,
        mask=None if nd.mask is None else np.asarray(nd.mask),
        wcs=_wrap_wcs(wcs if wcs is not None else nd.wcs),
        kind=kind,
        unit=nd.unit,
        metadata=metadata,
    )


def _astropy_wcs(wcs):
    if wcs is None:
        return None
    for attr in ("astropy_wcs", "wcs", "_wcs"):
        inner = getattr(wcs, attr, None)
        if inner is not None and not callable(inner):
            return inner
    from astropy.wcs import WCS

    return WCS(wcs.to_header())


def exposure_to_nddata(exp, ccd: bool = False) -> NDData:
    """An astropy ``NDData`` (or ``CCDData``) from an :class:`Exposure`.

    ``meta`` is the metadata plus ``PCKIND``; the variance is a ``VarianceUncertainty``.
    NDData keeps the uint32 mask bits; CCDData (``ccd=True``) turns the mask into booleans, as
    it always does.
    """
    meta = exp.metadata
    meta["PCKIND"] = exp.kind.value
    cls = CCDData if ccd else NDData
    return cls(
        np.asarray(exp.image),
        uncertainty=None if exp.variance is None else VarianceUncertainty(np.asarray(exp.variance)),
        mask=np.asarray(exp.mask),
        wcs=_astropy_wcs(exp.wcs),
        unit=exp.unit,
        meta=meta,
    )
