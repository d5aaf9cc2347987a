"""The layering of docs/design.md, checked on the source: every import statement of every module
in src/photocalib (at module level or inside a function) goes down the layers or stays in its
own subpackage; no cycle between subpackages; GalSim only in ``sim``; no import by name."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "photocalib"

#: Rank of each subpackage (docs/design.md, "Layers"); top-level modules (errors, geom, _io,
#: execution, ...) are rank 0. Processing layers share a rank and never import each other.
LAYERS = {
    "fields": 1, "astrometry": 2, "image": 3, "calib": 4,
    # instruments reads headers into Exposures and calibrations: above calib, below isr (whose
    # multi-amplifier ISR may use its amplifier layouts).
    "instruments": 4.5,
    "isr": 5, "background": 5, "measure": 5, "warp": 5, "refcat": 5,
    "fit": 6, "sim": 7, "pipeline": 8, "cli": 9,
}


def _package_of(module: str) -> str:
    """'photocalib.fit.joint' -> 'fit'; 'photocalib.errors' -> '' (top level)."""
    parts = module.split(".")
    if len(parts) < 2:
        return ""
    sub = parts[1]
    return sub if (SRC / sub).is_dir() else ""


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if node.module is None or mod.count(".") == 0:
                # "from . import x" / "from .. import fit": each name may be a subpackage
                out += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, mod))
    return out


def _edges():
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 50, "the source tree was not found"
    for path in modules:
        src_pkg = _package_of(_module_name(path))
        for line, target in _imports(path):
            yield path, line, src_pkg, target


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    missing = subpackages - set(LAYERS)
    assert not missing, f"add {sorted(missing)} to LAYERS with its rank from docs/design.md"


def test_no_upward_or_sideways_import():
    bad = []
    for path, line, src_pkg, target in _edges():
        if not target.startswith("photocalib"):
            continue
        dst_pkg = _package_of(target)
        if not dst_pkg or dst_pkg == src_pkg:
            continue
        src_rank = LAYERS.get(src_pkg, 0)
        if src_rank <= LAYERS[dst_pkg] and src_pkg:
            bad.append(f"{path.relative_to(SRC.parent)}:{line}: {src_pkg} (layer {src_rank}) imports "
                       f"{target} (layer {LAYERS[dst_pkg]})")
        if not src_pkg and path.name != "__init__.py":
            bad.append(f"{path.relative_to(SRC.parent)}:{line}: a top-level module imports {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_cycle_between_subpackages():
    graph: dict[str, set[str]] = defaultdict(set)
    for _path, _line, src_pkg, target in _edges():
        dst_pkg = _package_of(target) if target.startswith("photocalib") else ""
        if src_pkg and dst_pkg and dst_pkg != src_pkg:
            graph[src_pkg].add(dst_pkg)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_galsim_only_in_sim():
    bad = [f"{p.relative_to(SRC.parent)}:{line}" for p, line, src_pkg, target in _edges()
           if target.split(".")[0] == "galsim" and src_pkg != "sim"]
    assert not bad, "GalSim imported outside photocalib.sim: " + ", ".join(bad)


def test_no_import_by_name_in_the_library():
    # importlib hides an edge from this test and turns a broken install into a late surprise.
    bad = [f"{p.relative_to(SRC.parent)}:{line}" for p, line, src_pkg, target in _edges()
           if target.split(".")[0] == "importlib" and src_pkg != "cli"]
    assert not bad, "import by name (importlib) in: " + ", ".join(bad)


def test_the_checker_sees_relative_imports():
    # The walker itself, on this repository's own modules: a known downward edge is found.
    found = {(src, t) for p, _l, src, t in _edges() if p.name == "single.py" and src == "fit"}
    assert ("fit", "photocalib.calib") in found
