"""``envcal ingest`` (the MQTT ingest service) and ``envcal stats`` (counts for scripts)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import typer


def _fail(console, component: str, message: str) -> None:
    console.print(f"[red]✗ {component:<9}[/red] {message}")
    raise typer.Exit(2)


def ingest(
    broker: str | None = typer.Option(None, "--broker", help="mqtt://HOST:PORT (default: ENVCAL_BROKER)"),
    db: str | None = typer.Option(None, "--db", help="Database URL (default: ENVCAL_DB or sqlite:///envcal.db)"),
    archive: str | None = typer.Option(None, "--archive", help="NetCDF archive folder"),
    stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder"),
    group: str | None = typer.Option(None, "--group", help="Shared-subscription group ($share/NAME/...)"),
    client_id: str = typer.Option("envcal-ingest", "--client-id", help="Fixed MQTT client id"),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Messages per transaction at most"),
    batch_seconds: float = typer.Option(0.2, "--batch-seconds", min=0.001, help="Longest batch wait [s]"),
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level"),
    webhook: str | None = typer.Option(None, "--webhook", help="POST alert events to this URL"),
    tick_seconds: float = typer.Option(5.0, "--tick-seconds", min=0.05,
                                       help="Timer for stale checks and time-based alerts [s]"),
    username: str | None = typer.Option(None, "--username",
                                        help="MQTT user name (default: ENVCAL_MQTT_USERNAME; none: anonymous)"),
    password_file: Path | None = typer.Option(None, "--password-file",
                                              help="File with the MQTT password (or USER=PASSWORD lines, "
                                              "as written by `envcal mqtt acl`)"),
    ca_file: Path | None = typer.Option(None, "--ca-file", help="PEM CA trusted for an mqtts:// broker"),
    settle: float | None = typer.Option(
        None, "--settle", help="With --group: judge a check whose readings' seq cannot prove it complete "
        "this long after its last reading was received [s] (default 15; must exceed --batch-seconds)"),
    lease: float | None = typer.Option(
        None, "--lease", help="With --group: analyzer lease and heartbeat lifetime [s]; a dead worker's "
        "analyzers move after at most this long (default max(30, 6 x --tick-seconds); at least "
        "3 x --tick-seconds)"),
) -> None:
    """Run the ingest service until SIGTERM/SIGINT: MQTT -> validated rows, bad input -> dead letters."""
    _check_group_options(group, settle, lease, tick_seconds, batch_seconds)
    from rich.console import Console

    from envcal.config import db_url, setting
    from envcal.db import init_db, make_engine
    from envcal.ingest import IngestService
    from envcal.registry import RegistryError, load_registry, sync_registry

    console = Console(highlight=False)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    broker_url = str(setting("broker", broker))
    url = db_url(db)
    stations_path = str(setting("stations", stations))
    archive_dir = Path(str(setting("archive", archive)))

    try:
        reg = load_registry(stations_path)
    except RegistryError as exc:
        _fail(console, "registry", str(exc))
    console.print(f"[green]✓ registry [/green]  {len(reg.stations)} stations, {len(reg.analyzers)} analyzers "
                  f"from {stations_path}")
    from envcal.broker import parse_broker_url, port_open

    try:  # before anything is created: no broker, no database file
        host, port, _tls = parse_broker_url(broker_url)
    except ValueError as exc:
        _fail(console, "broker", str(exc))
    if not port_open(host, port, timeout=3.0):
        _fail(console, "broker", f"nothing listens on {host}:{port}: start the MQTT broker "
              "(mosquitto) or pass --broker mqtt://HOST:PORT")
    try:
        engine = make_engine(url)
        init_db(engine)
        sync_registry(engine, reg)
    except Exception as exc:  # noqa: BLE001 - report any storage failure at start, then exit
        _fail(console, "database", f"{url}: {exc.__class__.__name__}: {exc}")
    console.print(f"[green]✓ database [/green]  {engine.url.render_as_string(hide_password=True)} (schema at head)")
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(console, "archive", f"{archive_dir}: {exc}")
    console.print(f"[green]✓ archive  [/green]  {archive_dir.resolve()}")

    user = setting("mqtt_username", username, default=None)
    password = None
    if password_file is not None:
        try:
            password = read_password(password_file, user)
        except (OSError, ValueError) as exc:
            _fail(console, "broker", f"--password-file: {exc}")
    try:
        svc = IngestService(broker_url, engine, reg, client_id=client_id, group=group,
                            batch_size=batch_size, batch_seconds=batch_seconds,
                            username=user, password=password,
                            ca_file=str(ca_file) if ca_file else None)
    except ValueError as exc:
        _fail(console, "broker", str(exc))
    try:
        pipe = _attach_pipeline(svc, webhook, tick_seconds, settle=settle, lease=lease)
    except Exception as exc:  # noqa: BLE001 - bad rule pack or alert config: refuse to start
        _fail(console, "verify", f"{exc.__class__.__name__}: {exc}")
    console.print(f"[green]✓ verify   [/green]  rule packs {', '.join(sorted(pipe.verifier.packs))}; "
                  f"{_judging(pipe)}, timer every {tick_seconds:g} s")
    console.print("[green]✓ alerts   [/green]  publishing on envcal/alerts/+/+"
                  + (f", webhook {webhook}" if webhook else ""))

    def _signal(signum, _frame) -> None:
        console.print(f"stopping on {signal.Signals(signum).name}: finishing the batch")
        threading.Thread(target=svc.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    svc.start()
    while not svc.ready.wait(0.2):
        if svc._stop.is_set():
            break
    if svc.ready.is_set():
        console.print(f"[green]✓ mqtt     [/green]  {broker_url} as {client_id!r}, subscribed to "
                      f"{', '.join(svc.topics)}")
    svc._stopped.wait()
    pipe.stop()
    t = svc.totals
    console.print(f"stopped: {t['messages']} messages, {t['rows']} rows, {t['duplicates']} duplicates, "
                  f"{t['dead_letters']} dead letters, {t['gaps']} gaps in {t['batches']} batches")
    engine.dispose()


def read_password(path: Path, username: str | None) -> str:
    """The password in ``path``: the whole (stripped) file, or the ``USER=PASSWORD`` line of
    ``username`` in a secrets file. Error messages never contain the file's content."""
    text = path.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if username is not None and any(ln.partition("=")[0].strip() == username for ln in lines):
        from envcal.mqtt_security import read_secrets

        return read_secrets(path)[username]
    if len(lines) != 1:
        raise ValueError(f"{path}: want one line with the password"
                         + (f" or a {username}=PASSWORD line" if username else ""))
    return lines[0]


def _check_group_options(group: str | None, settle: float | None, lease: float | None,
                         tick_seconds: float, batch_seconds: float) -> None:
    """Refuse ``--settle`` / ``--lease`` values the group machinery cannot work with."""
    if (settle is not None or lease is not None) and not group:
        raise typer.BadParameter("--settle and --lease apply to a worker group; add --group NAME",
                                 param_hint="--settle/--lease")
    if settle is not None:
        if not settle > batch_seconds:
            raise typer.BadParameter(f"{settle:g} s must exceed --batch-seconds ({batch_seconds:g} s): "
                                     "a check's readings may still sit in another worker's batch",
                                     param_hint="--settle")
    if lease is not None and not lease >= 3 * tick_seconds:
        raise typer.BadParameter(f"{lease:g} s is shorter than 3 timer ticks (--tick-seconds "
                                 f"{tick_seconds:g}): the lease is renewed every tick",
                                 param_hint="--lease")


def _judging(pipe) -> str:
    """How checks are judged, for the start-up line."""
    own = pipe.ownership
    if own is None:
        return "checks evaluated when their end reading is stored"
    return (f"group {own.group!r}: checks judged by the analyzer's owner once complete (contiguous "
            f"seq, else {pipe.settle.total_seconds():g} s after the last reading), "
            f"lease {own.lease.total_seconds():g} s")


def _attach_pipeline(svc, webhook: str | None, tick_seconds: float, *, settle: float | None = None,
                     lease: float | None = None):
    """Verification and alerts downstream of the service (see :mod:`envcal.pipeline`).

    ``settle`` and ``lease`` [s] (worker groups; None: the pipeline's defaults). A missing
    or malformed rule pack or ``[alerts]`` configuration is an error at start."""
    import datetime as dt

    from envcal.alerts import AlertConfig
    from envcal.config import file_settings
    from envcal.pipeline import DEFAULT_SETTLE, attach

    config = AlertConfig.from_mapping(file_settings().get("alerts", {}))
    return attach(svc, alert_config=config, webhook_url=webhook, tick_seconds=tick_seconds,
                  settle=dt.timedelta(seconds=settle) if settle is not None else DEFAULT_SETTLE,
                  lease=dt.timedelta(seconds=lease) if lease is not None else None)


def register(app: typer.Typer) -> None:
    """Add ``ingest`` to the ``envcal`` command (``stats``: :mod:`envcal.commands.stats`)."""
    app.command("ingest")(ingest)
