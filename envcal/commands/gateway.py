"""``envcal gateway`` (the HJ 212 TCP server for DAUs), ``gateway send`` and ``gateway devices``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path

import typer

gateway_app = typer.Typer(help="HJ 212 over TCP: the server DAUs connect to, and commands down to them.")


def _fail(message: str) -> None:
    typer.echo(f"✗ {message}", err=True)
    raise typer.Exit(2)


def _credentials(username: str | None, password_file: Path | None) -> tuple[str | None, str | None]:
    from envcal.commands.ingest import read_password
    from envcal.config import setting

    user = setting("mqtt_username", username, default=None)
    if password_file is None:
        return user, None
    try:
        return user, read_password(password_file, user)
    except (OSError, ValueError) as exc:
        _fail(f"--password-file: {exc}")
    return user, None


def _keys(path: str | None, reg) -> dict[str, bytes]:
    """SM4 keys by analyzer id from the secrets file (``--secrets`` / ``ENVCAL_HJ212_SECRETS``)."""
    if path is None:
        return {}
    from envcal.registry import RegistryError, load_hj212_keys

    try:
        return load_hj212_keys(path, reg)
    except RegistryError as exc:
        _fail(f"--secrets: {exc}")
    return {}


@gateway_app.callback(invoke_without_command=True)
def gateway(
    ctx: typer.Context,
    listen: str | None = typer.Option(None, "--listen", help="HOST:PORT to accept DAUs on, e.g. 0.0.0.0:21212"),
    broker: str | None = typer.Option(None, "--broker", help="mqtt://HOST:PORT (default: ENVCAL_BROKER)"),
    stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder"),
    secrets: Path | None = typer.Option(None, "--secrets", help="SM4 keys of 2025 DAUs: TOML [sm4] \"analyzer id\" = "
                                        "\"32 hex digits\" (default: ENVCAL_HJ212_SECRETS)"),
    allow: list[str] = typer.Option([], "--allow", help="Peer address or CIDR allowed to connect (repeatable; default any)"),
    max_connections: int = typer.Option(10_000, "--max-connections", min=1, help="Open DAU connections at most"),
    max_buffer: int = typer.Option(64 * 1024, "--max-buffer", min=1024, help="Bytes held per connection without a frame"),
    max_frame: int = typer.Option(8 * 1024, "--max-frame", min=64, help="Largest frame [bytes]"),
    idle_timeout: float = typer.Option(600.0, "--idle-timeout", min=1.0, help="Close a silent connection after [s]"),
    command_timeout: float = typer.Option(10.0, "--command-timeout", min=0.1, help="HJ 212 Table 1 timeout [s]"),
    command_retries: int = typer.Option(3, "--command-retries", min=0, help="HJ 212 Table 1 resends"),
    backfill: bool = typer.Option(True, "--backfill/--no-backfill", help="Ask DAUs for history to fill holes"),
    backfill_gap: float = typer.Option(30.0, "--backfill-gap", min=0.0, help="Least time between two backfill requests [s]"),
    client_id: str = typer.Option("envcal-gateway", "--client-id", help="MQTT client id"),
    username: str | None = typer.Option(None, "--username", help="MQTT user name (default: ENVCAL_MQTT_USERNAME)"),
    password_file: Path | None = typer.Option(None, "--password-file", help="File with the MQTT password (or USER=PASSWORD lines)"),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="PEM CA trusted for an mqtts:// broker"),
    broker_timeout: float = typer.Option(10.0, "--broker-timeout", min=0.1, help="Wait this long for the broker at start [s]"),
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level"),
) -> None:
    """Run the gateway until SIGTERM/SIGINT: DAU frames -> MQTT, answers after PUBACK."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio
    import signal

    from envcal.config import setting
    from envcal.gateway.run import GatewayStartError, Options, parse_allow, parse_listen, run
    from envcal.gateway.server import Limits
    from envcal.registry import RegistryError, load_registry

    if listen is None:
        _fail("--listen HOST:PORT is required (e.g. --listen 0.0.0.0:21212)")
    try:
        host, port = parse_listen(listen)
        nets = parse_allow(allow)
    except ValueError as exc:
        _fail(str(exc))
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    stations_path = str(setting("stations", stations))
    try:
        reg = load_registry(stations_path)
    except RegistryError as exc:
        _fail(f"registry: {exc}")
    n_mn = sum(1 for a in reg.analyzers.values() if a.mn)
    if n_mn == 0:
        _fail(f"registry {stations_path}: no analyzer has an HJ 212 MN")
    keys = _keys(setting("hj212_secrets", str(secrets) if secrets else None, default=None), reg)
    user, password = _credentials(username, password_file)
    broker_url = str(setting("broker", broker))
    opts = Options(broker_url=broker_url, host=host, port=port, allow=nets, keys=keys,
                   limits=Limits(max_connections=max_connections, max_buffer=max_buffer,
                                 max_frame=max_frame, idle_timeout=idle_timeout),
                   client_id=client_id, username=user, password=password,
                   ca_file=str(ca_file) if ca_file else None, broker_timeout=broker_timeout,
                   command_timeout=command_timeout, command_retries=command_retries,
                   backfill=backfill, backfill_gap=backfill_gap)

    def ready(gw) -> None:
        h, p = gw.address
        typer.echo(f"✓ gateway listening on {h}:{p}, {n_mn} MNs from {stations_path}, "
                   f"handing off to {broker_url}", err=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        gw = await run(reg, opts, stop=stop, ready=ready)
        typer.echo(f"stopped: {json.dumps(dict(gw.counts))}", err=True)

    try:
        asyncio.run(main())
    except GatewayStartError as exc:
        _fail(str(exc))
    except ValueError as exc:  # a bad broker URL
        _fail(f"--broker: {exc}")


def _parse_time(text: str | None, what: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{what} {text!r}: want ISO 8601, e.g. 2026-12-03T08:00+08:00")
    if t.tzinfo is None:
        _fail(f"{what} {text!r}: give a UTC offset (e.g. +08:00)")
    return t


@gateway_app.command("send")
def send(
    cn: str = typer.Argument(..., help="1011 1012 2031 2051 2061 3020 3011 3024"),
    mn: str | None = typer.Option(None, "--mn", help="The DAU's MN"),
    analyzer: str | None = typer.Option(None, "--analyzer", help="Or the analyzer id"),
    begin: str | None = typer.Option(None, "--begin", help="BeginTime of a history request (ISO 8601)"),
    end: str | None = typer.Option(None, "--end", help="EndTime of a history request (ISO 8601)"),
    param: list[str] = typer.Option([], "--param", help="KEY=VALUE item, e.g. PolId=a21026 (repeatable)"),
    user: str = typer.Option(..., "--user", help="Who sends it (an envcal account, staff or admin)"),
    db: str | None = typer.Option(None, "--db", help="Database URL (users, audit trail)"),
    broker: str | None = typer.Option(None, "--broker", help="mqtt://HOST:PORT of the gateway's broker"),
    stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder"),
    timeout: float = typer.Option(120.0, "--timeout", min=1.0, help="Longest wait for the result [s]"),
    username: str | None = typer.Option(None, "--username", help="MQTT user name"),
    password_file: Path | None = typer.Option(None, "--password-file", help="File with the MQTT password"),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="PEM CA for mqtts://"),
    as_json: bool = typer.Option(False, "--json", help="Print the reply as JSON"),
) -> None:
    """Send one command to a DAU through the running gateway (permission-checked, audited)."""
    from envcal.config import db_url, setting
    from envcal.db import make_engine
    from envcal.gateway.commands import CommandError
    from envcal.gateway.control import send_command
    from envcal.registry import RegistryError, load_registry
    from envcal.users import PermissionDenied, actor_for

    try:
        reg = load_registry(str(setting("stations", stations)))
    except RegistryError as exc:
        _fail(f"registry: {exc}")
    if (mn is None) == (analyzer is None):
        _fail("give exactly one of --mn and --analyzer")
    a = reg.by_mn(mn) if mn else reg.analyzers.get(analyzer or "")
    if a is None or not a.mn:
        _fail(f"no analyzer with HJ 212 MN {mn or analyzer!r} in the registry")
    params = {}
    for item in param:
        k, sep, v = item.partition("=")
        if not sep or not k:
            _fail(f"--param {item!r}: want KEY=VALUE")
        params[k] = v
    t0, t1 = _parse_time(begin, "--begin"), _parse_time(end, "--end")
    engine = make_engine(db_url(db))
    try:
        actor = actor_for(engine, user)
        if actor is None:
            _fail(f"--user {user!r}: no such enabled account")
        mqtt_user, password = _credentials(username, password_file)
        try:
            reply = send_command(engine, actor, str(setting("broker", broker)), a.id, a.mn, cn,
                                 begin=t0, end=t1, params=params, timeout=timeout,
                                 username=mqtt_user, password=password,
                                 ca_file=str(ca_file) if ca_file else None)
        except PermissionDenied as exc:
            _fail(str(exc))
        except CommandError as exc:
            _fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(reply, ensure_ascii=False))
    elif reply.get("ok"):
        typer.echo(f"✓ CN {cn} to {a.mn} ({a.id}): done (QN {reply.get('qn')}, "
                   f"{len(reply.get('uploads') or [])} uploads)")
        for up in reply.get("uploads") or []:
            typer.echo(f"  {up['cn']}: {json.dumps(up['cp'], ensure_ascii=False)}")
    else:
        typer.echo(f"✗ CN {cn} to {a.mn} ({a.id}): {reply.get('error')}", err=True)
    if not reply.get("ok"):
        raise typer.Exit(1)


@gateway_app.command("devices")
def devices(
    broker: str | None = typer.Option(None, "--broker", help="mqtt://HOST:PORT of the gateway's broker"),
    timeout: float = typer.Option(10.0, "--timeout", min=0.5, help="Longest wait for the reply [s]"),
    username: str | None = typer.Option(None, "--username", help="MQTT user name"),
    password_file: Path | None = typer.Option(None, "--password-file", help="File with the MQTT password"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """DAUs the running gateway knows: online state, peer, version, counts (quirks included)."""
    from envcal.config import setting
    from envcal.gateway.control import ControlError, request

    user, password = _credentials(username, password_file)
    try:
        reply = request(str(setting("broker", broker)), {"user": "cli", "action": "state"},
                        timeout=timeout, username=user, password=password)
    except ControlError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(reply, ensure_ascii=False))
        return
    for d in reply.get("devices", []):
        typer.echo(f"{d['mn']}  {d['analyzer_id']:<16} {'online ' if d['online'] else 'offline'} "
                   f"{d['version']}  {d['peer'] or '-'}  {json.dumps(d['counts'])}")
    typer.echo(f"{reply.get('connections', 0)} connections")


def register(app: typer.Typer) -> None:
    """Add ``gateway`` to the ``envcal`` command."""
    app.add_typer(gateway_app, name="gateway")
