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
        transport: str = typer.Option("mqtt", "--transport", help="mqtt, or tcp: the HJ 212 analyzers "
                                      "(protocol hj212 with an MN) become DAUs connected to --gateway; "
                                      "the other messages go to --broker if given"),
        gateway: str = typer.Option(None, "--gateway", help="HOST:PORT of the HJ 212 gateway "
                                    "(--transport tcp)"),
        hj212_version: int = typer.Option(2017, "--hj212-version", help="2017 or 2025 (DAUs over TCP)"),
        secrets: Path = typer.Option(None, "--secrets", help="HJ 212 secrets file with SM4 keys "
                                     "(default: ENVCAL_HJ212_SECRETS; 2025 only)"),
    ) -> None:
        """Run one virtual analyzer per registry entry and publish readings, checks and faults."""
        from envcal.config import setting
        from envcal.registry import RegistryError, load_registry
        from envcal.simulate import Simulator, SimulatorError

        url = str(setting("broker", broker))
        keys = None
        if transport not in ("mqtt", "tcp") or hj212_version not in (2017, 2025):
            typer.echo("envcal simulate: --transport is mqtt or tcp, --hj212-version 2017 or 2025", err=True)
            raise typer.Exit(2)
        if transport == "tcp" and not gateway:
            typer.echo("envcal simulate: --transport tcp needs --gateway HOST:PORT", err=True)
            raise typer.Exit(2)
        try:
            reg = load_registry(stations or setting("stations"))
            secrets_path = secrets or setting("hj212_secrets")
            if transport == "tcp" and secrets_path:
                from envcal.registry import load_hj212_keys

                keys = load_hj212_keys(secrets_path, reg)
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
            if transport == "tcp":
                stats = sim.publish_tcp(gateway, broker, speed,
                                        version=1 if hj212_version == 2017 else 2, keys=keys,
                                        progress=progress)
            else:
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
