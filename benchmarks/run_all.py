"""Run every benchmark in this folder (each ``bench_*.py`` exposing ``main()``) in one process.

Usage: ``python benchmarks/run_all.py [name ...]`` where a name selects ``bench_<name>.py``.
Each benchmark prints its own table of timings and ratios against its peer library.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    here = Path(__file__).resolve().parent
    files = sorted(here.glob("bench_*.py"))
    if argv:
        wanted = {f"bench_{name.removeprefix('bench_').removesuffix('.py')}.py" for name in argv}
        files = [f for f in files if f.name in wanted]
    failed = []
    for path in files:
        print(f"\n=== {path.stem} ===", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.argv = [str(path)]
        t0 = time.perf_counter()
        try:
            spec.loader.exec_module(module)
            module.main()
        except Exception as exc:  # noqa: BLE001 - report and go on to the next benchmark
            failed.append(path.stem)
            print(f"{path.stem} FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"({path.stem}: {time.perf_counter() - t0:.1f} s)", flush=True)
    if failed:
        print("\nfailed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
