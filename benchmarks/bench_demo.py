"""``envcal demo --headless``: wall time of the whole demo (30 simulated days; 3 with --quick).

One real ``python -m envcal.cli demo --headless --json`` process: database, Mosquitto,
ingest with verification and alerts, the simulator, compaction and the summary. The row
says how long a user waits and whether every simulated message was ingested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import row

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> list[dict]:
    days = 3.0 if quick else 30.0
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "envcal.cli", "demo", "--headless", "--json",
                               "--days", str(days), "--workdir", str(Path(d) / "demo")],
                              capture_output=True, cwd=ROOT, timeout=1800,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace")[-2000:])
    s = json.loads(proc.stdout)
    return [row(f"demo_{days:g}_days", wall, None, None, simulated_days=s["simulated_days"],
                complete=s["complete"], demo_seconds=s["seconds"], readings=s["readings"],
                checks=s["checks"], cpu_count=os.cpu_count())]
