"""The generic reader: photocalib's own Exposure files and the simulator's multi-extension raws.

Every 2-D image HDU (other than ``VARIANCE``/``MASK``) is one detector, read as
:meth:`Exposure.read` reads it: kind from ``PCKIND`` (else surface brightness), unit from
``BUNIT``, the ``VARIANCE``, ``MASK`` and ``PHOTOCAL`` HDUs when present.
"""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from ..errors import InputError
from .base import Instrument, parse_bunit

__all__ = ["Generic", "image_hdus"]


def image_hdus(hdul: fits.HDUList, path, hdu) -> list[int]:
    """Indices of the detector image HDUs (or of ``hdu`` alone)."""
    if hdu is not None:
        try:
            return [hdul.index_of(hdu)]
        except (KeyError, IndexError) as exc:
            raise InputError(f"{path}: no HDU {hdu!r} (the file has {len(hdul)} HDUs)") from exc
    out = []
    for i, h in enumerate(hdul):
        if not isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
            continue
        if h.header.get("NAXIS", 0) != 2 or h.name.upper() in ("VARIANCE", "MASK", "BGMAP"):
            continue
        out.append(i)
    if not out:
        raise InputError(f"{path}: no 2-D image HDU; pass hdu= to name the image HDU")
    return out


class Generic(Instrument):
    name = "generic"
    aliases = ("photocalib", "simulator")
    description = "photocalib Exposure files and simulator MEFs (one image HDU per detector)"

    def matches(self, hdul, path) -> bool:
        return True

    def read(self, path: Path, hdul, hdu=None, **options) -> list:
        from ..image.fitsio import read_exposure

        out = []
        primary = hdul[0].header
        for index in image_hdus(hdul, path, hdu):
            bunit = hdul[index].header.get("BUNIT", primary.get("BUNIT"))
            # Survey spellings mapped, an unknown one a warning and counts: never a refusal.
            unit = None if bunit is None else parse_bunit(bunit, f"{path}[{index}] BUNIT")
            exp = read_exposure(path, hdu=index, unit=unit)
            header = hdul[index].header
            where = f"{path}[{index}]"
            headers = (header, primary) if index != 0 else (header,)
            meta = self.metadata(headers, where, instrument=str(
                header.get("INSTRUME", primary.get("INSTRUME", "generic"))).strip() or "generic")
            if meta["DETECTOR"] == 0 and not any(k in header for k in self.detector_keys):
                meta["DETECTOR"] = index
            existing = exp.metadata
            for card in meta.cards:
                if card.keyword not in existing or card.keyword in ("VISIT", "DETECTOR"):
                    existing[card.keyword] = (card.value, card.comment)
            out.append(exp.replace(metadata=existing))
        return out


#: The instruments this module describes (registered by the package, in order).
INSTRUMENTS = (Generic(),)
