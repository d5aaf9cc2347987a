"""Reference catalogs (Gaia, Pan-STARRS1, ATLAS-RefCat2, SkyMapper, any magnitude table) in nJy,
and colour terms that carry them into an instrument's bands.

A processing layer (rank 5): imports only ``errors`` and ``_io``; ``fit`` and ``pipeline`` use it.
"""

from ._motion import propagate as propagate
from .catalogs import GAIA_ZERO_POINTS as GAIA_ZERO_POINTS
from .catalogs import SYSTEMS as SYSTEMS
from .catalogs import mag_to_njy as mag_to_njy
from .catalogs import njy_to_mag as njy_to_mag
from .catalogs import read_reference as read_reference
from .colourterm import ColourTerm as ColourTerm
from .colourterm import blackbody_library as blackbody_library
from .colourterm import convert_reference as convert_reference
from .colourterm import read_colour_terms as read_colour_terms
from .colourterm import synthetic_ab_mags as synthetic_ab_mags
from .colourterm import to_reference as to_reference
from .colourterm import write_colour_terms as write_colour_terms
from .published import PUBLISHED as PUBLISHED
from .published import colour_term_for as colour_term_for
from .published import published_colour_term as published_colour_term

__all__ = [
    "ColourTerm",
    "GAIA_ZERO_POINTS",
    "PUBLISHED",
    "SYSTEMS",
    "blackbody_library",
    "colour_term_for",
    "convert_reference",
    "mag_to_njy",
    "njy_to_mag",
    "propagate",
    "published_colour_term",
    "read_colour_terms",
    "read_reference",
    "synthetic_ab_mags",
    "to_reference",
    "write_colour_terms",
]
