"""Instrument descriptions and ``read_exposures``: survey files in, Exposures out.

A layer of its own between ``calib`` and the processing layers (``isr``, ``background``, ...;
``tests/core/test_imports.py`` gives it rank 4.5): it reads headers and pixels with
:mod:`photocalib.image` and builds calibrations with :mod:`photocalib.calib`, and imports nothing
above them, so ``isr`` may use its amplifier layouts.

>>> import photocalib as pc
>>> pc.instruments.names()[-1]
'generic'
>>> pc.instruments.get("ztf").name
'ZTF'
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from astropy.io import fits

from .._io import _is_compressed, open_fits
from ..errors import InputError
from . import afw, decam, generic, sdss, ztf
from .base import Amplifier, Instrument, get, identify, names, parse_bunit, register

# Registration order is the order identify() tries them: the afw layout first (a Rubin file
# keeps its camera's INSTRUME), the generic reader last.
for _module in (afw, ztf, sdss, decam, generic):
    for _instrument in _module.INSTRUMENTS:
        register(_instrument)

__all__ = [
    "Amplifier",
    "Instrument",
    "get",
    "identify",
    "names",
    "parse_bunit",
    "read_exposures",
    "register",
]


@contextlib.contextmanager
def _open(path: Path) -> Iterator[fits.HDUList]:
    """open_fits, but a gzip or bzip2 file is decompressed once into memory: astropy would
    decompress it again for every backwards seek between HDUs (seconds per HDU for bzip2)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if not _is_compressed(path) or magic[:2] not in (b"\x1f\x8b", b"BZ"):
        with open_fits(path) as hdul:
            yield hdul
        return
    import bz2
    import gzip
    import io

    try:
        opener = bz2.open if magic == b"BZh" else gzip.open
        with opener(path, "rb") as f:
            content = f.read()
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: cannot decompress it ({exc}); the file may be truncated") from exc
    try:
        hdul = fits.open(io.BytesIO(content), memmap=False)
        len(hdul)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types for a damaged file
        raise InputError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    try:
        yield hdul
    finally:
        hdul.close()


def read_exposures(path: str | os.PathLike, *, instrument: str | Instrument = "auto",
                   hdu: int | str | None = None, weight: str | os.PathLike | None = None,
                   mask: str | os.PathLike | None = None) -> list:
    """Read a survey's image file into one :class:`~photocalib.Exposure` per detector.

    Each Exposure has the right ``kind`` (a flat-fielded image is SURFACE_BRIGHTNESS in
    count/arcsec², its values divided by the reference pixel area ``PCAREF``; an image
    calibrated against stars, such as an SDSS frame, FLUENCE), ``unit``, ``variance`` (from the
    weight map, the file's own plane, or gain and read noise), ``mask`` (from the quality map),
    ``wcs``, ``photo_calib`` (the survey's own calibration when the file has one) and
    ``metadata`` with ``VISIT``, ``DETECTOR``, ``BAND``, ``MJD``, ``EXPTIME``, ``INSTRUMENT``.

    Parameters
    ----------
    path : path
        The image file (``.fits``, ``.fits.fz``, ``.fits.gz``, ``.fits.bz2``). Companion files
        (a DECam CP ``oow``/``ood``, a ZTF ``mskimg``) are found beside it by name.
    instrument : str or Instrument
        ``"auto"`` (identify from the headers) or a name from :func:`names`.
    hdu : int or str, optional
        Only this image HDU.
    weight, mask : path, optional
        Companion inverse-variance and quality files, when not beside the image under the
        survey's naming.

    Returns
    -------
    list of Exposure

    Raises
    ------
    InputError
        Missing or non-FITS file, unknown instrument name, a companion map of another shape,
        a header without a celestial WCS; the message names the file and what to pass.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Warning, module="astropy")
        with _open(path) as hdul:
            if isinstance(instrument, Instrument):
                inst = instrument
            elif str(instrument).lower() == "auto":
                inst = identify(hdul, path)
            else:
                inst = get(str(instrument), path)
            options = {}
            if weight is not None:
                options["weight"] = weight
            if mask is not None:
                options["mask"] = mask
            try:
                return inst.read(path, hdul, hdu=hdu, **options)
            except TypeError as exc:
                if "unexpected keyword" in str(exc):
                    raise InputError(f"{path}: the {inst.name} reader takes no "
                                     f"{'/'.join(options)} file") from exc
                raise
