"""Arguments sphinx-gallery gives each example: its output goes under docs/_build/gallery-data."""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent / "_build" / "gallery-data"


def reset_argv(gallery_conf, script_vars) -> list[str]:
    """``--out docs/_build/gallery-data/<example name>`` for every example."""
    return ["--out", str(OUT / Path(script_vars["src_file"]).stem)]


class ExampleOrder:
    """Gallery order: from the pixel area to a real file, chromatic flats, the whole pipeline;
    examples not listed follow in file-name order."""

    ORDER = ("pixel_area_demo.py", "real_survey_file.py", "chromatic_flats.py", "pipeline_api.py")

    def __init__(self, src_dir) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        rank = self.ORDER.index(filename) if filename in self.ORDER else len(self.ORDER)
        return rank, filename

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {', '.join(self.ORDER)}>"
