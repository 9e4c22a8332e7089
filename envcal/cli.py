"""The ``envcal`` command line (names are a contract: see DESIGN.md section 4).

Each area registers its commands from :mod:`envcal.commands`. Every command that touches
storage takes ``--db URL`` (default ``ENVCAL_DB``, else ``envcal.toml``, else
``sqlite:///envcal.db``).
"""

from __future__ import annotations

import importlib
import pkgutil

from envcal import numba_cache

numba_cache.configure()  # before any command module imports numba (see envcal.numba_cache)

import typer  # noqa: E402

import envcal.commands  # noqa: E402

app = typer.Typer(no_args_is_help=True, add_completion=False,
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


def _register_all() -> None:
    for mod in sorted(pkgutil.iter_modules(envcal.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"envcal.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


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
