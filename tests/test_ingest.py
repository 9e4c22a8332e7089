"""Ingest service end to end: real Mosquitto, real SQLite and PostgreSQL, real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from support.mqtt_ingest import (
    DATA,
    JSON_AZ,
    Publisher,
    count,
    payload,
    prepared,
    reading,
    start_ingest_process,
    wait_for,
)
from support.mqtt_ingest import now_utc as _now

from envcal import models
from envcal.dead_letters import PAYLOAD_PREFIX
from envcal.ingest import IngestCore, IngestService, Message, topics
from envcal.registry import sync_registry
from envcal.stats import hj212_quirk_counts, stats

HJ_AZ, HJ_MN = "JX-PP01-CEMS", "33040000000001"
HJ_TOPIC = f"envcal/ZJ-JX-PP01/{HJ_AZ}/hj212"


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def publisher(mosquitto):
    p = Publisher(mosquitto)
    yield p
    p.close()


def service(broker, eng, reg, **kw) -> IngestService:
    kw.setdefault("client_id", f"ingest-{uuid.uuid4().hex[:8]}")
    kw.setdefault("batch_seconds", 0.05)
    svc = IngestService(broker.url, eng, reg, **kw).start()
    assert svc.ready.wait(10), "ingest service did not subscribe"
    return svc


# --------------------------------------------------------------------------- unit-level
def test_topics_shared_group():
    assert topics() == ["envcal/+/+/data", "envcal/+/+/hj212", "envcal/+/+/check", "envcal/+/+/status",
                        "envcal/gateway/deadletter"]
    assert topics("g1")[0] == "$share/g1/envcal/+/+/data"
    with pytest.raises(ValueError):
        topics("bad/group")


def test_core_gap_and_duplicate(engine, registry):
    sync_registry(engine, registry)
    base = _now() - dt.timedelta(hours=1)
    core = IngestCore(engine, registry)
    r1 = core.ingest([(DATA, payload([reading(1, base), reading(2, base), reading(3, base)])),
                      (DATA, payload(reading(7, base))),
                      (DATA, payload(reading(3, base)))])  # duplicate: no row, no gap
    assert (r1.rows, r1.duplicates, r1.gaps) == (8, 2, 1)
    with engine.connect() as conn:
        gap = conn.execute(sa.text("select seq_before, seq_after, missing from data_gap")).one()
    assert tuple(gap) == (3, 7, 3)
    # a restart seeds the last seq from the database: 8 is no gap, 10 is one
    core2 = IngestCore(engine, registry)
    assert core2.last_seq[JSON_AZ][0] == 7
    r2 = core2.ingest([(DATA, payload(reading(8, base))), (DATA, payload(reading(10, base)))])
    assert r2.gaps == 1
    assert count(engine, "data_gap") == 2
    assert count(engine, "reading") == 12
    assert count(engine, "ingest_log") == 2


def test_core_bad_input_dead_lettered(engine, registry):
    sync_registry(engine, registry)
    now = _now()
    base = now - dt.timedelta(hours=1)
    bad = {
        "payload is not": (DATA, b"\xff\xfe{not json"),
        "missing": (DATA, payload({"seq": 1, "values": {"SO2": 1.0}})),  # no ts
        "oversized": (DATA, b"[" + b" " * (64 * 1024) + b"]"),
        "unknown analyzer": ("envcal/ZJ-NB-PP02/NO-SUCH/data", payload(reading(1, base))),
        "unknown analyte": (DATA, payload({"ts": base.isoformat(), "values": {"PM2.5": 3.0}})),
        "future": (DATA, payload({"ts": (now + dt.timedelta(hours=2)).isoformat(), "values": {"SO2": 1.0}})),
        "belongs to station": (f"envcal/ZJ-HZ-AQ01/{JSON_AZ}/data", payload(reading(1, base))),
        "status must be": (f"envcal/ZJ-NB-PP02/{JSON_AZ}/status", b"sleeping"),
        "unexpected topic": ("envcal/x/data", b"{}"),
    }
    core = IngestCore(engine, registry)
    r = core.ingest(list(bad.values()) + [(DATA, payload(reading(1, base)))])
    assert r.dead_letters == len(bad)
    assert r.rows == 2  # the good message after them is stored
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select topic, reason, payload, analyzer_id from dead_letter order by id")).all()
    for (key, (topic, raw)), row in zip(bad.items(), rows, strict=True):
        assert key.lower() in row.reason.lower(), (key, row.reason)
        assert row.topic == topic and bytes(row.payload) == raw[:PAYLOAD_PREFIX]  # bounded
    assert rows[3].analyzer_id == "NO-SUCH"
    assert stats(engine)["dead_letters"] == len(bad)


def test_core_check_summary_and_ended_checks(engine, registry):
    sync_registry(engine, registry)
    base = _now() - dt.timedelta(hours=1)
    summ = {"id": "CK-1", "kind": "span", "analyte": "SO2", "start": base.isoformat(),
            "end": (base + dt.timedelta(minutes=5)).isoformat(), "material": "LOT-1",
            "measured": 160.2, "readings": [160.0, 160.4], "standard_value": 160.1, "verdict": "pass"}
    chk = {"id": "CK-2", "kind": "zero", "phase": "end", "material": ""}
    core = IngestCore(engine, registry)
    check_topic = DATA.replace("/data", "/check")
    r = core.ingest([(check_topic, payload(summ)), (DATA, payload(reading(1, base, check=chk)))])
    assert r.ended_checks == ((JSON_AZ, "CK-2"),)
    assert len(r.summary_ids) == 1
    again = core.ingest([(check_topic, payload(summ))])  # redelivery: no new summary
    assert again.summary_ids == ()
    with engine.connect() as conn:
        row = conn.execute(sa.text("select check_id, analyte, measured, device_verdict, readings "
                                   "from check_summary")).one()
        mat = conn.execute(sa.text("select material, check_phase from reading where analyte='SO2'")).one()
    assert row[:4] == ("CK-1", "SO2", 160.2, "pass")
    readings = row[4] if isinstance(row[4], list) else json.loads(row[4])
    assert readings == [160.0, 160.4]
    assert tuple(mat) == (None, "end")


# --------------------------------------------------------------------------- HJ 212
def test_core_hj212_frames(sqlite_engine, registry):
    hj212 = pytest.importorskip("envcal.protocols.hj212")
    sync_registry(sqlite_engine, registry)
    t = _now() - dt.timedelta(hours=1)
    good = hj212.encode_frame(cn="2011", mn=HJ_MN, data_time=t,
                              cp={"a21026-Rtd": 22.5, "a21026-Flag": "N", "a21002-Rtd": 40.1})
    wrong_mn = hj212.encode_frame(cn="2011", mn="99999999999999", data_time=t, cp={"a21026-Rtd": 1.0})
    other_cn = hj212.encode_frame(cn="1011", mn=HJ_MN, cp={})
    corrupt = bytearray(good)
    corrupt[-3] = ord("0") if corrupt[-3] != ord("0") else ord("1")  # break the CRC
    core = IngestCore(sqlite_engine, registry)
    r = core.ingest([(HJ_TOPIC, good), (HJ_TOPIC, wrong_mn), (HJ_TOPIC, other_cn), (HJ_TOPIC, bytes(corrupt))])
    assert r.rows == 2 and r.dead_letters == 2
    with sqlite_engine.connect() as conn:
        reasons = [x[0] for x in conn.execute(sa.text("select reason from dead_letter order by id"))]
        frames = [x[0] for x in conn.execute(sa.text("select cn from hj212_frame order by id"))]
        vals = dict(conn.execute(sa.text("select analyte, value from reading")).all())
    assert "MN" in reasons[0] and "crc" in reasons[1].lower()
    assert frames == ["2011", "1011"]
    assert vals == {"SO2": 22.5, "NOx": 40.1}


def test_core_hj212_quirks_counted_and_rf_resend_stored_once(engine, registry):
    from envcal.protocols import hj212

    sync_registry(engine, registry)
    t = (_now() - dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=8)))
    local = t.strftime("%Y%m%d%H%M%S")
    kw = dict(cn="2011", mn=HJ_MN, flag=9, qn="20260101000000000")
    orig = hj212.encode_frame(**kw, cp=f"DataTime={local}123;a21026-Rtd=1.5")  # milliseconds
    first_rf = hj212.encode_frame(**kw, rf=True, cp=f"DataTime={local};a21002-Rtd=2.5")
    core = IngestCore(engine, registry)
    core.ingest([(HJ_TOPIC, orig)])
    r = core.ingest([(HJ_TOPIC, hj212.encode_frame(**kw, rf=True, cp=f"DataTime={local}123;a21026-Rtd=1.5")),
                     (HJ_TOPIC, first_rf)])
    assert r.rows == 1 and r.duplicates == 1 and r.dead_letters == 0
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select quirks, resend from hj212_frame order by id")).all()
    assert [(q, bool(b)) for q, b in rows] == [("datetime_ms", False), (None, True)]
    assert hj212_quirk_counts(engine) == {HJ_AZ: {"datetime_ms": 1}}
    assert hj212_quirk_counts(engine, "nobody") == {}
    assert stats(engine, ["hj212_frames", "hj212_quirks", "hj212_backfill"]) == {
        "hj212_frames": 2, "hj212_quirks": 1, "hj212_backfill": 1}


# --------------------------------------------------------------------------- the service over MQTT
def test_service_gap_duplicate_and_hooks(mosquitto, publisher, db_url):
    eng, reg = prepared(db_url)
    calls = []
    svc = service(mosquitto, eng, reg, on_commit=lambda ended, ids: calls.append((ended, ids)))
    try:
        base = _now() - dt.timedelta(hours=1)
        chk = {"id": "CK-9", "kind": "span", "phase": "end", "material": "LOT-1"}
        items = [(DATA, payload(reading(s, base))) for s in (1, 2, 3, 6)]
        items += [(DATA, payload(reading(3, base))), (DATA, payload(reading(7, base, check=chk)))]
        publisher.publish(items, chunk=1)
        wait_for(lambda: svc.totals["messages"] >= 6, 10, "6 messages")
    finally:
        svc.stop()
    assert count(eng, "reading") == 10
    assert count(eng, "data_gap") == 1
    assert svc.totals["duplicates"] == 2
    assert any(((JSON_AZ, "CK-9") in ended) for ended, _ in calls)
    eng.dispose()


def test_service_dead_letters_keep_going(mosquitto, publisher, db_url):
    eng, reg = prepared(db_url)
    svc = service(mosquitto, eng, reg)
    try:
        base = _now() - dt.timedelta(hours=1)
        bad = [(DATA, b"garbage"), (DATA, b"{}"), (DATA, b"x" * (70 * 1024)),
               ("envcal/ZJ-NB-PP02/GHOST/data", payload(reading(1, base))),
               (DATA, payload({"ts": base.isoformat(), "values": {"pH": 7.0}})),
               (DATA, payload({"ts": (_now() + dt.timedelta(days=1)).isoformat(), "values": {"SO2": 1.0}}))]
        publisher.publish(bad + [(DATA, payload(reading(1, base)))], chunk=1)
        wait_for(lambda: svc.totals["messages"] >= 7, 10, "7 messages")
        assert svc._worker.is_alive()
    finally:
        svc.stop()
    reasons = [r[0] for r in eng.connect().execute(sa.text("select reason from dead_letter order by id"))]
    assert len(reasons) == 6
    for word, reason in zip(["JSON", "field", "oversized", "unknown analyzer", "unknown analyte", "future"],
                            reasons, strict=True):
        assert word.lower() in reason.lower(), (word, reason)
    assert count(eng, "reading") == 2
    eng.dispose()


def test_service_acks_after_commit_redelivery_stores_once(mosquitto, publisher, sqlite_url):
    """Messages taken off the wire but not yet acknowledged come back to the next session."""
    eng, reg = prepared(sqlite_url)
    cid = "ingest-ack"
    base = _now() - dt.timedelta(hours=1)
    svc = service(mosquitto, eng, reg, client_id=cid)
    svc.stop()  # leaves a persistent session: later messages queue at the broker
    publisher.publish([(DATA, payload([reading(s, base) for s in range(i, i + 10)]))
                       for i in range(1, 1001, 10)])
    svc = service(mosquitto, eng, reg, client_id=cid)
    try:
        wait_for(lambda: count(eng, "reading") >= 2000, 20, "2000 rows")
    finally:
        svc.stop()
    assert count(eng, "reading") == 2000
    assert count(eng, "data_gap") == 0
    eng.dispose()


@pytest.mark.slow
def test_ingest_process_kill9_exactly_once(mosquitto, publisher, sqlite_url, tmp_path):
    n_msgs, per_msg = 2000, 10  # 20,000 readings of 2 values each
    n_rows = n_msgs * per_msg * 2
    eng, _ = prepared(sqlite_url)
    base = _now() - dt.timedelta(hours=8)
    items = [(DATA, payload([reading(s, base) for s in range(i, i + per_msg)]))
             for i in range(1, n_msgs * per_msg + 1, per_msg)]
    proc, log = start_ingest_process(mosquitto, sqlite_url, tmp_path, "ingest-kill9", "first")
    pub = threading.Thread(target=publisher.publish, args=(items,), kwargs={"chunk": 50, "pause": 0.02})
    pub.start()
    try:
        wait_for(lambda: count(eng, "reading") >= 3000, 60, "3000 rows before the kill", interval=0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = count(eng, "reading")
        assert at_kill < n_rows, "the stream was over before the kill"
        t_kill = time.monotonic()
        proc, log = start_ingest_process(mosquitto, sqlite_url, tmp_path, "ingest-kill9", "second")
        print(f"killed at {at_kill} rows; restarted in {time.monotonic() - t_kill:.1f} s")
        pub.join(120)
        wait_for(lambda: count(eng, "reading") >= n_rows, 60, "all rows after restart", 0.1)
        print(f"all rows {time.monotonic() - t_kill:.1f} s after the kill")
        time.sleep(0.3)  # anything still coming would be a duplicate: there must be none
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        pub.join(5)
    assert publisher.published == n_msgs
    assert count(eng, "reading") == n_rows
    with eng.connect() as conn:
        assert conn.execute(sa.text("select count(distinct seq) from reading")).scalar_one() == n_msgs * per_msg
    assert count(eng, "data_gap") == 0
    assert count(eng, "dead_letter") == 0
    assert "stopped:" in log.read_text(errors="replace")
    eng.dispose()


@pytest.fixture
def persistent_broker(tmp_path):
    """A broker whose persistence file really is written. As root, Mosquitto drops to the
    ``mosquitto`` user, which cannot write a root-owned temporary folder: it then keeps no
    sessions across a restart. ``user root`` keeps it able to write there."""
    from envcal.broker import Mosquitto

    extra = "user root" if os.geteuid() == 0 else ""
    broker = Mosquitto(tmp_path / "persistent-mosquitto", extra_conf=extra).start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_service_broker_restart_loses_nothing(persistent_broker, sqlite_url):
    mosquitto = persistent_broker
    publisher = Publisher(mosquitto)
    n_msgs, per_msg = 600, 10
    n_rows = n_msgs * per_msg * 2  # two values per reading
    eng, reg = prepared(sqlite_url)
    base = _now() - dt.timedelta(hours=3)
    items = [(DATA, payload([reading(s, base) for s in range(i, i + per_msg)]))
             for i in range(1, n_msgs * per_msg + 1, per_msg)]
    svc = service(mosquitto, eng, reg, client_id="ingest-restart")
    try:
        pub = threading.Thread(target=publisher.publish, args=(items,), kwargs={"chunk": 20, "pause": 0.02})
        pub.start()
        wait_for(lambda: publisher.published >= 200, 30, "200 messages published")
        mosquitto.restart()
        pub.join(120)
        assert not pub.is_alive()
        wait_for(lambda: count(eng, "reading") >= n_rows, 60, "all rows after broker restart", 0.1)
        assert (mosquitto.data_dir / "mosquitto.db").exists()
    finally:
        svc.stop()
        publisher.close()
    assert count(eng, "reading") == n_rows
    assert count(eng, "data_gap") == 0
    eng.dispose()


def test_service_shared_group_two_workers(mosquitto, publisher, sqlite_url):
    eng, reg = prepared(sqlite_url)
    base = _now() - dt.timedelta(hours=1)
    a = service(mosquitto, eng, reg, client_id="w1", group="envcal")
    b = service(mosquitto, eng, reg, client_id="w2", group="envcal")
    try:
        publisher.publish([(DATA, payload(reading(s, base))) for s in range(1, 401)])
        wait_for(lambda: count(eng, "reading") >= 800, 20, "800 rows")
    finally:
        a.stop()
        b.stop()
    assert count(eng, "reading") == 800
    assert a.totals["messages"] > 0 and b.totals["messages"] > 0
    assert a.totals["messages"] + b.totals["messages"] == 400
    eng.dispose()


def test_core_dead_letter_redelivery_stored_once(engine, registry):
    """Dead letters are exactly once per MQTT delivery: a broker redelivery (DUP, same
    packet id) adds nothing; distinct messages with the same bytes are distinct rows."""
    sync_registry(engine, registry)
    core = IngestCore(engine, registry, worker="w1@envcal")
    bad = b'{"ts": '

    def put(mid, dup=False, qos=1):
        return core.commit([core.parse(Message(DATA, bad, mid, qos, 0, dup), _now())]).dead_letters

    assert put(7) == 1
    assert put(7, dup=True) == 0  # died between commit and PUBACK: the broker sent it again
    assert put(8) == 1  # the same bytes again, a new message
    assert put(7) == 1  # packet id 7 reused later (first delivery, no DUP): a new message
    assert put(7, dup=True) == 0  # ... and its redelivery
    assert core.ingest([(DATA, bad), (DATA, bad)]).dead_letters == 2  # no packet id: no key
    assert count(engine, "dead_letter") == 5
    assert count(engine, "dead_letter", "where delivery_key is not null") == 2
    other = IngestCore(engine, registry, worker="w2@envcal")  # another session's packet id 8
    assert other.commit([other.parse(Message(DATA, bad, 8, 1, 0, True), _now())]).dead_letters == 1
    with engine.connect() as conn:
        mids = [r[0] for r in conn.execute(sa.text("select mqtt_mid from dead_letter order by id"))]
    assert mids == [7, 8, 7, None, None, 8]


def test_service_dead_letter_redelivered_after_crash_stored_once(mosquitto, publisher, db_url):
    eng, reg = prepared(db_url)
    cid = "ingest-dead-once"
    svc = service(mosquitto, eng, reg, client_id=cid)
    svc._client.ack_many = lambda messages: None  # the worker dies after the commit, before PUBACK
    publisher.publish([(DATA, b"{not json")])
    wait_for(lambda: count(eng, "dead_letter") == 1, 10, "the dead letter")
    svc.stop()
    svc = service(mosquitto, eng, reg, client_id=cid)  # the session resumes: redelivery (DUP)
    try:
        wait_for(lambda: svc.totals["messages"] >= 1, 10, "the redelivered message")
        assert svc.totals["dead_letters"] == 0
        publisher.publish([(DATA, b"{not json")])  # the same bytes, a new message: a new row
        wait_for(lambda: svc.totals["messages"] >= 2, 10, "the second message")
    finally:
        svc.stop()
    assert count(eng, "dead_letter") == 2
    with eng.connect() as conn:
        keys = [r[0] for r in conn.execute(sa.text("select delivery_key from dead_letter order by id"))]
    assert len(set(keys)) == 2 and None not in keys
    eng.dispose()


def test_message_defaults():
    m = Message("t", b"x")
    assert (m.mid, m.qos, m.generation, m.dup) == (0, 0, 0, False)


def test_core_hj212_password_checked_when_configured(sqlite_engine, registry):
    hj212 = pytest.importorskip("envcal.protocols.hj212")
    sync_registry(sqlite_engine, registry)
    registry.analyzers[HJ_AZ] = registry.analyzers[HJ_AZ].model_copy(update={"pw": "s3cret"})
    t = _now() - dt.timedelta(hours=1)
    cp = {"a21026-Rtd": 22.5}
    right = hj212.encode_frame(cn="2011", mn=HJ_MN, pw="s3cret", data_time=t, cp=cp)
    wrong = hj212.encode_frame(cn="2011", mn=HJ_MN, pw="123456", data_time=t + dt.timedelta(seconds=1), cp=cp)
    r = IngestCore(sqlite_engine, registry).ingest([(HJ_TOPIC, right), (HJ_TOPIC, wrong)])
    assert (r.rows, r.dead_letters) == (1, 1)
    with sqlite_engine.connect() as conn:
        reason = conn.execute(sa.text("select reason from dead_letter")).scalar_one()
    assert "PW" in reason and "s3cret" not in reason and "123456" not in reason


# --------------------------------------------------------------------------- hot path
_AWARE = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                      timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=8)),
                                                 dt.timezone(dt.timedelta(hours=-5, minutes=-30))]))


@settings(max_examples=300, deadline=None)
@given(t=_AWARE)
def test_sqlite_utc_text_equals_sqlalchemy_processor(t):
    """The ingest hot path formats times itself; it must be SQLAlchemy's exact SQLite text."""
    from sqlalchemy.dialects import sqlite

    from envcal.ingest import sqlite_utc_text

    d = sqlite.dialect()
    proc = models.Reading.__table__.c.ts.type.dialect_impl(d).bind_processor(d)
    assert sqlite_utc_text(t) == proc(t)


def test_sqlite_utc_text_naive_refused():
    from envcal.ingest import sqlite_utc_text

    with pytest.raises(ValueError, match="naive"):
        sqlite_utc_text(dt.datetime(2026, 1, 1))


def test_core_commit_counts_new_and_duplicate_rows(engine, registry):
    """executemany (SQLite) / RETURNING (PostgreSQL): rows and duplicates counted exactly,
    and the stored time reads back as the instant sent."""
    sync_registry(engine, registry)
    core = IngestCore(engine, registry)
    now = _now()
    base = now.replace(microsecond=0) - dt.timedelta(hours=2)
    topic = "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data"
    msgs = [Message(topic, json.dumps({"ts": (base + dt.timedelta(seconds=i, microseconds=7)).isoformat(),
                                       "values": {"SO2": float(i), "NOx": 1.0}}).encode(), i + 1, 1)
            for i in range(30)]
    first = core.commit([core.parse(m, now) for m in msgs], now)
    again = core.commit([core.parse(m, now) for m in msgs[:10]], now)
    assert (first.rows, first.duplicates) == (60, 0)
    assert (again.rows, again.duplicates) == (0, 20)
    with engine.connect() as conn:
        ts = conn.execute(sa.select(models.Reading.ts).where(models.Reading.value == 3.0)).scalar_one()
    assert ts == base + dt.timedelta(seconds=3, microseconds=7)


def test_release_free_heap_trims_on_glibc():
    """Freed arena memory goes back to the OS on glibc (RSS does not stay at the peak)."""
    import platform

    import psutil

    from envcal.ingest import release_free_heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    proc = psutil.Process()
    blocks = [bytearray(1000) for _ in range(200_000)]  # ~200 MB of small heap blocks
    peak = proc.memory_info().rss
    pinned = [bytearray(1000) for _ in range(10)]  # allocated above them: free() alone keeps the heap
    del blocks
    kept = peak - proc.memory_info().rss
    assert release_free_heap() is True
    assert proc.memory_info().rss < peak - 100 * 2**20, f"free() alone returned {kept / 2**20:.0f} MB"
    assert len(pinned) == 10
