"""``envcal alerts``: list, acknowledge, resolve, evaluate once.

Exit codes: 0 success, 2 refused (unknown alert, wrong state, missing --by/--note).
"""

from __future__ import annotations

import json

import typer

DB_HELP = "Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"

alerts_app = typer.Typer(no_args_is_help=True, help="Alerts: list, ack, resolve, evaluate.")


def _engine(db: str | None):
    from envcal.config import db_url
    from envcal.db import init_db, make_engine

    engine = make_engine(db_url(db))
    init_db(engine)
    return engine


@alerts_app.command("list")
def list_cmd(
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    open_only: bool = typer.Option(False, "--open", help="Only unresolved alerts"),
    analyzer: str | None = typer.Option(None, "--analyzer", help="Only this analyzer"),
    kind: str | None = typer.Option(None, "--kind", help="Only this alert kind"),
) -> None:
    """Alerts, newest first (JSON: id, analyzer, analyte, kind, severity, state, opened_at,
    updated_at, evidence, results, webhook delivery status)."""
    from envcal.alerts import list_alerts

    engine = _engine(db)
    try:
        rows = list_alerts(engine, open_only=open_only, analyzer=analyzer, kind=kind)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="envcal alerts")
    for col in ("id", "analyzer", "analyte", "kind", "severity", "state", "updated", "title", "webhook"):
        table.add_column(col)
    for a in rows:
        hook = a.get("webhook")
        hook_s = "" if not hook else (f"{hook['delivered']} ok, {hook['pending']} pending, {hook['failed']} failed"
                                      + (f" ({hook['last_error']})" if hook.get("last_error") else ""))
        table.add_row(str(a["id"]), a["analyzer"], a["analyte"] or "*", a["kind"], a["severity"],
                      a["state"], a["updated_at"] or "", a["title_zh"] or a["title_en"], hook_s)
    Console().print(table)


def _staff(action: str, alert_id: int, by: str, note: str, db: str | None) -> None:
    from envcal import alerts

    engine = _engine(db)
    try:
        fn = alerts.acknowledge if action == "ack" else alerts.resolve
        out = fn(engine, alert_id, by, note)
    except alerts.AlertError as exc:
        typer.echo(f"refused: {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(json.dumps(out, ensure_ascii=False))


@alerts_app.command("ack")
def ack_cmd(alert_id: int = typer.Argument(..., help="Alert id"),
            by: str = typer.Option(..., "--by", help="Who acknowledges"),
            note: str = typer.Option(..., "--note", help="Why / what is being done"),
            db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Acknowledge an open alert (stops escalation; recorded in the audit trail)."""
    _staff("ack", alert_id, by, note, db)


@alerts_app.command("resolve")
def resolve_cmd(alert_id: int = typer.Argument(..., help="Alert id"),
                by: str = typer.Option(..., "--by", help="Who resolves"),
                note: str = typer.Option(..., "--note", help="What was done"),
                db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Resolve an alert with a note (the same evidence will not reopen it)."""
    _staff("resolve", alert_id, by, note, db)


@alerts_app.command("evaluate")
def evaluate_cmd(db: str | None = typer.Option(None, "--db", help=DB_HELP),
                 stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder"),
                 results: bool = typer.Option(False, "--results",
                                              help="Also re-evaluate every channel's check results"),
                 as_json: bool = typer.Option(False, "--json", help="Print the transitions as JSON")) -> None:
    """Run the timer-based checks once at data time (overdue checks, data quality, revoked
    lots, peer drift, escalation); with --results also the result-driven kinds."""
    from envcal.alerts import AlertConfig, AlertEngine
    from envcal.config import setting
    from envcal.registry import load_registry

    engine = _engine(db)
    try:
        reg = load_registry(str(setting("stations", stations)))
        eng = AlertEngine(engine, reg, config=AlertConfig.from_toml("envcal.toml"))
        out = eng.reevaluate_all() if results else []
        out += eng.tick()
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False))
    else:
        for o in out:
            typer.echo(f"{o['event']:<9} #{o['id']} {o['analyzer']} {o['analyte'] or '*'} {o['kind']} "
                       f"({o['severity']}, {o['state']})")
        typer.echo(f"{len(out)} transitions")


def register(app: typer.Typer) -> None:
    """Add ``alerts`` to the ``envcal`` command."""
    app.add_typer(alerts_app, name="alerts")
