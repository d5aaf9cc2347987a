"""How sphinx-gallery runs the examples/ scripts: their arguments (output under
docs/_build/gallery-data) and their order in the gallery.

Every script in examples/ is executed by ``make docs``. A new one starts with a docstring whose
first line is a title underlined with ``=``, and takes ``--out DIR`` for what it writes (or gets
its own command line in :data:`ARGV`); ``# %%`` comment blocks split it into cells.
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent / "_build" / "gallery-data"


ROOT = Path(__file__).resolve().parents[1]

#: Command lines of the examples that do not take ``--out DIR`` (they write nothing).
ARGV = {
    "decam_gaia_zeropoint": [str(ROOT / "tests" / "data" / "decam-cp" / "testcase6")],
}


def reset_argv(gallery_conf, script_vars) -> list[str]:
    """The command line of each example: ``--out docs/_build/gallery-data/<example name>``
    unless :data:`ARGV` gives another (sphinx-gallery runs examples without ``__file__``, so an
    example that finds its data beside itself is given the path)."""
    name = Path(script_vars["src_file"]).stem
    return ARGV.get(name, ["--out", str(OUT / name)])


class ExampleOrder:
    """Gallery order: from the pixel area to a real file, chromatic flats, the whole pipeline;
    examples not listed follow in file-name order."""

    ORDER = ("pixel_area_demo.py", "real_survey_file.py", "decam_gaia_zeropoint.py",
             "chromatic_flats.py", "pipeline_api.py")

    def __init__(self, src_dir) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        rank = self.ORDER.index(filename) if filename in self.ORDER else len(self.ORDER)
        return rank, filename

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {', '.join(self.ORDER)}>"
