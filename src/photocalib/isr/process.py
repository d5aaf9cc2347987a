"""Instrument signature removal: raw counts to a flat-fielded SURFACE_BRIGHTNESS exposure.

Bias/overscan, gain, saturation and bad-pixel masks, a Poisson + read-noise variance plane, and
dome flat-fielding that yields count/arcsec² exactly as docs/design.md defines it.

Flat-fielding, precisely
------------------------
A dome flat D(x, y) records a uniform lamp of surface brightness L (counts per arcsec² at unit
response) through each pixel: ``D = L · A_true(x, y) · R(x, y)``, with ``A_true`` the pixel's
solid angle (arcsec², including tree rings) and ``R = QE × dome illumination`` its response.
The flat *normalised to 1 at the reference pixel area* is ``f = D / (L · A_ref)``: it is 1 for a
pixel of area ``A_ref`` and unit response, and ``f · A_ref = A_true · R``. Dividing a raw image
(counts = S · A_true · R for a sky of surface brightness S) by ``f`` and by ``A_ref`` gives
``S`` in count/arcsec²: a surface-brightness image, whatever ``A_ref`` is (it cancels, so only L
matters). L is the flat's ``LAMPLVL`` keyword when the flat provides it, or else the median of
``D / A`` over good pixels (A from the WCS): unit response is then the detector's median
response, and the per-detector difference is left to the photometric calibration.

Tree rings and other small-scale pixel-size variations are in ``A_true`` but not in the smooth
WCS area ``A``. The flat-fielded image is true surface brightness; to make ``image × A`` the true
fluence, :func:`run_isr` multiplies the image by the camera's pixel-size correction
``P = A_true / A`` (a :class:`BoundedField`, e.g. a SplineField) and records ``M = A · P`` as the
exposure's ``background_mapping``, so the background is still modelled on true surface
brightness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..fields import BoundedField
from ..geom import Box
from ..image.kind import ImageKind
from ..image.mask import MaskPlane

__all__ = ["DomeFlat", "run_isr", "isr_from_hdu", "overscan_correct", "RAW_KEYWORDS"]

#: Header keywords copied from a raw HDU into the exposure's metadata.
RAW_KEYWORDS = (
    "VISIT", "DETECTOR", "FILTER", "EXPTIME", "MJD-OBS", "AIRMASS", "GAIN", "RDNOISE", "BIAS",
    "SATURATE", "INSTRUME", "BORE-RA", "BORE-DEC", "ROTANG", "EXTNAME",
)


@dataclass(frozen=True, eq=False)
class DomeFlat:
    """A dome flat prepared for flat-fielding (see the module docstring for the mathematics).

    Attributes
    ----------
    divisor : numpy.ndarray
        ``f · A_ref = D / L`` (arcsec² × response): what flat-fielding divides counts by to get
        count/arcsec². Read-only, float32.
    level : float
        The lamp level L (counts per arcsec² at unit response).
    bad : numpy.ndarray
        Pixels where the flat is unusable (non-finite or ≤ ``min_response`` × the median).
    """

    divisor: np.ndarray
    level: float
    bad: np.ndarray

    @classmethod
    def from_array(
        cls,
        flat: np.ndarray,
        *,
        level: float | None = None,
        wcs=None,
        header: fits.Header | None = None,
        min_response: float = 0.2,
    ) -> DomeFlat:
        """Prepare a (bias-subtracted, gain-corrected) master dome flat.

        Parameters
        ----------
        flat : numpy.ndarray
            The flat D in counts.
        level : float, optional
            Lamp level L; default the header's ``LAMPLVL``, else the median of D / A.
        wcs : SkyWcs, optional
            Needed to compute A when no level is known.
        header : astropy Header, optional
            The flat's header (for ``LAMPLVL``).
        min_response : float
            Pixels whose response is below this fraction of the median are marked bad.

        Raises
        ------
        InputError
            Non-2-D flat, no usable pixels, or no way to set the level.
        """
        d = np.asarray(flat, dtype=np.float64)
        if d.ndim != 2:
            raise InputError(f"dome flat must be a 2-D array, got shape {d.shape}")
        if level is None and header is not None and "LAMPLVL" in header:
            level = float(header["LAMPLVL"])
        finite = np.isfinite(d) & (d > 0)
        if not finite.any():
            raise InputError("dome flat has no positive finite pixel")
        if level is None:
            if wcs is None:
                raise InputError(
                    "dome flat: no LAMPLVL keyword and no level=; pass wcs= so the level can be "
                    "set from the median flat per unit pixel area"
                )
            area = wcs.pixel_area_field(Box.from_shape(d.shape)).fill()
            level = float(np.median(d[finite] / area[finite]))
        if not np.isfinite(level) or level <= 0:
            raise InputError(f"dome flat level must be positive and finite, got {level!r}")
        divisor = d / level
        med = np.median(divisor[finite])
        bad = ~finite | (divisor < min_response * med)
        divisor = np.where(bad, 1.0, divisor).astype(np.float32)
        divisor.setflags(write=False)
        bad.setflags(write=False)
        return cls(divisor=divisor, level=float(level), bad=bad)

    @classmethod
    def read(cls, path, *, hdu: int | str = 0, wcs=None) -> DomeFlat:
        """Read a master flat from FITS (image in HDU ``hdu``; ``LAMPLVL`` honoured)."""
        from .._io import open_fits

        with open_fits(path) as hdul:
            try:
                h = hdul[hdu]
            except (KeyError, IndexError) as exc:
                raise InputError(f"{path}: no HDU {hdu!r}") from exc
            if h.data is None:
                # A primary HDU without data: take the first image extension.
                images = [x for x in hdul if getattr(x, "data", None) is not None and x.is_image]
                if not images:
                    raise InputError(f"{path}: holds no image; expected a master dome flat")
                h = images[0]
            return cls.from_array(np.asarray(h.data), header=h.header, wcs=wcs)


_SECTION = re.compile(r"^\[(\d+):(\d+),(\d+):(\d+)\]$")


def _section(value: str, keyword: str) -> tuple[slice, slice]:
    m = _SECTION.match(str(value).replace(" ", ""))
    if not m:
        raise InputError(f"header keyword {keyword}={value!r} is not an IRAF section like [1:2048,1:4096]")
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    return slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2))


def overscan_correct(raw: np.ndarray, header: fits.Header) -> np.ndarray:
    """Subtract the per-row median of the overscan (``BIASSEC``) and trim to ``DATASEC``.

    Parameters
    ----------
    raw : numpy.ndarray
        Full raw frame in ADU.
    header : astropy Header
        With ``BIASSEC`` and ``DATASEC`` (IRAF 1-based sections).

    Returns
    -------
    numpy.ndarray
        The data section with the overscan level of each row removed (float64).
    """
    bias_y, bias_x = _section(header["BIASSEC"], "BIASSEC")
    data_y, data_x = _section(header["DATASEC"], "DATASEC")
    raw = np.asarray(raw, dtype=np.float64)
    over = raw[bias_y, bias_x]
    if over.shape[0] != raw[data_y, data_x].shape[0]:
        raise InputError("BIASSEC and DATASEC must cover the same rows for a per-row overscan")
    return raw[data_y, data_x] - np.median(over, axis=1)[:, None]


def run_isr(
    raw: np.ndarray,
    *,
    flat: DomeFlat | np.ndarray | tuple | None,
    wcs=None,
    header: fits.Header | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
    bias: float | np.ndarray | None = None,
    saturation: float | None = None,
    bad_pixel_mask: np.ndarray | None = None,
    pixel_size_correction: BoundedField | None = None,
    metadata: fits.Header | dict | None = None,
    dtype=np.float32,
    variance: np.ndarray | None = None,
):
    """Turn a raw frame (ADU) into a flat-fielded SURFACE_BRIGHTNESS exposure in count/arcsec².

    Counts are electrons (``gain`` e⁻/ADU applied). Steps: saturation mask on the raw values,
    bias subtraction, gain, variance ``max(e, 0) + read_noise²`` (e⁻²), flat-fielding by
    ``flat.divisor`` (image and variance), optional pixel-size correction (see the module
    docstring).

    Parameters
    ----------
    raw : numpy.ndarray
        Raw image in ADU (already trimmed; see :func:`overscan_correct`).
    flat : DomeFlat or numpy.ndarray or (numpy.ndarray, Header) or None
        The dome flat (an array, or an array with its header for ``LAMPLVL``, is prepared with
        :meth:`DomeFlat.from_array` using ``wcs``);
        ``None`` skips flat-fielding, which only makes sense for tests: the result is then not a
        surface-brightness image and an InputError is raised unless ``wcs`` is also None.
    wcs : SkyWcs, optional
        Attached to the exposure.
    header : astropy Header, optional
        Raw header: ``GAIN``, ``RDNOISE``, ``BIAS``, ``SATURATE`` give the defaults of the
        arguments below, and :data:`RAW_KEYWORDS` the metadata.
    gain : float
        e⁻ per ADU (default: header, else 1).
    read_noise : float
        Read noise in e⁻ (default: header, else 0).
    bias : float or numpy.ndarray
        Bias level in ADU, a scalar or a master bias frame (default: header, else 0).
    saturation : float, optional
        Raw ADU at or above which pixels are SAT (default: header ``SATURATE``).
    bad_pixel_mask : numpy.ndarray, optional
        Boolean or MaskPlane array of bad pixels (marked BAD).
    pixel_size_correction : BoundedField, optional
        ``A_true / A_wcs`` (tree rings, edge roll-off) from the camera.
    metadata : astropy Header or dict, optional
        Copied into the exposure.
    dtype : numpy dtype
        dtype of the image and variance planes.
    variance : numpy.ndarray, optional
        The variance (e⁻²) of ``raw`` when it is already in electrons (a multi-amplifier raw
        assembled by :func:`~photocalib.isr.amplifiers.assemble_amplifiers`, with ``gain=1``
        and ``bias=0``); replaces ``max(e, 0) + read_noise²``.

    Returns
    -------
    photocalib.Exposure
        SURFACE_BRIGHTNESS, unit ``count/arcsec2``.
    """
    from ..image import Exposure

    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise InputError(f"run_isr: raw image must be 2-D, got shape {raw.shape}")
    where = "run_isr"
    if header is not None:
        # Name the HDU, visit and detector so a bad keyword in a 189-detector file can be found.
        where = (
            f"run_isr: HDU {header.get('EXTNAME', '?')} "
            f"(VISIT={header.get('VISIT', '?')}, DETECTOR={header.get('DETECTOR', '?')})"
        )
        gain = _header_float(header, "GAIN", where, 1.0) if gain is None else gain
        read_noise = _header_float(header, "RDNOISE", where, 0.0) if read_noise is None else read_noise
        bias = _header_float(header, "BIAS", where, 0.0) if bias is None else bias
        if saturation is None and "SATURATE" in header:
            saturation = _header_float(header, "SATURATE", where)
        if metadata is None:
            metadata = fits.Header()
            for key in RAW_KEYWORDS:
                if key in header:
                    metadata[key] = header[key]
    gain = 1.0 if gain is None else float(gain)
    read_noise = 0.0 if read_noise is None else float(read_noise)
    bias = 0.0 if bias is None else bias
    if isinstance(flat, tuple):
        flat = DomeFlat.from_array(flat[0], header=flat[1], wcs=wcs)
    if not (np.isfinite(gain) and gain > 0):
        raise InputError(f"{where}: GAIN must be positive, got {gain!r}; fix the keyword or pass gain=")
    if not (np.isfinite(read_noise) and read_noise >= 0):
        raise InputError(
            f"{where}: RDNOISE must be non-negative, got {read_noise!r}; fix the keyword or pass read_noise="
        )
    mask = np.zeros(raw.shape, dtype=np.uint32)
    if saturation is not None:
        mask[raw >= saturation] |= np.uint32(MaskPlane.SAT)
    if bad_pixel_mask is not None:
        bpm = np.asarray(bad_pixel_mask)
        if bpm.shape != raw.shape:
            raise InputError(f"run_isr: bad_pixel_mask shape {bpm.shape} differs from raw {raw.shape}")
        if bpm.dtype == bool:
            mask[bpm] |= np.uint32(MaskPlane.BAD)
        else:
            mask |= bpm.astype(np.uint32)
    electrons = np.subtract(raw, bias, dtype=dtype)
    electrons *= electrons.dtype.type(gain)
    if variance is not None:
        if np.shape(variance) != raw.shape:
            raise InputError(f"run_isr: variance shape {np.shape(variance)} differs from raw {raw.shape}")
        variance = np.array(variance, dtype=dtype)
    else:
        variance = np.maximum(electrons, 0)
        variance += read_noise**2
    if flat is None:
        if wcs is not None:
            raise InputError(
                "run_isr: without a flat the image is not a surface-brightness image; pass flat="
            )
        return Exposure(electrons, variance, mask, None, ImageKind.FLUENCE, "count", metadata=metadata)
    if not isinstance(flat, DomeFlat):
        flat = DomeFlat.from_array(flat, wcs=wcs)
    if flat.divisor.shape != raw.shape:
        raise InputError(f"run_isr: flat shape {flat.divisor.shape} differs from raw {raw.shape}")
    mask[flat.bad] |= np.uint32(MaskPlane.BAD)
    electrons /= flat.divisor
    variance /= flat.divisor
    variance /= flat.divisor
    mapping = None
    if pixel_size_correction is not None:
        if wcs is None:
            raise InputError("run_isr: pixel_size_correction needs the WCS whose area it corrects")
        pixel_size_correction.multiply_image(electrons, out=electrons)
        pixel_size_correction.multiply_image(variance, out=variance)
        pixel_size_correction.multiply_image(variance, out=variance)
        mapping = wcs.pixel_area_field(Box.from_shape(raw.shape)) * pixel_size_correction
    return Exposure(
        electrons,
        variance,
        mask,
        wcs,
        ImageKind.SURFACE_BRIGHTNESS,
        "count/arcsec2",
        metadata=metadata,
        background_mapping=mapping,
    )


def _header_float(header: fits.Header, key: str, where: str, default=None) -> float:
    if key not in header:
        if default is not None:
            return default
        raise InputError(f"{where}: header has no {key} keyword; add it or pass {key.lower()}= explicitly")
    try:
        return float(header[key])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: header keyword {key}={header[key]!r} is not a number") from exc


def isr_from_hdu(hdu, flat: DomeFlat | np.ndarray, *, wcs=None, **kwargs):
    """Run :func:`run_isr` on one raw detector HDU of a multi-extension FITS file.

    Reads ``GAIN`` (e⁻/ADU), ``RDNOISE`` (e⁻), ``BIAS`` (ADU; or an overscan through ``BIASSEC``
    and ``DATASEC``), ``SATURATE`` (ADU) and the WCS from the header, or, for a raw read
    through several amplifiers (``DATASECA``, ``GAINA``, ...), each amplifier's own overscan,
    gain, read noise and saturation (:mod:`photocalib.isr.amplifiers`); ``VISIT``, ``DETECTOR`` and
    the other :data:`RAW_KEYWORDS` go into the metadata. Keyword arguments override.

    Parameters
    ----------
    hdu : astropy.io.fits.ImageHDU
        The raw detector image.
    flat : DomeFlat or numpy.ndarray
        Its dome flat.
    wcs : SkyWcs, optional
        Default ``SkyWcs.from_header(hdu.header)``.

    Returns
    -------
    photocalib.Exposure
    """
    from ..astrometry import SkyWcs

    header = hdu.header
    where = f"HDU {header.get('EXTNAME', '?')} (VISIT={header.get('VISIT', '?')}, DETECTOR={header.get('DETECTOR', '?')})"
    if hdu.data is None:
        raise InputError(f"{where}: has no image data")
    raw = np.asarray(hdu.data)
    from .amplifiers import amplifiers_in, assemble_amplifiers

    if amplifiers_in(header) and "bias" not in kwargs:
        # One overscan, gain, read noise and saturation per amplifier; the header's WCS is that
        # of the trimmed, assembled CCD.
        electrons, variance, sat = assemble_amplifiers(raw, header, where=where)
        bpm = kwargs.pop("bad_pixel_mask", None)
        if bpm is not None:
            bpm = np.asarray(bpm)
            sat = sat | (np.where(bpm, np.uint32(MaskPlane.BAD), np.uint32(0)) if bpm.dtype == bool
                         else bpm.astype(np.uint32))
        if wcs is None or (wcs.shape is not None and wcs.shape != electrons.shape):
            # The raw's NAXIS is the untrimmed frame: give the WCS the assembled CCD's size.
            trimmed = header.copy()
            trimmed["NAXIS1"], trimmed["NAXIS2"] = electrons.shape[1], electrons.shape[0]
            try:
                wcs = SkyWcs.from_header(trimmed)
            except InputError as exc:
                raise InputError(f"{where}: cannot read its WCS ({exc})") from exc
        kwargs.update(gain=1.0, read_noise=0.0, bias=0.0, saturation=np.inf, variance=variance,
                      bad_pixel_mask=sat)
        return run_isr(electrons, flat=flat, wcs=wcs, header=header, **kwargs)
    if "BIASSEC" in header and "DATASEC" in header and "bias" not in kwargs:
        raw = overscan_correct(raw, header)
        kwargs.setdefault("bias", 0.0)
    else:
        kwargs.setdefault("bias", _header_float(header, "BIAS", where))
    kwargs.setdefault("gain", _header_float(header, "GAIN", where))
    kwargs.setdefault("read_noise", _header_float(header, "RDNOISE", where))
    if "SATURATE" in header:
        kwargs.setdefault("saturation", _header_float(header, "SATURATE", where))
    if wcs is None:
        try:
            wcs = SkyWcs.from_header(header)
        except InputError as exc:
            raise InputError(f"{where}: cannot read its WCS ({exc})") from exc
    return run_isr(raw, flat=flat, wcs=wcs, header=header, **kwargs)
