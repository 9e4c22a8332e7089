"""Helpers shared by the benchmark modules."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls of ``fn`` [s] (first call excluded when repeat > 1
    is the caller's job: warm up JIT code before timing)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def alternate(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Best wall time [s] of each function, run in alternating rounds (a, b, a, b, ...).

    On a shared machine the load drifts; alternating gives each contender the same mix of
    quiet and busy moments, so the ratio is fair even when the absolute figures are not."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def row(name: str, envcal_s: float, baseline: str | None, baseline_s: float | None,
        **extra) -> dict:
    """One results.json row; ``speedup`` = baseline_s / envcal_s (None without a baseline)."""
    speedup = (baseline_s / envcal_s) if (baseline_s and envcal_s) else None
    return {"name": name, "envcal_s": envcal_s, "baseline": baseline,
            "baseline_s": baseline_s, "speedup": speedup, **extra}
