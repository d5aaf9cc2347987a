"""The photocalib pipeline: steps, on-disk layout, Dask execution and the HTML report.

Layer 8: imports every layer below it (``sim`` only for the demo); nothing imports it but the CLI.
"""

from .config import Config, config_to_toml, load_config
from .inputs import RunInputs, Unit, discover_flats, discover_raw, find_inputs
from .layout import RunLayout
from .report import write_report
from .runner import RunResult, run_pipeline
from .tools import apply_calibration, area_map, convert_kind

__all__ = [
    "Config",
    "RunInputs",
    "RunLayout",
    "RunResult",
    "Unit",
    "apply_calibration",
    "area_map",
    "config_to_toml",
    "convert_kind",
    "discover_flats",
    "discover_raw",
    "find_inputs",
    "load_config",
    "run_demo",
    "run_pipeline",
    "write_report",
]


def __getattr__(name: str):
    # The demo imports the simulator (GalSim) lazily, only when it is asked for.
    if name == "run_demo":
        from .demo import run_demo

        return run_demo
    raise AttributeError(f"module 'photocalib.pipeline' has no attribute {name!r}")
