"""PhotoCalib: the mapping from instrumental flux to calibrated fluence in nJy.

Layer 4 of photocalib: knows which image kind it takes and splits into Jacobian x fluence-to-fluence mapping.
"""

from ..image.fitsio import register_photo_calib_reader
from .photo_calib import AB_ZERO_POINT_NJY_MAG, PhotoCalib, ab_to_nanojansky, nanojansky_to_ab

register_photo_calib_reader(lambda hdu, where: PhotoCalib.from_hdu(hdu, where=where))

__all__ = ["AB_ZERO_POINT_NJY_MAG", "PhotoCalib", "ab_to_nanojansky", "nanojansky_to_ab"]
