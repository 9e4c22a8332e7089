"""Helpers shared by the benchmark modules."""

from __future__ import annotations

import gc
import queue
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def fresh_db(path: Path):
    """A migrated SQLite database at ``path`` with the repository's registry synced.

    Returns
    -------
    (Engine, Registry)
    """
    from envcal.db import init_db, make_engine
    from envcal.registry import load_registry, sync_registry

    eng = make_engine(f"sqlite:///{path}")
    init_db(eng)
    reg = load_registry(ROOT / "stations")
    sync_registry(eng, reg)
    return eng, reg


def next_batch(q: queue.SimpleQueue, size: int, wait_s: float = 0.2) -> list:
    """What a bare subscriber's worker commits at once: the next item of ``q`` (blocking),
    then whatever else arrives within ``wait_s`` [s], at most ``size`` items."""
    batch = [q.get()]
    deadline = time.monotonic() + wait_s
    while len(batch) < size:
        try:
            batch.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
    return batch
