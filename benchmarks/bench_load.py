"""Load figures: sustained ingest messages/s for 1, 2 and 4 ``envcal ingest --group G``
worker processes against one Mosquitto, and the ingest process's memory over a soak.

Honest about the machine: the workers, Mosquitto, the publisher and SQLite all share this
machine's cores (``cpu_count`` is recorded in every row); with 2 cores, 4 workers cannot be
faster than 2. Each worker is a real ``python -m envcal.cli ingest`` process (verification
and alerts attached), sharing ``$share/G/envcal/+/+/data``; the database is one SQLite file
(``ENVCAL_LOAD_DB`` may name a PostgreSQL URL instead).

Soak: ``ENVCAL_SOAK_SECONDS`` (default 120, 20 with ``--quick``; 3600 for the 1-hour soak)
of a steady stream; the RSS of the ingest process is sampled every 2 s and the row reports
its least-squares slope [MB/h] over the second half (after warm-up).
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
from pathlib import Path

import numpy as np
import psutil
import sqlalchemy as sa

from benchmarks.common import row

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ROOT / "stations"
TOPIC = "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data"


def _workers(broker, url: str, tmp: Path, n: int) -> list[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    procs, logs = [], []
    for i in range(n):
        log = tmp / f"w{n}-{i}.log"
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "envcal.cli", "ingest", "--broker", broker.url, "--db", url,
             "--archive", str(tmp / "archive"), "--stations", str(STATIONS), "--group", "load",
             "--client-id", f"load-{n}-{i}", "--log-level", "WARNING"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all("subscribed" in lg.read_text(errors="replace") for lg in logs):
            return procs
        time.sleep(0.2)
    for p in procs:
        p.kill()
    raise RuntimeError("ingest workers did not subscribe: " + logs[0].read_text(errors="replace")[-2000:])


def _stop(procs) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def _count(eng) -> int:
    with eng.connect() as conn:
        return conn.execute(sa.text("select count(*) from reading")).scalar_one()


def _messages(n: int, start_seq: int, base: dt.datetime) -> list[bytes]:
    return [json.dumps({"ts": (base + dt.timedelta(seconds=s)).isoformat(), "seq": s,
                        "values": {"SO2": 10.0 + s % 7, "NOx": 20.0}}).encode()
            for s in range(start_seq, start_seq + n)]


def _publish(broker, msgs: list[bytes], rate: float | None = None, topic: str = TOPIC) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"loadpub-{os.getpid()}-{time.monotonic_ns()}",
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect(broker.host, broker.port)
    c.loop_start()
    t0 = time.monotonic()
    infos = []
    for i, m in enumerate(msgs):
        infos.append(c.publish(topic, m, qos=1))
        if rate and i % 50 == 0:
            lag = t0 + i / rate - time.monotonic()
            if lag > 0:
                time.sleep(lag)
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def _setup(tmp: Path):
    from envcal.broker import Mosquitto
    from envcal.db import init_db, make_engine
    from envcal.registry import load_registry, sync_registry

    broker = Mosquitto(tmp / "mosquitto").start()
    url = os.environ.get("ENVCAL_LOAD_DB") or f"sqlite:///{tmp / 'load.db'}"
    eng = make_engine(url)
    init_db(eng)
    sync_registry(eng, load_registry(STATIONS))
    with eng.begin() as conn:
        conn.execute(sa.text("delete from reading"))
    return broker, url, eng


def _workers_row(n_workers: int, n_msgs: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, url, eng = _setup(tmp)
        procs = _workers(broker, url, tmp, n_workers)
        try:
            msgs = _messages(n_msgs, 1, dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
            t0 = time.perf_counter()
            _publish(broker, msgs)
            while _count(eng) < 2 * n_msgs:
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError(f"only {_count(eng)} of {2 * n_msgs} rows after 600 s")
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
        finally:
            _stop(procs)
            eng.dispose()
            broker.stop()
    rate = n_msgs / elapsed
    return row(f"ingest_workers_{n_workers}", elapsed, None, None, messages=n_msgs, workers=n_workers,
               msgs_per_s=round(rate, 1), cpu_count=os.cpu_count(),
               db="sqlite" if not os.environ.get("ENVCAL_LOAD_DB") else "ENVCAL_LOAD_DB")


def _soak_row(seconds: float, rate: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, url, eng = _setup(tmp)
        (proc,) = _workers(broker, url, tmp, 1)
        ps = psutil.Process(proc.pid)
        samples: list[tuple[float, float]] = []
        n_msgs = int(seconds * rate)
        # data times end a day before now, whatever the length (none is dead-lettered as future)
        base = dt.datetime.now(dt.UTC) - dt.timedelta(days=1, seconds=n_msgs)
        pub = threading.Thread(target=_publish, args=(broker, _messages(n_msgs, 1, base), rate))
        t0 = time.monotonic()
        pub.start()
        try:
            while pub.is_alive():
                samples.append((time.monotonic() - t0, ps.memory_info().rss / 2**20))
                time.sleep(2.0)
            pub.join()
        finally:
            _stop([proc])
            eng.dispose()
            broker.stop()
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half], rss[half], 1)[0] * 3600) if half.sum() >= 3 else float("nan")
    return row("ingest_soak_memory", float(t[-1]), None, None, soak_s=round(float(t[-1]), 1),
               rate_msgs_per_s=rate, rss_start_mb=round(float(rss[0]), 1),
               rss_end_mb=round(float(rss[-1]), 1), rss_max_mb=round(float(rss.max()), 1),
               rss_slope_mb_per_h_second_half=round(slope, 2), samples=len(samples),
               cpu_count=os.cpu_count())


CHECK_TOPIC = "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data"  # checks; the background stream goes to
BG_TOPIC = "envcal/ZJ-JX-PP01/JX-PP01-CEMS/data"     # another analyzer (its own seq numbers)


def _check_payloads(check_id: str, plateau: float, t0: dt.datetime, seq0: int) -> list[bytes]:
    """A span check of SO2 (20 readings, 15 s apart, seq ``seq0``..) ending on a stable plateau."""
    out = []
    values = [plateau * (1 - 0.5 ** (i + 1)) for i in range(6)] + [plateau] * 14
    for i, v in enumerate(values):
        phase = "start" if i == 0 else ("end" if i == len(values) - 1 else "run")
        out.append(json.dumps({
            "ts": (t0 + dt.timedelta(seconds=15 * i)).isoformat(), "seq": seq0 + i, "values": {"SO2": v},
            "flags": {"SO2": "C"},
            "check": {"id": check_id, "kind": "span", "material": "GBW(E)080123-2026-017",
                      "phase": phase}}).encode())
    return out


def _latency_row(n_checks: int, rate: float, workers: int = 0) -> dict:
    """Check end -> alert on MQTT, under a steady stream of readings.

    ``workers=0``: one in-process ingest service with verification and alerts attached (as a
    single ``envcal ingest`` runs them). ``workers=N``: N real ``envcal ingest --group``
    processes; the analyzer's owner judges the check once its seq numbers prove it complete
    (at its next timer tick, 5 s, or at once when the owner itself received the end).
    """
    import queue

    import paho.mqtt.client as mqtt

    from envcal.certificates import import_certificate
    from envcal.ingest import IngestService
    from envcal.pipeline import attach
    from envcal.registry import load_registry

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker, url, eng = _setup(tmp)
        for f in sorted((ROOT / "reference_materials" / "samples").glob("*.json")):
            import_certificate(eng, f)
        got: queue.Queue = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lat-sub", protocol=mqtt.MQTTv5)
        sub.on_message = lambda c, u, m: got.put(time.perf_counter())
        sub.connect(broker.host, broker.port)
        sub.subscribe("envcal/alerts/#", qos=1)
        sub.loop_start()
        svc = pipe = None
        procs: list[subprocess.Popen] = []
        if workers:
            procs = _workers(broker, url, tmp, workers)
        else:
            svc = IngestService(broker.url, eng, load_registry(STATIONS), client_id="lat-ingest")
            pipe = attach(svc, tick_seconds=5.0)
            svc.start()
            svc.ready.wait(30)
        # checks 2 h apart in data time, all of them in the past (a future one is refused)
        base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2 * n_checks + 24)
        n_bg = int(rate * (n_checks * 3 + 10))
        bg = threading.Thread(target=_publish, args=(broker, _messages(n_bg, 1, base - dt.timedelta(days=1)), rate,
                                                     BG_TOPIC), daemon=True)
        bg.start()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="lat-pub", protocol=mqtt.MQTTv5)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        lat: list[float] = []
        seq = 1
        try:
            for i in range(n_checks):
                # alternate a failing and a passing check: every failing one opens an alert,
                # every passing one resolves it (so each failing check yields a new event)
                for k, plateau in ((0, 166.0), (1, 160.0)):
                    payloads = _check_payloads(f"CK-LAT-{i}-{k}", plateau,
                                               base + dt.timedelta(hours=2 * i + k), seq)
                    seq += len(payloads)
                    for p in payloads[:-1]:
                        pub.publish(CHECK_TOPIC, p, qos=1)
                    while not got.empty():
                        got.get_nowait()
                    t_end = time.perf_counter()
                    pub.publish(CHECK_TOPIC, payloads[-1], qos=1)
                    try:
                        t_alert = got.get(timeout=30)
                        if k == 0:
                            lat.append(t_alert - t_end)
                    except queue.Empty:
                        pass
        finally:
            pub.loop_stop()
            if svc is not None:
                svc.stop()
                pipe.stop()
            _stop(procs)
            sub.loop_stop()
            eng.dispose()
            broker.stop()
    a = np.array(lat)
    p50 = float(np.percentile(a, 50)) if a.size else float("nan")
    p99 = float(np.percentile(a, 99)) if a.size else float("nan")
    name = f"check_to_alert_latency_group_{workers}" if workers else "check_to_alert_latency"
    return row(name, p50, None, None, p50_s=round(p50, 4), p99_s=round(p99, 4),
               checks=n_checks, alerts_received=int(a.size), background_msgs_per_s=rate,
               workers=workers or 1, group=bool(workers), cpu_count=os.cpu_count())


def run(quick: bool) -> list[dict]:
    n_msgs = 5_000 if quick else 30_000
    rows = [_workers_row(n, n_msgs) for n in (1, 2, 4)]
    rows.append(_latency_row(5 if quick else 30, rate=300.0))
    rows.append(_latency_row(5 if quick else 20, rate=300.0, workers=2))
    soak = float(os.environ.get("ENVCAL_SOAK_SECONDS", "20" if quick else "120"))
    rows.append(_soak_row(soak, rate=200.0))
    return rows
