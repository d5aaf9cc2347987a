"""Instrument descriptions and the registry that identifies a file's instrument from its headers.

An :class:`Instrument` says how a camera's files are laid out (which keywords hold the visit,
detector, band, time and exposure time; the amplifier layout of its raws; its mask bits; the
survey's own zero-point keywords) and reads a file into :class:`~photocalib.Exposure` objects.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import astropy.units as u
import numpy as np
from astropy.io import fits

from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError
from ..geom import Box
from ..image.kind import ImageKind
from ..image.mask import MaskPlane

__all__ = [
    "Amplifier",
    "Instrument",
    "register",
    "names",
    "get",
    "identify",
    "parse_bunit",
    "AB_ZERO_NJY_MAG",
]

#: AB magnitude of 1 nJy (the calib layer's constant, under the name this module always exported).
AB_ZERO_NJY_MAG = AB_ZERO_POINT_NJY_MAG

#: One nanomaggy (SDSS, Legacy Surveys) in nJy: 3631 Jy × 1e-9.
NANOMAGGY_NJY = 3631.0


@dataclass(frozen=True)
class Amplifier:
    """One amplifier of a detector's raw readout.

    Sections are FITS strings (``'[x1:x2,y1:y2]'``, 1-based, inclusive) or the header keyword
    that holds them in a raw file (``'DATASECA'``).

    Attributes
    ----------
    name : str
        ``'A'``, ``'B'``, ... as the camera names them.
    datasec, biassec : str
        The imaging pixels and the overscan of this amplifier (value or keyword).
    gain, read_noise, saturation : str or float
        e⁻/ADU, e⁻, ADU, or the keyword that holds each (``'GAINA'``, ``'RDNOISEA'``,
        ``'SATURATA'``).
    """

    name: str
    datasec: str
    biassec: str
    gain: str | float
    read_noise: str | float
    saturation: str | float | None = None


def _lookup(headers: tuple[fits.Header, ...], keys: tuple[str, ...]):
    for key in keys:
        for header in headers:
            if key in header:
                value = header[key]
                if isinstance(value, str) and not value.strip():
                    continue
                return value
    return None


class Instrument:
    """A camera's file conventions, and the reader that turns its files into Exposures.

    Subclasses set the class attributes below and implement :meth:`matches` and :meth:`read`;
    everything else (metadata, units, the calibration of flat-fielded images) is shared here.

    Attributes
    ----------
    name : str
        Registry name (``get(name)``); ``aliases`` are accepted too.
    visit_keys, detector_keys, band_keys, mjd_keys, exptime_keys : tuple of str
        Header keywords tried in order for each piece of :attr:`Exposure.metadata`.
    zero_point_keys : tuple of str
        The survey's own photometric zero-point keywords, if any.
    amplifiers : tuple of Amplifier
        Amplifier layout of a raw detector image (empty when not described).
    mask_bits : dict
        The file's quality-mask values (bit numbers or codes, see the reader) → MaskPlane.
    processed : bool
        Whether its images are already flat-fielded (``photocalib run`` then skips ISR).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    visit_keys: ClassVar[tuple[str, ...]] = ("VISIT", "EXPNUM", "EXPID")
    detector_keys: ClassVar[tuple[str, ...]] = ("DETECTOR", "CCDNUM", "DETID")
    band_keys: ClassVar[tuple[str, ...]] = ("BAND", "FILTER")
    mjd_keys: ClassVar[tuple[str, ...]] = ("MJD-OBS", "MJD", "OBSMJD")
    exptime_keys: ClassVar[tuple[str, ...]] = ("EXPTIME", "EXPOSURE")
    zero_point_keys: ClassVar[tuple[str, ...]] = ()
    amplifiers: ClassVar[tuple[Amplifier, ...]] = ()
    mask_bits: ClassVar[dict[int, MaskPlane]] = {}
    processed: ClassVar[bool] = False
    #: speclite filter name of a band (``{band}`` is replaced), for synthetic colour terms.
    bandpass_template: ClassVar[str | None] = None

    def bandpass(self, band: str | None) -> str | None:
        """The speclite filter of ``band`` for this camera (e.g. ``'decam2014-g'``), or None."""
        if not band or self.bandpass_template is None:
            return None
        return self.bandpass_template.format(band=band)

    # -- identification ------------------------------------------------------------------------
    def matches(self, hdul: fits.HDUList, path: Path) -> bool:  # pragma: no cover - abstract
        """Whether the open file ``hdul`` (at ``path``) is this instrument's."""
        raise NotImplementedError

    def read(self, path: Path, hdul: fits.HDUList, hdu=None, **options) -> list:  # pragma: no cover
        """One Exposure per detector of the file."""
        raise NotImplementedError

    def units(self, path: Path, hdul: fits.HDUList) -> list[tuple[int, int, int]]:
        """``(hdu, visit, detector)`` of every detector image in the file, from headers only
        (what ``photocalib run`` needs to plan its work)."""
        from .generic import image_hdus

        primary = hdul[0].header
        out = []
        for index in image_hdus(hdul, path, None):
            headers = (hdul[index].header, primary) if index else (primary,)
            meta = self.metadata(headers, f"{path}[{index}]")
            out.append((index, int(meta["VISIT"]), int(meta["DETECTOR"])))
        return out

    # -- shared pieces ---------------------------------------------------------------------------
    def band(self, *headers: fits.Header) -> str | None:
        """The band (filter) name, shortened to its usual form (``'r'`` for DECam's long names)."""
        value = _lookup(headers, self.band_keys)
        if value is None:
            return None
        text = str(value).strip()
        return text.split()[0] if text else None

    def metadata(self, headers: tuple[fits.Header, ...], where: str, *, visit=None,
                 detector=None, band=None, instrument: str | None = None) -> fits.Header:
        """Metadata for an Exposure: the file's keywords (first header wins; no WCS or structure)
        plus ``VISIT``, ``DETECTOR`` (integers), ``BAND``, ``MJD``, ``EXPTIME`` and
        ``INSTRUMENT``."""
        from ..image.fitsio import _metadata_from

        out = fits.Header()
        seen: set[str] = set()
        for header in headers:
            for card in _metadata_from(header).cards:
                key = card.keyword
                if key in ("COMMENT", "HISTORY") or key in seen:
                    continue
                seen.add(key)
                out.append(card)
        if visit is None:
            visit = _int_value(_lookup(headers, self.visit_keys), where, "visit", self.visit_keys)
        if detector is None:
            detector = _int_value(_lookup(headers, self.detector_keys), where, "detector",
                                  self.detector_keys)
        band = self.band(*headers) if band is None else band
        mjd = _float_value(_lookup(headers, self.mjd_keys))
        exptime = _float_value(_lookup(headers, self.exptime_keys))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # HIERARCH cards for long keys
            out["VISIT"] = (visit if visit is not None else 0, "visit (exposure) number")
            out["DETECTOR"] = (detector if detector is not None else 0, "detector number")
            if band is not None:
                out["BAND"] = (band, "band (filter)")
            if mjd is not None:
                out["MJD"] = (mjd, "[d] MJD of the exposure")
            if exptime is not None:
                out["EXPTIME"] = (exptime, "[s] exposure time")
            out["INSTRUMENT"] = instrument or self.name
            out["PCINSTR"] = (self.name, "photocalib instrument description used")
        return out

    def __repr__(self) -> str:
        return f"<Instrument {self.name}: {self.description}>"


def _int_value(value, where: str, what: str, keys) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        # Names such as 'ccd12' or 'N12': the trailing number, when there is one.
        match = re.search(r"(\d+)\s*$", str(value))
        if match:
            return int(match.group(1))
        raise InputError(
            f"{where}: keyword {'/'.join(keys)} = {value!r} is not an integer {what}; "
            "pass instrument= to choose another reader"
        ) from None


def _float_value(value) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# -- units -----------------------------------------------------------------------------------
_UNIT_ALIASES: dict[str, u.UnitBase] = {
    "data value": u.adu, "dn": u.adu, "adu": u.adu, "adus": u.adu, "counts": u.count,
    "count": u.count, "cts": u.count, "ct": u.count,
    "electron": u.electron, "electrons": u.electron, "e-": u.electron, "e": u.electron,
    "counts/s": u.count / u.s, "count/s": u.count / u.s, "cts/s": u.count / u.s,
    "adu/s": u.adu / u.s, "dn/s": u.adu / u.s, "e-/s": u.electron / u.s,
    "electrons/s": u.electron / u.s, "electron/s": u.electron / u.s,
    "nanomaggy": u.CompositeUnit(NANOMAGGY_NJY, [u.nJy], [1]),
    "nanomaggies": u.CompositeUnit(NANOMAGGY_NJY, [u.nJy], [1]),
    "nmgy": u.CompositeUnit(NANOMAGGY_NJY, [u.nJy], [1]),
}


def parse_bunit(value: Any, where: str = "BUNIT", default: u.UnitBase = u.count) -> u.UnitBase:
    """The astropy unit of a ``BUNIT`` value, never refusing one.

    Survey spellings (``'Data Value'``, ``'DN'``, ``'ADU'``, ``'counts/s'``, ``'e-'``,
    ``'nanomaggy'`` = 3631 nJy) are mapped; anything else astropy parses is kept; an unknown
    string gives a warning and ``default`` (counts).

    Examples
    --------
    >>> parse_bunit('Data Value')
    Unit("adu")
    >>> round(parse_bunit('nanomaggy').to('nJy'), 9)
    3631.0
    """
    if value is None:
        return default
    text = str(value).strip()
    if not text:
        return default
    if text.lower() in _UNIT_ALIASES:
        return _UNIT_ALIASES[text.lower()]
    for fmt in (None, "fits"):
        try:
            return u.Unit(text, format=fmt, parse_strict="raise")
        except ValueError:
            continue
    warnings.warn(f"{where}: BUNIT = {text!r} is not a known unit; taking the pixels as {default}",
                  stacklevel=3)
    return default


def unit_name(unit: u.UnitBase) -> str:
    """The short name of an instrumental unit, for PhotoCalib's ``instrumental_unit``."""
    return unit.to_string()


# -- flat-fielded images ---------------------------------------------------------------------
def reference_area(wcs, shape: tuple[int, int]) -> float:
    """A_ref: the pixel area (arcsec²) at the centre of the image.

    A survey's flat-fielded image is in counts per *nominal* pixel: its flat was normalised to
    one near the mean pixel. photocalib's surface-brightness images are per arcsec², so a reader
    divides the survey's pixel values by A_ref (and its zero point absorbs the same A_ref, so
    calibrated fluxes do not depend on the choice). ``PCAREF`` in the metadata keeps A_ref:
    the file's own values are ``image × PCAREF``.
    """
    x, y = Box.from_shape(shape).center
    area = float(np.asarray(wcs.pixel_area(x, y)))
    if not (math.isfinite(area) and area > 0):
        raise InputError(f"the WCS gives a pixel area of {area} arcsec² at the image centre")
    return area


def as_surface_brightness(image: np.ndarray, variance: np.ndarray | None, a_ref: float):
    """(image / A_ref, variance / A_ref²) in the image's float precision."""
    dtype = image.dtype if image.dtype.kind == "f" else np.dtype(np.float64)
    image = np.asarray(image, dtype=dtype.newbyteorder("="))
    out = image / dtype.type(a_ref)
    var = None
    if variance is not None:
        var = np.asarray(variance, dtype=dtype.newbyteorder("=")) / dtype.type(a_ref * a_ref)
    return out, var


def zero_point_calib(mag_zero: float, unit: u.UnitBase, *, a_ref: float | None, error_mag: float = 0.0,
                     where: str = ""):
    """The PhotoCalib of a zero point ``mag_zero`` (AB mag of one ``unit`` summed on the file's
    pixels): SURFACE_BRIGHTNESS when ``a_ref`` is given (the image was divided by A_ref),
    FLUENCE otherwise."""
    from ..calib import PhotoCalib

    if not math.isfinite(mag_zero):
        raise InputError(f"{where}: the zero point {mag_zero!r} is not a finite magnitude")
    c = 10.0 ** (-0.4 * (mag_zero - AB_ZERO_NJY_MAG))
    error = abs(error_mag) * math.log(10.0) / 2.5 if math.isfinite(error_mag) else 0.0
    if a_ref is None:
        return PhotoCalib(c, ImageKind.FLUENCE, error, instrumental_unit=unit_name(unit))
    return PhotoCalib(c * a_ref, ImageKind.SURFACE_BRIGHTNESS, error,
                      instrumental_unit=unit_name(unit))


def map_bits(values: np.ndarray, bits: dict[int, MaskPlane]) -> np.ndarray:
    """A MaskPlane array from a survey bit mask: bit ``b`` set → ``bits[b]``."""
    values = np.asarray(values).astype(np.int64)
    out = np.zeros(values.shape, dtype=np.uint32)
    for bit, plane in bits.items():
        if plane:
            out[(values >> bit) & 1 == 1] |= np.uint32(plane)
    return out


def map_codes(values: np.ndarray, codes: dict[int, MaskPlane], unknown: MaskPlane) -> np.ndarray:
    """A MaskPlane array from a survey mask of integer codes (0 good)."""
    values = np.asarray(values).astype(np.int64)
    out = np.zeros(values.shape, dtype=np.uint32)
    known = values == 0
    for code, plane in codes.items():
        hit = values == code
        out[hit] |= np.uint32(plane)
        known |= hit
    out[~known] |= np.uint32(unknown)
    return out


def flag_non_finite(image: np.ndarray, variance: np.ndarray,
                    bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask pixels whose value is not finite: BAD | NO_DATA in ``bits`` (in place), value 0 and
    variance inf in the returned (image, variance); the inputs are returned as they are when
    every pixel is finite."""
    bad = ~np.isfinite(image)
    if bad.any():
        bits[bad] |= np.uint32(MaskPlane.BAD | MaskPlane.NO_DATA)
        image = np.where(bad, np.float32(0), image)
        variance = np.where(bad, np.float32(np.inf), variance)
    return image, variance


def native(data) -> np.ndarray:
    """A FITS array in native byte order (a copy only when needed)."""
    a = np.asarray(data)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def sky_wcs(header: fits.Header, hdul: fits.HDUList | None, where: str):
    """The SkyWcs of ``header``, or InputError naming ``where``."""
    from ..astrometry import SkyWcs

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SkyWcs.from_header(header, hdulist=hdul)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


# -- the registry -----------------------------------------------------------------------------
_REGISTRY: dict[str, Instrument] = {}


_ORDER: list[str] = []


def register(instrument: Instrument) -> Instrument:
    """Add an instrument; :func:`identify` tries them in registration order (generic last)."""
    for key in (instrument.name, *instrument.aliases):
        _REGISTRY[key.lower()] = instrument
    if instrument.name not in _ORDER:
        _ORDER.append(instrument.name)
    return instrument


def names() -> list[str]:
    """Names of the registered instruments, in the order :func:`identify` tries them."""
    return [n for n in _ORDER if n != "generic"] + [n for n in _ORDER if n == "generic"]


def get(name: str, path: str | os.PathLike | None = None) -> Instrument:
    """The instrument called ``name`` (case-insensitive; aliases accepted).

    Raises
    ------
    InputError
        Unknown name; the message lists the known ones (and names ``path`` when given).
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        where = f"{path}: " if path is not None else ""
        raise InputError(
            f"{where}unknown instrument {name!r}; pass instrument= one of {', '.join(names())} "
            "(or 'auto' to identify it from the headers)"
        )
    return _REGISTRY[key]


def identify(hdul: fits.HDUList | fits.Header, path: str | os.PathLike | None = None) -> Instrument:
    """The instrument whose conventions an open FITS file (or a primary header) follows.

    Tried in :func:`names` order from ``INSTRUME``, ``TELESCOP``, ``ORIGIN`` and the file
    layout; anything unrecognised is ``generic`` (photocalib's own and the simulator's MEFs).
    """
    if isinstance(hdul, fits.Header):
        hdul = fits.HDUList([fits.PrimaryHDU(header=hdul)])
    p = Path(path) if path is not None else Path("")
    for name in _ORDER:
        instrument = _REGISTRY[name.lower()]
        if instrument.name == "generic":
            continue  # it takes anything: the fallback
        try:
            if instrument.matches(hdul, p):
                return instrument
        except Exception:  # noqa: BLE001 - a damaged header simply does not match
            continue
    return _REGISTRY["generic"]
