"""FITS persistence of Exposures: image, variance and mask HDUs with kind, unit, area and WCS.

Reading turns every failure into an InputError naming the path, HDU and keyword; writing is
atomic (a temporary file renamed into place).
"""

from __future__ import annotations

import math
import os
import re
import warnings

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table

from .._io import atomic_write_hdulist, compression, open_fits
from ..errors import InputError, PhotocalibError
from ..fields import field_from_table
from .kind import ImageKind
from .mask import MaskPlane
from .registry import hdu_format, hdu_format_for

__all__ = ["write_exposure", "read_exposure", "check_complete", "ARCSEC2_TO_SR"]

#: One square arcsecond in steradians.
ARCSEC2_TO_SR = (math.pi / (180.0 * 3600.0)) ** 2

# Structural keywords astropy writes itself, and the ones this module owns.
_STRUCTURAL = {
    "SIMPLE", "BITPIX", "EXTEND", "BSCALE", "BZERO", "PCOUNT", "GCOUNT", "XTENSION", "EXTNAME",
    "EXTVER", "CHECKSUM", "DATASUM", "BUNIT", "PCKIND", "PIXAR_A2", "PIXAR_SR", "INHERIT",
}
# WCS keywords (FITS WCS papers I-III, SIP, TPV, distortion lookup tables): never metadata,
# since the WCS is written from exp.wcs and read back into it.
_WCS_KEY = re.compile(
    r"^(NAXIS\d*|WCSAXES\w?|CTYPE\d\w?|CRPIX\d\w?|CRVAL\d\w?|CDELT\d\w?|CUNIT\d\w?|CROTA\d|"
    r"CD\d_\d\w?|PC\d_\d\w?|PV\d_\d+\w?|PS\d_\d+\w?|LONPOLE\w?|LATPOLE\w?|RADESYS\w?|RADECSYS|"
    r"EQUINOX\w?|EPOCH|MJDREF|WCSNAME\w?|MJD-OBS|DATE-OBS|DATEREF|"
    r"A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d+_\d+|B_\d+_\d+|AP_\d+_\d+|BP_\d+_\d+|A_DMAX|B_DMAX|"
    r"CPDIS\d|CPERR\d|DP\d|D2IMDIS\d|D2IMERR\d|D2IM\d|D2IMEXT|NPOLEXT|CQDIS\d|DQ\d|"
    r"SIPREFX|SIPREFY|SIPPOLX|SIPPOLY)$"
)
# Only these dates stay: they are observation metadata as much as WCS.
_KEEP = {"MJD-OBS", "DATE-OBS"}


def _is_wcs_key(key: str) -> bool:
    return key not in _KEEP and _WCS_KEY.match(key) is not None


def _metadata_from(header: fits.Header) -> fits.Header:
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or _is_wcs_key(key) or key == "":
            continue
        out.append(card, end=True)  # at the end: O(1), not O(cards)
    return out


def _image_header(exp) -> fits.Header:
    header = fits.Header()
    for card in exp.metadata.cards:
        if card.keyword in _STRUCTURAL or _is_wcs_key(card.keyword):
            continue
        header.append(card, end=True)
    header["BUNIT"] = (exp.unit.to_string(), "astropy unit of the pixel values")
    header["PCKIND"] = (exp.kind.value, "FLUENCE or SURFACE_BRIGHTNESS")
    if exp.wcs is not None:
        x, y = exp.bbox.center
        area = float(np.asarray(exp.wcs.pixel_area(x, y)))
        header["PIXAR_A2"] = (area, "[arcsec2] pixel area at the image centre")
        header["PIXAR_SR"] = (area * ARCSEC2_TO_SR, "[sr] pixel area at the image centre")
        try:
            wcs_header = exp.wcs.to_header()
        except PhotocalibError as exc:
            raise InputError(f"cannot write the exposure's WCS to a FITS header: {exc}") from exc
        for card in wcs_header.cards:
            if card.keyword not in ("COMMENT", "HISTORY", ""):
                header[card.keyword] = (card.value, card.comment)
    return header


def write_exposure(exp, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write an :class:`Exposure` to a FITS file atomically (see :meth:`Exposure.write`)."""
    header = _image_header(exp)
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [
        fits.PrimaryHDU(data=np.asarray(exp.image), header=header)
    ]
    if exp.variance is not None:
        vh = fits.Header()
        vh["BUNIT"] = ((exp.unit**2).to_string(), "unit of the variance")
        hdus.append(fits.ImageHDU(data=np.asarray(exp.variance), header=vh, name="VARIANCE"))
    mh = fits.Header()
    for plane in MaskPlane:
        mh[f"MP_{plane.name}"[:8]] = (int(plane.value), f"mask bit of {plane.name}")
    hdus.append(fits.ImageHDU(data=np.asarray(exp.mask), header=mh, name="MASK", uint=True))
    if exp.photo_calib is not None:
        hdus.append(hdu_format_for(exp.photo_calib, "Exposure.photo_calib").writer(exp.photo_calib, "PHOTOCAL"))
    if exp.background_mapping is not None:
        hdus.append(exp.background_mapping.to_hdu("BGMAP"))
    atomic_write_hdulist(fits.HDUList(hdus), path, overwrite=overwrite)


def _pick_image_hdu(hdul: fits.HDUList, path, hdu) -> tuple[int | str, fits.hdu.base._BaseHDU]:
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError) as exc:
            raise InputError(f"{path}: no HDU {hdu!r} (the file has {len(hdul)} HDUs)") from exc
        return hdu, chosen
    for i, h in enumerate(hdul):
        # The header says whether an HDU holds an image; reading its data to find out would
        # load every image of the file.
        if isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) and h.header.get("NAXIS", 0):
            name = h.name if h.name not in ("", "PRIMARY") else i
            if str(name).upper() in ("VARIANCE", "MASK") or _exttype(h) in ("VARIANCE", "MASK"):
                continue
            return name, h
    raise InputError(f"{path}: no HDU holds image data; pass hdu= to name the image HDU")


def _wcs_from(header: fits.Header, hdul: fits.HDUList, where: str):
    has_ctype = any(k.startswith("CTYPE") for k in header)
    if not has_ctype and "CD1_1" not in header and "PC1_1" not in header:
        return None
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = WCS(header, hdul, relax=True)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types for bad WCS headers
        raise InputError(f"{where}: the WCS keywords do not make a valid WCS ({exc})") from exc
    if not probe.has_celestial:
        ctypes = [header.get(f"CTYPE{i}", "") for i in (1, 2)]
        raise InputError(
            f"{where}: the header has no celestial axes (CTYPE1/CTYPE2 = {ctypes}); an Exposure "
            "needs an RA/Dec WCS, e.g. CTYPE1='RA---TAN', CTYPE2='DEC--TAN'"
        )
    from ..astrometry import SkyWcs

    try:
        return SkyWcs.from_header(header, hdulist=hdul)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


def read_exposure(path: str | os.PathLike, hdu: int | str | None = None, unit=None):
    """Read an :class:`Exposure` from a FITS file (see :meth:`Exposure.read`)."""
    with warnings.catch_warnings():
        # astropy reports truncation as warnings; check_complete() turns it into InputError.
        warnings.simplefilter("ignore")
        return _read(path, hdu, unit)


def check_complete(hdul: fits.HDUList, path) -> None:
    """InputError unless the HDUs account for the whole file (a truncated file does not)."""
    try:
        n = len(hdul)  # forces every header to be read
        info = hdul.fileinfo(n - 1)
        end = info["datLoc"] + info["datSpan"]
    except Exception as exc:  # noqa: BLE001 - astropy raises many types on a damaged file
        raise InputError(f"{path}: damaged FITS structure ({exc}); the file may be truncated") from exc
    if compression(path) is not None:
        return  # open_fits checked that the stream decompresses to its end
    size = os.path.getsize(path)
    if size < end:
        raise InputError(f"{path}: truncated: {size} bytes, but its HDUs need {end}")
    if size > end:
        with open(path, "rb") as f:
            f.seek(end)
            tail = f.read()
        if tail.strip(b"\0 "):
            raise InputError(
                f"{path}: {size - end} unreadable bytes after HDU {n - 1}; the file is truncated "
                "or corrupt (a damaged extension header)"
            )


def _read(path, hdu, unit_override=None):
    from .exposure import Exposure

    with open_fits(path) as hdul:
        check_complete(hdul, path)
        name, h = _pick_image_hdu(hdul, path, hdu)
        where = f"{path}[{name}]"
        if not isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
            raise InputError(f"{where}: is a {type(h).__name__}, not an image HDU")
        _check_memory(h.header, where)
        try:
            image = h.data
        except Exception as exc:  # noqa: BLE001 - truncated data raises from astropy lazily
            raise InputError(f"{where}: cannot read the image data ({exc}); the file may be truncated") from exc
        if image is None:
            raise InputError(f"{where}: HDU has no data")
        if image.ndim != 2:
            raise InputError(f"{where}: image must be 2-D, got shape {image.shape}")
        header = h.header
        # A header inherited from an empty primary (HST/JWST layout) carries the metadata.
        full = header.copy()
        if h is not hdul[0] and hdul[0].data is None:
            for card in hdul[0].header.cards:
                if card.keyword not in full and card.keyword not in _STRUCTURAL:
                    full.append(card, end=True)
        raw_kind = full.get("PCKIND", ImageKind.SURFACE_BRIGHTNESS.value)
        try:
            kind = ImageKind.parse(raw_kind)
        except InputError as exc:
            raise InputError(
                f"{where}: keyword PCKIND = {raw_kind!r} is not an image kind; "
                "use FLUENCE or SURFACE_BRIGHTNESS"
            ) from exc
        unit = unit_override
        if unit is None and "BUNIT" in full:
            unit = _parse_unit(full["BUNIT"], where)
        wcs = _wcs_from(header, hdul, where)
        variance = _read_plane(hdul, "VARIANCE", image.shape, path)
        if variance is None and "UNCERT" in hdul:
            variance = _ccddata_variance(hdul, image.shape, path)
        mask = _read_plane(hdul, "MASK", image.shape, path)
        photo_calib = None
        if "PHOTOCAL" in hdul:
            fmt = hdu_format("PHOTOCAL")
            if fmt is None:
                raise InputError(f"{path}[PHOTOCAL]: no reader is registered for this HDU; "
                                 "import photocalib (which registers photocalib.calib's)")
            photo_calib = fmt.reader(hdul["PHOTOCAL"], f"{path}[PHOTOCAL]")
        bgmap = None
        if "BGMAP" in hdul:
            try:
                bgmap = field_from_table(Table.read(hdul["BGMAP"]))
            except InputError as exc:
                raise InputError(f"{path}[BGMAP]: {exc}") from exc
        image = np.array(image, dtype=image.dtype.newbyteorder("=") if image.dtype.byteorder == ">" else image.dtype)
        try:
            return Exposure(
                image, variance, mask, wcs, kind, unit, photo_calib, _metadata_from(full), bgmap
            )
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc


def _ccddata_variance(hdul: fits.HDUList, shape, path) -> np.ndarray | None:
    """The variance from the UNCERT HDU that astropy's CCDData.write produces."""
    utype = str(hdul["UNCERT"].header.get("UTYPE", ""))
    data = _read_plane(hdul, "UNCERT", shape, path)
    if data is None:
        return None
    if utype == "VarianceUncertainty":
        return data
    if utype == "StdDevUncertainty":
        return np.square(data)
    if utype == "InverseVariance":
        with np.errstate(divide="ignore"):
            return 1.0 / data
    raise InputError(
        f"{path}[UNCERT]: keyword UTYPE = {utype!r} is not VarianceUncertainty, "
        "StdDevUncertainty or InverseVariance, so it cannot become a variance"
    )


def _parse_unit(value, where: str) -> u.UnitBase:
    for fmt in (None, "fits"):
        try:
            return u.Unit(str(value), format=fmt, parse_strict="raise")
        except ValueError:
            continue
    raise InputError(f"{where}: keyword BUNIT = {value!r} is not a unit astropy understands")


def _available_memory() -> int | None:
    """Bytes of memory this process could still get (MemAvailable + free swap), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if ":" in line}
        return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _check_memory(header: fits.Header, where: str) -> None:
    """InputError up front when the image, its variance and mask cannot fit in memory."""
    try:
        shape = [int(header.get(f"ZNAXIS{i}", header.get(f"NAXIS{i}", 0))) for i in (1, 2)]
        bitpix = int(header.get("ZBITPIX", header.get("BITPIX", 8)))
    except (TypeError, ValueError):
        return
    # The image as read, a variance plane and a uint32 mask of the same shape.
    need = shape[0] * shape[1] * (max(4, abs(bitpix) // 8) * 2 + 4)
    available = _available_memory()
    if available is not None and need > available:
        raise InputError(f"{where}: a {shape[0]}x{shape[1]} image needs about {need / 1e9:.1f} GB of "
                         f"memory and {available / 1e9:.1f} GB is available; read a cutout (--hdu "
                         "of a smaller image) or use a machine with more memory")


def _exttype(h) -> str:
    """The afw ``EXTTYPE`` (IMAGE, MASK, VARIANCE) of an HDU, upper case ('' if none)."""
    try:
        return str(h.header.get("EXTTYPE", "")).strip().upper()
    except Exception:  # noqa: BLE001 - a damaged card
        return ""


def _plane_hdu(hdul: fits.HDUList, name: str):
    """The HDU named ``name`` (EXTNAME), else the first whose afw EXTTYPE is ``name``.

    Rubin's afw writes image, mask and variance HDUs that may carry no EXTNAME, only EXTTYPE.
    """
    if name in hdul:
        return hdul[name]
    for h in hdul:
        if _exttype(h) == name:
            return h
    return None


#: How the mask-plane names other software writes (afw, Rubin) map onto :class:`MaskPlane`;
#: a name absent here and from MaskPlane is kept as SUSPECT, and these None are dropped.
_FOREIGN_PLANES: dict[str, str | None] = {
    "CROSSTALK": "SUSPECT", "UNMASKEDNAN": "BAD", "DETECTED_NEGATIVE": None,
    "NOT_DEBLENDED": None, "CLIPPED": None, "INEXACT_PSF": None, "REJECTED": None,
    "SENSOR_EDGE": "EDGE", "STREAK": "SUSPECT", "VIGNETTED": "SUSPECT",
}


def _own_plane_keys() -> dict[str, int]:
    return {f"MP_{plane.name}"[:8]: int(plane.value) for plane in MaskPlane}


def _remap_mask(data: np.ndarray, header: fits.Header, where: str) -> np.ndarray:
    """Translate a mask whose header defines its bits (``MP_<NAME> = bit``) to MaskPlane bits.

    photocalib writes ``MP_<name>`` (8 characters) = the plane's *value*; afw (Rubin, HSC)
    writes ``MP_<NAME>`` = the bit *number* (``MP_DETECTED = 5``). Without the translation
    afw's DETECTED bit would read as CR here and mask every source.
    """
    planes = {}
    for card in header.cards:
        key = card.keyword.upper()
        if key.startswith("HIERARCH "):
            key = key[9:].strip()
        if key.startswith("MP_") and isinstance(card.value, int) and not isinstance(card.value, bool):
            planes[key] = card.value
    if not planes:
        return data
    if planes == _own_plane_keys():
        return data  # photocalib's own layout: bits are already MaskPlane values
    out = np.zeros(data.shape, dtype=np.uint32)
    raw = data.astype(np.uint64, copy=False)
    for key, bit in planes.items():
        if not 0 <= bit < 64:
            raise InputError(f"{where}: mask keyword {key} = {bit} is not a bit number 0..63")
        name = key[3:]
        target = name if name in MaskPlane.__members__ else _FOREIGN_PLANES.get(name, "SUSPECT")
        if target is None:
            continue
        hit = (raw >> np.uint64(bit)) & np.uint64(1)
        out |= hit.astype(np.uint32) * np.uint32(MaskPlane[target].value)
    return out


def _read_plane(hdul: fits.HDUList, name: str, shape, path) -> np.ndarray | None:
    h = _plane_hdu(hdul, name)
    if h is None:
        return None
    try:
        data = h.data
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}[{name}]: cannot read the data ({exc}); the file may be truncated") from exc
    if data is None:
        return None
    if data.shape != shape:
        raise InputError(f"{path}[{name}]: shape {data.shape} does not match the image shape {shape}")
    data = np.asarray(data)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("="))
    if name == "MASK":
        data = _remap_mask(data, h.header, f"{path}[{name}]")
    return data
