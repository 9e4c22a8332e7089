"""Run every ``benchmarks/bench_*.py``, print a table and write ``benchmarks/results.json``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

import benchmarks

OUT = Path(__file__).with_name("results.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("-k", default="", help="only modules whose name contains this")
    args = ap.parse_args(argv)
    rows: list[dict] = []
    failed = 0
    # a partial run (-k) updates its own rows and keeps the others of the last full run
    try:
        kept = json.loads(OUT.read_text()) if args.k else []
    except (OSError, ValueError):
        kept = []
    for mod in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if not mod.name.startswith("bench_") or args.k not in mod.name:
            continue
        module = importlib.import_module(f"benchmarks.{mod.name}")
        try:
            rows.extend(module.run(quick=args.quick))
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
            failed += 1
            traceback.print_exc()
            rows.append({"name": mod.name, "error": traceback.format_exc(limit=1)})
        names = {r["name"] for r in rows}
        OUT.write_text(json.dumps([r for r in kept if r.get("name") not in names] + rows, indent=2))
    table = Table(title="envcal benchmarks (speedup = baseline_s / envcal_s)")
    for col in ("name", "envcal_s", "baseline", "baseline_s", "speedup"):
        table.add_column(col)
    for r in rows:
        def f(v):
            return f"{v:.4g}" if isinstance(v, float) else str(v if v is not None else "-")
        table.add_row(*(f(r.get(c)) for c in ("name", "envcal_s", "baseline", "baseline_s", "speedup")))
    Console().print(table)
    print(f"wrote {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
