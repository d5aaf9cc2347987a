"""PhotoCalib: the mapping from instrumental flux to calibrated fluence in nJy.

Layer 4 of photocalib: knows which image kind it takes and splits into Jacobian x fluence-to-fluence mapping.
"""

from ..image.registry import register_hdu
from .photo_calib import AB_ZERO_POINT_NJY_MAG, PhotoCalib, ab_to_nanojansky, nanojansky_to_ab

# An Exposure file keeps its calibration in a PHOTOCAL table HDU.
register_hdu("PHOTOCAL", PhotoCalib, lambda hdu, where: PhotoCalib.from_hdu(hdu, where=where),
             lambda calib, extname: calib.to_hdu(extname))

__all__ = ["AB_ZERO_POINT_NJY_MAG", "PhotoCalib", "ab_to_nanojansky", "nanojansky_to_ab"]
