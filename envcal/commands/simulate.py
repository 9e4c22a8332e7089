"""``envcal simulate``: virtual analyzers publishing over MQTT, with fault injection."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        broker: str = typer.Option(None, "--broker", help="MQTT broker URL (default: ENVCAL_BROKER "
                                   "or mqtt://127.0.0.1:1883)"),
        stations: Path = typer.Option(None, "--stations", help="Registry TOML file or folder "
                                      "(default: stations/)"),
        speed: float = typer.Option(0.0, "--speed", min=0.0,
                                    help="Simulated seconds per real second; 0 = as fast as possible"),
        days: float = typer.Option(30.0, "--days", min=0.001, help="Simulated days"),
        start: str = typer.Option(None, "--start", help="Simulation start, ISO 8601 (naive = +08:00); "
                                  "default: DAYS days before today's local midnight"),
        faults: Path = typer.Option(None, "--faults", help="Fault file (e.g. "
                                    "stations/faults/default.toml); default: no faults"),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed -> same bytes)"),
        materials: Path = typer.Option(None, "--materials", help="Folder of CRM certificates "
                                       "(default: reference_materials/)"),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
    ) -> None:
        """Run one virtual analyzer per registry entry and publish readings, checks and faults."""
        from envcal.config import setting
        from envcal.registry import RegistryError, load_registry
        from envcal.simulate import Simulator, SimulatorError

        url = str(setting("broker", broker))
        try:
            reg = load_registry(stations or setting("stations"))
            t0 = None
            if start:
                t0 = dt.datetime.fromisoformat(start)
            sim = Simulator(reg, materials=materials, faults=faults, seed=seed, start=t0, days=days)
        except (RegistryError, SimulatorError, ValueError) as exc:
            typer.echo(f"envcal simulate: {exc}", err=True)
            raise typer.Exit(2) from None
        for note in sim.notes:
            typer.echo(f"note: {note}", err=True)
        if not as_json:
            typer.echo(f"simulating {len(reg.analyzers)} analyzers, {days:g} days from "
                       f"{sim.start.isoformat()} -> {url} (speed {speed:g}, seed {seed})")

        def progress(sim_time, n):
            if not as_json and sim_time.hour == 0:
                typer.echo(f"  {sim_time:%Y-%m-%d}  {n} messages")

        try:
            stats = sim.publish(url, speed, progress=progress)
        except (OSError, SimulatorError) as exc:
            typer.echo(f"envcal simulate: {url}: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        if as_json:
            typer.echo(json.dumps(stats))
        else:
            typer.echo("done: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
