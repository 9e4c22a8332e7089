"""``envcal archive compact``: move closed days from the hot store into the NetCDF archive.

Exit codes: 0 success, 1 when a station-day could not be archived (its rows stay in the
hot store; the reason is printed), 2 bad options.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

archive_app = typer.Typer(no_args_is_help=True, help="The CF NetCDF archive of closed days.")


@archive_app.command("compact")
def compact_cmd(
    db: str | None = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"),
    archive: str | None = typer.Option(None, "--archive", help="Archive folder (default: ENVCAL_ARCHIVE or ./archive)"),
    stations: Path | None = typer.Option(None, "--stations", help="Registry TOML file or folder for "
                                         "file metadata (default: the database's registry tables)"),
    before: str | None = typer.Option(None, "--before", help="Compact UTC days before this date "
                                      "(YYYY-MM-DD; default and upper bound: today)"),
    station: str | None = typer.Option(None, "--station", help="Only this station"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
) -> None:
    """Move closed UTC days from SQL into one CF NetCDF file per station and day."""
    from envcal.archive import compact
    from envcal.config import db_url, setting
    from envcal.db import init_db, make_engine
    from envcal.registry import RegistryError, load_registry

    try:
        cut = dt.date.fromisoformat(before) if before else None
    except ValueError:
        typer.echo(f"--before: not a date (YYYY-MM-DD): {before!r}", err=True)
        raise typer.Exit(2) from None
    reg = None
    if stations is not None:
        try:
            reg = load_registry(stations)
        except RegistryError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
    engine = make_engine(db_url(db))
    init_db(engine)
    folder = Path(str(setting("archive", archive)))
    report = compact(engine, folder, reg, before=cut, station=station)
    if as_json:
        typer.echo(json.dumps([{**d.__dict__, "day": d.day.isoformat()} for d in report.days], indent=2))
    else:
        typer.echo(f"archive: {folder}")
        for line in report.lines():
            typer.echo(line)
    if report.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(archive_app, name="archive")
