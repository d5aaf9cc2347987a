"""Multi-amplifier raws: each amplifier's overscan, gain, read noise and saturation.

A CCD read through several amplifiers (DECam: two, HSC: four) has, per amplifier ``L``
(``A``, ``B``, ...), the keywords DECam raws carry: ``DATASEC<L>`` (its imaging pixels in the raw
frame), ``BIASSEC<L>`` (its overscan), ``CCDSEC<L>`` (where those pixels sit in the trimmed CCD;
a reversed range, ``[2048:1025,...]``, means the amplifier reads the other way), ``GAIN<L>``
(e⁻/ADU), ``RDNOISE<L>`` (e⁻) and ``SATURAT<L>`` (raw ADU). Without ``CCDSEC<L>`` the data
sections are placed side by side in the order of their raw x positions.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..errors import InputError
from ..image.mask import MaskPlane
from ..instruments.base import Amplifier

__all__ = ["amplifiers_in", "assemble_amplifiers"]

_LETTERS = "ABCDEFGH"


def amplifiers_in(header: fits.Header) -> tuple[Amplifier, ...]:
    """The amplifiers a raw header describes (``DATASEC<L>`` and ``GAIN<L>`` present)."""
    return tuple(
        Amplifier(L, f"DATASEC{L}", f"BIASSEC{L}", f"GAIN{L}", f"RDNOISE{L}", f"SATURAT{L}")
        for L in _LETTERS if f"DATASEC{L}" in header and f"GAIN{L}" in header
    )


def _ranges(value: str, keyword: str) -> tuple[int, int, int, int]:
    from .process import _SECTION

    m = _SECTION.match(str(value).replace(" ", ""))
    if not m:
        raise InputError(f"header keyword {keyword}={value!r} is not an IRAF section like [1:1024,1:4096]")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def _slices(x1, x2, y1, y2):
    return slice(min(y1, y2) - 1, max(y1, y2)), slice(min(x1, x2) - 1, max(x1, x2))


def _number(header: fits.Header, key, where: str, default=None) -> float | None:
    if not isinstance(key, str):
        return float(key)
    if key not in header:
        if default is None:
            raise InputError(f"{where}: no {key} keyword for this amplifier; add it to the header")
        return default
    try:
        return float(header[key])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: keyword {key} = {header[key]!r} is not a number") from exc


def assemble_amplifiers(raw: np.ndarray, header: fits.Header, amplifiers=None, where: str = "raw"):
    """Electrons, their variance and the saturation mask of the trimmed CCD.

    For each amplifier: the per-row median of its overscan is subtracted from its data section,
    pixels at or above its saturation (raw ADU) are SAT, its gain turns ADU into electrons, and
    the variance is ``max(e, 0) + read_noise²``; the section is placed at its ``CCDSEC``.

    Returns
    -------
    electrons, variance : numpy.ndarray (float32)
    mask : numpy.ndarray (uint32 MaskPlane bits)

    Raises
    ------
    InputError
        Missing or malformed per-amplifier keywords, an overscan that does not cover the data
        section's rows, or sections that do not tile the CCD.
    """
    amplifiers = tuple(amplifiers) if amplifiers is not None else amplifiers_in(header)
    if not amplifiers:
        raise InputError(f"{where}: no amplifier keywords (DATASECA, GAINA, ...)")
    raw = np.asarray(raw, dtype=np.float64)
    pieces = []
    for amp in amplifiers:
        w = f"{where} amplifier {amp.name}"
        if amp.datasec not in header or amp.biassec not in header:
            raise InputError(f"{w}: needs {amp.datasec} and {amp.biassec}")
        d = _ranges(header[amp.datasec], amp.datasec)
        b = _ranges(header[amp.biassec], amp.biassec)
        data = raw[_slices(*d)]
        over = raw[_slices(*b)]
        if over.shape[0] != data.shape[0]:
            raise InputError(f"{w}: {amp.biassec} and {amp.datasec} must cover the same rows")
        gain = _number(header, amp.gain, w)
        noise = _number(header, amp.read_noise, w, default=0.0)
        sat = _number(header, amp.saturation, w, default=np.inf) if amp.saturation else np.inf
        if not (np.isfinite(gain) and gain > 0):
            raise InputError(f"{w}: {amp.gain} = {gain} must be positive")
        bits = np.where(data >= sat, np.uint32(MaskPlane.SAT), np.uint32(0))
        e = (data - np.median(over, axis=1)[:, None]) * gain
        var = np.maximum(e, 0) + noise**2
        key = f"CCDSEC{amp.name}"
        c = _ranges(header[key], key) if key in header else None
        pieces.append((d, c, e, var, bits))
    if all(c is None for _, c, *_ in pieces):
        # Side by side in raw x order.
        x = 1
        placed = []
        for _d, _, e, var, bits in sorted(pieces, key=lambda p: min(p[0][0], p[0][1])):
            ny, nx = e.shape
            placed.append(((x, x + nx - 1, 1, ny), e, var, bits))
            x += nx
    else:
        if any(c is None for _, c, *_ in pieces):
            raise InputError(f"{where}: CCDSEC<amp> is given for some amplifiers but not all")
        placed = [(c, e, var, bits) for _, c, e, var, bits in pieces]
    width = max(max(c[0], c[1]) for c, *_ in placed)
    height = max(max(c[2], c[3]) for c, *_ in placed)
    electrons = np.full((height, width), np.nan, dtype=np.float32)
    variance = np.full((height, width), np.inf, dtype=np.float32)
    mask = np.zeros((height, width), dtype=np.uint32)
    for c, e, var, bits in placed:
        x1, x2, y1, y2 = c
        sl = _slices(x1, x2, y1, y2)
        if electrons[sl].shape != e.shape:
            raise InputError(f"{where}: a CCDSEC does not have the shape of its DATASEC")
        flip = (slice(None, None, -1 if y1 > y2 else 1), slice(None, None, -1 if x1 > x2 else 1))
        electrons[sl] = e[flip]
        variance[sl] = var[flip]
        mask[sl] = bits[flip]
    if np.isnan(electrons).any():
        raise InputError(f"{where}: the amplifiers' CCDSEC do not tile the {width}x{height} CCD")
    return electrons, variance, mask
