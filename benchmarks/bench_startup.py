"""Process start-up of the commands users type: ``envcal --help`` and ``envcal stats --json``.

Each run is a fresh ``python -m envcal.cli`` process (best of N wall times). The baseline is
a bare ``python -c "import typer"`` process started alternately in the same run: the
interpreter plus the command-line library, i.e. the floor any Typer command pays. Target:
each command < 0.5 s on the 2-core reference machine.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import row


def _wall(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _alternate(cmd: list[str], base: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time [s] of ``cmd`` and of ``base``, run in alternating rounds."""
    t_cmd = t_base = float("inf")
    for _ in range(repeat):
        t_cmd = min(t_cmd, _wall(cmd))
        t_base = min(t_base, _wall(base))
    return t_cmd, t_base


def run(quick: bool) -> list[dict]:
    from envcal.db import init_db, make_engine

    repeat = 3 if quick else 7
    py = sys.executable
    base = [py, "-c", "import typer"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'startup.db'}"
        init_db(make_engine(url))
        for name, args in (("startup_envcal_help", ["--help"]),
                           ("startup_envcal_stats_json", ["stats", "--json", "--db", url])):
            t_cmd, t_base = _alternate([py, "-m", "envcal.cli", *args], base, repeat)
            rows.append(row(name, t_cmd, "python -c 'import typer' (interpreter + CLI library)",
                            t_base, target_s=0.5, meets_target=t_cmd < 0.5))
    return rows
