"""Write docs/api/<layer>.rst, one reference page per layer, from the layers' public names.

    python docs/api_pages.py          # after adding, renaming or removing a public name

Each page shows the layer's docstring and lists every public name (``__all__``, or what the
layer re-exports without a leading underscore) in autosummary tables, grouped into classes,
functions, constants and modules; autosummary then documents each from its docstring. A name
re-exported from the layer that defines it links to that layer's page instead of being
documented twice. tests/docs/test_api_reference.py checks the pages against the code.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

API = Path(__file__).resolve().parent / "api"
sys.path.insert(0, str(API.parents[1] / "src"))

#: The layers in the order they build on one another (DESIGN.md); the top level comes first.
LAYERS = ["execution", "fields", "astrometry", "image", "calib", "instruments", "isr", "background",
          "measure", "warp", "refcat", "fit", "sim", "pipeline", "cli"]


def public_names(module) -> list[str]:
    """``__all__``, or the module's bindings without a leading underscore (submodules excepted)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [n for n, v in vars(module).items()
            if not n.startswith("_") and n != "annotations" and not inspect.ismodule(v)]


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    return "func" if inspect.isfunction(obj) else "data"


def _homes(modules: list[str]) -> dict[int, str]:
    """For each class and function: the first module (in layer order) that defines it."""
    homes: dict[int, str] = {}
    for name in modules:
        module = importlib.import_module(name)
        for attr in public_names(module):
            obj = getattr(module, attr)
            if _kind(obj) not in ("class", "func"):
                continue
            defined = getattr(obj, "__module__", "") or ""
            if name == "photocalib":
                if defined in ("photocalib.errors", "photocalib.geom"):
                    homes.setdefault(id(obj), name)
            elif defined == name or defined.startswith(name + "."):
                homes.setdefault(id(obj), name)
    return homes


def _relative(target: str, current: str) -> str:
    """An autosummary entry for ``target`` on the page of module ``current`` (autosummary wants
    names inside the current module written relative to it)."""
    if target.startswith(current + "."):
        target = target[len(current) + 1:]
    return f"   ~{target}"


def page(name: str, homes: dict[int, str]) -> str:
    module = importlib.import_module(name)
    own: dict[str, list[str]] = {"class": [], "func": [], "data": [], "module": []}
    links = []
    for attr in public_names(module):
        obj = getattr(module, attr)
        kind = _kind(obj)
        home = homes.get(id(obj)) if kind in ("class", "func") else None
        if kind == "module" and obj.__name__.count(".") == 1:
            links.append(_relative(obj.__name__, name))
        elif home and home != name:
            links.append(_relative(f"{home}.{attr}", name))
        else:
            own[kind].append(attr)
    label = name.rsplit(".", 1)[-1]
    title = f"``{name}``"
    out = [f".. _api-{label}:", "", title, "=" * len(title), "",
           f".. automodule:: {name}", "   :no-members:", "", f".. currentmodule:: {name}", ""]
    for kind, head in (("class", "Classes"), ("func", "Functions"), ("data", "Constants"),
                       ("module", "Modules")):
        if own[kind]:
            out += [head, "-" * len(head), "", ".. autosummary::", "   :toctree: generated",
                     "   :nosignatures:", "", *(f"   {n}" for n in own[kind]), ""]
    if links:
        head = "Also available here"
        out += [head, "-" * len(head), "", "Documented on the page of the layer that defines them:",
                "", ".. autosummary::", "   :nosignatures:", "", *links, ""]
    return "\n".join(out)


def main() -> int:
    import photocalib

    found = {m for m in dir(photocalib) if not m.startswith("_")}
    # photocalib.errors and photocalib.geom hold what the top level exports; they are not layers.
    unknown = sorted(n for n in found if inspect.ismodule(getattr(photocalib, n, None))
                     and n not in LAYERS and n not in ("errors", "geom"))
    if unknown:
        print(f"new layers {unknown}: add them to LAYERS in {__file__} in their place", file=sys.stderr)
    modules = ["photocalib"] + [f"photocalib.{n}" for n in LAYERS]
    homes = _homes(modules)
    for name in modules:
        path = API / f"{name.rsplit('.', 1)[-1]}.rst"
        text = page(name, homes)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    index = API / "index.rst"
    missing = [n for n in ["photocalib", *LAYERS] if f"\n   {n}\n" not in index.read_text(encoding="utf-8")]
    if missing:
        print(f"list {missing} in the toctree of {index}", file=sys.stderr)
    return 1 if unknown or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
