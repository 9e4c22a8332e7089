"""``envcal demo``: broker, database, ingest, verification, alerts, simulator and UI in one go."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import typer

_MARK = {"ok": "[green]✓", "fail": "[red]✗", "skip": "[yellow]–", "info": "[cyan]·"}


def demo(
    headless: bool = typer.Option(False, "--headless", help="No Streamlit app; stop everything and "
                                  "return after the summary"),
    duration: float = typer.Option(None, "--duration", min=1.0, help="Wall-time budget of the "
                                   "fast-forward [s] (default: until the simulation is ingested; "
                                   "the simulator publishes 30 days in about 120 s, and "
                                   "ingest, verification and compaction finish after it: "
                                   "about 4-5 min in all on a 2-core machine)"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout "
                                 "(status lines go to stderr)"),
    workdir: Path = typer.Option(None, "--workdir", help="Working folder (default: a fresh "
                                 "temporary one, kept afterwards)"),
    days: float = typer.Option(30.0, "--days", min=0.1, help="Simulated days"),
    speed: float = typer.Option(None, "--speed", min=0.0, help="Simulated seconds per real second "
                                "(default: days x 86400 / duration)"),
    seed: int = typer.Option(0, "--seed", help="Simulator seed"),
    faults: Path = typer.Option(None, "--faults", help="Fault file (default: "
                                "stations/faults/default.toml)"),
    port: int = typer.Option(None, "--port", min=1, max=65535, help="Broker port (default: a free "
                             "loopback port)"),
    ui_port: int = typer.Option(None, "--ui-port", min=1, max=65535, help="Streamlit port "
                                "(default: a free one)"),
    transport: str = typer.Option("tcp", "--transport", help="tcp: the HJ 212 analyzers are DAUs on "
                                  "the HJ 212 gateway (envcal gateway); mqtt: everything on MQTT"),
) -> None:
    """Run the whole system locally: Mosquitto, SQLite, ingest + verification + alerts, the
    station simulator with the default fault scenario fast-forwarding, and the Streamlit app.
    Ctrl-C stops everything it started."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from envcal.demo import Demo, DemoError, DemoOptions

    console = Console(stderr=as_json, highlight=False)

    def status(component: str, state: str, message: str) -> None:
        mark = _MARK.get(state, "[white]?")
        console.print(f"{mark} {component:<9}[/] {message}")

    progress = Progress(TextColumn("[bold]simulated day[/] {task.fields[day]:>5.1f}/{task.total:g}"),
                        BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        console=console, transient=True)
    task = progress.add_task("sim", total=days, day=0.0, info="")

    def on_progress(day, total, published, ingested, results, alerts) -> None:
        progress.update(task, completed=min(day, total), day=day,
                        info=f"ingested {ingested:,} messages · results {results:,} · "
                             f"alerts {alerts:,}")

    def _term(signum, _frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    opts = DemoOptions(workdir=workdir, headless=headless, duration=duration, days=days,
                       speed=speed, seed=seed, faults=faults, port=port, ui_port=ui_port,
                       transport=transport)
    if transport not in ("tcp", "mqtt"):
        status("gateway", "fail", f"--transport must be tcp or mqtt, not {transport!r}")
        raise typer.Exit(2)
    if faults is not None and not faults.is_file():
        status("simulator", "fail", f"{faults}: no such fault file")
        raise typer.Exit(2)
    d = Demo(opts, status=status, progress=on_progress)
    console.print(f"[bold]envcal demo[/] in {d.workdir} (pids in {d.children.path.name}; Ctrl-C stops "
                  "everything)")
    try:
        with progress:
            summary = d.run()
    except DemoError as exc:
        status("demo", "fail", str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("interrupted: every process the demo started is stopped "
                      f"(see {d.children.path})")
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_summary(console, summary)
    if d.ui_proc is not None:
        console.print(f"[bold]open {d.ui_url}[/] · the app stays up until Ctrl-C")
        from envcal.ui.seed import format_accounts

        console.print(f"sign in as: {format_accounts(d.accounts)}", markup=False)
        try:
            d.wait_ui()
        except KeyboardInterrupt:
            console.print("stopped: every process the demo started is gone")


def _print_summary(console, s: dict) -> None:
    from rich.table import Table

    t = Table(title="envcal demo: what happened", show_header=False)
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("readings (hot + archived)", f"{s['readings']:,}")
    t.add_row("checks evaluated", f"{s['checks']:,}")
    for verdict, n in s["results"].items():
        t.add_row(f"  results: {verdict}", f"{n:,}")
    for kind, n in s["alerts"].items():
        t.add_row(f"  alerts: {kind}", f"{n:,}")
    t.add_row("dead letters", f"{s['dead_letters']:,}")
    t.add_row("data gaps", f"{s['data_gaps']:,}")
    t.add_row("NetCDF files", f"{s['archive_files']:,}")
    console.print(t)
    for aid, kinds in s["alerts_by_analyzer"].items():
        console.print(f"  {aid:<14} " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    state = "complete" if s.get("complete") else "stopped at --duration"
    console.print(f"{s['simulated_days']:g} simulated days ({state}) in {s.get('seconds', 0):g} s; "
                  f"files in {s['workdir']}")


def register(app: typer.Typer) -> None:
    """Add ``envcal demo`` to the ``envcal`` app."""
    app.command("demo")(demo)
