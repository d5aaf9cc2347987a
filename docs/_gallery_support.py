"""Arguments sphinx-gallery gives each example: its output goes under docs/_build/gallery-data."""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent / "_build" / "gallery-data"


def reset_argv(gallery_conf, script_vars) -> list[str]:
    """``--out docs/_build/gallery-data/<example name>`` for every example."""
    return ["--out", str(OUT / Path(script_vars["src_file"]).stem)]
