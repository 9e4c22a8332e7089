"""Simulator throughput: every registry analyzer, 1-minute data with checks and the default faults."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from benchmarks.common import row

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[dict]:
    from envcal.registry import load_registry
    from envcal.simulate import TZ, Simulator

    reg = load_registry(ROOT / "stations")
    days = 3 if quick else 30
    sim = Simulator(reg, faults=ROOT / "stations" / "faults" / "default.toml", seed=1,
                    start=dt.datetime(2026, 10, 1, tzinfo=TZ), days=days)
    t0 = time.perf_counter()
    n = nbytes = 0
    for _, _, payload in sim.messages():
        n += 1
        nbytes += len(payload)
    s = time.perf_counter() - t0
    return [row(f"simulate_{len(reg.analyzers)}_analyzers_{days}d", s, None, None,
                envcal_per_s=n / s, messages=n, megabytes=nbytes / 1e6)]
