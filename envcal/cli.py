"""The ``envcal`` command line (names are a contract: see DESIGN.md section 4).

Each area registers its commands from :mod:`envcal.commands`. Every command that touches
storage takes ``--db URL`` (default ``ENVCAL_DB``, else ``envcal.toml``, else
``sqlite:///envcal.db``).

Start-up stays fast because a command's module is imported only when that command runs:
:data:`COMMANDS` is the one table of top-level command -> the module whose
``register(app)`` adds it, with the one-line help shown by ``envcal --help`` (which imports
none of them). **Adding a command is one line in** :data:`COMMANDS`; the module keeps its
``register(app)`` function. A module registering several commands appears once per command.
"""

from __future__ import annotations

import importlib

from envcal import numba_cache

numba_cache.configure()  # before any command module imports numba (see envcal.numba_cache)

import click  # noqa: E402
import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

#: top-level command -> (module with ``register(app)``, help line for ``envcal --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("envcal.commands.demo", "Run the whole system locally: Mosquitto, SQLite, ingest + "
             "verification + alerts, the simulator and the Streamlit app."),
    "ingest": ("envcal.commands.ingest", "Run the ingest service until SIGTERM/SIGINT: MQTT -> "
               "validated rows, bad input -> dead letters."),
    "stats": ("envcal.commands.stats", "Counts: readings (hot and archived), dead letters, data "
              "gaps, and what later areas add."),
    "simulate": ("envcal.commands.simulate", "Run one virtual analyzer per registry entry and "
                 "publish readings, checks and faults."),
    "ui": ("envcal.commands.ui", "Run ``streamlit run app_streamlit.py`` with the database and "
           "paths passed through."),
    "alerts": ("envcal.commands.alerts", "Alerts: list, ack, resolve, evaluate."),
    "archive": ("envcal.commands.archive", "The CF NetCDF archive of closed days."),
    "certs": ("envcal.commands.certs", "CRM certificates: import, list, show, revoke."),
    "instruments": ("envcal.commands.certs", "Instrument verification records (检定/校准证书) and "
                    "coverage."),
    "audit": ("envcal.commands.certs", "Audit trail."),
    "hj212": ("envcal.commands.hj212", "HJ 212-2017/2025 frames (decode / encode)."),
    "gateway": ("envcal.commands.gateway", "HJ 212 over TCP from data acquisition units (DAUs) -> "
                "MQTT; commands down to them."),
    "mqtt": ("envcal.commands.mqtt", "MQTT broker security (Mosquitto)."),
    "rules": ("envcal.commands.rules", "Rule packs: acceptance criteria per standard (TOML, "
              "versioned)."),
    "users": ("envcal.commands.users", "App accounts: add, list."),
    "results": ("envcal.commands.verify", "Check results (what was decided)."),
    "verify": ("envcal.commands.verify", "Verification: evaluate and replay checks."),
}


class LazyGroup(TyperGroup):
    """The top-level group: imports a command's module from :data:`COMMANDS` on first use."""

    listing = False  # True while ``envcal --help`` prints the table (no module imported)

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return own + [n for n in COMMANDS if n not in own]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None or cmd_name not in COMMANDS:
            return cmd
        module, short = COMMANDS[cmd_name]
        if self.listing:
            return click.Command(cmd_name, short_help=short)
        sub = typer.Typer()
        importlib.import_module(module).register(sub)
        cmd = typer.main.get_group(sub).get_command(ctx, cmd_name)
        if cmd is not None:
            self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False,
                  help="envcal: traceable verification of environmental monitoring analyzers.")

DbOption = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)")

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: str | None = DbOption) -> None:
    """Create or migrate the database to the newest schema."""
    from envcal.config import db_url
    from envcal.db import init_db, make_engine

    url = db_url(db)
    init_db(make_engine(url))
    typer.echo(f"database at head: {url}")


def main() -> None:
    try:
        app()
    except Exception as exc:  # a database the user named that cannot be used: one line, exit 2
        from envcal.db import user_error

        msg = user_error(exc)
        if msg is None:
            raise
        typer.echo(f"error: {msg}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
