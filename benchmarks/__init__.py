"""envcal benchmarks: ``make bench`` (``python -m benchmarks``).

Each ``benchmarks/bench_*.py`` module exposes ``run(quick: bool) -> list[dict]`` returning
rows ``{"name", "envcal_s", "baseline", "baseline_s", "speedup", ...}`` (speedup =
baseline_s / envcal_s; throughput rows add ``envcal_per_s`` and ``baseline_per_s``).
Baselines run in the same process and the same run; figures are ratios, never absolute
assertions.
"""

from envcal import numba_cache

numba_cache.configure()  # before a benchmark imports numba (see envcal.numba_cache)
