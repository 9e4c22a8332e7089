"""End to end over a real Mosquitto: a QC check published as readings becomes a stored,
published, explained result under the right rule, and a failing one raises an alert; and
the same with several ingest workers in one shared-subscription group (issue 8)."""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa

from envcal.certificates import import_certificate
from envcal.db import init_db, make_engine
from envcal.ingest import IngestCore, IngestService
from envcal.ownership import Ownership, lease_table
from envcal.pipeline import Pipeline, attach
from envcal.protocols import json_v1
from envcal.protocols.records import CheckBlock, ReadingRecord
from envcal.registry import sync_registry
from envcal.verify import Verifier, list_results

SAMPLES = Path(__file__).resolve().parents[1] / "reference_materials" / "samples"
LOT = "GBW(E)080123-2026-017"  # SO2 56.0 umol/mol = 160.15 mg/m3 at 22.4 L/mol


def _client(broker, name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _check_payloads(check_id, plateau, t0):
    values = [plateau * (1 - 0.5 ** (i + 1)) for i in range(6)] + [plateau] * 14
    recs = []
    for i, v in enumerate(values):
        phase = "start" if i == 0 else ("end" if i == len(values) - 1 else "run")
        recs.append(ReadingRecord(ts=t0 + dt.timedelta(seconds=15 * i), values={"SO2": v},
                                  flags={"SO2": "C"}, seq=None,
                                  check=CheckBlock(check_id, "span", phase, LOT)))
    return [json_v1.encode_readings([r]) for r in recs]


@pytest.mark.slow
def test_pipeline_check_to_result_and_alert(mosquitto, db_url, registry):
    engine = make_engine(db_url)
    init_db(engine)
    sync_registry(engine, registry)
    for f in sorted(SAMPLES.glob("*.json")):
        import_certificate(engine, f)
    got: queue.Queue = queue.Queue()
    sub = _client(mosquitto, "test-sub")
    sub.on_message = lambda c, u, m: got.put((m.topic, json.loads(m.payload), time.monotonic()))
    sub.subscribe([("envcal/results/#", 1), ("envcal/alerts/#", 1)])
    svc = IngestService(mosquitto.url, engine, registry, client_id="test-ingest",
                        batch_seconds=0.05)
    pipe = attach(svc, tick_seconds=0.5)
    svc.start()
    assert svc.ready.wait(10)
    pub = _client(mosquitto, "test-pub")
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    try:
        # 166.0 mg/m3 against 160.15: (166.0 - 160.15)/200 x 100 = 2.925 % F.S. > 2.5 % -> fail
        for p in _check_payloads("CK-E2E-1", 166.0, t0):
            pub.publish("envcal/ZJ-NB-PP02/NB-PP02-CEMS/data", p, qos=1).wait_for_publish(5)
        t_end = time.monotonic()
        seen: dict[str, dict] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ("result" in seen and "alert" in seen):
            try:
                topic, payload, at = got.get(timeout=0.5)
            except queue.Empty:
                continue
            if topic.startswith("envcal/results/"):
                seen["result"] = payload
            elif payload.get("kind") == "out_of_tolerance":
                seen["alert"] = payload
                seen["alert_latency_s"] = at - t_end
    finally:
        svc.stop()
        pipe.stop()
        pub.loop_stop()
        sub.loop_stop()
    result = seen["result"]
    assert result["check_id"] == "CK-E2E-1" and result["verdict"] == "fail"
    assert result["rule"] == "hj75.gas.span_drift"
    assert result["error_fs_pct"] == pytest.approx(2.925, abs=1e-9)
    assert "HJ 75-2017" in result["reason_en"]
    alert = seen["alert"]
    assert alert["analyzer"] == "NB-PP02-CEMS" and alert["analyte"] == "SO2"
    assert alert["state"] == "open"
    print(f"alert arrived {seen['alert_latency_s']:.3f} s after the check's end was published")
    stored = list_results(engine)
    assert [r["check_id"] for r in stored] == ["CK-E2E-1"]
    engine.dispose()


# --------------------------------------------------------------------------- worker groups (issue 8)
# Several `envcal ingest --group` workers share every analyzer's messages: one result per
# check, computed on all of its readings, one alert per condition, each published once.
CEMS = ("ZJ-NB-PP02", "NB-PP02-CEMS")
PMS = [("ZJ-HZ-AQ01", "HZ-AQ01-PM"), ("ZJ-HZ-AQ02", "HZ-AQ02-PM"), ("ZJ-NB-AQ01", "NB-AQ01-PM")]
FLOW_SPAN = 16.67  # L/min: a flow check without material is judged against the set flow


def _topic(station_analyzer):
    return f"envcal/{station_analyzer[0]}/{station_analyzer[1]}/data"


def _check_readings(check_id, kind, analyte, values, t0, seq0=None, material=None, step_s=15):
    """One JSON reading per value, the first ``start`` and the last ``end``."""
    out = []
    for i, v in enumerate(values):
        phase = "start" if i == 0 else ("end" if i == len(values) - 1 else "run")
        block = {"id": check_id, "kind": kind, "phase": phase}
        if material:
            block["material"] = material
        obj = {"ts": (t0 + dt.timedelta(seconds=step_s * i)).isoformat(), "values": {analyte: v},
               "flags": {analyte: "C"}, "check": block}
        if seq0 is not None:
            obj["seq"] = seq0 + i
        out.append(json.dumps(obj).encode())
    return out


def _zero_values(level=6.0, n=20):
    # steady at `level` mg/m3: (6.0 - 0)/200 x 100 = 3.0 % F.S. > 2.5 % -> fail; steady, so
    # the plateau is the whole check and n counts every reading stored
    return [level] * n


def _group_pipeline(engine, registry, worker="w1@envcal", settle=dt.timedelta(seconds=10)):
    got: list[dict] = []
    verifier = Verifier(engine, registry, listeners=[got.extend])
    own = Ownership(engine, worker, "envcal", registry.analyzers)
    return Pipeline(verifier, None, 5.0, dt.timedelta(minutes=30), ownership=own, settle=settle), got


def _results(engine):
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "select analyzer_id, analyte, check_id, n, verdict, error_fs_pct, details "
            "from check_result order by analyzer_id, check_id")).all()


def _details(row):
    d = row[6]
    return json.loads(d) if isinstance(d, str) else d


def test_pipeline_group_partial_data_waits_for_seq(engine, registry):
    """Worker A stored the check's end reading while seq 105..108 are still in worker B's
    batch: the owner does not judge the check until they are stored."""
    sync_registry(engine, registry)
    pipe, got = _group_pipeline(engine, registry)
    core = IngestCore(engine, registry, detect_gaps=False)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    msgs = _check_readings("CK-PART-SEQ", "zero", "SO2", _zero_values(), t0, seq0=101)
    held = msgs[4:8]  # seq 105..108
    core.ingest([(_topic(CEMS), m) for m in msgs if m not in held])
    pipe.tick(wall=dt.datetime.now(dt.UTC))
    assert got == [] and _results(engine) == []
    core.ingest([(_topic(CEMS), m) for m in held])
    pipe.tick(wall=dt.datetime.now(dt.UTC))  # complete by seq: no need to wait for settle
    [row] = _results(engine)
    assert row.check_id == "CK-PART-SEQ" and row.n == 20
    assert row.verdict == "fail" and row.error_fs_pct == pytest.approx(3.0, abs=1e-9)
    assert _details(row)["completeness"] == {"basis": "seq", "seq_first": 101, "seq_last": 120}
    assert [r["n"] for r in got] == [20]
    pipe.tick(wall=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert len(got) == 1  # decided once


def test_pipeline_group_partial_data_without_seq_waits_settle(engine, registry):
    sync_registry(engine, registry)
    settle = dt.timedelta(seconds=10)
    pipe, got = _group_pipeline(engine, registry, settle=settle)
    core = IngestCore(engine, registry, detect_gaps=False)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    msgs = _check_readings("CK-PART-NOSEQ", "zero", "SO2", _zero_values(), t0)
    core.ingest([(_topic(CEMS), m) for m in msgs[5:]])  # the end, not yet the first five
    now = dt.datetime.now(dt.UTC)
    pipe.tick(wall=now)
    pipe.tick(wall=now + settle - dt.timedelta(seconds=2))
    assert got == [] and _results(engine) == []
    core.ingest([(_topic(CEMS), m) for m in msgs[:5]])  # the slow worker commits
    pipe.tick(wall=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert got == []  # settle counts from the check's last reading received
    pipe.tick(wall=dt.datetime.now(dt.UTC) + settle)
    [row] = _results(engine)
    assert row.n == 20 and row.verdict == "fail"
    assert _details(row)["completeness"] == {"basis": "settle", "settle_s": 10.0, "seq_missing": None}


def test_pipeline_group_seq_gap_judged_after_settle_and_noted(engine, registry):
    sync_registry(engine, registry)
    settle = dt.timedelta(seconds=10)
    pipe, got = _group_pipeline(engine, registry, settle=settle)
    core = IngestCore(engine, registry, detect_gaps=False)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    msgs = _check_readings("CK-GAP", "zero", "SO2", _zero_values(), t0, seq0=1)
    core.ingest([(_topic(CEMS), m) for i, m in enumerate(msgs) if i not in (9, 10, 11)])
    pipe.tick(wall=dt.datetime.now(dt.UTC))
    assert got == []
    pipe.tick(wall=dt.datetime.now(dt.UTC) + settle)  # lost for good: judge, and say so
    [row] = _results(engine)
    assert row.n == 17
    assert _details(row)["completeness"] == {"basis": "settle", "settle_s": 10.0, "seq_missing": 3}


def test_pipeline_group_judges_only_owned_analyzers(engine, registry):
    sync_registry(engine, registry)
    other = Ownership(engine, "w9@envcal", "envcal", registry.analyzers)
    other.refresh(dt.datetime.now(dt.UTC))  # holds every lease
    pipe, got = _group_pipeline(engine, registry)
    core = IngestCore(engine, registry, detect_gaps=False)
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    core.ingest([(_topic(CEMS), m) for m in _check_readings("CK-NOT-MINE", "zero", "SO2",
                                                           _zero_values(), t0, seq0=1)])
    pipe.tick(wall=dt.datetime.now(dt.UTC))
    assert got == [] and _results(engine) == []
    assert pipe.ownership.owned == frozenset()


# ----- real Mosquitto, several IngestService workers in one group
class _Sub:
    """Counts what envcal publishes on the results and alerts topics."""

    def __init__(self, broker):
        self.results: list[dict] = []
        self.alerts: list[dict] = []
        self._lock = threading.Lock()
        self.c = _client(broker, f"sub-{uuid.uuid4().hex[:6]}")
        self.c.on_message = self._on
        self.c.subscribe([("envcal/results/#", 1), ("envcal/alerts/#", 1)])

    def _on(self, c, u, m):
        with self._lock:
            (self.results if m.topic.startswith("envcal/results/") else self.alerts).append(
                json.loads(m.payload))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _workers(broker, engine, registry, names, *, batch_seconds=None, settle=dt.timedelta(seconds=2),
             lease=dt.timedelta(seconds=6), tick=0.3):
    out = []
    for name in names:
        svc = IngestService(broker.url, engine, registry, client_id=name, group="envcal",
                            batch_seconds=(batch_seconds or {}).get(name, 0.05))
        pipe = attach(svc, tick_seconds=tick, settle=settle, lease=lease)
        svc.start()
        assert svc.ready.wait(10)
        out.append((svc, pipe))
    return out


def _stop(workers):
    for svc, pipe in workers:
        svc.stop()
        pipe.stop()


def _publish(pub, items):
    for topic, p in items:
        pub.publish(topic, p, qos=1).wait_for_publish(5)


def _prepared(db_url, registry):
    engine = make_engine(db_url)
    init_db(engine)
    sync_registry(engine, registry)
    return engine


@pytest.mark.slow
def test_pipeline_group_three_workers_one_result_and_alert_each(mosquitto, db_url, registry):
    engine = _prepared(db_url, registry)
    sub = _Sub(mosquitto)
    workers = _workers(mosquitto, engine, registry, ["gw-a", "gw-b", "gw-c"])
    pub = _client(mosquitto, "test-pub-group")
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    try:
        _wait(lambda: len({r["owner"] for r in lease_table(engine)}) == 3, 15, "leases spread over 3")
        items = []
        # flow checks at 8 % above the set flow (limit 5 %: fail) on three PM monitors, with
        # seq, and a zero check on the CEMS without seq; interleaved, one reading a message
        streams = [[(_topic(pm), m) for m in _check_readings(
            f"CK-FLOW-{k}", "flow", "flow", [FLOW_SPAN * 1.08] * 12, t0, seq0=1000 * k + 1)]
            for k, pm in enumerate(PMS)]
        streams.append([(_topic(CEMS), m) for m in _check_readings(
            "CK-ZERO-CEMS", "zero", "SO2", _zero_values(), t0)])
        for i in range(max(len(s) for s in streams)):
            items.extend(s[i] for s in streams if i < len(s))
        _publish(pub, items)
        expected = {(pm[1], f"CK-FLOW-{k}") for k, pm in enumerate(PMS)} | {(CEMS[1], "CK-ZERO-CEMS")}
        _wait(lambda: {(r["analyzer"], r["check_id"]) for r in sub.results} >= expected, 30,
              "a result for every check")
        _wait(lambda: sum(a.get("event") == "open" and a["kind"] == "out_of_tolerance"
                          for a in sub.alerts) >= 4, 15, "4 out-of-tolerance alerts")
        time.sleep(2.5)  # several more ticks of every worker: nothing may come twice
    finally:
        _stop(workers)
        pub.loop_stop()
        sub.close()
    per_worker = [svc.totals["messages"] for svc, _ in workers]
    assert sum(per_worker) == len(items) and sum(1 for n in per_worker if n) >= 2, per_worker
    published = Counter((r["analyzer"], r["analyte"], r["check_id"]) for r in sub.results)
    assert set(published.values()) == {1}, published
    assert {(a, c) for a, _, c in published} == expected
    by_check = {r["check_id"]: r for r in sub.results}
    for k in range(3):
        r = by_check[f"CK-FLOW-{k}"]
        assert r["n"] == 12 and r["verdict"] == "fail"
        assert r["error_rel_pct"] == pytest.approx(8.0, abs=1e-9)
        assert r["details"]["completeness"]["basis"] == "seq"
    zero = by_check["CK-ZERO-CEMS"]
    assert zero["n"] == 20 and zero["error_fs_pct"] == pytest.approx(3.0, abs=1e-9)
    assert zero["details"]["completeness"]["basis"] == "settle"
    rows = _results(engine)
    assert len(rows) == 4 and all(r.n in (12, 20) for r in rows)
    opened = Counter((a["analyzer"], a["analyte"], a["kind"]) for a in sub.alerts if a.get("event") == "open")
    assert set(opened.values()) == {1}, opened  # one alert per condition (some open two kinds)
    assert {(a, x) for a, x, k in opened if k == "out_of_tolerance"} == (
        {(pm[1], "flow") for pm in PMS} | {(CEMS[1], "SO2")})
    with engine.connect() as conn:
        n_alerts = conn.execute(sa.text("select count(*) from alert")).scalar()
        n_open_events = conn.execute(sa.text("select count(*) from alert_event where action = 'open'")).scalar()
    assert n_alerts == n_open_events == len(opened)
    engine.dispose()


@pytest.mark.slow
def test_pipeline_group_slow_worker_result_has_all_readings(mosquitto, db_url, registry):
    """One worker holds its share of the check for 1.5 s before committing (a long batch
    window, or a database hiccup); the other commits the rest, perhaps the end, at once.
    The result is still computed on all 20 readings."""
    engine = _prepared(db_url, registry)
    sub = _Sub(mosquitto)
    workers = _workers(mosquitto, engine, registry, ["slow-a", "fast-b"],
                       batch_seconds={"slow-a": 1.5}, settle=dt.timedelta(seconds=3))
    pub = _client(mosquitto, "test-pub-slow")
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    try:
        _wait(lambda: len({r["owner"] for r in lease_table(engine)}) == 2, 15, "leases spread over 2")
        _publish(pub, [(_topic(CEMS), m) for m in _check_readings("CK-SLOW", "zero", "SO2",
                                                                  _zero_values(), t0)])
        _wait(lambda: any(r["check_id"] == "CK-SLOW" for r in sub.results), 20, "the result")
        time.sleep(1.0)
    finally:
        _stop(workers)
        pub.loop_stop()
        sub.close()
    assert workers[0][0].totals["messages"] > 0 and workers[1][0].totals["messages"] > 0
    [r] = [r for r in sub.results if r["check_id"] == "CK-SLOW"]
    assert r["n"] == 20 and r["error_fs_pct"] == pytest.approx(3.0, abs=1e-9)
    assert [row.n for row in _results(engine)] == [20]
    engine.dispose()


@pytest.mark.slow
def test_pipeline_group_failover_when_a_worker_dies(mosquitto, db_url, registry):
    engine = _prepared(db_url, registry)
    sub = _Sub(mosquitto)
    lease = dt.timedelta(seconds=3)
    workers = _workers(mosquitto, engine, registry, ["fo-a", "fo-b"], lease=lease)
    pub = _client(mosquitto, "test-pub-failover")
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    (svc_a, pipe_a), (svc_b, pipe_b) = workers
    try:
        _wait(lambda: len({r["owner"] for r in lease_table(engine)}) == 2, 15, "leases spread over 2")
        of_a = sorted(r["analyzer_id"] for r in lease_table(engine) if r["owner"] == "fo-a@envcal")
        # a dies: its timer stops without releasing anything, its connection goes
        pipe_a.stop(release=False)
        svc_a.stop()
        t_dead = time.monotonic()
        assert pipe_b.ownership.current().isdisjoint(of_a)
        _wait(lambda: pipe_b.ownership.current() == frozenset(registry.analyzers), 15,
              "b owning every analyzer")
        took = time.monotonic() - t_dead
        print(f"failover after {took:.1f} s (lease {lease.total_seconds():g} s)")
        assert took >= lease.total_seconds() * 0.5  # not before a's lease could expire
        target = next(pm for pm in PMS if pm[1] in of_a) if any(pm[1] in of_a for pm in PMS) else None
        station_analyzer = target or CEMS
        msgs = (_check_readings("CK-FO", "flow", "flow", [FLOW_SPAN] * 12, t0, seq0=1) if target
                else _check_readings("CK-FO", "zero", "SO2", _zero_values(), t0, seq0=1))
        _publish(pub, [(_topic(station_analyzer), m) for m in msgs])
        _wait(lambda: any(r["check_id"] == "CK-FO" for r in sub.results), 20, "b's result")
        time.sleep(1.0)
    finally:
        _stop([(svc_b, pipe_b)])
        pub.loop_stop()
        sub.close()
    assert [r["analyzer"] for r in sub.results if r["check_id"] == "CK-FO"] == [station_analyzer[1]]
    assert all(r["owner"] == "fo-b@envcal" for r in lease_table(engine))
    engine.dispose()


@pytest.mark.slow
def test_pipeline_group_real_ingest_processes(mosquitto, sqlite_url, registry, tmp_path):
    """Two `envcal ingest --group envcal` processes: the analyzers are shared out, each
    check is decided and published once, computed on every reading."""
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    engine = _prepared(sqlite_url, registry)
    sub = _Sub(mosquitto)
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
    procs, logs = [], []
    try:
        for name in ("cli-a", "cli-b"):
            log = tmp_path / f"{name}.log"
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "envcal.cli", "ingest", "--broker", mosquitto.url, "--db", sqlite_url,
                 "--archive", str(tmp_path / "archive"), "--stations", str(root / "stations"),
                 "--client-id", name, "--group", "envcal", "--tick-seconds", "0.5"],
                stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
        _wait(lambda: all("subscribed" in lg.read_text(errors="replace") for lg in logs)
              or any(p.poll() is not None for p in procs), 90, "both processes subscribed")
        assert all(p.poll() is None for p in procs), [lg.read_text(errors="replace") for lg in logs]
        _wait(lambda: {r["owner"] for r in lease_table(engine)} == {"cli-a@envcal", "cli-b@envcal"},
              20, "leases shared by both processes")
        pub = _client(mosquitto, "test-pub-cli")
        t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
        streams = [[(_topic(pm), m) for m in _check_readings(
            f"CK-CLI-{k}", "flow", "flow", [FLOW_SPAN * 1.02] * 12, t0, seq0=1)] for k, pm in enumerate(PMS)]
        _publish(pub, [item for group in zip(*streams, strict=True) for item in group])
        pub.loop_stop()
        _wait(lambda: {r["check_id"] for r in sub.results} >= {f"CK-CLI-{k}" for k in range(3)}, 30,
              "three results")
        time.sleep(1.5)  # three more ticks of each process: nothing may come twice
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p, lg in zip(procs, logs, strict=True):
            assert p.wait(30) == 0, lg.read_text(errors="replace")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        sub.close()
    published = Counter(r["check_id"] for r in sub.results)
    assert published == Counter({f"CK-CLI-{k}": 1 for k in range(3)})
    assert all(r["n"] == 12 and r["verdict"] == "pass" for r in sub.results)
    assert [row.n for row in _results(engine)] == [12, 12, 12]
    assert lease_table(engine) and all(r["lease_until"] <= dt.datetime.now(dt.UTC) for r in lease_table(engine))
    engine.dispose()


# --------------------------------------------------------------------------- outbox (at least once)
def _outbox_rows(engine):
    with engine.connect() as conn:
        res = conn.execute(sa.text("select id, published_at from check_result order by id")).all()
        evs = conn.execute(sa.text("select id, published_at from alert_event order by id")).all()
    return res, evs


def test_pipeline_outbox_publishes_stored_result_once_broker_reachable(mosquitto, db_url, registry):
    """A result and its alert events stored while the publisher has no connection (a worker
    dying between commit and publish leaves the same rows) are published by the timer once
    it can, exactly once each, carrying their ids; rows published live are marked after the
    PUBACK and not published again."""
    from envcal.alerts import AlertEngine
    from envcal.outbox import Outbox

    engine = _prepared(db_url, registry)
    sub = _Sub(mosquitto)
    client = {"c": None}  # no connection yet
    outbox = Outbox(engine, lambda: client["c"], republish_after=dt.timedelta(seconds=3))
    alerts_ = AlertEngine(engine, registry, outbox=outbox)
    verifier = Verifier(engine, registry, listeners=[outbox.publish_results, alerts_.on_results])
    pipe = Pipeline(verifier, alerts_, 5.0, dt.timedelta(minutes=30), outbox=outbox)
    pub = _client(mosquitto, "test-outbox-pub")
    try:
        core = IngestCore(engine, registry)
        t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
        core.ingest([(_topic(CEMS), m) for m in _check_readings("CK-OUTBOX-1", "zero", "SO2",
                                                               _zero_values(), t0, seq0=1)])
        wall = dt.datetime.now(dt.UTC)
        pipe.tick(wall=wall)
        res, evs = _outbox_rows(engine)
        assert len(res) == 1 and len(evs) >= 1  # stored, with alert transitions
        assert all(p is None for _, p in res + evs)  # nothing could be published
        time.sleep(0.5)
        assert sub.results == [] and sub.alerts == []

        client["c"] = pub  # the broker is reachable again
        pipe.tick(wall=wall + dt.timedelta(seconds=1))  # too young to publish again yet
        assert outbox.wait_idle(10)
        assert sub.results == []
        assert outbox.republish(["NOT-MINE"], wall + dt.timedelta(seconds=5)) == {"results": 0, "alert_events": 0}
        pipe.tick(wall=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))
        assert outbox.wait_idle(10)
        res, evs = _outbox_rows(engine)
        assert all(p is not None for _, p in res + evs)  # marked after the PUBACK
        _wait(lambda: len(sub.results) == 1 and len(sub.alerts) == len(evs), 10, "republished messages")
        pipe.tick(wall=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))  # nothing left to send
        time.sleep(0.5)
        assert [r["id"] for r in sub.results] == [res[0][0]]
        assert sub.results[0]["check_id"] == "CK-OUTBOX-1" and sub.results[0]["verdict"] == "fail"
        assert sorted(a["event_id"] for a in sub.alerts) == [i for i, _ in evs]
        assert all(a["republished"] is True for a in sub.alerts)

        # connected from the start: published live, marked, not published again
        core.ingest([(_topic(CEMS), m) for m in _check_readings("CK-OUTBOX-2", "zero", "SO2",
                                                               _zero_values(0.5), t0 + dt.timedelta(minutes=20),
                                                               seq0=21)])
        pipe.tick(wall=dt.datetime.now(dt.UTC))
        assert outbox.wait_idle(10)
        res, evs = _outbox_rows(engine)
        assert len(res) == 2 and all(p is not None for _, p in res + evs)
        pipe.tick(wall=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
        _wait(lambda: len(sub.results) == 2 and len(sub.alerts) == len(evs), 10, "live messages")
        time.sleep(0.5)
        assert Counter(r["id"] for r in sub.results) == Counter({i: 1 for i, _ in res})
        assert Counter(a["event_id"] for a in sub.alerts) == Counter({i: 1 for i, _ in evs})
        assert sub.results[1]["check_id"] == "CK-OUTBOX-2" and "republished" not in sub.results[1]
    finally:
        pipe.stop()
        sub.close()
        pub.disconnect()
        pub.loop_stop()
        engine.dispose()


def test_pipeline_commit_without_ended_checks_does_not_wait_for_the_timer(engine, registry):
    # a timer tick holds the lock for as long as its alert rules run; a batch of plain
    # readings has nothing to judge and must not queue behind it (the ingest thread acks)
    verifier = Verifier(engine, registry)
    pipe = Pipeline(verifier, None, 5.0, dt.timedelta(minutes=30))
    done = threading.Event()
    with pipe.lock:
        t = threading.Thread(target=lambda: (pipe.on_commit([], []), done.set()), daemon=True)
        t.start()
        assert done.wait(5)
