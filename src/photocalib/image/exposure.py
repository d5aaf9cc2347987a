"""Exposure: an image that knows its kind (fluence or surface brightness), WCS and calibration.

Conversions between the kinds are exact multiplications by the pixel-area image ``|det J|``, which is
computed once per (WCS, box, dtype) and cached.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

import astropy.units as u
import numpy as np
from astropy.io import fits

from ..errors import ImageKindError, InputError
from ..fields import BoundedField
from ..geom import Box
from .kind import ImageKind
from .mask import MaskPlane

__all__ = ["Exposure", "pixel_area_image", "clear_area_cache"]

_ARCSEC2 = u.arcsec**2

# -- the pixel-area image cache ----------------------------------------------------------------
#: Upper bound on the bytes held by the area cache (a 4k x 4k float64 image is 128 MiB).
_CACHE_MAX_BYTES = 768 * 2**20
_cache: OrderedDict[tuple, tuple[Any, np.ndarray]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_area_cache() -> None:
    """Forget every cached pixel-area image."""
    with _cache_lock:
        _cache.clear()


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a foreign __eq__ may raise; then they are not equal
        return False


def _cache_get(key: tuple, wcs: Any) -> np.ndarray | None:
    with _cache_lock:
        hit = _cache.get(key)
        # The key holds id(wcs); the entry keeps a strong reference to that very object, so a
        # matching entry can never belong to a different WCS that happens to reuse the id.
        if hit is not None and hit[0] is wcs:
            _cache.move_to_end(key)
            return hit[1]
        candidates = [(k, v) for k, v in _cache.items() if k[1:] == key[1:]]
    # A miss by identity: an equal WCS (the same file read twice, say) has the same areas.
    # Comparing costs a header comparison, paid only on misses.
    for _, (other, array) in candidates:
        if _equal(other, wcs):
            _cache_put(key, wcs, array)
            return array
    return None


def _cache_put(key: tuple, wcs: Any, array: np.ndarray) -> None:
    with _cache_lock:
        _cache[key] = (wcs, array)
        _cache.move_to_end(key)
        while _cache_bytes() > _CACHE_MAX_BYTES and len(_cache) > 1:
            _cache.popitem(last=False)


def _cache_bytes() -> int:
    # Entries for equal WCSs share one array; count each array once.
    return sum({id(a): a.nbytes for _, a in _cache.values()}.values())


def pixel_area_image(wcs: Any, box: Box, dtype=np.float64, squared: bool = False) -> np.ndarray:
    """The pixel area A(x, y) in arcsec² at every pixel centre of ``box``, cached and read-only.

    Parameters
    ----------
    wcs : SkyWcs
        Anything with ``pixel_area_field(box)`` returning a :class:`BoundedField`.
    box : Box
        The pixels to cover.
    dtype : numpy dtype
        float64 (the exact fill) or float32 (rounded from the float64 fill).
    squared : bool
        Return A² instead (for variance), rounded once from float64.

    Returns
    -------
    numpy.ndarray
        Read-only array of shape ``box.shape``. The same object is returned while it stays in the
        cache (bounded at 768 MiB, least recently used dropped first), also for another WCS
        object equal to ``wcs`` (e.g. the same header read twice).
    """
    dtype = np.dtype(dtype)
    key = (id(wcs), box, dtype.str, squared)
    hit = _cache_get(key, wcs)
    if hit is not None:
        return hit
    base_key = (id(wcs), box, np.dtype(np.float64).str, False)
    base = _cache_get(base_key, wcs)
    if base is None:
        base = np.asarray(wcs.pixel_area_field(box).fill(dtype=np.float64), dtype=np.float64)
        if base.shape != box.shape:
            raise InputError(f"pixel_area_field({box}).fill() returned shape {base.shape}")
        base.setflags(write=False)
        if dtype == np.float64 and not squared:
            _cache_put(base_key, wcs, base)
            return base
    # A and A² in the requested dtype, each rounded once from the float64 fill; the float64
    # image itself is kept only when asked for, so a float32 detector costs 2 x 4 bytes/pixel.
    result = None
    for sq in (False, True):
        if dtype == np.float64 and not sq:
            continue
        array = np.square(base).astype(dtype, copy=False) if sq else base.astype(dtype)
        array.setflags(write=False)
        _cache_put((id(wcs), box, dtype.str, sq), wcs, array)
        if sq == squared:
            result = array
    return result


# -- helpers -----------------------------------------------------------------------------------
def _readonly_view(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.setflags(write=False)
    return view


def _as_image(image, name: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"Exposure {name} must be 2-D, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"Exposure {name} is empty (shape {a.shape})")
    if a.dtype.kind == "f" and a.dtype.itemsize in (4, 8):
        # FITS data arrive big-endian; arithmetic wants native order at the same precision.
        return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind in "biuf":
        # Integer or half-precision input: float64 holds every int32 and int64 up to 2**53.
        return a.astype(np.float32 if a.dtype == np.float16 else np.float64)
    raise InputError(f"Exposure {name} must be numeric, got dtype {a.dtype}")


def _as_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, dtype=np.uint32)  # calloc: costs nothing until written
    m = np.asarray(mask)
    if m.shape != shape:
        raise InputError(f"Exposure mask shape {m.shape} does not match image shape {shape}")
    if m.dtype == np.bool_:
        return np.where(m, np.uint32(MaskPlane.BAD), np.uint32(0))
    if m.dtype == np.uint32:
        return m
    if m.dtype.kind not in "iu":
        raise InputError(f"Exposure mask must hold integer bit flags or booleans, got dtype {m.dtype}")
    if m.dtype.kind == "i" and m.size and m.min() < 0:
        raise InputError("Exposure mask has negative values; mask bits must be non-negative")
    if m.size and m.max() > np.iinfo(np.uint32).max:
        raise InputError("Exposure mask has values beyond 32 bits")
    return m.astype(np.uint32)


def _as_unit(unit, kind: ImageKind) -> u.UnitBase:
    if unit is None:
        return u.count if kind is ImageKind.FLUENCE else u.count / _ARCSEC2
    try:
        return u.Unit(unit)
    except (ValueError, TypeError) as exc:
        raise InputError(f"Exposure unit {unit!r} is not an astropy unit: {exc}") from exc


def _as_header(metadata) -> fits.Header:
    if metadata is None:
        return fits.Header()
    if isinstance(metadata, fits.Header):
        return metadata.copy()
    if isinstance(metadata, dict):
        header = fits.Header()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long keys become HIERARCH cards, with a warning
            for key, value in metadata.items():
                # Only what a FITS card can hold; nested objects have no header form.
                if isinstance(value, str | int | float | bool | np.number | np.bool_):
                    header[str(key)] = value
        return header
    raise InputError(f"Exposure metadata must be an astropy Header or dict, got {type(metadata).__name__}")


@runtime_checkable
class Calibration(Protocol):
    """What an Exposure needs of its calibration: the kind of image it takes and a conversion
    to the other kind. :class:`photocalib.PhotoCalib` (a higher layer) is one; the protocol
    lets this layer hold it without importing it."""

    @property
    def kind(self) -> ImageKind: ...

    def to_kind(self, kind, wcs=None, bbox=None): ...


def _wrap_astropy_wcs(wcs):
    """An astropy WCS wrapped in a SkyWcs (anything else is returned as it is)."""
    from astropy.wcs import WCS

    if isinstance(wcs, WCS):
        from ..astrometry import SkyWcs

        return SkyWcs(wcs)
    return wcs


class Exposure:
    """An image with its variance, mask, WCS, kind, unit, calibration and metadata.

    ``kind`` says what a pixel value means (:class:`ImageKind`): ``FLUENCE`` (per pixel) or
    ``SURFACE_BRIGHTNESS`` (per arcsec²). :meth:`to_fluence` and :meth:`to_surface_brightness`
    convert exactly, multiplying (dividing) the image by the pixel area A(x, y) = ``|det J|`` in
    arcsec² at each pixel centre, the variance by A², and the unit by arcsec². (The area
    integrated over a pixel differs from the centre value by about ∇²A/24, below 1e-8 relative
    for real cameras.) The area image comes from ``wcs.pixel_area_field(bbox).fill()``, which
    is within 1e-7 relative of the exact Jacobian, and is computed once per (WCS, box, dtype).

    An Exposure is an immutable value: its arrays are read-only views of the arrays given (not
    copies), and every operation returns a new Exposure (see :meth:`replace`).

    Parameters
    ----------
    image : array_like, 2-D
        Pixel values ``[y, x]``; float32 and float64 are kept as they are, integers become float64.
    variance : array_like, optional
        Variance of each pixel value, same shape (``None``: unknown).
    mask : array_like, optional
        uint32 :class:`MaskPlane` bits, same shape; booleans become ``BAD``. Default all zero.
    wcs : SkyWcs or astropy.wcs.WCS, optional
        The WCS (an astropy WCS is wrapped in a SkyWcs); needed for kind conversions and for
        :meth:`pixel_area_field`.
    kind : ImageKind or str
        ``SURFACE_BRIGHTNESS`` (default) or ``FLUENCE``.
    unit : astropy unit or str, optional
        Unit of the pixel values. Default ``count/arcsec2`` for surface brightness and
        ``count`` for fluence.
    photo_calib : PhotoCalib, optional
        Calibration of this image; it must have the same kind.
    metadata : astropy Header or dict, optional
        Other header keywords (copied).
    background_mapping : BoundedField, optional
        The mapping M = A · F_sky / F_fid from this image's fluence to sky-SED surface
        brightness (docs/design.md); ``None`` means M = A.

    Raises
    ------
    InputError
        A non-2-D or non-numeric image, variance or mask of another shape, unknown kind or unit.
    ImageKindError
        A ``photo_calib`` that takes the other kind of image.

    Examples
    --------
    >>> import numpy as np
    >>> exp = Exposure(np.ones((4, 5)), kind="FLUENCE")
    >>> exp.kind, exp.unit, exp.bbox
    (<ImageKind.FLUENCE: 'FLUENCE'>, Unit("ct"), Box(x0=0, y0=0, width=5, height=4))
    """

    __slots__ = (
        "_image",
        "_variance",
        "_mask",
        "_wcs",
        "_kind",
        "_unit",
        "_photo_calib",
        "_metadata",
        "_background_mapping",
    )

    def __init__(
        self,
        image,
        variance=None,
        mask=None,
        wcs=None,
        kind: ImageKind | str = ImageKind.SURFACE_BRIGHTNESS,
        unit=None,
        photo_calib=None,
        metadata=None,
        background_mapping: BoundedField | None = None,
    ) -> None:
        img = _as_image(image)
        var = None
        if variance is not None:
            var = _as_image(variance, "variance")
            if var.shape != img.shape:
                raise InputError(
                    f"Exposure variance shape {var.shape} does not match image shape {img.shape}"
                )
        kind = ImageKind.parse(kind)
        if wcs is not None and not hasattr(wcs, "pixel_area_field"):
            wcs = _wrap_astropy_wcs(wcs)
        if wcs is not None and not hasattr(wcs, "pixel_area_field"):
            raise InputError(
                f"Exposure wcs must be a photocalib SkyWcs, got {type(wcs).__name__}; "
                "wrap an astropy WCS with photocalib.SkyWcs(wcs)"
            )
        if photo_calib is not None:
            if not isinstance(photo_calib, Calibration):
                raise InputError(
                    f"Exposure photo_calib must be a calibration (a photocalib.PhotoCalib), got "
                    f"{type(photo_calib).__name__}"
                )
            pk = photo_calib.kind
            if pk is not kind:
                raise ImageKindError(
                    f"Exposure photo_calib is a {pk.value} calibration but the image is {kind.value}; "
                    f"convert it with photo_calib.to_kind(ImageKind.{kind.name}, wcs)"
                )
        if background_mapping is not None:
            if not isinstance(background_mapping, BoundedField):
                raise InputError("Exposure background_mapping must be a BoundedField")
            bm_box = background_mapping.bbox
            if bm_box is not None and bm_box != Box.from_shape(img.shape):
                raise InputError(
                    f"Exposure background_mapping box {bm_box} does not match the image "
                    f"(shape {img.shape})"
                )
        s = object.__setattr__
        s(self, "_image", _readonly_view(img))
        s(self, "_variance", None if var is None else _readonly_view(var))
        s(self, "_mask", _readonly_view(_as_mask(mask, img.shape)))
        s(self, "_wcs", wcs)
        s(self, "_kind", kind)
        s(self, "_unit", _as_unit(unit, kind))
        s(self, "_photo_calib", photo_calib)
        s(self, "_metadata", _as_header(metadata))
        s(self, "_background_mapping", background_mapping)

    def __setattr__(self, name, value):
        raise AttributeError("Exposure is immutable; use exposure.replace(...)")

    # -- attributes ----------------------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        """Pixel values ``[y, x]`` (read-only)."""
        return self._image

    @property
    def variance(self) -> np.ndarray | None:
        """Variance of the pixel values (read-only), or ``None`` when unknown."""
        return self._variance

    @property
    def mask(self) -> np.ndarray:
        """uint32 :class:`MaskPlane` bits (read-only)."""
        return self._mask

    @property
    def wcs(self):
        """The :class:`SkyWcs`, or ``None``."""
        return self._wcs

    @property
    def kind(self) -> ImageKind:
        """:class:`ImageKind` of the pixel values."""
        return self._kind

    @property
    def unit(self) -> u.UnitBase:
        """astropy unit of the pixel values."""
        return self._unit

    @property
    def photo_calib(self):
        """The :class:`PhotoCalib` of this image, or ``None``."""
        return self._photo_calib

    @property
    def metadata(self) -> fits.Header:
        """Other header keywords (an astropy Header; a copy, so editing it changes nothing)."""
        return self._metadata.copy()

    @property
    def background_mapping(self) -> BoundedField | None:
        """M = A · F_sky / F_fid (docs/design.md), or ``None`` meaning M = A."""
        return self._background_mapping

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return self._image.shape  # type: ignore[return-value]

    @property
    def bbox(self) -> Box:
        """``Box(0, 0, nx, ny)``."""
        return Box.from_shape(self.shape)

    @property
    def dtype(self) -> np.dtype:
        """dtype of the image."""
        return self._image.dtype

    # -- derived values ------------------------------------------------------------------------
    def replace(self, **changes) -> Exposure:
        """A new Exposure with some attributes replaced (the others are shared, not copied).

        Parameters
        ----------
        **changes
            Any of the constructor's parameters.
        """
        names = (
            "image", "variance", "mask", "wcs", "kind", "unit", "photo_calib", "metadata",
            "background_mapping",
        )
        unknown = set(changes) - set(names)
        if unknown:
            raise InputError(f"Exposure.replace: unknown attribute(s) {sorted(unknown)}; known: {names}")
        args = {n: changes.get(n, getattr(self, "_" + n)) for n in names}
        return Exposure(**args)

    def _require_wcs(self, what: str):
        if self._wcs is None:
            raise InputError(
                f"Exposure has no WCS, so {what} is undefined; attach one with "
                "exposure.replace(wcs=photocalib.SkyWcs.from_header(header))"
            )
        return self._wcs

    def pixel_area_field(self) -> BoundedField:
        """The pixel area A(x, y) in arcsec² on this image's box, a :class:`BoundedField`."""
        return self._require_wcs("the pixel area").pixel_area_field(self.bbox)

    def pixel_area_image(self, dtype=np.float64) -> np.ndarray:
        """A(x, y) in arcsec² at every pixel centre; computed once per (WCS, box, dtype), read-only."""
        return pixel_area_image(self._require_wcs("the pixel area"), self.bbox, dtype)

    def _convert(self, to_kind: ImageKind) -> Exposure:
        if self._kind is to_kind:
            return self
        wcs = self._require_wcs(f"converting {self._kind.value} to {to_kind.value}")
        dtype = self._image.dtype
        area = pixel_area_image(wcs, self.bbox, dtype)
        op = np.multiply if to_kind is ImageKind.FLUENCE else np.divide
        image = op(self._image, area)
        variance = None
        if self._variance is not None:
            area2 = pixel_area_image(wcs, self.bbox, self._variance.dtype, squared=True)
            variance = op(self._variance, area2)
        unit = self._unit * _ARCSEC2 if to_kind is ImageKind.FLUENCE else self._unit / _ARCSEC2
        calib = self._photo_calib
        if calib is not None:
            calib = calib.to_kind(to_kind, wcs, bbox=self.bbox)
        return Exposure(
            image,
            variance,
            self._mask,
            wcs,
            to_kind,
            unit,
            calib,
            self._metadata,
            self._background_mapping,
        )

    def to_fluence(self) -> Exposure:
        """This image as fluence: image × A, variance × A², unit × arcsec².

        Returns ``self`` if it already is a fluence image. The photo_calib, if any, is converted
        with ``photo_calib.to_kind(FLUENCE, wcs)``.

        Raises
        ------
        InputError
            The exposure has no WCS.
        """
        return self._convert(ImageKind.FLUENCE)

    def to_surface_brightness(self) -> Exposure:
        """This image as surface brightness: image / A, variance / A², unit / arcsec².

        Returns ``self`` if it already is a surface-brightness image.

        Raises
        ------
        InputError
            The exposure has no WCS.
        """
        return self._convert(ImageKind.SURFACE_BRIGHTNESS)

    def to_kind(self, kind: ImageKind | str) -> Exposure:
        """:meth:`to_fluence` or :meth:`to_surface_brightness` by name."""
        return self._convert(ImageKind.parse(kind))

    # -- persistence ---------------------------------------------------------------------------
    def write(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write to a multi-extension FITS file, atomically.

        The primary HDU holds the image with ``BUNIT``, ``PCKIND``, ``PIXAR_A2`` and ``PIXAR_SR``
        (pixel area at the image centre, as JWST writes them) and the WCS; then ``VARIANCE`` and
        ``MASK`` image HDUs, and ``PHOTOCAL`` and ``BGMAP`` tables when present.
        """
        from .fitsio import write_exposure

        write_exposure(self, path, overwrite=overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike, hdu: int | str | None = None) -> Exposure:
        """Read a file written by :meth:`write` (or any FITS image with a celestial WCS).

        Parameters
        ----------
        path : path-like
            The FITS file.
        hdu : int or str, optional
            The HDU holding the image; default the primary HDU if it has data, else the first
            image HDU (``SCI`` for HST and JWST files).

        Raises
        ------
        InputError
            Missing, empty, truncated or non-FITS file; no image data; a WCS without celestial
            axes; variance or mask of another shape; unknown ``PCKIND`` or ``BUNIT``. The message
            names the path, HDU and keyword.
        """
        from .fitsio import read_exposure

        return read_exposure(path, hdu=hdu)

    @classmethod
    def from_nddata(cls, nd, kind: ImageKind | str | None = None, wcs=None) -> Exposure:
        """An Exposure from an astropy ``NDData`` or ``CCDData``.

        ``VarianceUncertainty``, ``StdDevUncertainty`` and ``InverseVariance`` become the
        variance; a boolean mask becomes ``BAD``; an astropy WCS is wrapped in a SkyWcs. The kind
        is ``kind``, else ``meta['PCKIND']``, else surface brightness.
        """
        from .nddata import exposure_from_nddata

        return exposure_from_nddata(nd, kind=kind, wcs=wcs)

    def to_nddata(self, ccd: bool = False):
        """This exposure as an astropy ``NDData`` (``CCDData`` with ``ccd=True``).

        The variance becomes a ``VarianceUncertainty`` and the kind ``meta['PCKIND']``. NDData
        keeps the uint32 mask bits; CCDData turns any set bit into ``True``.
        """
        from .nddata import exposure_to_nddata

        return exposure_to_nddata(self, ccd=ccd)

    def __repr__(self) -> str:
        ny, nx = self.shape
        return (
            f"Exposure({nx}x{ny} {self._image.dtype}, kind={self._kind.value}, unit={self._unit}, "
            f"wcs={'yes' if self._wcs is not None else 'none'}, "
            f"variance={'yes' if self._variance is not None else 'none'}, "
            f"photo_calib={self._photo_calib!r})"
        )

    # Pickling is for moving an Exposure between Dask workers, never for persistence.
    def __getstate__(self):
        return {n: getattr(self, n) for n in self.__slots__}

    def __setstate__(self, state):
        for n, v in state.items():
            if isinstance(v, np.ndarray):  # unpickled arrays come back writeable
                v = _readonly_view(v)
            object.__setattr__(self, n, v)
