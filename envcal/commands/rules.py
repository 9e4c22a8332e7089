"""``envcal rules``: list, show and confirm rule packs (the standards as data)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

DbOption = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)")
JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table")


def _engine_if_any(url: str):
    """An engine when the database exists and has the confirmations table, else None
    (listing packs must not create an empty database file as a side effect)."""
    import sqlalchemy as sa

    from envcal.db import make_engine

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:" and not Path(path).exists():
            return None
    engine = make_engine(url)
    try:
        if not sa.inspect(engine).has_table("rule_confirmation"):
            return None
    except sa.exc.OperationalError:
        return None
    return engine


def _rule_doc(rule) -> dict:
    doc = rule.model_dump(mode="json")
    c = rule.confirmation
    doc["confirmation"] = None if c is None else {"by": c.by, "at": c.at.isoformat(),
                                                  "citation": c.citation}
    return doc


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    rules_app = typer.Typer(no_args_is_help=True,
                            help="Rule packs: acceptance criteria per standard (TOML, versioned).")
    app.add_typer(rules_app, name="rules")

    @rules_app.command("list")
    def rules_list(as_json: bool = JsonOption, db: str | None = DbOption) -> None:
        """List the rule packs with their effective versions and confirmation counts."""
        from envcal.config import db_url
        from envcal.rules import RulePackError
        from envcal.rules.confirmations import load_all

        try:
            packs = load_all(_engine_if_any(db_url(db)))
        except RulePackError as exc:
            _fail(exc)
        rows = []
        for p in packs.values():
            counts = p.counts()
            rows.append({"name": p.name, "standard": p.standard, "version": p.version,
                         "effective_version": p.effective_version, "title_en": p.title_en,
                         "title_zh": p.title_zh, "rules": len(p.rules),
                         "confirmed": counts["confirmed"], "unverified": counts["unverified"],
                         "out_of_control": len(p.out_of_control), "path": str(p.path)})
        if as_json:
            typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        t = Table("pack", "standard", "effective version", "rules", "confirmed", "unverified")
        for r in rows:
            t.add_row(r["name"], r["standard"], r["effective_version"], str(r["rules"]),
                      str(r["confirmed"]), str(r["unverified"]))
        Console().print(t)

    @rules_app.command("show")
    def rules_show(pack: str = typer.Argument(..., help="Pack name, e.g. hj75_2017"),
                   as_json: bool = JsonOption, db: str | None = DbOption) -> None:
        """Show every rule and out-of-control condition of one pack."""
        from envcal.config import db_url
        from envcal.rules import RulePackError
        from envcal.rules.confirmations import load_pack

        try:
            p = load_pack(pack, _engine_if_any(db_url(db)))
        except RulePackError as exc:
            _fail(exc)
        if as_json:
            doc = p.model_dump(mode="json", exclude={"rules"})
            doc["rules"] = [_rule_doc(r) for r in p.rules]
            doc["effective_version"] = p.effective_version
            typer.echo(json.dumps(doc, ensure_ascii=False, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        con = Console()
        con.print(f"[bold]{p.name}[/bold]  {p.standard}  {p.effective_version}\n"
                  f"{p.title_zh}\n{p.title_en}\nmolar volume {p.molar_volume} L/mol")
        t = Table("rule", "kind", "analytes", "quantity", "warn", "limit", "every", "status",
                  "source")
        for r in p.rules:
            every = "" if r.frequency_h is None else f"{r.frequency_h:g} h"
            status = r.status if r.status == "confirmed" else f"[yellow]{r.status}[/yellow]"
            t.add_row(r.id, r.check_kind, ", ".join(r.analytes), r.quantity,
                      f"{r.warn:g} {r.unit}", f"{r.limit:g} {r.unit}", every, status,
                      f"{r.source.standard} {r.source.clause}")
        con.print(t)
        for c in p.out_of_control:
            con.print(f"out of control [bold]{c.id}[/bold]: {c.kind}, {c.factor:g} × limit"
                      + (f" on {c.days} consecutive days" if c.kind == "consecutive" else "")
                      + f" ({c.status}; {c.source.standard} {c.source.clause})")

    @rules_app.command("confirm")
    def rules_confirm(pack: str = typer.Argument(..., help="Pack name"),
                      rule: str = typer.Argument(..., help="Rule id"),
                      citation: str = typer.Option(..., "--citation",
                                                   help="Quotation of the primary text with its clause"),
                      by: str = typer.Option(..., "--by", help="Who confirms"),
                      db: str | None = DbOption) -> None:
        """Confirm a rule against the primary text (stored, audited, overlaid on load)."""
        from envcal.config import db_url
        from envcal.db import init_db, make_engine
        from envcal.rules import RulePackError
        from envcal.rules.confirmations import confirm_rule, load_pack

        engine = make_engine(db_url(db))
        init_db(engine)
        try:
            confirm_rule(engine, pack, rule, citation, by)
        except RulePackError as exc:
            _fail(exc)
        p = load_pack(pack, engine)
        typer.echo(f"confirmed {pack}/{rule} by {by}; pack version now {p.effective_version}")
