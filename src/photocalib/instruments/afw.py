"""Rubin (LSST Science Pipelines) ``afw`` Exposure FITS files, read without the Rubin stack.

An afw Exposure (``calexp``, ``visit_image``, ...) is an empty primary HDU with the metadata,
then ``IMAGE``, ``MASK`` and ``VARIANCE`` image HDUs (fpacked or not) whose headers carry the
TAN-SIP WCS, ``LTV1``/``LTV2`` = −(x0, y0) of the image in its parent detector, and in the mask
header one ``MP_<PLANE>`` keyword per mask bit; then an *archive*: an ``ARCHIVE_INDEX`` table
(HDU number ``AR_HDU`` of the primary, 1-based) whose rows give each persisted object's ``id``,
catalog number (``cat.archive``: the HDU whose ``AR_CATN`` is that number), first row and class
name, followed by one table per class. The primary header's ``PHOTOCALIB_ID`` names the
``PhotoCalib`` row (``calibrationMean``, ``calibrationErr`` in nJy per count, ``isConstant``,
``field``: the id of a ``ChebyshevBoundedField`` row with ``order_x``, the parent-pixel box
``bbox_min_x``..``bbox_max_y`` (inclusive) mapped by its pixel *edges* onto [-1, 1], and the
coefficients ordered by y then x).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..geom import Box
from ..image.mask import MaskPlane
from .base import Instrument, as_surface_brightness, native, reference_area, sky_wcs

__all__ = ["RubinExposure", "read_archive_photo_calib"]

M = MaskPlane
_ARCSEC2 = u.arcsec**2

#: afw mask plane names → MaskPlane (planes not listed are dropped).
_PLANES = {"BAD": M.BAD, "SAT": M.SAT, "EDGE": M.EDGE, "DETECTED": M.DETECTED,
           "NO_DATA": M.NO_DATA, "CR": M.CR, "INTRP": M.INTRP, "SUSPECT": M.SUSPECT,
           "UNMASKEDNAN": M.BAD | M.NO_DATA, "STREAK": M.SUSPECT, "CROSSTALK": M.SUSPECT}


def _exttype(h) -> str:
    return str(h.header.get("EXTTYPE", h.header.get("EXTNAME", ""))).strip().upper()


def _find(hdul, kind: str, default: int):
    for h in hdul[1:]:
        if _exttype(h) == kind and isinstance(h, fits.ImageHDU | fits.CompImageHDU):
            return h
    if default < len(hdul):
        return hdul[default]
    return None


class _Archive:
    """The afw archive of a file: persisted objects by id."""

    def __init__(self, hdul: fits.HDUList, path):
        self.path = path
        primary = hdul[0].header
        index_hdu = None
        if "AR_HDU" in primary:
            try:
                index_hdu = hdul[int(primary["AR_HDU"]) - 1]
            except (IndexError, ValueError, TypeError):
                index_hdu = None
        if index_hdu is None or not isinstance(index_hdu, fits.BinTableHDU):
            index_hdu = hdul["ARCHIVE_INDEX"] if "ARCHIVE_INDEX" in hdul else None
        if index_hdu is None:
            raise InputError(f"{path}: no afw ARCHIVE_INDEX table (AR_HDU)")
        self.index = index_hdu.data
        start = hdul.index_of(index_hdu)
        self.catalogs: dict[int, fits.BinTableHDU] = {}
        for i, h in enumerate(hdul[start + 1:], start=start + 1):
            if isinstance(h, fits.BinTableHDU):
                self.catalogs[int(h.header.get("AR_CATN", i - start))] = h

    def rows(self, object_id: int) -> list[tuple[str, fits.FITS_record]]:
        """(class name, first record) of every catalog of object ``object_id``."""
        out = []
        for r in self.index[self.index["id"] == object_id]:
            cat = self.catalogs.get(int(r["cat.archive"]))
            if cat is None:
                raise InputError(f"{self.path}: archive object {object_id} lives in catalog "
                                 f"{int(r['cat.archive'])}, which the file lacks")
            out.append((str(r["name"]).strip(), cat.data[int(r["row0"])]))
        return out


def read_archive_photo_calib(hdul: fits.HDUList, path, xy0=(0, 0)):
    """(mean, error, field or None) of the afw ``PhotoCalib`` the primary header points to.

    ``mean`` and ``error`` are nJy per count (afw's ``calibrationMean``, ``calibrationErr``);
    ``field`` is a :class:`ChebyshevField` in this image's pixel coordinates (parent
    coordinates minus ``xy0``) when the calibration varies, else None. None is returned when
    the file has no calibration (no ``PHOTOCALIB_ID``).
    """
    from ..fields import ChebyshevField

    primary = hdul[0].header
    pid = primary.get("PHOTOCALIB_ID", primary.get("ARCHIVE_ID_PHOTOCALIB"))
    if pid is None:
        return None
    archive = _Archive(hdul, path)
    rows = archive.rows(int(pid))
    if not rows or rows[0][0] != "PhotoCalib":
        raise InputError(f"{path}: archive object {pid} (PHOTOCALIB_ID) is not a PhotoCalib")
    rec = rows[0][1]
    names = rec.array.names
    mean = float(rec["calibrationMean"])
    error = float(rec["calibrationErr"]) if "calibrationErr" in names else 0.0
    flags = np.atleast_1d(rec["flags"]) if "flags" in names else np.array([True])
    constant = bool(flags[0])
    if constant:
        return mean, error, None
    frows = archive.rows(int(rec["field"]))
    if not frows or frows[0][0] != "ChebyshevBoundedField":
        what = frows[0][0] if frows else "nothing"
        warnings.warn(f"{path}: the PhotoCalib's field is a {what}, which photocalib does not "
                      "read; using its mean calibration", stacklevel=3)
        return mean, error, None
    f = frows[0][1]
    nx = int(f["order_x"]) + 1
    coeff = np.asarray(f["coefficients"], dtype=np.float64).ravel()
    if coeff.size % nx:
        raise InputError(f"{path}: ChebyshevBoundedField has {coeff.size} coefficients, not a "
                         f"multiple of order_x + 1 = {nx}")
    x0, y0 = int(f["bbox_min_x"]), int(f["bbox_min_y"])
    width = int(f["bbox_max_x"]) - x0 + 1
    height = int(f["bbox_max_y"]) - y0 + 1
    box = Box(x0 - int(xy0[0]), y0 - int(xy0[1]), width, height)
    return mean, error, ChebyshevField(coeff.reshape(-1, nx), box)


class RubinExposure(Instrument):
    name = "rubin-afw"
    aliases = ("afw", "lsst", "rubin", "calexp", "visit_image")
    description = "Rubin afw Exposure FITS (image, mask, variance, archive PhotoCalib)"
    visit_keys = ("VISIT", "IDNUM", "EXPNUM", "EXPID")
    detector_keys = ("CCDNUM", "EXTVER", "DETNAME")
    band_keys = ("FILTER",)
    mjd_keys = ("MJD-OBS", "MJDATE", "MJD")
    exptime_keys = ("EXPTIME",)
    zero_point_keys = ("PHOTOCALIB_ID", "FLUXMAG0")
    processed = True

    def matches(self, hdul, path) -> bool:
        if "AR_HDU" in hdul[0].header:
            return True
        kinds = {_exttype(h) for h in hdul[1:4]}
        return {"IMAGE", "MASK", "VARIANCE"} <= kinds

    def units(self, path, hdul):
        ih = _find(hdul, "IMAGE", 1)
        meta = self.metadata((hdul[0].header, ih.header), str(path))
        detector = meta["DETECTOR"]
        try:
            found = _archive_value(_Archive(hdul, path), hdul[0].header,
                                   ("DETECTOR_ID", "ARCHIVE_ID_DETECTOR"), "id")
            detector = int(found) if found is not None else detector
        except InputError:
            pass
        return [(hdul.index_of(ih), int(meta["VISIT"]), int(detector))]

    def read(self, path: Path, hdul, hdu=None, **options) -> list:
        from ..calib import PhotoCalib
        from ..image import Exposure, ImageKind

        primary = hdul[0].header
        ih = _find(hdul, "IMAGE", 1) if hdu is None else hdul[hdu]
        if ih is None or ih.data is None:
            raise InputError(f"{path}: no afw IMAGE HDU with data")
        where = f"{path}[{ih.name or 'IMAGE'}]"
        image = native(ih.data).astype(np.float32, copy=False)
        shape = image.shape
        vh = _find(hdul, "VARIANCE", 3)
        variance = None
        if vh is not None and vh.data is not None:
            variance = native(vh.data).astype(np.float32, copy=False)
            if variance.shape != shape:
                raise InputError(f"{path}[VARIANCE]: shape {variance.shape} does not match the "
                                 f"image {shape}")
        mh = _find(hdul, "MASK", 2)
        bits = np.zeros(shape, dtype=np.uint32)
        if mh is not None and mh.data is not None:
            if mh.data.shape != shape:
                raise InputError(f"{path}[MASK]: shape {mh.data.shape} does not match the image "
                                 f"{shape}")
            bits = _mask_planes(native(mh.data), mh.header)
        bad = ~np.isfinite(image)
        if variance is not None:
            bad |= ~np.isfinite(variance)
        if bad.any():
            bits[bad] |= np.uint32(M.BAD | M.NO_DATA)
            image = np.where(bad, np.float32(0), image)
            if variance is not None:
                variance = np.where(bad, np.float32(np.inf), variance)
        xy0 = (-int(round(float(ih.header.get("LTV1", 0)))), -int(round(float(ih.header.get("LTV2", 0)))))
        wcs = sky_wcs(ih.header, hdul, where)
        a_ref = reference_area(wcs, shape)
        sb, sb_var = as_surface_brightness(image, variance, a_ref)
        calib = None
        found = read_archive_photo_calib(hdul, path, xy0)
        if found is None and float(primary.get("FLUXMAG0", 0) or 0) > 0:
            # Older files: the zero point as the counts of a 0-mag source.
            flux_mag0 = float(primary["FLUXMAG0"])
            found = (3631e9 / flux_mag0, 3631e9 * float(primary.get("FLUXMAG0ERR", 0.0))
                     / flux_mag0**2, None)
        if found is not None:
            mean, error, field = found
            relative = error / mean if mean > 0 else 0.0
            value = mean * a_ref if field is None else field * a_ref
            calib = PhotoCalib(value, ImageKind.SURFACE_BRIGHTNESS, relative,
                               instrumental_unit="count")
        band = None
        detector = None
        try:
            archive = _Archive(hdul, path)
            band = _archive_value(archive, primary, ("FILTER_ID", "ARCHIVE_ID_FILTER"), "band")
            detector = _archive_value(archive, primary, ("DETECTOR_ID", "ARCHIVE_ID_DETECTOR"), "id")
        except InputError:
            pass
        headers = (primary, ih.header)
        meta = self.metadata(headers, where, band=band, detector=None if detector is None
                             else int(detector), instrument=str(primary.get(
                                 "INSTRUMENT", primary.get("INSTRUME", "rubin-afw"))).strip())
        if "MJD" not in meta and "DATE-AVG" in primary:
            meta["MJD"] = (_mjd(primary["DATE-AVG"], primary.get("TIMESYS", "TAI")),
                           "[d] MJD of the middle of the exposure")
        meta["PCAREF"] = (a_ref, "[arcsec2] file value = image x PCAREF")
        meta["XY0"] = (f"{xy0[0]},{xy0[1]}", "afw origin of this image in its detector")
        return [Exposure(sb, sb_var, bits, wcs, ImageKind.SURFACE_BRIGHTNESS, u.count / _ARCSEC2,
                         calib, meta)]

    def band(self, *headers):
        value = super().band(*headers)
        if value is None or value.startswith("_"):
            return None
        return value


def _archive_value(archive: _Archive, primary, keys, column):
    for key in keys:
        if key in primary:
            for _, rec in archive.rows(int(primary[key])):
                if column in rec.array.names:
                    value = rec[column]
                    return value.strip() if isinstance(value, str) else value
    return None


def _mjd(value: str, scale: str) -> float:
    from astropy.time import Time

    text = str(value).strip().rstrip("Z")
    try:
        return float(Time(text, format="isot", scale=str(scale).strip().lower()).mjd)
    except ValueError:
        return float("nan")


def _mask_planes(data: np.ndarray, header: fits.Header) -> np.ndarray:
    out = np.zeros(data.shape, dtype=np.uint32)
    values = data.astype(np.int64)
    for card in header.cards:
        key = card.keyword
        if not key.startswith("MP_"):
            continue
        plane = _PLANES.get(key[3:])
        if plane is None:
            continue
        out[(values >> int(card.value)) & 1 == 1] |= np.uint32(plane)
    return out


#: The instruments this module describes (registered by the package, in order).
INSTRUMENTS = (RubinExposure(),)
