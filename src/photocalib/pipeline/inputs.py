"""Finding a run's inputs: raw multi-extension FITS exposures, dome flats, a reference catalog.

Reads headers only; each (visit, detector) becomes a :class:`Unit`, the pipeline's unit of work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from .._io import open_fits
from ..errors import InputError

__all__ = ["Unit", "RunInputs", "discover_raw", "discover_flats", "discover_processed", "find_inputs",
           "looks_processed"]

log = logging.getLogger("photocalib.pipeline")

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fits.gz", ".fits.bz2", ".fit.gz", ".fit.bz2",
                  ".fts.gz", ".fts.bz2")


@dataclass(frozen=True, order=True)
class Unit:
    """One detector of one visit: where its raw pixels are."""

    visit: int
    detector: int
    path: str
    hdu: int
    #: Already flat-fielded by its survey (read with read_exposures; no ISR, no flat).
    processed: bool = False

    @property
    def name(self) -> str:
        return f"visit-{self.visit:06d}/det-{self.detector:03d}"


@dataclass(frozen=True)
class RunInputs:
    """Everything ``photocalib run`` reads.

    Attributes
    ----------
    units : tuple of Unit
        The (visit, detector) pairs with raw pixels.
    flats : dict
        Dome-flat FITS file per detector.
    refcat : str or None
        Reference catalog (Parquet or FITS table) with ``ra``, ``dec`` (deg) and a flux in nJy.
    truth : str or None
        The simulator's ``truth/`` folder, for residuals against truth in the report.
    """

    units: tuple[Unit, ...]
    flats: dict[int, str]
    refcat: str | None = None
    truth: str | None = None

    @property
    def visits(self) -> list[int]:
        return sorted({u.visit for u in self.units})

    @property
    def detectors(self) -> list[int]:
        return sorted({u.detector for u in self.units})


def _is_fits(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_FITS_SUFFIXES)


def _int_key(header: fits.Header, keys: Iterable[str], where: str, what: str) -> int | None:
    for key in keys:
        if key in header:
            try:
                return int(header[key])
            except (TypeError, ValueError) as exc:
                raise InputError(f"{where}: keyword {key} = {header[key]!r} is not an integer {what}") from exc
    return None


@contextlib.contextmanager
def _open_quietly(path: Path) -> Iterator[fits.HDUList]:
    """``open_fits(path)`` with astropy's warnings (non-standard keywords and the like) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_fits(path) as hdul:
            yield hdul


def _claim(seen: dict[tuple[int, int], str], visit: int, detector: int, where: str) -> None:
    """Record that ``where`` holds (visit, detector), or InputError if another place does."""
    key = (visit, detector)
    if key in seen:
        raise InputError(f"{where}: visit {visit} detector {detector} also in {seen[key]}; "
                         "each (visit, detector) must appear once")
    seen[key] = where


def discover_raw(paths: Iterable[str | os.PathLike]) -> list[Unit]:
    """List the (visit, detector) units in raw MEF files (headers only).

    Every image HDU with data is a detector: its ``DETECTOR`` (or ``CCDNUM``) keyword names it
    (else its HDU index); ``VISIT`` (or ``EXPNUM``) comes from the HDU or the primary header.

    Raises
    ------
    InputError
        If no file is given, a file is not FITS, a visit number is missing, or a
        (visit, detector) pair appears twice.
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.iterdir() if _is_fits(q)))
        else:
            files.append(p)
    if not files:
        raise InputError("no raw FITS files given; pass a directory of MEF files or the files themselves")
    units: list[Unit] = []
    seen: dict[tuple[int, int], str] = {}
    for path in files:
        with _open_quietly(path) as hdul:
            primary = hdul[0].header
            found = 0
            for index, hdu in enumerate(hdul):
                if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
                    continue
                if hdu.header.get("NAXIS", 0) != 2:
                    continue
                where = f"{path}[{index}]"
                visit = _int_key(hdu.header, ("VISIT", "EXPNUM", "EXPID"), where, "visit")
                if visit is None:
                    visit = _int_key(primary, ("VISIT", "EXPNUM", "EXPID"), f"{path}[0]", "visit")
                if visit is None:
                    raise InputError(f"{where}: no VISIT (or EXPNUM) keyword in the HDU or primary "
                                     "header; add one so exposures can be told apart")
                detector = _int_key(hdu.header, ("DETECTOR", "CCDNUM", "DETID"), where, "detector")
                if detector is None:
                    detector = index
                _claim(seen, visit, detector, where)
                units.append(Unit(visit, detector, str(path), index))
                found += 1
            if not found:
                raise InputError(f"{path}: no 2-D image HDU; is it a raw exposure?")
    return sorted(units)


def discover_flats(folder: str | os.PathLike | None) -> dict[int, str]:
    """Dome flats per detector: every FITS file in ``folder`` whose header has ``DETECTOR``.

    Files with a ``WAVELEN`` keyword (monochromatic flats) and files in subfolders are ignored;
    when some file names start with ``dome``, only those are used.
    """
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: flats folder not found")
    flats: dict[int, str] = {}
    files = sorted(q for q in folder.iterdir() if _is_fits(q))
    # The simulator (and many archives) name master dome flats dome-*; prefer them when present.
    dome = [q for q in files if q.name.lower().startswith("dome")]
    for path in dome or files:
        with _open_quietly(path) as hdul:
            for index, hdu in enumerate(hdul):
                header = hdu.header
                if header.get("NAXIS", 0) != 2 or "WAVELEN" in header:
                    continue
                merged = {**dict(hdul[0].header), **dict(header)}
                det = merged.get("DETECTOR", merged.get("CCDNUM"))
                if det is None:
                    continue
                flats.setdefault(int(det), str(path) if index == 0 else f"{path}[{index}]")
                break
    return flats


def _fits_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if _is_fits(q)))
        else:
            files.append(p)
    return files


def _companion_file(path: Path) -> bool:
    """A weight, quality or mask file that goes with an image (DECam CP oow/ood, ZTF mskimg)."""
    name = path.name.lower()
    return any(t in name for t in ("_oow_", "_ood_", "-oow-", "-ood-", "_oow.", "_ood.", "mskimg"))


def discover_processed(paths: Iterable[str | os.PathLike]) -> list[Unit]:
    """List the (visit, detector) units of already flat-fielded survey images (headers only).

    Folders are searched recursively; companion files (CP ``oow``/``ood``, ZTF ``mskimg``) are
    left to the reader of their image. Each file's instrument is identified from its headers
    (:func:`photocalib.instruments.identify`).

    Raises
    ------
    InputError
        If no image file is found or a (visit, detector) pair appears twice.
    """
    from ..instruments import identify

    files = [f for f in _fits_files(paths) if not _companion_file(f)]
    units: list[Unit] = []
    seen: dict[tuple[int, int], str] = {}
    for path in files:
        with _open_quietly(path) as hdul:
            if not _has_image(hdul):
                # A catalog beside the images (a Gaia chunk, a CCD table): not an exposure.
                log.info("%s: no image HDU, not an exposure; skipped", path)
                continue
            found = identify(hdul, path).units(path, hdul)
        for index, visit, detector in found:
            _claim(seen, visit, detector, f"{path}[{index}]")
            units.append(Unit(visit, detector, str(path), index, processed=True))
    if not units:
        raise InputError("no image files given; pass the processed images or a folder of them")
    return sorted(units)


def _has_image(hdul: fits.HDUList) -> bool:
    return any(isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)
               and h.header.get("NAXIS", 0) == 2 for h in hdul)


def looks_processed(paths: Iterable[str | os.PathLike]) -> bool:
    """Whether the first image among ``paths`` is of an instrument whose files are already
    flat-fielded (DECam CP InstCal, ZTF sciimg, SDSS frame, Rubin calexp)."""
    from ..instruments import identify

    for path in _fits_files(paths):
        if _companion_file(path):
            continue
        with _open_quietly(path) as hdul:
            if not _has_image(hdul):
                continue
            return bool(identify(hdul, path).processed)
    return False


def find_inputs(survey: str | os.PathLike | None = None, raw: Iterable[str] | None = None,
                flats: str | os.PathLike | None = None, refcat: str | os.PathLike | None = None,
                truth: str | os.PathLike | None = None, processed: bool | None = None) -> RunInputs:
    """Collect a run's inputs from a survey folder (``raw/``, ``flats/``, ``refcat.parquet``,
    ``truth/`` as ``photocalib simulate`` writes them) and/or explicit paths (which win).

    ``processed=True`` takes the images as already flat-fielded by their survey (no ISR and no
    flats); ``None`` decides from the instrument of the first image (:func:`looks_processed`)."""
    raw = list(raw or [])
    if survey is not None:
        survey = Path(survey)
        if not survey.is_dir():
            raise InputError(f"{survey}: survey folder not found")
        if not raw:
            raw = [str(survey / "raw")] if (survey / "raw").is_dir() else [str(survey)]
        if flats is None and (survey / "flats").is_dir():
            flats = survey / "flats"
        if refcat is None and (survey / "refcat.parquet").is_file():
            refcat = survey / "refcat.parquet"
        if truth is None and (survey / "truth").is_dir():
            truth = survey / "truth"
    if refcat is not None and not Path(refcat).is_file():
        raise InputError(f"{refcat}: reference catalog not found")
    if processed is None:
        processed = looks_processed(raw)
    if processed:
        return RunInputs(tuple(discover_processed(raw)), {},
                         None if refcat is None else str(refcat), None if truth is None else str(truth))
    units = discover_raw(raw)
    flat_map = discover_flats(flats)
    missing = sorted({u.detector for u in units} - set(flat_map))
    if flats is not None and missing:
        names = ", ".join(str(d) for d in missing)
        raise InputError(f"{flats}: no dome flat for detector{'s' if len(missing) > 1 else ''} {names}; "
                         "every raw detector needs "
                         "a flat whose DETECTOR keyword names it (or leave those detectors out)")
    return RunInputs(tuple(units), flat_map, None if refcat is None else str(refcat),
                     None if truth is None else str(truth))


def read_image_wcs(path: Path):
    """The SkyWcs and image shape ``(ny, nx)`` of the first HDU of ``path`` that has a WCS."""
    from ..astrometry import SkyWcs

    with _open_quietly(path) as hdul:
        for h in hdul:
            if "CTYPE1" in h.header:
                return SkyWcs.from_header(h.header, hdulist=hdul), (
                    int(h.header["NAXIS2"]), int(h.header["NAXIS1"]))
    raise InputError(f"{path}: no HDU with a WCS")
