"""Every public name of photocalib and of each of its layers has an entry in the API reference.

The reference pages (docs/api/<layer>.rst) are written by hand; this reads their sources, so a
new public name, or a new public layer, fails here until it is documented.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import photocalib

API = Path(__file__).resolve().parents[2] / "docs" / "api"

# A bare module attribute that is not API: `from __future__ import annotations` leaves one.
_NOT_API = {"annotations"}


def public_names(module) -> list[str]:
    """``__all__`` where the module has one, else what it binds without a leading underscore
    (submodules excepted: a layer's re-exports, as ``photocalib.fit`` writes them)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [n for n, v in vars(module).items()
            if not n.startswith("_") and n not in _NOT_API and not inspect.ismodule(v)]


def layers() -> list[str]:
    """Every public subpackage or module of photocalib: the layers DESIGN.md lists and any new one."""
    found = {m.name for m in pkgutil.iter_modules(photocalib.__path__) if not m.name.startswith("_")}
    found |= set(getattr(photocalib, "_SUBMODULES", ()))
    # photocalib.errors and photocalib.geom hold what the top level exports; they are not layers.
    return sorted(found - {"errors", "geom"})


_DIRECTIVE = re.compile(r"^\.\. (\w+)::")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|obj|mod|attr|exc):`(?:[^`<]*<)?~?([\w.]+)>?`")


def entries(page: Path, module_name: str) -> tuple[set[str], set[str]]:
    """(names the page's autosummary tables document, full names it links to elsewhere: by
    cross-reference roles or by autosummary entries such as ``~photocalib.fields.BoundedField``)."""
    listed, refs = set(), set()
    in_autosummary = False
    for line in page.read_text(encoding="utf-8").splitlines():
        m = _DIRECTIVE.match(line)
        if m:
            in_autosummary = m.group(1) == "autosummary"
            continue
        if in_autosummary:
            entry = line.strip()
            if line and not line.startswith(" "):
                in_autosummary = False
            elif entry.startswith("~") or "." in entry:
                # A name documented on another page, relative to this page's module if it is
                # inside it (``~fields.BoundedField`` on the page of photocalib).
                target = entry.lstrip("~")
                refs.add(target if target.startswith("photocalib") else f"{module_name}.{target}")
            elif entry and not entry.startswith(":"):
                listed.add(entry)
        refs.update(_ROLE.findall(line))
    return listed, refs


def page_of(module_name: str) -> Path:
    return API / f"{module_name.rsplit('.', 1)[-1]}.rst"


def all_modules() -> list[str]:
    return ["photocalib"] + [f"photocalib.{name}" for name in layers()]


def documented(module_name: str) -> set[str]:
    """Full names (``photocalib.fit.fit_joint``) that have an autosummary entry on their page."""
    listed, _ = entries(page_of(module_name), module_name)
    return {f"{module_name}.{n}" for n in listed}


def test_every_layer_has_a_page_in_the_index():
    index = (API / "index.rst").read_text(encoding="utf-8")
    toctree = set(re.findall(r"^   (\w+)$", index, flags=re.M))
    missing = [m for m in all_modules() if not page_of(m).is_file() or page_of(m).stem not in toctree]
    assert not missing, (
        f"layers without an API page: {missing}; add the layer to LAYERS in docs/api_pages.py, "
        f"run `python docs/api_pages.py` and list the page in docs/api/index.rst")


@pytest.mark.parametrize("module_name", all_modules())
def test_every_public_name_has_a_reference_entry(module_name):
    module = importlib.import_module(module_name)
    page = page_of(module_name)
    if not page.is_file():
        pytest.fail(f"{module_name} has no API page {page}")
    listed, refs = entries(page, module_name)
    everything = set().union(*(documented(m) for m in all_modules() if page_of(m).is_file()))
    everything |= {m for m in all_modules() if page_of(m).is_file()}  # a layer's own page
    missing = []
    for name in public_names(module):
        if name in listed:
            continue
        # A re-export may point to the page of the layer that defines it, which must list it
        # (or, for a layer itself, to that layer's page).
        if any(r.rsplit(".", 1)[-1] == name and r in everything for r in refs):
            continue
        missing.append(name)
    assert not missing, (
        f"public names of {module_name} missing from {page.relative_to(API.parents[1])}: "
        f"{missing}; run `python docs/api_pages.py` to list them (it rewrites the API pages from "
        f"the layers' public names) and commit the result")


def test_reference_lists_nothing_that_is_not_there():
    # An entry for a removed or renamed name would make autosummary fail at build time.
    stale = []
    for module_name in all_modules():
        page = page_of(module_name)
        if not page.is_file():
            continue
        module = importlib.import_module(module_name)
        listed, _ = entries(page, module_name)
        stale += [f"{module_name}.{n}" for n in listed if not hasattr(module, n)]
    assert not stale, f"the API reference lists names that do not exist: {stale}"


def test_public_names_helper_sees_reexports_and_hides_private(tmp_path):
    # public_names is the judge of the tests above: a module without __all__ is read by binding.
    from photocalib import fit, isr

    assert "fit_joint" in public_names(fit) and "ChromaticFlat" in public_names(isr)
    assert not any(n.startswith("_") for n in public_names(fit))
    assert "chromatic" not in public_names(isr)  # a submodule, not a re-export
