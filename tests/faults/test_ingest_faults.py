"""Fault injection on the ingest path: kill -9 of the worker, broker restart, PostgreSQL
restart. Real Mosquitto, real ``envcal ingest`` processes, real SQLite / PostgreSQL.

Every test ends with the same accounting: every published reading stored exactly once
(count == expected, every seq present), no data gaps, no dead letters."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.mqtt_ingest import (
    IngestProcess,
    Publisher,
    count,
    now_utc,
    prepared,
    safe_count,
    stream,
    wait_for,
)

from envcal.broker import Mosquitto
from envcal.db import make_engine, normalize_url
from envcal.ingest import IngestService

pytestmark = [pytest.mark.fault, pytest.mark.slow]

PG_URL = os.environ.get("ENVCAL_TEST_PG_URL")


def assert_exactly_once(eng, n_readings: int) -> None:
    """Each reading has two values (SO2, NOx); seq 1..n_readings all present once."""
    assert count(eng, "reading") == 2 * n_readings
    with eng.connect() as conn:
        seqs = conn.execute(sa.text("select count(distinct seq), min(seq), max(seq) from reading")).one()
    assert tuple(seqs) == (n_readings, 1, n_readings)
    assert count(eng, "data_gap") == 0
    assert count(eng, "dead_letter") == 0


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "mosquitto").start()
    yield b
    b.stop()


# --------------------------------------------------------------------------- kill -9 x 5
def test_ingest_kill9_five_times_50k_messages_exactly_once(broker, tmp_path):
    n_msgs, kills = 50_000, 5
    url = f"sqlite:///{tmp_path / 'envcal.db'}"
    eng, _ = prepared(url)
    items = stream(n_msgs, now_utc() - dt.timedelta(hours=20))
    pub = Publisher(broker)
    worker = IngestProcess(broker, url, tmp_path, "ingest-kill9x5").start()
    t = threading.Thread(target=pub.publish, args=(items,), kwargs={"chunk": 500}, daemon=True)
    t.start()
    at_kill = []
    try:
        for k in range(1, kills + 1):
            # kill at 1/8, 2/8, ... 5/8 of the rows (and some progress after each restart):
            # always mid-stream
            target = max(2 * n_msgs * k // (kills + 3), (at_kill or [0])[-1] + 1000)
            wait_for(lambda target=target: count(eng, "reading") >= target, 120,
                     f"{target} rows before kill {k}", interval=0.01)
            worker.kill()
            at_kill.append(count(eng, "reading"))
            assert at_kill[-1] < 2 * n_msgs, "the stream was over before the kill"
            worker.start()
        t.join(180)
        assert not t.is_alive() and pub.error is None, pub.error
        wait_for(lambda: count(eng, "reading") >= 2 * n_msgs, 180, "all rows after 5 kills", 0.2)
        time.sleep(0.5)  # anything still arriving would be a duplicate: there must be none
        assert worker.terminate() == 0, worker.text()
    finally:
        worker.kill()
        pub.close()
    print(f"rows at each kill -9: {at_kill}; {worker.starts} process starts")
    assert worker.starts == kills + 1
    assert pub.published == n_msgs
    assert_exactly_once(eng, n_msgs)
    assert "stopped:" in worker.text()
    eng.dispose()


# --------------------------------------------------------------------------- broker restart
def test_ingest_broker_restart_with_persistence_loses_nothing(broker, tmp_path):
    n_msgs = 6000
    url = f"sqlite:///{tmp_path / 'envcal.db'}"
    eng, _ = prepared(url)
    items = stream(n_msgs, now_utc() - dt.timedelta(hours=3))
    worker = IngestProcess(broker, url, tmp_path, "ingest-broker-restart").start()
    pub = Publisher(broker)
    t = threading.Thread(target=pub.publish, args=(items,), kwargs={"chunk": 100, "pause": 0.01},
                         daemon=True)
    t.start()
    try:
        wait_for(lambda: count(eng, "reading") >= 2000, 60, "rows before the broker restart")
        broker.stop()  # SIGTERM: Mosquitto writes its persistence file (queued QoS 1 messages)
        assert (broker.data_dir / "mosquitto.db").exists(), "no persistence file written"
        rows_down = count(eng, "reading")
        time.sleep(1.0)
        broker.start()
        t.join(120)
        assert not t.is_alive() and pub.error is None, pub.error
        wait_for(lambda: count(eng, "reading") >= 2 * n_msgs, 90, "all rows after the restart", 0.1)
        time.sleep(0.5)
        assert worker.proc.poll() is None, "ingest died with the broker: " + worker.text()
        assert worker.terminate() == 0, worker.text()
    finally:
        worker.kill()
        pub.close()
    assert rows_down < 2 * n_msgs
    assert "reconnecting" in worker.text() or "disconnected" in worker.text()
    assert_exactly_once(eng, n_msgs)
    eng.dispose()


# --------------------------------------------------------------------------- PostgreSQL restart
def _local_cluster() -> tuple[str, str] | None:
    """(version, name) of the local cluster serving ENVCAL_TEST_PG_URL, when we may restart it."""
    if not PG_URL or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    host = sa.engine.make_url(normalize_url(PG_URL)).host or "localhost"
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if (p / "main").is_dir())
    return (versions[-1], "main") if versions else None


def _pg(action: str, cluster: tuple[str, str]) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action],
                   check=True, timeout=60, capture_output=True)


def _pg_ready(timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            eng = make_engine(PG_URL, connect_args={"connect_timeout": 2})
            with eng.connect() as conn:
                conn.execute(sa.text("select 1"))
            eng.dispose()
            return True
        except sa.exc.OperationalError:
            time.sleep(0.2)
    return False


@pytest.fixture
def pg_database():
    cluster = _local_cluster()
    if cluster is None:
        pytest.skip("needs ENVCAL_TEST_PG_URL on a local cluster, pg_ctlcluster and root "
                    "(the test restarts the PostgreSQL server)")
    if not _pg_ready(5):
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable")
    name = f"envcal_fault_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(normalize_url(PG_URL)).set(database=name).render_as_string(hide_password=False)
    yield url, cluster
    # whatever happened, PostgreSQL must be running again for everyone else
    if not _pg_ready(2):
        _pg("start", cluster)
        assert _pg_ready(60), "PostgreSQL did not come back"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_ingest_postgresql_restart_stops_acking_and_resumes(broker, pg_database):
    url, cluster = pg_database
    n_msgs = 6000
    eng, reg = prepared(url)
    items = stream(n_msgs, now_utc() - dt.timedelta(hours=3))
    svc = IngestService(broker.url, url, reg, client_id="ingest-pg-restart", batch_seconds=0.05).start()
    assert svc.ready.wait(10), "ingest service did not subscribe"
    acks: list[float] = []
    real_ack_many = svc._client.ack_many

    def counting_ack_many(messages):  # a spy: the real acks still go to the broker
        messages = list(messages)
        acks.extend([time.monotonic()] * len(messages))
        return real_ack_many(messages)

    svc._client.ack_many = counting_ack_many
    pub = Publisher(broker)
    t = threading.Thread(target=pub.publish, args=(items,), kwargs={"chunk": 100, "pause": 0.02},
                         daemon=True)
    t.start()
    down = up = None
    try:
        wait_for(lambda: safe_count(eng, "reading") >= 1500, 60, "rows before the PostgreSQL stop")
        try:
            _pg("stop", cluster)  # fast shutdown: every connection is cut
            down = time.monotonic()
            time.sleep(2.5)  # the database is down: ingest retries, the broker keeps the messages
            stored_during = svc.totals["messages"]
        finally:
            # the outage ends when the start command begins: the server accepts connections
            # (and ingest may commit and ack) before `pg_ctlcluster start` returns
            up = time.monotonic()
            _pg("start", cluster)
        assert _pg_ready(60)
        t.join(120)
        assert not t.is_alive() and pub.error is None, pub.error
        wait_for(lambda: safe_count(eng, "reading") >= 2 * n_msgs, 120, "all rows after the restart", 0.2)
        time.sleep(0.5)
    finally:
        svc.stop()
        pub.close()
    # no acknowledgement while the database was down (a grace of 0.3 s for a batch that had
    # committed just before the stop)
    late = [a - down for a in acks if down + 0.3 < a < up]
    assert not late, f"acked while PostgreSQL was down: {len(late)} acks, first at +{late[0]:.2f} s"
    assert svc.totals["messages"] > stored_during
    assert len(acks) >= n_msgs
    assert_exactly_once(eng, n_msgs)
    eng.dispose()
