"""The whole service under the demo's traffic: the real ``envcal ingest`` process against a
bare subscriber draining the same pre-queued messages.

Messages: the demo's mix from :class:`envcal.simulate.Simulator` (default fault scenario,
``days`` simulated days of every analyzer of ``stations/``: JSON readings, HJ 212 frames,
check sequences whose end triggers verification, results, alerts and their publication)
plus a few bad messages (invalid JSON, unknown key, naive timestamp) for the dead letters.

envcal: ``python -m envcal.cli ingest`` (verification and alerts on, as users run it) is
started and subscribed, then frozen with SIGSTOP while every message is published to its
persistent QoS 1 session; the clock starts at SIGCONT and stops when the last reading row,
dead letter and check result is committed (the database is polled every 50 ms; the result
count must be still for 2 s). The load rows do the same for 1, 2 and 4 ``--group`` worker
processes sharing ``$share/G/...``.

Baseline: a bare paho subscriber (in this process, ``manual_ack``: acknowledged after the
commit, like envcal) connects to its own pre-queued session holding the same messages:
``json.loads`` / HJ 212 ``decode_frame`` + ``frame_to_records``, one ``executemany`` and
commit per batch of 500, then the acks. It stores reading rows only (no verification, no
dead letters, no alerts). Rounds alternate; best of each. PostgreSQL: the same against a
bare psycopg subscriber, in a scratch database created and dropped here
(``ENVCAL_BENCH_PG`` = server URL, default ``postgresql://postgres@127.0.0.1:5432/postgres``).

CPU seconds (user + system) of the ingest process and of the bare subscriber over the drain
are reported too (``envcal_cpu_s``, ``baseline_cpu_s``, ``cpu_ratio``): on a busy shared box
they move less than wall times do.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import sqlalchemy as sa

from benchmarks.bench_ingest import _make_session, _props
from benchmarks.common import next_batch, row

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ROOT / "stations"
BATCH = 500
PG_SERVER = os.environ.get("ENVCAL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# ------------------------------------------------------------------------------- messages
def demo_messages(days: float) -> list[tuple[str, bytes]]:
    """The demo's traffic for ``days`` simulated days (ending before now) plus bad messages."""
    from envcal.registry import load_registry
    from envcal.simulate import Simulator

    sim = Simulator(load_registry(STATIONS), faults=STATIONS / "faults" / "default.toml",
                    days=days, seed=0)
    msgs = [(topic, payload) for _t, topic, payload in sim.messages()]
    topic = "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data"
    bad = [b'{"ts": 0, "values": {"SO2": 1}', b'{"ts": 0, "values": {"SO2": 1}, "x": 1}',
           b'{"ts": "2026-01-01T00:00:00", "values": {"SO2": 1}}', b"\xff\xfe", b"[]"]
    step = max(1, len(msgs) // 20)
    for k in range(20):
        msgs.insert(k * step, (topic, bad[k % len(bad)]))
    return msgs


def _codes():
    from envcal.registry import load_registry

    reg = load_registry(STATIONS)
    return ({a.id: {c.code: c.analyte for c in a.channels if c.code} for a in reg.analyzers.values()})


def bare_rows(topic: str, payload: bytes, codes: dict, now: str) -> list[tuple]:
    """What a hand-written subscriber stores for one message (reading rows; [] if bad)."""
    from envcal.protocols import hj212

    analyzer, leaf = topic.split("/")[2], topic.split("/")[3]
    out = []
    try:
        if leaf == "hj212":
            frame = hj212.decode_frame(payload)
            recs = [(r.ts, r.values, r.flags, None) for r in hj212.frame_to_records(frame, codes[analyzer])]
        else:
            d = json.loads(payload)
            items = d if isinstance(d, list) else [d]
            recs = [(dt.datetime.fromisoformat(x["ts"]), x["values"], x.get("flags") or {}, x.get("seq"))
                    for x in items]
    except Exception:  # noqa: BLE001 - the bare subscriber skips what it cannot read
        return out
    for ts, values, flags, seq in recs:
        if ts.tzinfo is None:
            continue
        t = ts.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")
        for analyte, value in values.items():
            out.append((analyzer, analyte, t, value, flags.get(analyte, "N"), seq, now))
    return out


def _forget_session(broker, client_id: str) -> None:
    """Drop a persistent session (clean start, no expiry): later publishes no longer queue for it."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port, clean_start=True)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def _publish(broker, msgs: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"svcpub-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    infos = [c.publish(t, p, qos=1) for t, p in msgs]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


# ------------------------------------------------------------------------------- databases
def _fresh_db(url: str) -> None:
    from envcal.certificates import import_certificate
    from envcal.db import init_db, make_engine
    from envcal.registry import load_registry, sync_registry

    eng = make_engine(url)
    init_db(eng)
    sync_registry(eng, load_registry(STATIONS))
    for f in sorted((ROOT / "reference_materials" / "samples").glob("*.json")):
        import_certificate(eng, f)
    eng.dispose()


def _pg_create(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_SERVER, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return sa.make_url(PG_SERVER).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False)


def _pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_SERVER, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _counts(url: str) -> dict[str, int]:
    from envcal.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            q = {"readings": "select count(*) from reading",
                 "distinct": "select count(*) from (select distinct analyzer_id, analyte, ts from reading) d",
                 "dead_letters": "select count(*) from dead_letter",
                 "results": "select count(*) from check_result",
                 "alerts": "select count(*) from alert"}
            return {k: int(conn.execute(sa.text(v)).scalar_one()) for k, v in q.items()}
    finally:
        eng.dispose()


# ------------------------------------------------------------------------------- envcal
def _start_workers(broker, url: str, tmp: Path, n: int, group: str | None, tag: str) -> list:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    procs = []
    for i in range(n):
        log = tmp / f"{tag}-{i}.log"
        extra = ["--group", group] if group else []
        p = subprocess.Popen(
            [sys.executable, "-m", "envcal.cli", "ingest", "--broker", broker.url, "--db", url,
             "--archive", str(tmp / "archive"), "--stations", str(STATIONS),
             "--client-id", f"{tag}-{i}", "--log-level", "WARNING", *extra],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp)
        procs.append((p, log))
    deadline = time.monotonic() + 180
    while not all("subscribed" in lg.read_text(errors="replace") for _, lg in procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
            _stop(procs)
            raise RuntimeError("ingest did not subscribe: " + procs[0][1].read_text(errors="replace")[-2000:])
        time.sleep(0.1)
    return procs


def _stop(procs) -> None:
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
    for p, _ in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def run_envcal(broker, url: str, tmp: Path, msgs, expect_rows: int, n_bad: int, *, workers: int = 1,
               group: str | None = None, tag: str = "svc", profile: Path | None = None,
               expect_results: int = 0) -> dict:
    """Drain time [s] of ``msgs`` by real ``envcal ingest`` process(es), and what they stored.

    Done when every reading row and dead letter is stored and the result count has reached
    ``expect_results`` (a group judges checks at its timer ticks) and stayed still for 2 s."""
    from envcal.db import make_engine

    _fresh_db(url)
    procs = _start_workers(broker, url, tmp, workers, group, tag)
    eng = make_engine(url)
    spy = None
    try:
        for p, _ in procs:
            p.send_signal(signal.SIGSTOP)
        _publish(broker, msgs)
        import psutil

        ps = [psutil.Process(p.pid) for p, _ in procs]
        cpu0 = sum(sum(x.cpu_times()[:2]) for x in ps)
        t0 = time.perf_counter()
        for p, _ in procs:
            p.send_signal(signal.SIGCONT)
        if profile is not None:
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(procs[0][0].pid), "--threads",
                                    "--format", "raw", "--rate", "250", "-o", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last_change, results, t_rows = t0, -1, None
        with eng.connect() as conn:
            while True:
                n_rows = conn.execute(sa.text("select count(*) from reading")).scalar_one()
                n_dead = conn.execute(sa.text("select count(*) from dead_letter")).scalar_one()
                n_res = conn.execute(sa.text("select count(*) from check_result")).scalar_one()
                conn.rollback()
                now = time.perf_counter()
                if n_res != results:
                    results, last_change = n_res, now
                if t_rows is None and n_rows >= expect_rows and n_dead >= n_bad:
                    t_rows = now
                if t_rows is not None and n_res >= expect_results and now - last_change > 2.0:
                    break
                if now - t0 > 900:
                    raise RuntimeError(f"drain incomplete after 900 s: {n_rows}/{expect_rows} rows")
                time.sleep(0.05)
        elapsed = max(t_rows, last_change) - t0
        cpu_s = sum(sum(x.cpu_times()[:2]) for x in ps) - cpu0  # incl. the 2 s stillness wait
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
        eng.dispose()
        _stop(procs)
        for i in range(workers):
            _forget_session(broker, f"{tag}-{i}")
    return {"s": elapsed, "cpu_s": cpu_s, **_counts(url)}


# ------------------------------------------------------------------------------- baseline
def run_bare(broker, url: str, client_id: str, n_msgs: int, codes: dict) -> dict:
    """Drain time [s] of the bare paho subscriber (SQLite via sqlite3, PostgreSQL via psycopg)."""
    _fresh_db(url)
    pg = url.startswith("postgresql")
    if pg:
        import psycopg

        con = psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        sql = ("INSERT INTO reading (analyzer_id, analyte, ts, value, flag, seq, received_at) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
    else:
        con = sqlite3.connect(sa.make_url(url).database, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        sql = ("INSERT INTO reading (analyzer_id, analyte, ts, value, flag, seq, received_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
    q: queue.SimpleQueue = queue.SimpleQueue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_message = lambda _c, _u, m: q.put((m.mid, m.topic, m.payload))
    done = threading.Event()

    def work() -> None:
        got = 0
        while got < n_msgs:
            batch = next_batch(q, BATCH)
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ")
            rows = []
            for _mid, topic, payload in batch:
                rows.extend(bare_rows(topic, payload, codes, now))
            if pg:
                with con.cursor() as cur:
                    cur.executemany(sql, [(a, b, dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC), v, f, s,
                                           dt.datetime.fromisoformat(n).replace(tzinfo=dt.UTC))
                                          for a, b, t, v, f, s, n in rows])
            else:
                con.executemany(sql, rows)
            con.commit()
            for mid, _t, _p in batch:
                c.ack(mid, 1)
            got += len(batch)
        done.set()

    cpu0 = time.process_time()  # this process: the main thread only waits meanwhile
    t0 = time.perf_counter()
    threading.Thread(target=work, daemon=True).start()
    c.connect(broker.host, broker.port, clean_start=False, properties=_props(2 * BATCH))
    c.loop_start()
    done.wait(900)
    elapsed = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()
    con.close()
    return {"s": elapsed, "cpu_s": cpu_s, **_counts(url)}


# ------------------------------------------------------------------------------- rows
def _service_rows(db: str, days: float, rounds: int, profile: Path | None) -> list[dict]:
    from envcal.broker import Mosquitto

    msgs = demo_messages(days)
    codes = _codes()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ")
    expect = len({r[:3] for t, p in msgs for r in bare_rows(t, p, codes, now)})
    n_bad = 20
    data_topics = sorted({t.rsplit("/", 1)[0] + "/+" for t, _ in msgs})
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pg_names: list[str] = []

        def url(kind: str, k: int) -> str:
            if db == "postgresql":
                name = f"envcal_bench_{os.getpid()}_{kind}{k}"
                pg_names.append(name)
                return _pg_create(name)
            return f"sqlite:///{tmp / f'{kind}{k}.db'}"

        try:
            with Mosquitto(tmp / "mosquitto") as broker:
                env, bare = [], []
                for k in range(rounds):
                    order = ("bare", "envcal") if k % 2 == 0 else ("envcal", "bare")
                    for kind in order:
                        u = url(kind, k)
                        if kind == "bare":
                            cid = f"svc-bare-{db}-{k}"
                            _make_session(broker, cid, data_topics)
                            _publish(broker, msgs)  # queued for this session only
                            bare.append(run_bare(broker, u, cid, len(msgs), codes))
                            _forget_session(broker, cid)
                        else:
                            env.append(run_envcal(broker, u, tmp, msgs, expect, n_bad, tag=f"svc-{db}-{k}",
                                                  profile=profile if k == rounds - 1 else None))
                e = min(env, key=lambda r: r["s"])
                b = min(bare, key=lambda r: r["s"])
                name = "service_vs_bare_paho_sqlite" if db == "sqlite" else "service_vs_bare_psycopg_postgresql"
                n = len(msgs)
                rows.append(row(name, e["s"], f"bare paho + {'sqlite3' if db == 'sqlite' else 'psycopg'} "
                                "executemany, ack after commit (reading rows only)", b["s"],
                                messages=n, envcal_per_s=n / e["s"], baseline_per_s=n / b["s"],
                                simulated_days=days, reading_rows=e["readings"], expected_rows=expect,
                                lost=expect - e["distinct"], duplicated=e["readings"] - e["distinct"],
                                baseline_lost=expect - b["distinct"], dead_letters=e["dead_letters"],
                                results=e["results"], alerts=e["alerts"], rounds=rounds,
                                envcal_cpu_s=round(min(r["cpu_s"] for r in env), 3),
                                baseline_cpu_s=round(min(r["cpu_s"] for r in bare), 3),
                                cpu_ratio=round(min(r["cpu_s"] for r in bare) / min(r["cpu_s"] for r in env), 3),
                                cpu_count=os.cpu_count()))
                if db == "sqlite":
                    for w in (1, 2, 4):
                        r = run_envcal(broker, url(f"w{w}", 0), tmp, msgs, expect, n_bad, workers=w,
                                       group="bench", tag=f"svc-g{w}", expect_results=e["results"])
                        rows.append(row(f"service_group_workers_{w}", r["s"], None, None, workers=w,
                                        messages=n, msgs_per_s=n / r["s"], lost=expect - r["distinct"],
                                        duplicated=r["readings"] - r["distinct"], results=r["results"],
                                        results_single_process=e["results"],
                                        drain="pre-queued (SIGSTOP while published), drain time only",
                                        cpu_count=os.cpu_count()))
        finally:
            for name in pg_names:
                _pg_drop(name)
    return rows


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_SERVER, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - no server: the PostgreSQL row is skipped, said in the row
        return False


def run(quick: bool) -> list[dict]:
    days = 1.0 if quick else 3.0
    rounds = 2 if quick else 3
    profile = Path(os.environ["ENVCAL_BENCH_PROFILE"]) if os.environ.get("ENVCAL_BENCH_PROFILE") else None
    rows = _service_rows("sqlite", days, rounds, profile)
    if _pg_available():
        rows += _service_rows("postgresql", days, rounds, None)
    else:
        rows.append({"name": "service_vs_bare_psycopg_postgresql", "error": f"no server at {PG_SERVER}"})
    # province scale: 10,000 analyzers at one message a minute
    need = 10_000 / 60.0
    sustained = rows[0]["envcal_per_s"]
    rows.append(row("province_scale_headroom", rows[0]["envcal_s"], None, None,
                    required_msgs_per_s=round(need, 1), sustained_msgs_per_s=round(sustained, 1),
                    headroom=round(sustained / need, 1), target_headroom=20,
                    basis="service_vs_bare_paho_sqlite drain rate (demo mix, one process)"))
    return rows
