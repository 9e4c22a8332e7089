"""``envcal ui``: start the Streamlit app (``app_streamlit.py``) on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

APP = Path(__file__).resolve().parents[2] / "app_streamlit.py"


def ui_command(
    db: str | None = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"),
    port: int = typer.Option(8501, "--port", help="HTTP port"),
    address: str = typer.Option("127.0.0.1", "--address", help="Listen address"),
    archive: str | None = typer.Option(None, "--archive", help="NetCDF archive folder (ENVCAL_ARCHIVE)"),
    stations: str | None = typer.Option(None, "--stations", help="Station registry (ENVCAL_STATIONS)"),
    headless: bool = typer.Option(True, "--headless/--browser", help="Do not open a browser"),
) -> None:
    """Run ``streamlit run app_streamlit.py`` with the database and paths passed through."""
    from envcal.config import db_url, setting
    from envcal.db import init_db, make_engine

    env = dict(os.environ)
    env["ENVCAL_DB"] = db_url(db)
    env["ENVCAL_ARCHIVE"] = str(setting("archive", archive))
    env["ENVCAL_STATIONS"] = str(setting("stations", stations))
    init_db(make_engine(env["ENVCAL_DB"]))
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
           "--server.address", address, "--server.headless", str(headless).lower(),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
    raise typer.Exit(subprocess.call(cmd, env=env))


def register(app: typer.Typer) -> None:
    """Add ``envcal ui`` to the ``envcal`` app."""
    app.command("ui")(ui_command)
