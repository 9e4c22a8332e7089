"""Helpers of the MQTT ingest tests (tests/test_ingest.py, tests/faults/, tests/fuzz/): JSON v1
readings, a prepared database, row counts, polling, a confirming QoS 1 publisher and an
``envcal ingest`` subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import sqlalchemy as sa

from envcal.db import init_db, make_engine
from envcal.registry import load_registry, sync_registry

ROOT = Path(__file__).resolve().parents[2]
STATIONS = ROOT / "stations"
JSON_AZ = "NB-PP02-CEMS"  # publishes JSON v1, channels SO2 and NOx
DATA = f"envcal/ZJ-NB-PP02/{JSON_AZ}/data"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def reading(seq: int, base: dt.datetime, **extra) -> dict:
    """One JSON v1 reading of two values (SO2, NOx), one second apart per ``seq``."""
    return {"ts": (base + dt.timedelta(seconds=seq)).isoformat(), "seq": seq,
            "values": {"SO2": 10.0 + seq % 7, "NOx": 20.0}, **extra}


def payload(obj) -> bytes:
    return json.dumps(obj).encode()


def stream(n_msgs: int, base: dt.datetime) -> list[tuple[str, bytes]]:
    """``n_msgs`` messages of one reading each, seq 1..n_msgs."""
    return [(DATA, payload(reading(s, base))) for s in range(1, n_msgs + 1)]


def prepared(url: str):
    """(engine, registry) of a migrated database holding the stations of ``stations/``."""
    eng = make_engine(url)
    init_db(eng)
    reg = load_registry(STATIONS)
    sync_registry(eng, reg)
    return eng, reg


def count(eng, table: str, where: str = "") -> int:
    with eng.connect() as conn:
        return conn.execute(sa.text(f"select count(*) from {table} {where}")).scalar_one()


def safe_count(eng, table: str) -> int:
    """Like :func:`count` but -1 while the database is unreachable."""
    try:
        return count(eng, table)
    except sa.exc.OperationalError:
        return -1


def wait_for(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Publisher:
    """QoS 1 publisher that waits for PUBACKs and re-sends a chunk the broker did not confirm
    (duplicates are harmless: the unique keys absorb them). An exception of :meth:`publish`
    is also kept in ``error``, for tests that publish from a thread."""

    def __init__(self, broker) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        self.c.reconnect_delay_set(1, 2)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        self.published = 0
        self.error: BaseException | None = None

    def _confirmed(self, info, timeout: float) -> bool:
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def publish(self, items, chunk: int = 100, pause: float = 0.0, timeout: float = 120.0) -> None:
        try:
            deadline = time.monotonic() + timeout
            for i in range(0, len(items), chunk):
                part = items[i:i + chunk]
                while True:
                    infos = [self.c.publish(t, p, qos=1) for t, p in part]
                    if all(self._confirmed(info, 3.0) for info in infos):
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError("publisher could not get PUBACKs from the broker")
                    time.sleep(0.2)
                self.published += len(part)
                if pause:
                    time.sleep(pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc
            raise

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def start_ingest_process(broker, url: str, tmp_path: Path, client_id: str, log_name: str,
                         *extra: str, timeout: float = 60.0) -> tuple[subprocess.Popen, Path]:
    """``python -m envcal.cli ingest`` with a fixed client id (persistent MQTT session),
    started and subscribed; its output goes to ``tmp_path / f"{log_name}.log"``."""
    log = tmp_path / f"{log_name}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "envcal.cli", "ingest", "--broker", broker.url, "--db", url,
         "--archive", str(tmp_path / "archive"), "--stations", str(STATIONS),
         "--client-id", client_id, "--batch-seconds", "0.05", *extra],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: "subscribed" in log.read_text(errors="replace") or proc.poll() is not None,
                 timeout, "ingest process to subscribe")
    except AssertionError:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        raise
    assert proc.poll() is None, log.read_text(errors="replace")
    return proc, log


class IngestProcess:
    """:func:`start_ingest_process` restartable after a kill (one log file per start)."""

    def __init__(self, broker, url: str, tmp_path: Path, client_id: str, *extra: str) -> None:
        self.broker, self.url, self.tmp_path = broker, url, tmp_path
        self.client_id, self.extra = client_id, extra
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> IngestProcess:
        self.starts += 1
        self.proc, self.log = start_ingest_process(
            self.broker, self.url, self.tmp_path, self.client_id,
            f"{self.client_id}-{self.starts}", *self.extra, timeout=timeout)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)
