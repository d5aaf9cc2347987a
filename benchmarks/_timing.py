"""Timing helper shared by the benchmarks: best of several runs, wall and CPU time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float, Any]:
    """Best wall and CPU seconds of ``repeat`` calls of ``fn``, and the last call's result."""
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, out


def best_times_interleaved(fns: dict[str, Callable[[], Any]], repeat: int = 5) -> dict[str, tuple[float, float, Any]]:
    """Best wall and CPU seconds of each of ``fns``, called in turn for ``repeat`` rounds.

    Alternating the methods puts them under the same load on a shared machine, so the ratio of
    their best times is fair even when absolute times drift. Returns name -> (wall, cpu, result).
    """
    best = {name: (float("inf"), float("inf"), None) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu), out)
    return best
