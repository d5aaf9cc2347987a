"""ZTF science images (``*_sciimg.fits``) with their bit masks (``*_mskimg.fits``).

A ``sciimg`` is one readout quadrant, bias-subtracted and flat-fielded, sky not subtracted, in
DN (``BUNIT = 'Data Value'``), with a TPV WCS, ``GAIN`` (e⁻/DN), ``READNOI`` (e⁻), ``SATURATE``
(DN) and the survey's PSF-photometry zero point ``MAGZP`` (AB mag of one DN, from PS1).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from .._io import open_fits
from ..errors import InputError
from ..image.mask import MaskPlane
from .base import (
    Instrument,
    as_surface_brightness,
    flag_non_finite,
    map_bits,
    native,
    parse_bunit,
    reference_area,
    sky_wcs,
    zero_point_calib,
)

__all__ = ["ZTF"]

M = MaskPlane
_ARCSEC2 = u.arcsec**2


def companion(path: Path, token: str, replacement: str) -> Path | None:
    """``path`` with ``token`` replaced in its file name, when that file exists."""
    name = path.name
    if token not in name:
        return None
    other = path.with_name(name.replace(token, replacement))
    return other if other.is_file() else None


class ZTF(Instrument):
    name = "ZTF"
    aliases = ("ztf-sciimg",)
    description = "ZTF sciimg readout quadrant (flat-fielded DN, MAGZP) with its mskimg"
    visit_keys = ("EXPID", "DBEXPID")
    detector_keys = ("RCID", "DBRCID")  # readout channel 0..63: one per CCD quadrant
    band_keys = ("FILTER",)
    mjd_keys = ("OBSMJD", "MJD-OBS")
    exptime_keys = ("EXPTIME", "EXPOSURE")
    zero_point_keys = ("MAGZP", "MAGZPUNC")
    processed = True
    #: mskimg bits (from its BITnn comments) → MaskPlane; bits 1 and 11 (source positions of the
    #: survey's own detection) mark nothing wrong with the pixel.
    mask_bits = {0: M.BAD, 2: M.BAD, 3: M.BAD, 4: M.BAD, 5: M.SUSPECT, 6: M.SUSPECT, 7: M.CR,
                 8: M.SAT, 9: M.BAD, 10: M.BAD | M.NO_DATA, 12: M.SUSPECT}

    def matches(self, hdul, path) -> bool:
        h = hdul[0].header
        return ("Zwicky" in str(h.get("ORIGIN", "")) or str(h.get("INSTRUME", "")).startswith("ZTF")) \
            and h.get("NAXIS", 0) == 2

    def band(self, *headers):
        value = super().band(*headers)
        if value is None:
            return None
        return value[4:] if value.upper().startswith("ZTF_") else value

    def read(self, path: Path, hdul, hdu=None, *, mask=None, **options) -> list:
        from ..image import Exposure, ImageKind

        index = 0 if hdu is None else hdul.index_of(hdu)
        h = hdul[index]
        header = h.header
        where = f"{path}[{index}]"
        image = native(h.data).astype(np.float32, copy=False)
        if image.ndim != 2:
            raise InputError(f"{where}: a ZTF sciimg is 2-D, got shape {image.shape}")
        unit = parse_bunit(header.get("BUNIT"), f"{where} BUNIT")
        gain = _positive(header, "GAIN", where, 1.0)
        read_noise = _positive(header, "READNOI", where, 0.0, allow_zero=True)
        # DN variance: Poisson on the (sky-included) signal plus read noise, both through GAIN.
        variance = np.maximum(image, 0) / np.float32(gain) + np.float32((read_noise / gain) ** 2)
        bits = np.zeros(image.shape, dtype=np.uint32)
        mask_path = Path(mask) if mask is not None else companion(path, "sciimg", "mskimg")
        if mask_path is not None:
            bits |= self._mask(mask_path, image.shape, path)
        else:
            warnings.warn(f"{path}: no mskimg beside it (pass mask=); only SATURATE and NaN "
                          "pixels are masked", stacklevel=3)
        if "SATURATE" in header:
            bits[image >= float(header["SATURATE"])] |= np.uint32(M.SAT)
        image, variance = flag_non_finite(image, variance, bits)
        wcs = sky_wcs(header, hdul, where)
        a_ref = reference_area(wcs, image.shape)
        sb, sb_var = as_surface_brightness(image, variance, a_ref)
        calib = None
        if "MAGZP" in header:
            calib = zero_point_calib(float(header["MAGZP"]), unit, a_ref=a_ref,
                                     error_mag=float(header.get("MAGZPUNC", 0.0)), where=where)
        meta = self.metadata((header,), where, instrument="ZTF")
        meta["PCAREF"] = (a_ref, "[arcsec2] file value = image x PCAREF")
        meta["GAIN"] = (gain, "[e-/DN]")
        return [Exposure(sb, sb_var, bits, wcs, ImageKind.SURFACE_BRIGHTNESS, unit / _ARCSEC2,
                         calib, meta)]

    def _mask(self, mask_path: Path, shape, image_path) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_fits(mask_path) as mh:
                data = mh[0].data
                if data is None or data.shape != shape:
                    got = None if data is None else data.shape
                    raise InputError(
                        f"{mask_path}: mask shape {got} does not match the image {image_path} "
                        f"shape {shape}; pass mask= the mskimg of this quadrant")
                return map_bits(native(data), self.mask_bits)


def _positive(header: fits.Header, key: str, where: str, default: float, allow_zero=False) -> float:
    if key not in header:
        return default
    try:
        value = float(header[key])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: keyword {key} = {header[key]!r} is not a number") from exc
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{where}: keyword {key} = {value} must be positive")
    return value


#: The instruments this module describes (registered by the package, in order).
INSTRUMENTS = (ZTF(),)
