"""``envcal stats``: counts for scripts (see :mod:`envcal.stats`)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from envcal.config import db_url
from envcal.db import make_engine
from envcal.stats import stats as compute


def stats(
    db: str | None = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """Counts: readings (hot and archived), dead letters, data gaps, check summaries, HJ 212
    frames, ingest batches, alerts, results."""
    engine = make_engine(db_url(db))
    try:
        counts = compute(engine)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(counts))
        return
    table = Table(title="envcal stats")
    table.add_column("what")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, str(v))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``stats`` to the ``envcal`` command."""
    app.command("stats")(stats)
