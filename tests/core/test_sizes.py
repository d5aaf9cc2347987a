"""Size limits that keep the code readable: no source file over 800 lines, no function over
120 lines of code (docstring, blank and comment-only lines not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "photocalib"
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 120

#: Known exceptions ("path" or "path::function"), each with its reason; none at present.
EXCEPTIONS: dict[str, str] = {}


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    span = set(range(node.lineno, node.end_lineno + 1))
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        span -= set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i in span if lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def _violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > MAX_FILE_LINES and rel not in EXCEPTIONS:
            out.append(f"{rel}: {len(lines)} lines (limit {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _code_lines(node, lines)
                if n > MAX_FUNCTION_LINES and f"{rel}::{node.name}" not in EXCEPTIONS:
                    out.append(f"{rel}:{node.lineno} {node.name}: {n} lines of code "
                               f"(limit {MAX_FUNCTION_LINES})")
    return out


def test_no_file_or_function_over_the_limits():
    bad = _violations()
    assert not bad, "split these:\n" + "\n".join(bad)


def test_the_counter_counts_code_only():
    src = 'def f():\n    """Doc.\n\n    More.\n    """\n    # why\n    x = 1\n\n    return x\n'
    node = ast.parse(src).body[0]
    assert _code_lines(node, src.splitlines()) == 3  # def, x = 1, return
