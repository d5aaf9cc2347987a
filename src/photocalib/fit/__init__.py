"""Photometric calibration fits: single detector against a reference catalog, and multi-epoch joint fits.

Layer 6: monolithic, separated and reference-free model families.
"""

from .chromatic import ChromaticCorrection as ChromaticCorrection  # noqa: E402
from .chromatic import ChromaticCorrectionSet as ChromaticCorrectionSet  # noqa: E402
from .chromatic import ab_colour as ab_colour  # noqa: E402
from .chromatic import chromatic_design as chromatic_design  # noqa: E402
from .chromatic import fit_chromatic_residuals as fit_chromatic_residuals  # noqa: E402
