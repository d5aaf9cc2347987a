"""`make docs` end to end: the Sphinx build (warnings are errors, the gallery executed) and the
built pages in headless Chromium, where every image must load, as the report test checks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "docs" / "_build" / "html"


def _chromium_probe():
    # One copy of the Chromium probe: the report test's (tests/pipeline/pipeline_chromium.py).
    spec = importlib.util.spec_from_file_location(
        "pipeline_chromium", ROOT / "tests" / "pipeline" / "pipeline_chromium.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_probe = _chromium_probe()
_missing = [m for m in ("sphinx", "numpydoc", "pydata_sphinx_theme", "sphinx_gallery", "myst_parser")
            if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_missing), reason=f"the docs extra is not installed ({_missing}); "
                       "`pip install -e .[docs]` or `make docs` installs it"),
]

# The pages a reader lands on first, and one page of each other kind: the guide with the
# README's figures, the gallery with figures made while building, the API reference.
EXAMPLES = ["pixel_area_demo", "real_survey_file", "chromatic_flats", "pipeline_api"]
PAGES = ["index.html", "guide/kinds.html", "guide/joint.html", "auto_examples/index.html",
         *(f"auto_examples/{name}.html" for name in EXAMPLES), "api/fields.html", "design.html"]


@pytest.fixture(scope="module")
def built_site():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("PHOTOCALIB_DOCS_INTERSPHINX", None)  # offline: nothing may be fetched
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-b", "html",
         str(ROOT / "docs"), str(HTML)],
        capture_output=True, text=True, env=env, timeout=1500, check=False)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return HTML


@pytest.mark.timeout(1800)
def test_docs_build_without_warnings(built_site):
    for page in PAGES:
        assert (built_site / page).is_file(), f"{page} was not built"
    # The gallery ran: its pages carry the figures the examples drew.
    for name in EXAMPLES:
        assert list((built_site / "_images").glob(f"sphx_glr_{name}_0*.png")), f"{name} drew nothing"
    # Every public layer has its reference page, and a class page was generated from its docstring.
    assert (built_site / "api" / "generated" / "photocalib.calib.PhotoCalib.html").is_file()


@pytest.mark.timeout(1800)
@pytest.mark.skipif(_probe.chromium_path() is None,
                    reason="Debian's chromium is not installed (run `make chromium` or "
                    "`apt-get install -y chromium`); the rendering test needs it")
@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_render_with_every_image(built_site, page):
    n_images, n_loaded, dom = _probe.probe_page(built_site / page)
    if page in ("index.html", "guide/kinds.html", "guide/joint.html") or page.startswith("auto_examples/"):
        assert n_images > 0, f"{page} shows no figure"
    assert n_loaded == n_images, f"{page}: only {n_loaded} of {n_images} images loaded"
    assert "photocalib" in dom
