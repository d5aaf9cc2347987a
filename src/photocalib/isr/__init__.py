"""Instrument signature removal: bias, gain, masks, variance, dome and chromatic flats.

Layer 5 (processing): the output of flat-fielding is a SURFACE_BRIGHTNESS exposure.
"""

from .chromatic import ChromaticFlat as ChromaticFlat  # noqa: E402
from .chromatic import Spectrum as Spectrum  # noqa: E402
from .chromatic import attach_background_mapping as attach_background_mapping  # noqa: E402
from .chromatic import background_mapping as background_mapping  # noqa: E402
from .chromatic import read_spectrum as read_spectrum  # noqa: E402
from .config import IsrConfig as IsrConfig  # noqa: E402
from .process import RAW_KEYWORDS as RAW_KEYWORDS  # noqa: E402
from .process import DomeFlat as DomeFlat  # noqa: E402
from .process import isr_from_hdu as isr_from_hdu  # noqa: E402
from .process import overscan_correct as overscan_correct  # noqa: E402
from .process import run_isr as run_isr  # noqa: E402
