"""Single-file tools behind the CLI: pixel-area maps, kind conversions, applying a calibration.

Each works on any FITS file with a celestial WCS and writes its result atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from .._io import atomic_write_hdulist, open_fits
from ..errors import InputError
from ..geom import Box

__all__ = ["area_map", "convert_kind", "apply_calibration", "default_output"]

log = logging.getLogger("photocalib.pipeline")

#: Keywords astropy writes for the structure of an HDU; never copied between headers.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
               "GCOUNT", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "BUNIT"}


def default_output(path: str | os.PathLike, suffix: str) -> Path:
    """``dir/name.fits`` -> ``dir/name.<suffix>.fits`` (also for ``.fits.fz`` and ``.fit``)."""
    path = Path(path)
    name = path.name
    for ext in (".fits.fz", ".fits.gz", ".fits.bz2", ".fit.gz", ".fit.bz2", ".fits", ".fit", ".fts"):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)] + f".{suffix}.fits")
    return path.with_name(name + f".{suffix}.fits")


def is_calibrated_unit(unit) -> bool:
    """Whether pixel values in ``unit`` are already calibrated (a flux density, per pixel or
    per solid angle: nJy, Jy, erg/s/cm²/Hz, maggies), not instrumental counts."""
    import astropy.units as u

    if unit is None:
        return False
    unit = u.Unit(unit)
    for per in (u.dimensionless_unscaled, u.arcsec**2):
        probe = unit * per
        if probe.is_equivalent(u.Jy) or probe.is_equivalent(u.mgy):
            return True
    return False


def _image_hdus(hdul: fits.HDUList, path: Path, hdu: int | str | None) -> list[tuple[int, fits.hdu.base._BaseHDU]]:
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError) as exc:
            raise InputError(f"{path}: no HDU {hdu!r} (the file has {len(hdul)} HDUs)") from exc
        index = hdul.index_of(hdu) if not isinstance(hdu, int) else hdu
        return [(index, chosen)]
    out = []
    for i, h in enumerate(hdul):
        if not isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
            continue
        if h.header.get("NAXIS", 0) != 2 or h.name.upper() in ("VARIANCE", "MASK"):
            continue
        out.append((i, h))
    if not out:
        raise InputError(f"{path}: no 2-D image HDU; pass --hdu to name the image HDU")
    return out


def _sky_wcs(header: fits.Header, hdul: fits.HDUList, where: str):
    from ..instruments.base import sky_wcs

    # A primary header with the pointing often sits in front of MEF extensions without one.
    has_wcs = any(k.startswith("CTYPE") for k in header) or "CD1_1" in header or "PC1_1" in header
    if not has_wcs:
        raise InputError(f"{where}: the header has no WCS keywords (CTYPEi, CDi_j); "
                         "area-map needs an image with a celestial WCS")
    return sky_wcs(header, hdul, where)


def read_image(path: Path, hdu: int | str | None):
    """(Exposure, instrument name) of the image in ``path`` through :func:`read_exposures`: the
    first detector (or ``hdu``), with its survey's kind, unit, variance and mask."""
    from ..instruments import read_exposures

    exps = read_exposures(path, hdu=hdu)
    if len(exps) > 1:
        log.warning("%s has %d detector images; using the first (pass --hdu for another)",
                    path, len(exps))
    return exps[0], str(exps[0].metadata.get("PCINSTR", "generic"))


def area_map(path: str | os.PathLike, out: str | os.PathLike | None = None,
             hdu: int | str | None = None, dtype: str = "float64") -> Path:
    """Write the pixel-area map ``|det J|`` (arcsec²) of every image HDU of ``path`` with a WCS.

    Parameters
    ----------
    path : path
        A FITS file; every 2-D image HDU with a celestial WCS gets a map (or only ``hdu``).
    out : path, optional
        Output FITS file (default ``<name>.area.fits`` beside the input).
    hdu : int or str, optional
        Only this HDU.
    dtype : {"float64", "float32"}

    Returns
    -------
    pathlib.Path
        The file written: one image HDU per input HDU, with the input's WCS,
        ``BUNIT = 'arcsec2'`` and ``EXTNAME`` / ``DETECTOR`` copied when present.

    Raises
    ------
    InputError
        If the file is missing or not FITS, or no image HDU has a celestial WCS.
    """
    path = Path(path)
    out = Path(out) if out is not None else default_output(path, "area")
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    hdus: list[fits.hdu.base._BaseHDU] = [fits.PrimaryHDU()]
    errors = []
    with open_fits(path) as hdul:
        for index, h in _image_hdus(hdul, path, hdu):
            where = f"{path}[{index}]"
            header = h.header
            nx, ny = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
            if nx <= 0 or ny <= 0:
                errors.append(f"{where}: empty image")
                continue
            try:
                wcs = _sky_wcs(header, hdul, where)
            except InputError as exc:
                errors.append(str(exc))
                continue
            area = wcs.pixel_area_field(Box(0, 0, nx, ny)).fill(dtype=np.dtype(dtype))
            try:
                wcs_header = wcs.to_header()
            except InputError:
                wcs_header = fits.Header([c for c in header.cards if c.keyword not in _STRUCTURAL
                                          and c.keyword != "COMMENT" and c.keyword != "HISTORY"])
            image = fits.ImageHDU(area, header=wcs_header)
            image.header["BUNIT"] = ("arcsec2", "pixel area |det J| at the pixel centre")
            image.header["EXTNAME"] = h.name if h.name not in ("", "PRIMARY") else f"AREA{index}"
            for key in ("DETECTOR", "CCDNUM", "DETSER", "VISIT"):
                if key in header:
                    image.header[key] = header[key]
            image.header["SRCHDU"] = (index, "HDU of the input file")
            hdus.append(image)
    if len(hdus) == 1:
        raise InputError(f"{path}: no image HDU has a usable celestial WCS: " + "; ".join(errors))
    for message in errors:
        log.warning("skipped %s", message)
    hdus[0].header["ORIGIN"] = "photocalib area-map"
    # FITS headers are ASCII: a name such as M31_été.fits is kept with escapes.
    hdus[0].header["SRCFILE"] = path.name.encode("ascii", "backslashreplace").decode("ascii")[:68]
    atomic_write_hdulist(fits.HDUList(hdus), out)
    return out


def convert_kind(path: str | os.PathLike, kind: str, out: str | os.PathLike | None = None,
                 hdu: int | str | None = None, input_kind: str | None = None) -> Path:
    """Convert an image to FLUENCE or SURFACE_BRIGHTNESS (exact, variance propagated).

    Parameters
    ----------
    path : path
        A FITS image with a celestial WCS (an Exposure file, or any image: see ``input_kind``).
    kind : {"FLUENCE", "SURFACE_BRIGHTNESS"}
        The kind to write.
    out : path, optional
        Output file (default ``<name>.fluence.fits`` or ``<name>.sb.fits``).
    hdu : int or str, optional
        The image HDU (default: the first with data).
    input_kind : str, optional
        What the input is when it has no ``PCKIND`` keyword (a file photocalib did not write);
        such a file is refused without it, since guessing wrong would write the input back
        unchanged or converted twice.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        For a missing or unreadable file, an image without a celestial WCS, a file whose
        kind is unknown (no ``PCKIND`` and no ``input_kind``), or one already of ``kind``.
    """
    from ..image import ImageKind
    from ..image.stream import check_image_header, convert_file
    from ..instruments import identify

    path = Path(path)
    target = ImageKind.parse(kind)
    suffix = "fluence" if target is ImageKind.FLUENCE else "sb"
    out = Path(out) if out is not None else default_output(path, suffix)
    with open_fits(path) as hdul:
        instrument = identify(hdul, path).name
        # A survey file read by its instrument's reader has a known kind.
        has_kind = instrument != "generic" or any("PCKIND" in h.header for h in hdul)
    if input_kind is None and not has_kind:
        # What is wrong with the file itself is the first thing to say.
        check_image_header(path, hdu)
        # A foreign file says nothing about its kind: a guess that matches the target would
        # write the input back unchanged, and a wrong one would convert it twice.
        raise InputError(
            f"{path}: no PCKIND keyword, so whether it is a FLUENCE or a SURFACE_BRIGHTNESS "
            "image is unknown; pass --input-kind FLUENCE (counts or flux per pixel) or "
            "--input-kind SURFACE_BRIGHTNESS (flat-fielded: per unit area)")
    given = None if input_kind is None else ImageKind.parse(input_kind)
    # A large plain image goes block by block: holding it, its area map and the result at
    # once would need several times its size. Survey files go through their instrument.
    if instrument == "generic" and convert_file(path, out, target, given, hdu=hdu):
        return out
    exp, _ = read_image(path, hdu)
    if exp.wcs is None:
        raise InputError(f"{path}: the image has no WCS, so its pixel area is unknown; "
                         "add WCS keywords (CTYPEi, CRVALi, CRPIXi, CDi_j) to its header")
    if given is not None:
        exp = exp.replace(kind=given)
    if exp.kind is target:
        raise InputError(f"{path}: already a {target.value} image (PCKIND or --input-kind); "
                         "converting it would write an unchanged copy")
    converted = exp.to_kind(target)
    converted.write(out)
    return out


def apply_calibration(path: str | os.PathLike, calib_path: str | os.PathLike,
                      out: str | os.PathLike | None = None, hdu: int | str | None = None) -> Path:
    """Apply a saved PhotoCalib to an image: write the calibrated fluence image in nJy.

    Parameters
    ----------
    path : path
        The Exposure to calibrate (its kind must be the calibration's kind; a surface-brightness
        calibration is applied to a surface-brightness image, and so on).
    calib_path : path
        A PhotoCalib FITS file (``PhotoCalib.write``), e.g. ``calib/joint/visit-*/det-*.fits``.
    out : path, optional
        Output file (default ``<name>.calexp.fits``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        If the image is already calibrated: its unit is a flux density (nJy, Jy, nanomaggy,
        or per arcsec²), so applying a calibration again would scale it twice.
    """
    from ..calib import PhotoCalib

    path = Path(path)
    out = Path(out) if out is not None else default_output(path, "calexp")
    calib = PhotoCalib.read(calib_path)
    exp, _ = read_image(path, hdu)
    if is_calibrated_unit(exp.unit):
        raise InputError(
            f"{path}: already calibrated (BUNIT = {exp.unit.to_string()!r} is a flux density, "
            "not instrumental counts); calibrate takes an uncalibrated image, e.g. "
            "RUN/exposures/visit-*/det-*.fits of `photocalib run`")
    if exp.kind is not calib.kind:
        exp = exp.to_kind(calib.kind)
    calibrated = calib.calibrate_image(exp)
    calibrated.write(out)
    return out
