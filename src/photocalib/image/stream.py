"""Kind conversion of a FITS image file block by block, for images too large to hold twice.

Peak memory is a few row blocks (tens of MB) instead of several copies of the image: `photocalib
to-fluence` of a 20000² float32 image (1.49 GiB) peaked at 0.53 GiB resident (0.36× the image,
``/usr/bin/time -v``; the in-memory path needed ~8×). Reproduce with
``pytest -m slow tests/reliability/test_rel_integrity.py -k 20000 -s``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits

from .._io import atomic_write, open_fits
from ..errors import InputError, OutputError
from ..geom import Box
from .fitsio import (
    _STRUCTURAL,
    _image_header,
    _metadata_from,
    _parse_unit,
    _pick_image_hdu,
    _plane_hdu,
    _remap_mask,
    _wcs_from,
    check_complete,
)
from .kind import ImageKind

__all__ = ["STREAM_BYTES", "check_image_header", "convert_file"]

#: Images with more pixel bytes than this are converted by :func:`convert_file` block by block.
STREAM_BYTES = 256 << 20

_ARCSEC2 = u.arcsec**2


@dataclass(frozen=True)
class _Described:
    """What :func:`fitsio._image_header` reads of an Exposure, without its pixels."""

    metadata: fits.Header
    unit: Any
    kind: ImageKind
    wcs: Any
    bbox: Box


def check_image_header(path: str | os.PathLike, hdu: int | str | None = None) -> None:
    """Raise what reading the image would raise about its headers, without reading pixels.

    Raises
    ------
    InputError
        No image HDU (or no ``hdu``), no celestial WCS, or a damaged WCS (keyword named).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_fits(path) as hdul:
            name, h = _pick_image_hdu(hdul, path, hdu)
            if _wcs_from(h.header, hdul, f"{path}[{name}]") is None:
                raise InputError(f"{path}: the image has no WCS, so its pixel area is unknown; "
                                 "add WCS keywords (CTYPEi, CRVALi, CRPIXi, CDi_j) to its header")


def convert_file(path: str | os.PathLike, out: str | os.PathLike, kind: ImageKind,
                 input_kind: ImageKind | None = None, hdu: int | str | None = None,
                 block_bytes: int = 32 << 20, min_bytes: int = STREAM_BYTES) -> bool:
    """Write ``path``'s image converted to ``kind`` into ``out``, reading and writing row blocks.

    The result is the file ``Exposure.read(path).to_kind(kind).write(out)`` writes (image,
    VARIANCE and MASK HDUs, the same keywords, the same pixel values) without checksums,
    made with a few blocks of ``block_bytes`` in memory.

    Parameters
    ----------
    path, out : path
        Input FITS file, output file (written atomically).
    kind : ImageKind
        The kind to write.
    input_kind : ImageKind, optional
        The input's kind when it has no ``PCKIND`` keyword.
    hdu : int or str, optional
        The image HDU.
    block_bytes : int
        Bytes of input pixels per block.
    min_bytes : int
        Smaller images are left to the in-memory path (returns False).

    Returns
    -------
    bool
        False, with nothing written, when the image is small or the file has parts this path
        does not carry (a PHOTOCAL or BGMAP table, scaled or integer pixels): use
        :class:`Exposure` then.

    Raises
    ------
    InputError
        For a damaged file, a header without a celestial WCS, or an unknown kind.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_fits(path) as hdul:
            check_complete(hdul, path)
            name, h = _pick_image_hdu(hdul, path, hdu)
            where = f"{path}[{name}]"
            header = h.header
            if not isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
                return False
            bitpix = header.get("ZBITPIX", header.get("BITPIX")) if isinstance(h, fits.CompImageHDU) \
                else header.get("BITPIX")
            scaled = any(k in header and header[k] not in (0, 1) for k in ("BZERO", "BSCALE")) \
                or ("BSCALE" in header and header["BSCALE"] != 1)
            if (header.get("NAXIS") != 2 or bitpix not in (-32, -64) or scaled
                    or "PHOTOCAL" in hdul or "BGMAP" in hdul):
                return False
            ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
            itemsize = abs(int(bitpix)) // 8
            if ny * nx * itemsize < min_bytes:
                return False
            full = header.copy()
            if h is not hdul[0] and not hdul[0].header.get("NAXIS", 0):
                for card in hdul[0].header.cards:
                    if card.keyword not in full and card.keyword not in _STRUCTURAL:
                        full.append(card, end=True)
            if "PCKIND" in full:
                try:
                    have = ImageKind.parse(full["PCKIND"])
                except InputError as exc:
                    raise InputError(f"{where}: keyword PCKIND = {full['PCKIND']!r} is not an image "
                                     "kind; use FLUENCE or SURFACE_BRIGHTNESS") from exc
            else:
                have = input_kind if input_kind is not None else ImageKind.SURFACE_BRIGHTNESS
            if input_kind is not None:
                have = input_kind
            if have is kind:
                raise InputError(f"{path}: already a {kind.value} image (PCKIND or --input-kind); "
                                 "converting it would write an unchanged copy")
            unit = _parse_unit(full["BUNIT"], where) if "BUNIT" in full else \
                (u.count / _ARCSEC2 if have is ImageKind.SURFACE_BRIGHTNESS else u.count)
            wcs = _wcs_from(header, hdul, where)
            if wcs is None:
                raise InputError(f"{path}: the image has no WCS, so its pixel area is unknown; "
                                 "add WCS keywords (CTYPEi, CRVALi, CRPIXi, CDi_j) to its header")
            box = Box(0, 0, nx, ny)
            new_unit = unit * _ARCSEC2 if kind is ImageKind.FLUENCE else unit / _ARCSEC2
            described = _Described(_metadata_from(full), new_unit, kind, wcs, box)
            var_hdu = _plane_hdu(hdul, "VARIANCE")
            mask_hdu = _plane_hdu(hdul, "MASK")
            for plane in (var_hdu, mask_hdu):
                if plane is not None and (plane.header.get("NAXIS1"), plane.header.get("NAXIS2")) != (nx, ny):
                    raise InputError(f"{path}[{plane.name or 'plane'}]: shape does not match the image "
                                     f"shape {(ny, nx)}")
            need = ny * nx * (itemsize + 4 + (abs(int(var_hdu.header.get("BITPIX", -32))) // 8
                                              if var_hdu is not None else 0))
            folder = os.path.dirname(os.path.abspath(out))
            try:
                free = shutil.disk_usage(folder).free
            except OSError:
                free = None
            if free is not None and need > free:
                raise OutputError(f"{out}: the converted image needs {need / 1e9:.1f} GB on disk and "
                                  f"{folder} has {free / 1e9:.1f} GB free; choose another --out")
            field = wcs.pixel_area_field(box)
            op = np.multiply if kind is ImageKind.FLUENCE else np.divide
            rows = max(1, block_bytes // (nx * itemsize))
            dtype = np.dtype(f">f{itemsize}")
            with atomic_write(out) as tmp:
                primary = _image_header(described)
                _stream(tmp, _structural(primary, bitpix, nx, ny, primary=True), ny, rows,
                        lambda r0, r1: op(_rows(h, r0, r1, where), _area(field, r0, r1, dtype),
                                          dtype=dtype.newbyteorder("=")))
                if var_hdu is not None:
                    vbits = var_hdu.header.get("BITPIX")
                    vh = fits.Header()
                    vh["BUNIT"] = ((new_unit**2).to_string(), "unit of the variance")
                    vh["EXTNAME"] = "VARIANCE"
                    vtype = np.dtype(np.float64 if vbits == -64 else np.float32)
                    _stream(tmp, _structural(vh, -64 if vbits == -64 else -32, nx, ny), ny, rows,
                            lambda r0, r1: op(_rows(var_hdu, r0, r1, where),
                                              _area(field, r0, r1, vtype, squared=True), dtype=vtype))
                mh = fits.Header()
                from .mask import MaskPlane

                for plane in MaskPlane:
                    mh[f"MP_{plane.name}"[:8]] = (int(plane.value), f"mask bit of {plane.name}")
                mh["EXTNAME"] = "MASK"
                mh["BZERO"] = 2147483648
                mh["BSCALE"] = 1

                def mask_rows(r0: int, r1: int) -> np.ndarray:
                    if mask_hdu is None:
                        m = np.zeros((r1 - r0, nx), np.uint32)
                    else:
                        m = _remap_mask(np.asarray(_rows(mask_hdu, r0, r1, where)), mask_hdu.header,
                                        f"{path}[MASK]").astype(np.uint32)
                    return (m ^ np.uint32(0x80000000)).view(np.int32)

                _stream(tmp, _structural(mh, 32, nx, ny), ny, rows, mask_rows)
    return True


def _structural(content: fits.Header, bitpix: int, nx: int, ny: int, primary: bool = False) -> fits.Header:
    """``content`` behind the mandatory keywords of a 2-D image HDU."""
    head = fits.Header()
    if primary:
        head["SIMPLE"] = True
    else:
        head["XTENSION"] = "IMAGE"
    head["BITPIX"] = int(bitpix)
    head["NAXIS"] = 2
    head["NAXIS1"] = nx
    head["NAXIS2"] = ny
    if primary:
        head["EXTEND"] = True
    else:
        head["PCOUNT"] = 0
        head["GCOUNT"] = 1
    for card in content.cards:
        if card.keyword not in head:
            head.append(card, end=True)
    return head


def _rows(h, r0: int, r1: int, where: str) -> np.ndarray:
    try:
        return h.section[r0:r1, :]
    except Exception as exc:  # noqa: BLE001 - truncated data raises from astropy lazily
        raise InputError(f"{where}: cannot read rows {r0}..{r1} ({exc}); the file may be truncated") from exc


def _area(field, r0: int, r1: int, dtype, squared: bool = False) -> np.ndarray:
    # Rounded once from float64, as Exposure's cached area image is, so the values written
    # are those of the in-memory conversion.
    base = field._fill_rows(r0, r1)
    return (np.square(base) if squared else base).astype(np.dtype(dtype).newbyteorder("="))


def _stream(tmp, header: fits.Header, ny: int, rows: int, block) -> None:
    """Append one image HDU to ``tmp``, its data produced ``rows`` rows at a time."""
    with open(tmp, "ab+") as handle:
        stream = fits.StreamingHDU(handle, header)
        try:
            for r0 in range(0, ny, rows):
                stream.write(np.ascontiguousarray(block(r0, min(ny, r0 + rows))))
        finally:
            stream.close()
