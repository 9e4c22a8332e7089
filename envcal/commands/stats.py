"""``envcal stats``: counts for scripts (see :mod:`envcal.stats`)."""

from __future__ import annotations

import json
import sqlite3

import typer
from rich.console import Console
from rich.table import Table

from envcal.config import db_url
from envcal.stats import stats_at


def stats(
    db: str | None = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """Counts: readings (hot and archived), dead letters, data gaps, check summaries, HJ 212
    frames, quirks and backfill, ingest batches, conflicts, alerts, results."""
    url = db_url(db)
    try:
        counts = stats_at(url)
    except sqlite3.Error as exc:  # the SQLite fast path; other failures: envcal.cli.main
        typer.echo(f"error: cannot read {url}: {str(exc).splitlines()[0] if str(exc) else exc!r} "
                   "(run `envcal db upgrade --db URL` first?)", err=True)
        raise typer.Exit(2) from None
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
