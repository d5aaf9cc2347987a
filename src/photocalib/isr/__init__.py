"""Instrument signature removal: bias, gain, masks, variance, dome and chromatic flats.

Layer 5 (processing): the output of flat-fielding is a SURFACE_BRIGHTNESS exposure.
"""
