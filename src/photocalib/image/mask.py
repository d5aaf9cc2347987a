"""Mask planes: the meaning of each bit of an Exposure's uint32 mask.

Bits follow the LSST convention of one flag per defect; the values are persisted in FITS as-is.
"""

from __future__ import annotations

import enum

__all__ = ["MaskPlane"]


class MaskPlane(enum.IntFlag):
    """Bits of :attr:`Exposure.mask` (uint32).

    ``BAD`` a bad detector pixel; ``SAT`` saturated; ``EDGE`` too near the edge to measure;
    ``DETECTED`` part of a detected source; ``NO_DATA`` nothing was observed there (e.g. outside
    a warp); ``CR`` a cosmic ray; ``INTRP`` interpolated over; ``SUSPECT`` value doubtful (e.g.
    near saturation).

    Examples
    --------
    >>> int(MaskPlane.BAD | MaskPlane.SAT)
    3
    """

    BAD = 1
    SAT = 2
    EDGE = 4
    DETECTED = 8
    NO_DATA = 16
    CR = 32
    INTRP = 64
    SUSPECT = 128
