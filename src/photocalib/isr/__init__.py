"""Instrument signature removal: bias, gain, masks, variance, dome and chromatic flats.

Layer 5 (processing): the output of flat-fielding is a SURFACE_BRIGHTNESS exposure.
"""

from .chromatic import ChromaticFlat as ChromaticFlat  # noqa: E402
from .chromatic import Spectrum as Spectrum  # noqa: E402
from .chromatic import background_mapping as background_mapping  # noqa: E402
from .chromatic import read_spectrum as read_spectrum  # noqa: E402
