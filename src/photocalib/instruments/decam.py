"""NOIRLab community-pipeline (CP) InstCal products of DECam, Mosaic3 and 90Prime.

An InstCal exposure comes as three files with the same extensions (one per CCD, fpacked as
``.fits.fz`` when distributed): ``ooi`` the flat-fielded image in ADU (sky not subtracted),
``oow`` its inverse variance, ``ood`` the data-quality codes. The raw DECam CCD has two
amplifiers (``GAINA``/``GAINB``, ``RDNOISEA``/``RDNOISEB``, ``SATURATA``/``SATURATB``); after
dome and star flats an effective gain applies to the whole CCD, so the reader uses the mean.
``MAGZERO``, when the CP wrote it, is the AB magnitude of one ADU in this image (the legacy
surveys' per-second ``zpt`` plus 2.5 log10 EXPTIME).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from .._io import open_fits
from ..errors import InputError
from ..image.mask import MaskPlane
from .base import (
    Amplifier,
    Instrument,
    as_surface_brightness,
    flag_non_finite,
    map_codes,
    native,
    parse_bunit,
    reference_area,
    sky_wcs,
    zero_point_calib,
)
from .generic import image_hdus

__all__ = ["CommunityPipeline"]

M = MaskPlane
_ARCSEC2 = u.arcsec**2


def _companion(path: Path, kind: str) -> Path | None:
    """The ``oow``/``ood`` file of an ``ooi`` image (any of the CP's naming styles)."""
    name = path.name
    for token in ("_ooi_", "_ooi.", "-ooi-"):
        if token in name:
            other = path.with_name(name.replace(token, token.replace("ooi", kind)))
            return other if other.is_file() else None
    return None


class CommunityPipeline(Instrument):
    """CP InstCal images of one camera (the registry has DECam, Mosaic3 and 90Prime)."""

    name = "DECam"
    description = "DECam community-pipeline InstCal (ooi image, oow weight, ood quality)"
    instrume: tuple[str, ...] = ("decam",)
    visit_keys = ("EXPNUM", "OBSID")
    detector_keys = ("CCDNUM",)
    band_keys = ("BAND", "FILTER")
    mjd_keys = ("MJD-OBS",)
    exptime_keys = ("EXPTIME",)
    zero_point_keys = ("MAGZERO",)
    processed = True
    bandpass_template = "decam2014-{band}"
    # The raw CCD's two amplifiers (the CP trims the overscans; for raws see the raw reader).
    amplifiers = (
        Amplifier("A", "DATASECA", "BIASSECA", "GAINA", "RDNOISEA", "SATURATA"),
        Amplifier("B", "DATASECB", "BIASSECB", "GAINB", "RDNOISEB", "SATURATB"),
    )
    #: ood codes (not bits) of CP versions 3-4: 1 bad, 2 no data, 3 saturated, 4 bleed trail,
    #: 5 cosmic ray, 6 low weight, 7 transient, 8 streak; other values are taken as bad.
    mask_bits = {1: M.BAD, 2: M.NO_DATA | M.BAD, 3: M.SAT, 4: M.SAT | M.SUSPECT, 5: M.CR,
                 6: M.SUSPECT, 7: M.SUSPECT, 8: M.BAD}

    def matches(self, hdul, path) -> bool:
        h = hdul[0].header
        instrume = str(h.get("INSTRUME", "")).strip().lower()
        if instrume not in self.instrume:
            return False
        proctype = str(h.get("PROCTYPE", "")).strip().lower()
        return proctype == "instcal" or "_ooi" in path.name

    def read(self, path: Path, hdul, hdu=None, *, weight=None, mask=None, **options) -> list:
        primary = hdul[0].header
        weight_path = Path(weight) if weight is not None else _companion(path, "oow")
        quality_path = Path(mask) if mask is not None else _companion(path, "ood")
        if weight_path is None:
            warnings.warn(f"{path}: no oow weight file beside it (pass weight=); the variance "
                          "comes from the mean gain and read noise", stacklevel=3)
        if quality_path is None:
            warnings.warn(f"{path}: no ood quality file beside it (pass mask=); only saturated "
                          "and non-finite pixels are masked", stacklevel=3)
        with contextlib.ExitStack() as stack, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wh = stack.enter_context(open_fits(weight_path)) if weight_path is not None else None
            qh = stack.enter_context(open_fits(quality_path)) if quality_path is not None else None
            return [self._read_ccd(path, hdul, i, primary, wh, weight_path, qh, quality_path)
                    for i in image_hdus(hdul, path, hdu)]

    def _read_ccd(self, path, hdul, index, primary, wh, weight_path, qh, quality_path):
        from ..image import Exposure, ImageKind

        h = hdul[index]
        header = h.header
        where = f"{path}[{h.name or index}]"
        image = native(h.data).astype(np.float32, copy=False)
        shape = image.shape
        headers = (header, primary)
        unit = parse_bunit(header.get("BUNIT", primary.get("BUNIT", "adu")), f"{where} BUNIT",
                           default=u.adu)
        gains = [float(hh[k]) for k in ("GAINA", "GAINB", "GAIN") for hh in headers if k in hh][:2]
        gain = float(np.mean(gains)) if gains else 1.0
        noises = [float(hh[k]) for k in ("RDNOISEA", "RDNOISEB", "RDNOISE") for hh in headers
                  if k in hh][:2]
        read_noise = float(np.mean(noises)) if noises else 0.0
        bits = np.zeros(shape, dtype=np.uint32)
        if wh is not None:
            w = _matching(wh, h, index, weight_path, where, shape, "weight")
            w = native(w).astype(np.float32, copy=False)
            with np.errstate(divide="ignore"):
                variance = np.where(w > 0, np.float32(1) / w, np.float32(np.inf))
            bits[~(w > 0)] |= np.uint32(M.BAD | M.NO_DATA)
        else:
            variance = np.maximum(image, 0) / np.float32(gain) + np.float32((read_noise / gain) ** 2)
        if qh is not None:
            q = _matching(qh, h, index, quality_path, where, shape, "quality")
            bits |= map_codes(native(q), self.mask_bits, M.BAD)
        saturation = [float(hh[k]) for k in ("SATURATA", "SATURATB", "SATURATE") for hh in headers
                      if k in hh]
        if saturation:
            # Flat-fielding moves a raw saturation level by the flat (a few per cent): the lower
            # amplifier's level is the conservative threshold.
            bits[image >= min(saturation)] |= np.uint32(M.SAT)
        image, variance = flag_non_finite(image, variance, bits)
        wcs = sky_wcs(header, hdul, where)
        a_ref = reference_area(wcs, shape)
        sb, sb_var = as_surface_brightness(image, variance, a_ref)
        calib = None
        for hh in headers:
            if "MAGZERO" in hh:
                try:
                    mag_zero = float(hh["MAGZERO"])
                except (TypeError, ValueError):
                    continue
                if np.isfinite(mag_zero) and mag_zero > 0:
                    calib = zero_point_calib(mag_zero, unit, a_ref=a_ref, where=where)
                break
        meta = self.metadata(headers, where, instrument=self.name)
        meta["PCAREF"] = (a_ref, "[arcsec2] file value = image x PCAREF")
        meta["GAIN"] = (gain, "[e-/ADU] mean over the amplifiers")
        meta["RDNOISE"] = (read_noise, "[e-] mean over the amplifiers")
        return Exposure(sb, sb_var, bits, wcs, ImageKind.SURFACE_BRIGHTNESS, unit / _ARCSEC2,
                        calib, meta)


def _matching(other: fits.HDUList, h, index: int, other_path: Path, where: str, shape, what: str):
    """The HDU of ``other`` that goes with image HDU ``h`` (same EXTNAME, else same index)."""
    name = h.name
    try:
        oh = other[name] if name and name != "PRIMARY" else other[index]
    except (KeyError, IndexError):
        try:
            oh = other[index]
        except IndexError:
            raise InputError(f"{other_path}: no HDU {name or index} for the image {where}; pass "
                             f"{'weight' if what == 'weight' else 'mask'}= the matching file") from None
    data = oh.data
    if data is None or data.shape != shape:
        got = None if data is None else data.shape
        raise InputError(
            f"{other_path}[{oh.name or index}]: {what} map shape {got} does not match the image "
            f"{where} shape {shape}; pass {'weight' if what == 'weight' else 'mask'}= the "
            f"{'oow' if what == 'weight' else 'ood'} file of this exposure")
    return data


class _Mosaic3(CommunityPipeline):
    name = "Mosaic3"
    description = "Mayall Mosaic3 community-pipeline InstCal (same layout as DECam's)"
    instrume = ("mosaic3",)
    amplifiers = ()
    bandpass_template = None


class _NinetyPrime(CommunityPipeline):
    name = "90Prime"
    aliases = ("bok", "ninety-prime")
    description = "Bok 90Prime community-pipeline InstCal (same layout as DECam's)"
    instrume = ("90prime",)
    amplifiers = ()
    bandpass_template = None


#: The instruments this module describes (registered by the package, in order).
INSTRUMENTS = (CommunityPipeline(), _Mosaic3(), _NinetyPrime())
