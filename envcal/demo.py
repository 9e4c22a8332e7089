"""``envcal demo``: the whole system on this machine, from one command.

What it starts, in its own working directory (default: a fresh temporary folder):

1. a SQLite database (``envcal.db``: schema at head, the station registry, every sample
   CRM certificate of ``reference_materials/samples/``);
2. Mosquitto with envcal's configuration on a free loopback port (:class:`envcal.broker.Mosquitto`);
3. the ingest service with the live pipeline (verification, alerts, MQTT publishing and
   the timer) in this process (:class:`envcal.ingest.IngestService`, :func:`envcal.pipeline.attach`);
4. the station simulator as a child process (``envcal simulate``) with the default fault
   scenario, fast-forwarding simulated time (``speed = days × 86400 / duration``);
5. unless headless, the Streamlit app (``streamlit run app_streamlit.py``) as a child process.

When the simulation has been ingested (or at ``duration``) it closes the remaining checks
(``verify_pending`` and the alert timer once more), compacts the closed days into CF NetCDF
(:func:`envcal.archive.compact`) and returns a summary: readings, checks, results by verdict,
alerts by kind. Every child's PID is written to ``{workdir}/pids.json`` as it starts; every
child is stopped (and reaped) before :meth:`Demo.run` returns, also on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ROOT / "stations"
DEFAULT_FAULTS = ROOT / "stations" / "faults" / "default.toml"
SAMPLES = ROOT / "reference_materials" / "samples"
APP = ROOT / "app_streamlit.py"
#: Wall time [s] the fast-forward takes when neither ``--duration`` nor ``--speed`` is given.
DEFAULT_FAST_FORWARD_S = 120.0
#: Ingest is considered drained when its message count has not moved for this long [s].
QUIET_S = 2.0
#: Wall time [s] of transport jitter the fast-forward tolerates before "no data" (see Demo).
JITTER_S = 3.0

#: ``status(component, state, message)``; state is "ok", "fail", "skip" or "info".
StatusFn = Callable[[str, str, str], None]
#: ``progress(sim_day, days, published, ingested, results, alerts)``.
ProgressFn = Callable[[float, float, int, int, int, int], None]


class DemoError(RuntimeError):
    """A component of the demo could not start; the message says which and what to do."""


@dataclass
class DemoOptions:
    """What ``envcal demo`` runs (its command-line options).

    Parameters
    ----------
    workdir : Path, optional
        Working folder (database, broker data, archive, logs, ``pids.json``); default a
        fresh ``envcal-demo-*`` temporary folder, kept afterwards.
    headless : bool
        Do not start the Streamlit app; return after the summary.
    duration : float, optional
        Wall-time budget [s] of the fast-forward; the simulator and ingest are stopped at
        this point even when the simulated days are not all through.
    days : float
        Simulated days.
    speed : float, optional
        Simulated seconds per real second; default ``days × 86400 / duration``
        (``duration`` default 120 s).
    seed : int
        Simulator seed.
    faults : Path, optional
        Fault file; default ``stations/faults/default.toml``.
    port : int, optional
        Broker port; default a free one.
    ui_port : int, optional
        Streamlit port; default a free one.
    stations : Path
        Station registry.
    tick_seconds : float
        Pipeline timer [s] (wall time).
    """

    workdir: Path | None = None
    headless: bool = False
    duration: float | None = None
    days: float = 30.0
    speed: float | None = None
    seed: int = 0
    faults: Path | None = None
    port: int | None = None
    ui_port: int | None = None
    stations: Path = STATIONS
    tick_seconds: float = 2.0

    def effective_speed(self) -> float:
        """Simulated seconds per real second [-]."""
        if self.speed is not None and self.speed > 0:
            return float(self.speed)
        return self.days * 86400.0 / float(self.duration or DEFAULT_FAST_FORWARD_S)


@dataclass
class _Children:
    """Child processes (PIDs recorded in ``pids.json``)."""

    path: Path
    pids: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.pids[name] = pid
            # written aside and renamed: a reader never sees a half-written file
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.pids, indent=1))
            tmp.replace(self.path)


def _stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal a child (its whole session), wait for it, kill it if it does not go; reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)  # children run in their own session: pgid == pid
        except (ProcessLookupError, PermissionError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Demo:
    """One run of the demo: start everything, fast-forward, summarise, stop everything.

    Parameters
    ----------
    options : DemoOptions
    status : callable, optional
        ``status(component, state, message)``: one line per component as it starts.
    progress : callable, optional
        ``progress(sim_day, days, published, ingested, results, alerts)`` about twice a second.
    """

    def __init__(self, options: DemoOptions, status: StatusFn | None = None,
                 progress: ProgressFn | None = None) -> None:
        self.opt = options
        self.status = status or (lambda c, s, m: None)
        self.progress = progress or (lambda *a: None)
        wd = options.workdir or Path(tempfile.mkdtemp(prefix="envcal-demo-"))
        self.workdir = Path(wd).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{self.workdir / 'envcal.db'}"
        self.archive_dir = self.workdir / "archive"
        self.children = _Children(self.workdir / "pids.json")
        self.children.record("demo", os.getpid())
        self.broker = None
        self.engine = None
        self.service = None
        self.pipeline = None
        self.sim_proc: subprocess.Popen | None = None
        self.ui_proc: subprocess.Popen | None = None
        self.ui_url: str | None = None
        self.sim_stats: dict[str, Any] = {}
        self.sim_day = 0.0
        self.sim_start: dt.datetime | None = None
        self.accounts: dict[str, tuple[str, str]] = {}
        self.published = 0
        self.interrupted = False
        self._sim_reader: threading.Thread | None = None
        self._hk: threading.Thread | None = None
        self._hk_stop = threading.Event()
        self._compacted_before: dt.date | None = None
        from envcal.alerts import AlertConfig

        # fast-forwarding, a second of transport jitter between the analyzers' streams is
        # hours of simulated time: "no data" means no data for JITTER_S of wall time here
        speed = options.effective_speed()
        self.alert_config = AlertConfig(no_data_minutes=max(AlertConfig().no_data_minutes,
                                                            JITTER_S * speed / 60.0))

    # ------------------------------------------------------------------ start
    def start_database(self) -> None:
        """Create the SQLite database, sync the registry and import the sample certificates."""
        from envcal.certificates import CertificateError, import_certificate
        from envcal.db import init_db, make_engine
        from envcal.registry import RegistryError, load_registry, sync_registry

        try:
            self.registry = load_registry(self.opt.stations)
        except RegistryError as exc:
            raise DemoError(f"registry: {exc}") from None
        self.engine = make_engine(self.db_url)
        init_db(self.engine)
        sync_registry(self.engine, self.registry)
        imported = []
        for f in sorted(SAMPLES.glob("*.json")):
            try:
                imported.append(import_certificate(self.engine, f, actor="envcal-demo").cert_id)
            except CertificateError as exc:
                raise DemoError(f"certificate {f.name}: {exc}") from None
        from envcal.ui.seed import create_accounts, format_accounts, seed_verifications

        n_ver = seed_verifications(self.engine, sorted(self.registry.analyzers),
                                   dt.datetime.now(dt.UTC))
        self.accounts = create_accounts(self.engine)
        self.status("database", "ok", f"{self.db_url} · {len(self.registry.stations)} stations, "
                    f"{len(self.registry.analyzers)} analyzers, {len(imported)} CRM certificates, "
                    f"{n_ver} instrument verification records")
        self.status("accounts", "ok", "sign in with one of (this demo's database only): "
                    + format_accounts(self.accounts))

    def start_broker(self) -> None:
        """Start Mosquitto with envcal's configuration on a loopback port."""
        from envcal.broker import BrokerError, Mosquitto, find_mosquitto

        if find_mosquitto() is None:
            raise DemoError("mosquitto not found on PATH or in /usr/sbin; install it: "
                            "sudo apt-get update && sudo apt-get install -y mosquitto")
        self.broker = Mosquitto(self.workdir / "broker", port=self.opt.port)
        try:
            self.broker.start()
        except BrokerError as exc:
            self.broker = None
            raise DemoError(f"broker: {exc}") from None
        self.children.record("broker", self.broker.pid)
        self.status("broker", "ok", f"mosquitto on {self.broker.url} (pid {self.broker.pid})")

    def start_ingest(self) -> None:
        """Start the ingest service with verification and alerts attached."""
        from envcal.ingest import IngestService
        from envcal.pipeline import attach

        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self.service = IngestService(self.broker.url, self.engine, self.registry,
                                     client_id="envcal-demo-ingest", batch_size=1000,
                                     batch_seconds=0.2)
        # the pipeline's own timer is slowed right down: while fast-forwarding, the demo's
        # housekeeping thread ticks adaptively (see _housekeeping) and compacts behind
        self.pipeline = attach(self.service, alert_config=self.alert_config,
                               tick_seconds=3600.0)
        self.service.start()
        self._hk = threading.Thread(target=self._housekeeping, name="envcal-demo-housekeeping",
                                    daemon=True)
        self._hk.start()
        deadline = time.monotonic() + 15
        while not self.service.ready.wait(0.1):
            if time.monotonic() > deadline:
                raise DemoError(f"ingest: not subscribed on {self.broker.url} within 15 s")
        self.status("ingest", "ok", f"subscribed to {', '.join(self.service.topics)} · "
                    f"archive {self.archive_dir}")
        packs = ", ".join(sorted(self.pipeline.verifier.packs))
        self.status("verify", "ok", f"rule packs {packs}; alerts on envcal/alerts/+/+, "
                    f"results on envcal/results/+/+; alert timer every {self.opt.tick_seconds:g} s "
                    "or more")

    def _housekeeping(self) -> None:
        """Alert timer and compaction while the simulation fast-forwards.

        The timer (``Pipeline.tick``: stale checks, overdue checks, data quality, peer drift,
        escalation) holds the pipeline lock that the ingest hook also needs; it runs every
        ``tick_seconds`` but never more than a third of the time, so ingest keeps up. Days
        more than ``peer_days + 1`` days behind the data time are compacted into NetCDF as
        the run goes (as a production deployment does nightly), keeping the hot store, and so
        every timer query, small.
        """
        from envcal.archive import compact

        lag = dt.timedelta(days=int(self.alert_config.peer_days) + 1)
        wait = self.opt.tick_seconds
        while not self._hk_stop.wait(wait):
            t0 = time.monotonic()
            try:
                self.pipeline.tick()
            except Exception as exc:  # noqa: BLE001 - the timer must survive a bad tick
                self.status("verify", "fail", f"alert timer: {exc.__class__.__name__}: {exc}")
            spent = time.monotonic() - t0
            wait = max(self.opt.tick_seconds, 2.0 * spent)
            try:
                now = self.pipeline.alerts.data_time()
                if now is not None and not self._hk_stop.is_set():
                    before = (now - lag).date()
                    if self._compacted_before is None or before > self._compacted_before:
                        compact(self.engine, self.archive_dir, self.registry, before=before)
                        self._compacted_before = before
            except Exception as exc:  # noqa: BLE001 - compaction is retried at the end
                self.status("archive", "fail", f"compaction: {exc.__class__.__name__}: {exc}")

    def stop_housekeeping(self) -> None:
        self._hk_stop.set()
        if self._hk is not None:
            self._hk.join(120)
            self._hk = None

    def sim_begin(self) -> dt.datetime:
        """Simulation start: ``days`` before now (whole minutes, local time), so the
        simulated period ends now (today's checks exist; the newest month is current)."""
        from envcal.views import local_tz

        end = dt.datetime.now(local_tz()).replace(second=0, microsecond=0)
        return end - dt.timedelta(days=float(self.opt.days))

    def start_simulator(self) -> None:
        """Start ``envcal simulate`` as a child process, fast-forwarding."""
        faults = self.opt.faults or DEFAULT_FAULTS
        speed = self.opt.effective_speed()
        cmd = [sys.executable, "-m", "envcal.cli", "simulate", "--broker", self.broker.url,
               "--stations", str(self.opt.stations), "--speed", repr(speed),
               "--days", repr(float(self.opt.days)), "--faults", str(faults),
               "--seed", str(self.opt.seed), "--start", self.sim_begin().isoformat()]
        log = (self.workdir / "simulator.log").open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.sim_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=self.workdir,
                                         env=env, start_new_session=True)
        log.close()
        self.children.record("simulator", self.sim_proc.pid)
        self._sim_reader = threading.Thread(target=self._read_simulator, name="envcal-demo-sim-out",
                                            daemon=True)
        self._sim_reader.start()
        self.status("simulator", "ok", f"pid {self.sim_proc.pid}: {self.opt.days:g} days at "
                    f"{speed:,.0f}× real time, faults {faults.name}, seed {self.opt.seed}")

    def _read_simulator(self) -> None:
        """Follow the simulator's stdout: day lines (progress) and the final ``done:`` line."""
        assert self.sim_proc is not None and self.sim_proc.stdout is not None
        start = None
        for raw in self.sim_proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("simulating ") and " from " in line:
                try:
                    start = dt.datetime.fromisoformat(line.split(" from ", 1)[1].split(" ", 1)[0])
                except ValueError:
                    start = None
                self.sim_start = start
            elif line.startswith("done:"):
                for part in line[5:].split(","):
                    k, _, v = part.strip().rpartition(" ")
                    if v.isdigit():
                        self.sim_stats[k] = int(v)
                self.sim_day = float(self.opt.days)
            elif start is not None and line[:4].isdigit():
                parts = line.split()
                try:
                    day = dt.datetime.fromisoformat(parts[0]).replace(tzinfo=start.tzinfo)
                    self.sim_day = (day - start).total_seconds() / 86400.0
                    self.published = int(parts[1])
                except (ValueError, IndexError):
                    pass

    def start_ui(self) -> None:
        """Start the Streamlit app (``streamlit run app_streamlit.py``) and wait for its port."""
        from envcal.broker import free_port, port_open

        if not APP.is_file():
            self.status("ui", "skip", f"{APP.name} is not there yet: running headless")
            return
        try:
            import streamlit  # noqa: F401
        except ImportError:
            self.status("ui", "skip", "streamlit is not installed (pip install -e '.[ui]'): "
                        "running headless")
            return
        port = self.opt.ui_port or free_port()
        env = dict(os.environ, ENVCAL_DB=self.db_url, ENVCAL_ARCHIVE=str(self.archive_dir),
                   ENVCAL_STATIONS=str(self.opt.stations), ENVCAL_BROKER=self.broker.url)
        cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
        log = (self.workdir / "ui.log").open("wb")
        self.ui_proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        cwd=ROOT, start_new_session=True)
        log.close()
        self.children.record("ui", self.ui_proc.pid)
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            if self.ui_proc.poll() is not None or time.monotonic() > deadline:
                self.status("ui", "fail", f"streamlit did not start (see {self.workdir / 'ui.log'}); "
                            "continuing headless")
                _stop_process(self.ui_proc)
                self.ui_proc = None
                return
            time.sleep(0.2)
        self.ui_url = f"http://127.0.0.1:{port}"
        self.status("ui", "ok", f"{self.ui_url}  (pid {self.ui_proc.pid})")

    # ------------------------------------------------------------------ run
    def _counts(self) -> tuple[int, int]:
        from envcal.models import Alert, CheckResult

        with self.engine.connect() as conn:
            n_res = conn.execute(sa.select(sa.func.count()).select_from(CheckResult.__table__)).scalar_one()
            n_al = conn.execute(sa.select(sa.func.count()).select_from(Alert.__table__)).scalar_one()
        return int(n_res), int(n_al)

    def ingested_day(self) -> float:
        """Simulated days ingested so far (newest reading with a seq number) [d]."""
        if self.sim_start is None or self.service is None:
            return 0.0
        ts = [t for _seq, t in list(self.service.core.last_seq.values()) if t is not None]
        if not ts:
            return 0.0
        newest = max(t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in ts)
        return max(0.0, (newest - self.sim_start).total_seconds() / 86400.0)

    def _fast_forward(self) -> bool:
        """Wait for the simulator to finish and ingest to drain, or for the deadline.

        Returns
        -------
        bool
            True when every simulated message was ingested before the deadline.
        """
        t0 = time.monotonic()
        deadline = t0 + self.opt.duration if self.opt.duration else None
        last_n, last_change = -1, time.monotonic()
        last_counts = 0.0
        counts = (0, 0)
        while True:
            now = time.monotonic()
            n = self.service.totals["messages"]
            if n != last_n:
                last_n, last_change = n, now
            if now - last_counts >= 1.0:
                try:
                    counts = self._counts()
                except sa.exc.OperationalError:  # database busy: next time
                    pass
                last_counts = now
            self.progress(self.ingested_day(), float(self.opt.days), self.published, n, *counts)
            sim_done = self.sim_proc is not None and self.sim_proc.poll() is not None
            if sim_done and now - last_change >= QUIET_S and self.service._q.empty():
                if self._sim_reader is not None:
                    self._sim_reader.join(5)
                if self.sim_proc.returncode != 0:
                    raise DemoError(f"simulator exited with {self.sim_proc.returncode} "
                                    f"(see {self.workdir / 'simulator.log'})")
                return True
            if deadline is not None and now >= deadline:
                return False
            time.sleep(0.25)

    def finish(self) -> dict[str, Any]:
        """Close remaining checks, run the alert timer, compact closed days, summarise."""
        from envcal.archive import compact

        self.stop_housekeeping()
        client = self.service._client
        if client is not None:  # what the broker still holds stays there: stop the feed first
            client.unsubscribe(list(self.service.topics))
            time.sleep(0.5)
        self.pipeline.tick()  # verify_pending (stale checks) + time-based alert rules
        self.status("verify", "ok", "pending checks closed, alert timer run")
        self.service.stop()
        self.pipeline.stop()
        report = compact(self.engine, self.archive_dir, self.registry)
        from envcal.models import ArchiveFile

        with self.engine.connect() as conn:
            n_files = conn.execute(sa.select(sa.func.count()).select_from(ArchiveFile.__table__)).scalar_one()
        self.status("archive", "ok" if not report.errors else "fail",
                    f"{n_files} station-days in CF NetCDF under {self.archive_dir}"
                    + (f"; {len(report.errors)} failed: {report.errors[0].error}" if report.errors else ""))
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Counts of what the run produced (see :func:`summarise`)."""
        out = summarise(self.engine)
        out["simulated_days"] = round(min(self.ingested_day(), float(self.opt.days)), 3)
        out["simulator"] = dict(self.sim_stats)
        out["workdir"] = str(self.workdir)
        out["db"] = self.db_url
        out["pids"] = dict(self.children.pids)
        return out

    def run(self) -> dict[str, Any]:
        """Start everything, fast-forward, finish and stop everything.

        Returns
        -------
        dict
            The summary, with ``complete`` (every simulated message ingested in time) and
            ``interrupted`` (stopped by Ctrl-C / SIGTERM).
        """
        t0 = time.monotonic()
        complete = False
        result: dict[str, Any] = {}
        try:
            self.start_database()
            self.start_broker()
            self.start_ingest()
            self.start_simulator()
            if self.opt.headless:
                self.status("ui", "skip", "headless: the Streamlit app is not started")
            else:
                self.start_ui()
            complete = self._fast_forward()
            if not complete:
                self.status("simulator", "info", f"--duration {self.opt.duration:g} s reached at "
                            f"simulated day {self.ingested_day():.1f} of {self.opt.days:g} ingested: "
                            "stopping")
            self.stop_simulator()
            result = self.finish()
            result["complete"] = complete
            result["interrupted"] = False
            result["seconds"] = round(time.monotonic() - t0, 1)
            if not self.opt.headless and self.ui_proc is not None:
                result["ui"] = self.ui_url
            return result
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        finally:
            if self.opt.headless or self.interrupted or self.ui_proc is None:
                self.stop()

    def wait_ui(self) -> None:
        """Keep the app (and the stopped services' data) up until Ctrl-C; then stop it."""
        try:
            while self.ui_proc is not None and self.ui_proc.poll() is None:
                time.sleep(0.5)
        finally:
            self.stop()

    # ------------------------------------------------------------------ stop
    def stop_simulator(self) -> None:
        if self.sim_proc is not None:
            _stop_process(self.sim_proc, signal.SIGINT)
            if self._sim_reader is not None:
                self._sim_reader.join(5)

    def stop(self) -> None:
        """Stop every component this demo started (idempotent): simulator, UI, ingest, broker."""
        previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
        if previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans
        try:
            self.stop_simulator()
            self.sim_proc = None
            self.stop_housekeeping()
            _stop_process(self.ui_proc)
            self.ui_proc = None
            if self.service is not None:
                self.service.stop()
                self.service = None
            if self.pipeline is not None:
                self.pipeline.stop()
                self.pipeline = None
            if self.broker is not None:
                self.broker.stop()
                self.broker = None
            if self.engine is not None:
                self.engine.dispose()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def summarise(engine: sa.Engine) -> dict[str, Any]:
    """What a demo run produced.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine

    Returns
    -------
    dict
        ``{"readings": N, "checks": N, "results": {verdict: N}, "alerts": {kind: N},
        "alerts_by_analyzer": {analyzer: {kind: N}}, "dead_letters": N, "data_gaps": N,
        "archive_files": N}``; readings count hot and archived values.
    """
    from envcal.models import Alert, ArchiveFile, CheckResult
    from envcal.stats import stats

    counts = stats(engine, ["readings", "dead_letters", "data_gaps"])
    r, a = CheckResult.__table__.c, Alert.__table__.c
    with engine.connect() as conn:
        verdicts = dict(conn.execute(sa.select(r.verdict, sa.func.count()).group_by(r.verdict)
                                     .order_by(r.verdict)).all())
        checks = conn.execute(sa.select(sa.func.count(sa.distinct(r.check_id)))).scalar_one()
        kinds = dict(conn.execute(sa.select(a.kind, sa.func.count()).group_by(a.kind)
                                  .order_by(a.kind)).all())
        by_analyzer: dict[str, dict[str, int]] = {}
        for aid, kind, n in conn.execute(sa.select(a.analyzer_id, a.kind, sa.func.count())
                                         .group_by(a.analyzer_id, a.kind)
                                         .order_by(a.analyzer_id, a.kind)):
            by_analyzer.setdefault(aid, {})[kind] = int(n)
        files = conn.execute(sa.select(sa.func.count()).select_from(ArchiveFile.__table__)).scalar_one()
    return {"readings": int(counts["readings"]), "checks": int(checks),
            "results": {k: int(v) for k, v in verdicts.items()},
            "alerts": {k: int(v) for k, v in kinds.items()},
            "alerts_by_analyzer": by_analyzer,
            "dead_letters": int(counts["dead_letters"]), "data_gaps": int(counts["data_gaps"]),
            "archive_files": int(files)}
