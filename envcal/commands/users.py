"""``envcal users``: local accounts of the Streamlit app (roles viewer|staff|lab|admin)."""

from __future__ import annotations

import json
import sys

import typer

DB_HELP = "Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"

users_app = typer.Typer(no_args_is_help=True, help="App accounts: add, list.")


def _engine(db: str | None):
    from envcal.config import db_url
    from envcal.db import init_db, make_engine

    engine = make_engine(db_url(db))
    init_db(engine)
    return engine


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="Login name"),
    role: str = typer.Option(..., "--role", help="viewer | staff | lab | admin"),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from standard input (first line)"),
    replace: bool = typer.Option(False, "--replace", help="Change an existing account"),
    sso: bool = typer.Option(False, "--sso", help="No local password: single sign-on (OIDC) only"),
    by: str = typer.Option("cli", "--by", help="Who adds (audit trail)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Create an account; without --password-stdin the password is asked for (twice)."""
    from envcal.users import UserError, add_user

    if sso:
        password = None
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        u = add_user(_engine(db), name, role, password, actor=by, replace=replace)
    except UserError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"user {u.name} ({u.role}) saved")


@users_app.command("list")
def users_list(
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Accounts with role, creation time and state."""
    from envcal.users import list_users

    rows = list_users(_engine(db))
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        state = "disabled" if r["disabled"] else "active"
        typer.echo(f"{r['name']:<24} {r['role']:<7} {state:<9} {r['created_at']}")


def register(app: typer.Typer) -> None:
    """Add the ``users`` group to the ``envcal`` app."""
    app.add_typer(users_app, name="users")
