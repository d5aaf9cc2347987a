"""Photometric calibration fits: single detector against a reference catalog, and multi-epoch joint fits.

Layer 6: monolithic, separated and reference-free model families.
"""

from ._joint_stream import partition_by_star as partition_by_star  # noqa: E402
from ._match import match_sky as match_sky  # noqa: E402
from .catalog import read_catalog as read_catalog  # noqa: E402
from .catalog import source_catalog as source_catalog  # noqa: E402
from .catalog import write_catalog as write_catalog  # noqa: E402
from .chromatic import ChromaticCorrection as ChromaticCorrection  # noqa: E402
from .chromatic import ChromaticCorrectionSet as ChromaticCorrectionSet  # noqa: E402
from .chromatic import ab_colour as ab_colour  # noqa: E402
from .chromatic import chromatic_design as chromatic_design  # noqa: E402
from .chromatic import fit_chromatic_residuals as fit_chromatic_residuals  # noqa: E402
from .config import CalibrationConfig as CalibrationConfig  # noqa: E402
from .config import JointFitConfig as JointFitConfig  # noqa: E402
from .config import SingleFitConfig as SingleFitConfig  # noqa: E402
from .detector import DetectorResult as DetectorResult  # noqa: E402
from .detector import process_detector as process_detector  # noqa: E402
from .joint import JointCalibrator as JointCalibrator  # noqa: E402
from .joint import JointSolution as JointSolution  # noqa: E402
from .joint import fit_joint as fit_joint  # noqa: E402
from .single import SingleFitResult as SingleFitResult  # noqa: E402
from .single import fit_single as fit_single  # noqa: E402
from .single import match_reference as match_reference  # noqa: E402
