"""``envcal certs`` (CRM certificates), ``envcal instruments`` (verification records,
coverage) and ``envcal audit`` (hash-chain check).

Exit codes: 0 success, 1 refused input or a broken audit chain (the reasons on stderr).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

DB_HELP = "Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"

certs_app = typer.Typer(no_args_is_help=True, help="CRM certificates: import, list, show, revoke.")
instruments_app = typer.Typer(no_args_is_help=True,
                              help="Instrument verification records (检定/校准证书) and coverage.")
record_app = typer.Typer(no_args_is_help=True, help="Instrument verification records.")
audit_app = typer.Typer(no_args_is_help=True, help="Audit trail.")
instruments_app.add_typer(record_app, name="verify-record")


def _engine(db: str | None):
    from envcal.config import db_url
    from envcal.db import init_db, make_engine

    engine = make_engine(db_url(db))
    init_db(engine)
    return engine


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _dump(obj) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


# --------------------------------------------------------------------------- certs
@certs_app.command("import")
def certs_import(
    files: list[Path] = typer.Argument(..., help="Certificate JSON file(s)"),
    attachment: Path | None = typer.Option(None, "--attachment", help="PDF (only with one FILE); "
                                           "default: the file the JSON names, next to it"),
    attachments: Path | None = typer.Option(None, "--attachments", help="Folder the JSON's "
                                            "attachment names are resolved in (default: the JSON's "
                                            "own folder); nothing outside it is read"),
    by: str = typer.Option("cli", "--by", help="Who imports (audit trail)"),
    molar_volume: float = typer.Option(22.4, "--molar-volume", help="[L/mol] for the gas unit check"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Validate and store certificates; each file is all-or-nothing. Exit 1 if any is refused."""
    if attachments is not None and not attachments.is_dir():
        _err(f"--attachments {attachments}: not a folder")
        raise typer.Exit(2)
    from envcal.certificates import CertificateError, import_certificate

    if attachment is not None and len(files) != 1:
        _err("--attachment needs exactly one certificate file")
        raise typer.Exit(2)
    engine = _engine(db)
    failed = 0
    for f in files:
        try:
            o = import_certificate(engine, f, attachment=attachment, actor=by,
                                   molar_volume=molar_volume, attachments_dir=attachments)
        except CertificateError as exc:
            failed += 1
            _err(f"refused {exc}")
            continue
        typer.echo(f"{o.status:<10} {o.cert_id} v{o.version}  ({f})")
    if failed:
        _err(f"{failed} of {len(files)} file(s) refused; nothing of them was stored")
        raise typer.Exit(1)


@certs_app.command("list")
def certs_list(
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
    all_versions: bool = typer.Option(False, "--all", help="Include superseded versions"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Certificates with their state today: valid, not_yet_valid, expired, revoked, superseded."""
    from envcal.certificates import list_certificates

    rows = list_certificates(_engine(db), include_superseded=all_versions)
    if as_json:
        _dump(rows)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table()
    for col in ("id", "v", "kind", "analytes", "issued", "expires", "state"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        t.add_row(r["id"], str(r["version"]), r["kind"], ",".join(r["analytes"]) or "-",
                  r["issued"], r["expires"], r["state"])
    Console().print(t)


@certs_app.command("show")
def certs_show(
    cert_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """One lot: versions, certified values (U, k, u = U/k), attachment, revocation, results."""
    from envcal.certificates import CertificateError, show_certificate

    try:
        d = show_certificate(_engine(db), cert_id)
    except CertificateError as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    if as_json:
        _dump(d)
        return
    typer.echo(f"{d['id']}  {d['name']}  ({d['kind']}, v{d['version']}, {d['state']})")
    typer.echo(f"  CRM {d['crm_code']} lot {d['lot']}, producer {d['producer']}, matrix {d['matrix']}")
    typer.echo(f"  issued {d['issued']}, expires {d['expires']}; imported {d['imported_at']} by "
               f"{d['imported_by']}")
    for v in d["values"]:
        typer.echo(f"  {v['analyte']:<8} {v['value']:g} {v['unit']}  U = {v['U']:g} (k = {v['k']:g}),"
                   f" u = {v['u']:.4g}")
    if d["attachment_sha256"]:
        typer.echo(f"  attachment sha256 {d['attachment_sha256']}")
    if d["revoked_at"]:
        typer.echo(f"  REVOKED {d['revoked_at']} by {d['revoked_by']}: {d['revoked_reason']}")
    if len(d["versions"]) > 1:
        typer.echo("  versions: " + ", ".join(f"v{x['version']} ({x['state']})" for x in d["versions"]))
    typer.echo(f"  used by {len(d['results'])} check result(s)")


@certs_app.command("revoke")
def certs_revoke(
    cert_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option(..., "--reason", help="Why the lot is revoked"),
    by: str = typer.Option("cli", "--by", help="Who revokes (audit trail)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Revoke a lot: never used for new verdicts; results that used it are marked for review."""
    from envcal.certificates import CertificateError, revoke_certificate

    try:
        o = revoke_certificate(_engine(db), cert_id, reason, actor=by)
    except CertificateError as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    if o.status == "already_revoked":
        typer.echo(f"{cert_id} was already revoked on {o.revoked_at.isoformat()}")
        return
    typer.echo(f"revoked {cert_id}; {len(o.results)} check result(s) marked for review "
               f"(finding {o.finding_id})")
    for r in o.results:
        typer.echo(f"  result {r.get('id')}")


# --------------------------------------------------------------------------- instruments
def _sync_stations(engine, stations: str | None) -> None:
    from envcal.config import setting
    from envcal.registry import load_registry, sync_registry

    path = Path(str(setting("stations", stations)))
    if path.exists():
        sync_registry(engine, load_registry(path))


@record_app.command("add")
def record_add(
    analyzer: str = typer.Option(..., "--analyzer", help="Analyzer id"),
    number: str = typer.Option(..., "--number", help="Certificate number (证书编号)"),
    institute: str = typer.Option(..., "--institute", help="Metrology institute"),
    date: str = typer.Option(..., "--date", help="Verification date YYYY-MM-DD"),
    result: str = typer.Option(..., "--result", help="qualified | not_qualified"),
    valid_until: str = typer.Option(..., "--valid-until", help="Valid until YYYY-MM-DD"),
    errors: str | None = typer.Option(None, "--errors", help='Errors found, JSON object'),
    pdf: Path | None = typer.Option(None, "--pdf", help="Certificate PDF"),
    by: str = typer.Option("cli", "--by", help="Who records (audit trail)"),
    stations: str | None = typer.Option(None, "--stations",
                                        help="Registry to sync first (default: ENVCAL_STATIONS or stations/)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Record an analyzer's legal verification / calibration certificate."""
    from envcal.instruments import VerificationRecordError, add_verification_record
    from envcal.registry import RegistryError

    engine = _engine(db)
    try:
        _sync_stations(engine, stations)
    except RegistryError as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    try:
        o = add_verification_record(engine, analyzer, number, institute, date, result, valid_until,
                                    errors=errors, pdf=pdf, actor=by)
    except VerificationRecordError as exc:
        _err(f"refused {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"{o.status} verification record {o.cert_number} of {o.analyzer_id} (id {o.id})")


@record_app.command("list")
def record_list(
    analyzer: str | None = typer.Option(None, "--analyzer", help="Only this analyzer"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Instrument verification records."""
    from envcal.instruments import list_verification_records

    rows = list_verification_records(_engine(db), analyzer)
    if as_json:
        _dump(rows)
        return
    for r in rows:
        typer.echo(f"{r['analyzer_id']:<16} {r['number']:<20} {r['date']} .. {r['valid_until']}  "
                   f"{r['result']:<13} {r['institute']}")


@instruments_app.command("coverage")
def instruments_coverage(
    at: str | None = typer.Option(None, "--at", help="ISO time with offset (default: now)"),
    stations: str | None = typer.Option(None, "--stations", help="Registry (analyzers counted)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
    records_only: bool = typer.Option(False, "--records-only",
                                      help="Judge instrument verification records only, not routine checks"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Verification coverage rate = verified analyzers / analyzers in the registry (target 96 %)."""
    from envcal.config import setting
    from envcal.instruments import coverage
    from envcal.registry import RegistryError, load_registry

    t = dt.datetime.fromisoformat(at) if at else dt.datetime.now(dt.UTC)
    if t.tzinfo is None:
        _err("--at needs a UTC offset, e.g. 2026-11-27T08:00:00+08:00")
        raise typer.Exit(2)
    path = Path(str(setting("stations", stations)))
    try:
        reg = load_registry(path) if path.exists() else None
    except RegistryError as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    rep = coverage(_engine(db), t, reg, routine=not records_only)
    if as_json:
        _dump(rep.to_dict())
        return
    rate = "n/a" if rep.rate is None else f"{rep.rate:.1%}"
    typer.echo(f"coverage {rate} ({rep.verified}/{rep.total}), target {rep.target:.0%}: "
               f"{'met' if rep.meets_target else 'NOT met'}; routine checks: "
               f"{'evaluated' if rep.checks_evaluated else 'not evaluated'}")
    for a in rep.analyzers:
        if not a.verified:
            typer.echo(f"  {a.analyzer_id}: " + "; ".join(a.reasons))


# --------------------------------------------------------------------------- audit
@audit_app.command("verify")
def audit_verify(
    head: str | None = typer.Option(None, "--head", help="Head hash recorded earlier (detects "
                                    "removal of the newest entries)"),
    unkeyed: bool = typer.Option(False, "--unkeyed", help="Without an audit key: check the plain "
                                 "hash chain and covered rows only (someone with database write "
                                 "access can rewrite it undetected)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Check the audit trail: hashes, links, MACs, the anchored head (ENVCAL_AUDIT_KEY_FILE,
    ENVCAL_AUDIT_HEAD_FILE) and the covered certificate, rule and account rows; exit 1 listing
    every problem."""
    from envcal.audit import AuditKeyError, head_path, load_key, verify_chain_status

    try:
        key = None if unkeyed else load_key()
    except AuditKeyError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    if key is None and not unkeyed:
        _err("no audit key configured (ENVCAL_AUDIT_KEY_FILE or audit_key_file in envcal.toml; "
             "create one with `envcal audit init-key FILE`); --unkeyed checks the plain chain only")
        raise typer.Exit(2)
    st = verify_chain_status(_engine(db), head, key=key, head_file=head_path() if key else None)
    if st.problems:
        for p in st.problems:
            _err(str(p))
        _err(f"audit chain BROKEN: {len(st.problems)} problem(s) in {st.entries} entries")
        raise typer.Exit(1)
    how = (f"keyed, anchored head in {head_path()}" + (f", {st.after_anchor} newer entries"
                                                        if st.after_anchor else "")
           if st.keyed else "UNKEYED: not protected against database writes")
    typer.echo(f"audit chain intact: {st.entries} entries, head {st.head} ({how})")


@audit_app.command("init-key")
def audit_init_key(
    path: Path = typer.Argument(..., help="Key file to create (mode 0600); point "
                                "ENVCAL_AUDIT_KEY_FILE at it on every host that writes the trail"),
) -> None:
    """Create a random audit key. Keep it off the database server: whoever has it can forge
    entries."""
    from envcal.audit import init_key

    try:
        init_key(path)
    except FileExistsError:
        _err(f"{path}: exists; an audit key is never overwritten")
        raise typer.Exit(2) from None
    except OSError as exc:
        _err(f"{path}: {exc.strerror}")
        raise typer.Exit(2) from None
    typer.echo(f"wrote audit key {path} (mode 0600); set ENVCAL_AUDIT_KEY_FILE={path}")


def register(app: typer.Typer) -> None:
    """Add the ``certs``, ``instruments`` and ``audit`` groups to the ``envcal`` app."""
    app.add_typer(certs_app, name="certs")
    app.add_typer(instruments_app, name="instruments")
    app.add_typer(audit_app, name="audit")
