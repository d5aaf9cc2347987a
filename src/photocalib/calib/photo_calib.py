"""PhotoCalib: instrumental flux to calibrated fluence in nJy, knowing which image kind it takes.

A SURFACE_BRIGHTNESS calibration contains the pixel area (c_SB = c_F × A); ``fluence_to_fluence``
and ``to_kind`` split it off, cancelling the area factor exactly where they can.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Table

from .._io import atomic_write_hdulist, open_fits
from ..errors import ImageKindError, InputError
from ..fields import BoundedField, ConstantField, ProductField, QuotientField, field_from_table
from ..geom import Box
from ..image import Exposure, ImageKind
from ..image.fitsio import check_complete

__all__ = ["PhotoCalib", "AB_ZERO_POINT_NJY_MAG", "nanojansky_to_ab", "ab_to_nanojansky"]

#: AB magnitude of 1 nJy: m = -2.5 log10(f / 3631 Jy) = -2.5 log10(f_nJy) + 31.4 (to 1e-5 mag;
#: 2.5 log10(3631e9) = 31.40006, and 31.4 is the convention LSST and the DESIGN use).
AB_ZERO_POINT_NJY_MAG = 31.4
_MAG_PER_LN = 2.5 / math.log(10.0)


def nanojansky_to_ab(flux, flux_err=None):
    """AB magnitude of a flux in nJy (NaN where the flux is not positive); with its error."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
        mag = mag + AB_ZERO_POINT_NJY_MAG
        if flux_err is None:
            return mag
        err = np.where(flux > 0, _MAG_PER_LN * np.asarray(flux_err, dtype=np.float64) / flux, np.nan)
    return mag, err


def ab_to_nanojansky(mag, mag_err=None):
    """Flux in nJy of an AB magnitude; with its error when ``mag_err`` is given."""
    flux = 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - AB_ZERO_POINT_NJY_MAG))
    if mag_err is None:
        return flux
    return flux, flux * np.asarray(mag_err, dtype=np.float64) / _MAG_PER_LN


def _factors(field: BoundedField) -> tuple[float, list[BoundedField]]:
    """``(scale, non-constant factors)`` of a field, looking through ProductField."""
    if isinstance(field, ProductField):
        scale = 1.0
        rest = []
        for f in field.factors:
            if f.is_constant:
                scale *= f.value  # type: ignore[attr-defined]
            else:
                rest.append(f)
        return scale, rest
    if field.is_constant:
        return field.value, []  # type: ignore[attr-defined]
    return 1.0, [field]


def _same_field(a: BoundedField, b: BoundedField) -> bool:
    if a is b:
        return True
    if type(a) is not type(b) or a.bbox != b.bbox:
        return False
    try:
        return bool(a == b)
    except InputError:  # not persistable, so no value comparison: identity only
        return False


def _is_area_of(field: BoundedField, wcs: Any, box: Box) -> bool:
    """Whether ``field`` is the pixel-area field of ``wcs`` on ``box``."""
    if field.bbox != box or type(field).__name__ != "PixelAreaField":
        return False
    own = wcs.pixel_area_field(box)
    if field is own:
        return True
    inner = getattr(field, "wcs", None)
    if inner is not None:
        return inner is wcs or _eq(inner, wcs)
    # A field read back from a file has no WCS object, only the WCS header it was made from.
    header = getattr(field, "wcs_header", None)
    return header is not None and _cards(header) == _cards(getattr(own, "wcs_header", None))


def _cards(header_text: str | None) -> list[str]:
    # FITS string columns drop trailing blanks, so compare card by card without them.
    return [] if not header_text else [c.rstrip() for c in header_text.splitlines() if c.strip()]


def _eq(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a foreign __eq__ may raise; unequal then
        return False


def _product(scale: float, factors: list[BoundedField]) -> BoundedField:
    """``scale × Π factors`` built as simply as possible (a lone factor is returned itself)."""
    if not factors:
        return ConstantField(scale, None)
    if scale == 1.0 and len(factors) == 1:
        return factors[0]
    if scale == 1.0:
        return ProductField(*factors)
    return ProductField(ConstantField(scale), *factors)


class PhotoCalib:
    r"""The calibration from instrumental flux to calibrated fluence in nJy.

    A calibration is a positive field c(x, y) in nJy per instrumental unit, and a ``kind``: a
    ``FLUENCE`` calibration takes instrumental fluxes measured on a fluence image; a
    ``SURFACE_BRIGHTNESS`` calibration takes fluxes summed on a surface-brightness image and so
    contains the pixel area, :math:`c_{SB} = c_F \times A`. Either way the result is calibrated
    fluence in nJy, and AB magnitudes are :math:`m = -2.5 \log_{10} f_{nJy} + 31.4`.

    Parameters
    ----------
    calibration : float or BoundedField
        nJy per instrumental unit, positive and finite.
    kind : ImageKind or str
        What the calibration takes (default ``FLUENCE``).
    error : float
        The *relative* 1σ uncertainty of the calibration (dimensionless, the same at every
        position): a calibrated flux f has calibration error ``error × f``, a magnitude
        ``1.0857 × error``. Being relative, it is unchanged by :meth:`to_kind` (the pixel
        area is exact).
    instrumental_unit : str
        Name of the instrumental unit (``count``, ``adu``, ``electron``); used for the unit
        of uncalibrated images.

    Raises
    ------
    InputError
        Non-positive, NaN or infinite calibration (a field is checked on a 9×9 grid over its
        box), negative or non-finite error, unknown kind.

    Examples
    --------
    >>> calib = PhotoCalib(2.0, error=0.01)
    >>> float(calib.instflux_to_nanojansky(100.0))
    200.0
    >>> round(float(calib.instflux_to_magnitude(100.0)), 4)
    25.6474
    """

    __slots__ = ("_field", "_kind", "_error", "_iunit")

    def __init__(
        self,
        calibration: float | BoundedField,
        kind: ImageKind | str = ImageKind.FLUENCE,
        error: float = 0.0,
        instrumental_unit: str = "count",
    ) -> None:
        kind = ImageKind.parse(kind)
        if isinstance(calibration, BoundedField):
            field = calibration
        else:
            try:
                value = float(calibration)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise InputError(
                    f"PhotoCalib calibration must be a number or a BoundedField, got {calibration!r}"
                ) from exc
            if not (math.isfinite(value) and value > 0):
                raise InputError(
                    f"PhotoCalib calibration must be positive and finite (nJy per instrumental "
                    f"unit), got {value}"
                )
            field = ConstantField(value)
        _check_positive(field)
        try:
            error = float(error)
        except (TypeError, ValueError) as exc:
            raise InputError(f"PhotoCalib error must be a number, got {error!r}") from exc
        if not (math.isfinite(error) and error >= 0):
            raise InputError(f"PhotoCalib error (relative) must be finite and >= 0, got {error}")
        try:
            u.Unit(instrumental_unit)
        except ValueError as exc:
            raise InputError(f"PhotoCalib instrumental_unit {instrumental_unit!r} is not a unit") from exc
        s = object.__setattr__
        s(self, "_field", field)
        s(self, "_kind", kind)
        s(self, "_error", error)
        s(self, "_iunit", str(instrumental_unit))

    def __setattr__(self, name, value):
        raise AttributeError("PhotoCalib is immutable")

    def __getstate__(self):  # for Dask transport only; persistence is write()/read()
        return {n: getattr(self, n) for n in self.__slots__}

    def __setstate__(self, state):
        for n, v in state.items():
            object.__setattr__(self, n, v)

    # -- attributes ----------------------------------------------------------------------------
    @property
    def field(self) -> BoundedField:
        """c(x, y) in nJy per instrumental unit."""
        return self._field

    @property
    def kind(self) -> ImageKind:
        """The kind of image (and of instrumental flux) the calibration takes."""
        return self._kind

    @property
    def error(self) -> float:
        """Relative 1σ uncertainty of the calibration (dimensionless)."""
        return self._error

    @property
    def instrumental_unit(self) -> str:
        """Name of the instrumental unit."""
        return self._iunit

    @property
    def is_constant(self) -> bool:
        """Whether the calibration is the same everywhere."""
        return bool(self._field.is_constant)

    def mean(self) -> float:
        """Mean of the calibration over its box (the value itself when constant)."""
        if self._field.is_constant:
            return float(self._field.value)  # type: ignore[attr-defined]
        return float(self._field.mean())

    # -- point conversions ---------------------------------------------------------------------
    def _at(self, x, y, what: str) -> np.ndarray | float:
        if self._field.is_constant:
            return float(self._field.value)  # type: ignore[attr-defined]
        if x is None or y is None:
            raise InputError(
                f"{what}: this calibration varies over the detector, so pass the pixel "
                "positions x= and y="
            )
        return self._field.evaluate(x, y)

    def instflux_to_nanojansky(
        self, instflux, x=None, y=None, instflux_err=None, include_calibration_error: bool = False
    ):
        """Calibrated flux in nJy.

        Parameters
        ----------
        instflux : array_like
            Instrumental fluxes measured on an image of this calibration's kind.
        x, y : array_like, optional
            Pixel positions (needed unless the calibration is constant).
        instflux_err : array_like, optional
            1σ errors of ``instflux``; when given, ``(flux, flux_err)`` is returned.
        include_calibration_error : bool
            Add the calibration error ``error × flux`` in quadrature.

        Returns
        -------
        flux or (flux, flux_err) : numpy.ndarray
            nJy.
        """
        c = self._at(x, y, "instflux_to_nanojansky")
        flux = np.asarray(instflux, dtype=np.float64) * c
        if instflux_err is None:
            if include_calibration_error:
                return flux, np.abs(flux) * self._error
            return flux
        err = np.abs(np.asarray(instflux_err, dtype=np.float64) * c)
        if include_calibration_error:
            err = np.hypot(err, flux * self._error)
        return flux, err

    def instflux_to_magnitude(
        self, instflux, x=None, y=None, instflux_err=None, include_calibration_error: bool = False
    ):
        """AB magnitude, ``-2.5 log10(flux_nJy) + 31.4`` (NaN for non-positive flux).

        Parameters are those of :meth:`instflux_to_nanojansky`; with ``instflux_err`` (or
        ``include_calibration_error``) returns ``(mag, mag_err)``, the error propagated to first
        order, ``1.0857 × flux_err / flux``.
        """
        out = self.instflux_to_nanojansky(instflux, x, y, instflux_err, include_calibration_error)
        if isinstance(out, tuple):
            return nanojansky_to_ab(*out)
        return nanojansky_to_ab(out)

    def nanojansky_to_instflux(self, flux, x=None, y=None, flux_err=None):
        """Instrumental flux from calibrated flux in nJy (the inverse of instflux_to_nanojansky).

        With ``flux_err`` returns ``(instflux, instflux_err)``.
        """
        c = self._at(x, y, "nanojansky_to_instflux")
        inst = np.asarray(flux, dtype=np.float64) / c
        if flux_err is None:
            return inst
        return inst, np.abs(np.asarray(flux_err, dtype=np.float64) / c)

    def magnitude_to_instflux(self, mag, x=None, y=None, mag_err=None):
        """Instrumental flux from an AB magnitude; with ``mag_err`` returns the error too."""
        if mag_err is None:
            return self.nanojansky_to_instflux(ab_to_nanojansky(mag), x, y)
        flux, flux_err = ab_to_nanojansky(mag, mag_err)
        return self.nanojansky_to_instflux(flux, x, y, flux_err)

    # -- images --------------------------------------------------------------------------------
    def _image_values(self, exp: Exposure, dtype) -> np.ndarray | float:
        if self._field.is_constant:
            return float(self._field.value)  # type: ignore[attr-defined]
        box = self._field.bbox
        if box is not None and box != exp.bbox:
            raise InputError(
                f"PhotoCalib field box {box} does not match the exposure's box {exp.bbox}"
            )
        if box is None:
            xs, ys = exp.bbox.pixel_centers()
            return self._field.evaluate(xs[None, :], ys[:, None]).astype(dtype, copy=False)
        return self._field.fill(dtype=dtype)

    def calibrate_image(self, exp: Exposure) -> Exposure:
        """The exposure calibrated to fluence in nJy per pixel.

        A FLUENCE calibration multiplies a fluence image by c_F; a SURFACE_BRIGHTNESS
        calibration multiplies a surface-brightness image by c_SB = c_F × A, giving fluence
        either way. The variance is multiplied by c²; the result's photo_calib is the identity
        (1 nJy per nJy) with this calibration's error.

        Raises
        ------
        ImageKindError
            The exposure's kind differs from this calibration's.
        """
        if exp.kind is not self._kind:
            raise ImageKindError(
                f"calibrate_image: this is a {self._kind.value} calibration but the exposure is "
                f"{exp.kind.value}; call photo_calib.to_kind(ImageKind.{exp.kind.name}, wcs) or "
                f"exposure.{self._kind.conversion} first."
            )
        c = self._image_values(exp, exp.dtype)
        image = np.multiply(exp.image, c, dtype=exp.dtype)
        variance = None
        if exp.variance is not None:
            variance = np.multiply(exp.variance, np.square(c), dtype=exp.variance.dtype)
        identity = PhotoCalib(1.0, ImageKind.FLUENCE, self._error, instrumental_unit="nJy")
        return exp.replace(
            image=image, variance=variance, kind=ImageKind.FLUENCE, unit=u.nJy, photo_calib=identity
        )

    def uncalibrate_image(self, exp: Exposure) -> Exposure:
        """The inverse of :meth:`calibrate_image`: a calibrated fluence image back to instrumental
        units, of this calibration's kind, with this calibration attached.

        Raises
        ------
        ImageKindError
            The exposure is not a fluence image.
        InputError
            Its unit is not a flux density (nJy, Jy, ...).
        """
        if exp.kind is not ImageKind.FLUENCE:
            raise ImageKindError(
                "uncalibrate_image needs a calibrated FLUENCE image (nJy per pixel) but got "
                f"{exp.kind.value}; call exposure.to_fluence() first."
            )
        try:
            scale = exp.unit.to(u.nJy)
        except u.UnitConversionError as exc:
            raise InputError(
                f"uncalibrate_image needs an image in nJy (or another flux density), got {exp.unit}"
            ) from exc
        c = self._image_values(exp, exp.dtype)
        factor = c / scale if scale != 1.0 else c
        image = np.divide(exp.image, factor, dtype=exp.dtype)
        variance = None
        if exp.variance is not None:
            variance = np.divide(exp.variance, np.square(factor), dtype=exp.variance.dtype)
        unit = u.Unit(self._iunit)
        if self._kind is ImageKind.SURFACE_BRIGHTNESS:
            unit = unit / u.arcsec**2
        return exp.replace(image=image, variance=variance, kind=self._kind, unit=unit, photo_calib=self)

    # -- catalogs ------------------------------------------------------------------------------
    def calibrate_catalog(
        self,
        table: Table,
        flux_columns: str | tuple[str, ...] | list[str] = ("instflux",),
        x: str = "x",
        y: str = "y",
        include_calibration_error: bool = False,
    ) -> Table:
        """A copy of ``table`` with calibrated columns added.

        For each flux column ``c`` (with its error column ``c_err`` when present) adds
        ``c_nJy`` (and ``c_nJy_err``) in nJy and ``c_mag`` (and ``c_mag_err``) in AB mag.

        Parameters
        ----------
        table : astropy.table.Table or pandas.DataFrame
            Instrumental fluxes measured on images of this calibration's kind (a DataFrame is
            converted; the result is a Table).
        flux_columns : str or sequence of str
            Columns to calibrate.
        x, y : str
            Pixel-position columns (needed unless the calibration is constant).
        include_calibration_error : bool
            Add the calibration error in quadrature to the error columns.

        Raises
        ------
        InputError
            A named column is missing.
        """
        if not isinstance(table, Table):
            if type(table).__name__ == "DataFrame":  # pandas, without importing it here
                table = Table.from_pandas(table)
            else:
                raise InputError(
                    f"calibrate_catalog needs an astropy Table (or a pandas DataFrame), got "
                    f"{type(table).__name__}"
                )
        if isinstance(flux_columns, str):
            flux_columns = (flux_columns,)
        needed = list(flux_columns) + ([] if self._field.is_constant else [x, y])
        for name in needed:
            if name not in table.colnames:
                raise InputError(
                    f"calibrate_catalog: column {name!r} is missing; the table has {table.colnames}"
                )
        out = table.copy(copy_data=False)
        xs = np.asarray(table[x], dtype=np.float64) if x in table.colnames else None
        ys = np.asarray(table[y], dtype=np.float64) if y in table.colnames else None
        for name in flux_columns:
            inst = np.asarray(table[name], dtype=np.float64)
            err_name = f"{name}_err"
            inst_err = np.asarray(table[err_name], dtype=np.float64) if err_name in table.colnames else None
            if inst_err is None and not include_calibration_error:
                flux = self.instflux_to_nanojansky(inst, xs, ys)
                out[f"{name}_nJy"] = flux * u.nJy
                out[f"{name}_mag"] = nanojansky_to_ab(flux) * u.mag
                continue
            flux, flux_err = self.instflux_to_nanojansky(
                inst, xs, ys, inst_err, include_calibration_error
            )
            mag, mag_err = nanojansky_to_ab(flux, flux_err)
            out[f"{name}_nJy"] = flux * u.nJy
            out[f"{name}_nJy_err"] = flux_err * u.nJy
            out[f"{name}_mag"] = mag * u.mag
            out[f"{name}_mag_err"] = mag_err * u.mag
        return out

    # -- kinds and other calibrations ----------------------------------------------------------
    def _box_for(self, bbox: Box | None, what: str, wcs=None) -> Box:
        box = self._field.bbox if bbox is None else bbox
        if box is None and getattr(wcs, "shape", None) is not None:
            # A constant calibration takes the detector's box from the image its WCS came with.
            ny, nx = wcs.shape
            box = Box(0, 0, int(nx), int(ny))
        if box is None:
            raise InputError(
                f"{what}: this calibration is constant with no box and the WCS does not know its "
                "image size, so pass bbox=Box(0, 0, nx, ny) for the detector"
            )
        if self._field.bbox is not None and self._field.bbox != box:
            raise InputError(f"{what}: bbox {box} differs from the calibration's box {self._field.bbox}")
        return box

    def fluence_to_fluence(self, wcs, bbox: Box | None = None) -> BoundedField:
        """The fluence-to-fluence part c_F = c_SB / A of the calibration, as a field.

        For a FLUENCE calibration that is the field itself. For a SURFACE_BRIGHTNESS calibration
        whose field is a product containing ``wcs``'s pixel-area field, the factor is removed
        exactly; otherwise the field is divided by the pixel area.

        Parameters
        ----------
        wcs : SkyWcs
            The WCS of the detector.
        bbox : Box, optional
            The detector box; needed only when the calibration has none.
        """
        if self._kind is ImageKind.FLUENCE:
            return self._field
        box = self._box_for(bbox, "fluence_to_fluence", wcs)
        scale, factors = _factors(self._field)
        for i, f in enumerate(factors):
            if _is_area_of(f, wcs, box):
                return _product(scale, factors[:i] + factors[i + 1 :])
        return QuotientField(self._field, wcs.pixel_area_field(box))

    def to_kind(self, kind: ImageKind | str, wcs=None, bbox: Box | None = None) -> PhotoCalib:
        """This calibration for the other kind of image (``self`` if already that kind).

        FLUENCE → SURFACE_BRIGHTNESS multiplies the field by the pixel area A of ``wcs``;
        SURFACE_BRIGHTNESS → FLUENCE is :meth:`fluence_to_fluence`. A round trip cancels the area
        factor instead of dividing by it, so it gives back the original field (or one built from
        the same factors) and is exact.
        """
        kind = ImageKind.parse(kind)
        if kind is self._kind:
            return self
        if wcs is None:
            raise InputError(
                f"PhotoCalib.to_kind({kind.value}) needs the detector's wcs to apply the pixel area"
            )
        if kind is ImageKind.FLUENCE:
            field = self.fluence_to_fluence(wcs, bbox)
        else:
            box = self._box_for(bbox, "to_kind", wcs)
            area = wcs.pixel_area_field(box)
            f = self._field
            if isinstance(f, QuotientField) and _is_area_of(f.denominator, wcs, box):
                field = f.numerator
            else:
                field = ProductField(f, area)
        return PhotoCalib(field, kind, self._error, self._iunit)

    def scaling_to(self, other: PhotoCalib) -> BoundedField:
        """The field s = c_other / c_self: fluxes calibrated with ``other`` are ``s ×`` fluxes
        calibrated with this one (Rubin's ``computeScalingTo``). Common factors (for example the
        same pixel-area field) cancel exactly.

        Raises
        ------
        InputError
            The calibrations take different kinds (convert one with :meth:`to_kind`) or sit on
            different boxes.
        """
        if not isinstance(other, PhotoCalib):
            raise InputError(f"scaling_to needs a PhotoCalib, got {type(other).__name__}")
        if other.kind is not self._kind:
            raise InputError(
                f"scaling_to: {self._kind.value} and {other.kind.value} calibrations take different "
                "images; convert one with to_kind(kind, wcs) first"
            )
        s_num, num = _factors(other.field)
        s_den, den = _factors(self._field)
        num = list(num)
        rest_den = []
        for f in den:
            for i, g in enumerate(num):
                if _same_field(f, g):
                    del num[i]
                    break
            else:
                rest_den.append(f)
        scale = s_num / s_den
        numerator = _product(scale, num)
        if not rest_den:
            return numerator
        return QuotientField(numerator, _product(1.0, rest_den))

    # -- persistence ---------------------------------------------------------------------------
    def to_hdu(self, name: str = "PHOTOCAL") -> fits.BinTableHDU:
        """The calibration as a FITS binary table: the field's table with ``PCKIND``, ``PCERR``
        (relative error) and ``PCIUNIT`` (instrumental unit) in the header."""
        hdu = self._field.to_hdu(name)
        hdu.header["PCKIND"] = (self._kind.value, "kind of image the calibration takes")
        hdu.header["PCERR"] = (self._error, "relative 1-sigma error of the calibration")
        # Header floats keep ~15 significant digits; the hex form keeps every bit.
        hdu.header["PCERRHEX"] = (self._error.hex(), "PCERR exactly (float.hex)")
        hdu.header["PCIUNIT"] = (self._iunit, "instrumental unit; field is nJy per this")
        return hdu

    @classmethod
    def from_hdu(cls, hdu: fits.BinTableHDU, where: str = "PhotoCalib HDU") -> PhotoCalib:
        """Rebuild from :meth:`to_hdu` output; ``where`` names the HDU in error messages."""
        header = hdu.header
        for key in ("PCKIND", "PCERR"):
            if key not in header:
                raise InputError(f"{where}: keyword {key} is missing, so this is not a PhotoCalib")
        try:
            kind = ImageKind.parse(header["PCKIND"])
        except InputError as exc:
            raise InputError(f"{where}: keyword PCKIND = {header['PCKIND']!r}: {exc}") from exc
        try:
            table = Table.read(hdu)
            field = field_from_table(table)
            error = float.fromhex(header["PCERRHEX"]) if "PCERRHEX" in header else header["PCERR"]
            return cls(field, kind, error, header.get("PCIUNIT", "count"))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - astropy raises many types for a bad table
            raise InputError(f"{where}: not a PhotoCalib table ({exc})") from exc

    def write(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write to a FITS file (empty primary + ``PHOTOCAL`` table), atomically."""
        primary = fits.PrimaryHDU()
        primary.header["PCKIND"] = self._kind.value
        atomic_write_hdulist(fits.HDUList([primary, self.to_hdu()]), path, overwrite=overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike, hdu: int | str = "PHOTOCAL") -> PhotoCalib:
        """Read a file written by :meth:`write`.

        Raises
        ------
        InputError
            Missing, empty, truncated or non-FITS file; no ``PHOTOCAL`` HDU; a bad table.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns of truncation; check_complete raises
            with open_fits(path) as hdul:
                check_complete(hdul, path)
                try:
                    h = hdul[hdu]
                except (KeyError, IndexError) as exc:
                    raise InputError(f"{path}: no HDU {hdu!r} holding a PhotoCalib") from exc
                if not isinstance(h, fits.BinTableHDU):
                    raise InputError(f"{path}[{hdu}]: is a {type(h).__name__}, not a PhotoCalib table")
                return cls.from_hdu(h, where=f"{path}[{hdu}]")

    # -- value semantics -----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhotoCalib):
            return NotImplemented
        return (
            self._kind is other._kind
            and self._error == other._error
            and self._iunit == other._iunit
            and _same_field(self._field, other._field)
        )

    def __hash__(self) -> int:
        return hash((self._kind, self._error, self._iunit, self._field.bbox))

    def __repr__(self) -> str:
        if self._field.is_constant:
            what = f"{self.mean():.7g}"
        else:
            what = f"{type(self._field).__name__} (mean {self.mean():.7g})"
        return (
            f"PhotoCalib({what} nJy/{self._iunit}, kind={self._kind.value}, "
            f"error={self._error:.3g})"
        )


def _check_positive(field: BoundedField) -> None:
    if field.is_constant:
        value = float(field.value)  # type: ignore[attr-defined]
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"PhotoCalib calibration must be positive and finite, got {value}")
        return
    box = field.bbox
    if box is None:
        return
    xmin, xmax, ymin, ymax = box.extent
    xs = np.linspace(xmin + 0.5, xmax - 0.5, 9)
    ys = np.linspace(ymin + 0.5, ymax - 0.5, 9)
    values = field.evaluate(xs[None, :], ys[:, None])
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        j, i = np.argwhere(bad)[0]
        raise InputError(
            f"PhotoCalib calibration field must be positive and finite; it is {values[j, i]} "
            f"at pixel ({xs[i]:.1f}, {ys[j]:.1f})"
        )
