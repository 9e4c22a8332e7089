"""HJ 212 gateway: throughput from TCP to committed rows, and 10,000 concurrent DAUs.

(a) ``gateway_tcp_to_rows``: N HJ 212-2017 real-time frames (6 pollutants each, Flag=5) sent
over 4 TCP connections (32 unanswered frames each at most), through ``envcal gateway`` (a
child process: split, decode, CRC/MN/PW checks, publish QoS 1, 9014 after PUBACK) ->
Mosquitto -> ``IngestService`` -> SQLite, against a bare asyncio TCP server (a child process
too: cut at CRLF, publish with paho QoS 1, 9014 after PUBACK) -> Mosquitto -> a bare paho
subscriber (regex CP, executemany, commit, ack). Time from the first frame sent to the last
row committed; speedup = envcal frames/s / bare frames/s (target >= 0.9). Fresh broker and
database per run; rounds alternate and the best of each side is kept.

(b) ``gateway_10k_daus``: C DAU connections (10,000; 1,000 with ``--quick``) on one gateway,
each with its own MN, each sending one frame per accelerated minute (``PERIOD_S``): p50/p99 of
frame sent -> 9014 received [s], and the gateway's resident memory per connection [KiB]
(RSS with every DAU connected and sending, minus RSS idle, over C). No baseline: envcal_s
is the p99 latency. The client runs in this process; its own event loop is part of the
latency.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import queue
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import fresh_db, row

ROOT = Path(__file__).resolve().parents[1]
ANALYZER = "JX-PP01-CEMS"
STATION = "ZJ-JX-PP01"
MN = "33040000000001"
TOPIC = f"envcal/{STATION}/{ANALYZER}/hj212"
CODES = {"a21026": "SO2", "a21002": "NOx", "a19001": "O2", "a34013": "dust", "a01011": "velocity",
         "a01012": "flue_temp"}
CONNECTIONS, WINDOW = 4, 32
#: Accelerated "minute" of part (b) [s].
PERIOD_S = 20.0


# ------------------------------------------------------------------------------- frames
def _frames(n: int, mn: str = MN, start_s: int = 3 * 86400) -> list[bytes]:
    from envcal.protocols.hj212 import encode_frame
    from envcal.protocols.records import UTC8

    base = (dt.datetime.now(UTC8).replace(microsecond=0) - dt.timedelta(seconds=start_s))
    out = []
    for i in range(n):
        t = base + dt.timedelta(seconds=i)
        cp = {f"{c}-Rtd": round(10.0 + (i * 7 + k) % 97 * 0.5, 1) for k, c in enumerate(CODES)}
        out.append(encode_frame(cn="2011", mn=mn, st="31", qn=f"{t:%Y%m%d%H%M%S}{i % 1000:03d}",
                                data_time=t, cp=cp))
    return out


def _warm_frame(mn: str = MN) -> bytes:
    """A frame that stores no reading (CN 2081), sent first: compiles the CRC kernel and
    opens the broker path before the clock starts (steady state is what is measured)."""
    from envcal.protocols.hj212 import encode_frame

    return encode_frame(cn="2081", mn=mn, st="31", qn="20260101000000000",
                        cp="DataTime=20260101000000;RestartTime=20260101000000")


async def _send_all(port: int, frames: list[bytes], conns: int = CONNECTIONS,
                    window: int = WINDOW) -> None:
    """Send the frames over ``conns`` connections, ``window`` unanswered at most on each."""
    async def one(part: list[bytes]) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        sem = asyncio.Semaphore(window)

        async def answers() -> None:
            got, tail = 0, b""
            while got < len(part):
                data = await r.read(65536)
                if not data:
                    raise ConnectionError("platform closed the connection")
                data = tail + data
                k = data.count(b"\r\n")
                tail = data[data.rfind(b"\r\n") + 2:] if k else data
                got += k
                for _ in range(k):
                    sem.release()

        reader = asyncio.create_task(answers())
        for f in part:
            await sem.acquire()
            w.write(f)
        await w.drain()
        await reader
        w.close()

    await asyncio.gather(*(one(frames[i::conns]) for i in range(conns)))


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    from envcal.broker import port_open

    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def _gateway(port: int, broker_url: str, stations: Path, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "envcal.cli", "gateway", "--listen", f"127.0.0.1:{port}",
           "--broker", broker_url, "--stations", str(stations), "--no-backfill",
           "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait_port(port, proc, "envcal gateway")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------- bare side
def bare_server(port: int, broker_host: str, broker_port: int) -> None:
    """The baseline platform: cut at CRLF, publish QoS 1 with paho, answer 9014 after PUBACK."""
    import paho.mqtt.client as mqtt

    from envcal.protocols.hj212 import crc16_hj212

    qn_re = re.compile(rb"QN=(\d+)")
    loop = asyncio.new_event_loop()
    # touched in the event loop's thread only (paho's thread hands PUBACKs over)
    pending: dict[int, tuple[asyncio.StreamWriter, bytes]] = {}
    early: set[int] = set()

    def answer(writer: asyncio.StreamWriter, frame: bytes) -> None:
        qn = qn_re.search(frame).group(1)
        seg = b"QN=%s;ST=91;CN=9014;PW=123456;MN=%s;Flag=4;CP=&&&&" % (qn, MN.encode())
        writer.write(b"##%04d%s%04X\r\n" % (len(seg), seg, crc16_hj212(seg)))

    def acked(mid: int) -> None:
        item = pending.pop(mid, None)
        if item is None:
            early.add(mid)  # the PUBACK overtook the bookkeeping below
        else:
            answer(*item)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare-server",
                    protocol=mqtt.MQTTv311)
    c.on_publish = lambda _c, _u, mid, _rc, _p: loop.call_soon_threadsafe(acked, mid)
    c.max_inflight_messages_set(1000)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(broker_host, broker_port)
    c.loop_start()
    connected.wait(10)

    async def client(reader, writer) -> None:
        buf = b""
        while data := await reader.read(65536):
            buf += data
            *frames, buf = buf.split(b"\r\n")
            for f in frames:
                mid = c.publish(TOPIC, f + b"\r\n", qos=1).mid
                if mid in early:
                    early.discard(mid)
                    answer(writer, f)
                else:
                    pending[mid] = (writer, f)

    async def main() -> None:
        server = await asyncio.start_server(client, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    loop.run_until_complete(main())


def _bare_subscriber(broker, db: Path, n: int, done: threading.Event):
    """paho (manual ack) -> queue -> worker: regex the CP, executemany, commit, ack."""
    import paho.mqtt.client as mqtt

    from envcal.protocols.records import UTC8

    con = sqlite3.connect(db, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    q: queue.SimpleQueue = queue.SimpleQueue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare-sub", protocol=mqtt.MQTTv5,
                    manual_ack=True)
    c.on_message = lambda _c, _u, m: q.put((m.mid, m.payload))
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    item = re.compile(rb"([a-z]\d{5})-Rtd=([-\d.]+)")
    when = re.compile(rb"DataTime=(\d{14})")
    sql = ("INSERT INTO reading (analyzer_id, analyte, ts, value, flag, seq, received_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")

    def work() -> None:
        got = 0
        while got < n:
            batch = [q.get()]
            while len(batch) < 500:
                try:
                    batch.append(q.get(timeout=0.05))
                except queue.Empty:
                    break
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ")
            rows = []
            for _mid, payload in batch:
                if b"CN=2011" not in payload:
                    continue
                t = dt.datetime.strptime(when.search(payload).group(1).decode(), "%Y%m%d%H%M%S")
                ts = t.replace(tzinfo=UTC8).astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ")
                for code, value in item.findall(payload):
                    rows.append((ANALYZER, CODES[code.decode()], ts, float(value), "N", None, now))
            con.executemany(sql, rows)
            con.commit()
            for mid, _ in batch:
                c.ack(mid, 1)
            got += len(batch)
        done.set()

    threading.Thread(target=work, daemon=True).start()
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe(TOPIC, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("bare subscriber: no SUBACK")
    return c, con


def _rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*) from reading").fetchone()[0]
    finally:
        con.close()


def _timed(port: int, frames: list[bytes], done: threading.Event, what: str) -> float:
    """Warm up, then time from the first frame sent to the last row committed [s]."""
    asyncio.run(_send_all(port, [_warm_frame()], conns=1))
    t0 = time.perf_counter()
    asyncio.run(_send_all(port, frames))
    if not done.wait(600):
        raise RuntimeError(f"{what}: rows not committed in time")
    return time.perf_counter() - t0


def _run_envcal(tmp: Path, k: int, frames: list[bytes]) -> tuple[float, int]:
    from envcal.broker import Mosquitto, free_port
    from envcal.ingest import IngestService

    n = len(frames)
    db = tmp / f"envcal{k}.db"
    eng, reg = fresh_db(db)
    with Mosquitto(tmp / f"mq-e{k}") as broker:
        done = threading.Event()
        svc = IngestService(broker.url, eng, reg, client_id=f"bench-gw-ingest-{k}", batch_size=500,
                            on_commit=lambda _e, _i: svc.totals["rows"] >= n * len(CODES) and done.set())
        svc.start()
        if not svc.ready.wait(15):
            raise RuntimeError("ingest not subscribed")
        port = free_port()
        gw = _gateway(port, broker.url, ROOT / "stations")
        try:
            elapsed = _timed(port, frames, done, "envcal")
        finally:
            _stop(gw)
            svc.stop()
            eng.dispose()
    return elapsed, _rows(db)


def _run_bare(tmp: Path, k: int, frames: list[bytes]) -> tuple[float, int]:
    from envcal.broker import Mosquitto, free_port

    n = len(frames)
    db = tmp / f"bare{k}.db"
    fresh_db(db)[0].dispose()
    with Mosquitto(tmp / f"mq-b{k}") as broker:
        done = threading.Event()
        sub, con = _bare_subscriber(broker, db, n + 1, done)  # + the warm-up frame
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from benchmarks.bench_gateway import "
                                 "bare_server; bare_server(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))",
                                 str(port), broker.host, str(broker.port)], cwd=ROOT,
                                start_new_session=True)
        try:
            _wait_port(port, proc, "bare server")
            elapsed = _timed(port, frames, done, "bare")
        finally:
            _stop(proc)
            sub.disconnect()
            sub.loop_stop()
            con.close()
    return elapsed, _rows(db)


def _throughput(quick: bool) -> dict:
    n = 2_000 if quick else 20_000
    frames = _frames(n)
    env_times, bare_times, env_rows, bare_rows = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2):
            order = (_run_bare, _run_envcal) if k % 2 == 0 else (_run_envcal, _run_bare)
            for fn in order:
                t, rows = fn(Path(tmp), k, frames)
                if fn is _run_envcal:
                    env_times.append(t)
                    env_rows.append(rows)
                else:
                    bare_times.append(t)
                    bare_rows.append(rows)
    envcal_s, baseline_s = min(env_times), min(bare_times)
    return row("gateway_tcp_to_rows", envcal_s, "bare asyncio TCP server + paho QoS 1 + bare subscriber",
               baseline_s, speedup=baseline_s / envcal_s, frames=n, rows_per_frame=len(CODES),
               envcal_frames_per_s=n / envcal_s, baseline_frames_per_s=n / baseline_s,
               envcal_rows=env_rows, baseline_rows=bare_rows, expected_rows=n * len(CODES))


# ------------------------------------------------------------------------------- 10k DAUs
def _registry(path: Path, n: int) -> list[str]:
    mns = [f"BENCH{i:019d}" for i in range(n)]
    lines = ['[[stations]]\nid = "BENCH"\nname = "bench"\nkind = "flue_gas"\nlat = 30.0\nlon = 120.0\n'
             'operator = "bench"\n']
    for i, mn in enumerate(mns):
        lines.append(f'[[analyzers]]\nid = "D{i:05d}"\nstation = "BENCH"\nmodel = "m"\nserial = "s{i}"\n'
                     f'mn = "{mn}"\npw = "123456"\nrule_pack = "hj75_2017"\nprotocol = "hj212"\n'
                     'channels = [{ analyte = "SO2", unit = "mg/m3", span = 200.0 }]\n')
    path.write_text("\n".join(lines), encoding="utf-8")
    return mns


async def _many(port: int, mns: list[str], rounds: int, period: float,
                on_connected) -> list[list[float]]:
    from envcal.protocols.hj212 import encode_frame
    from envcal.protocols.records import UTC8

    latencies: list[list[float]] = [[] for _ in range(rounds)]
    conns = []
    for i in range(0, len(mns), 100):  # the listen backlog
        conns += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in mns[i:i + 100]))
    on_connected()
    t0 = time.monotonic()
    base = dt.datetime.now(UTC8).replace(microsecond=0) - dt.timedelta(days=1)

    async def dau(j: int, mn: str, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for k in range(rounds):
            due = t0 + (k + j / len(mns)) * period  # spread over the accelerated minute
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t = base + dt.timedelta(minutes=k)
            f = encode_frame(cn="2011", mn=mn, st="31", qn=f"{t:%Y%m%d%H%M%S}000", data_time=t,
                             cp={"a21026-Rtd": 20.0 + k})
            sent = time.perf_counter()
            w.write(f)
            buf = b""
            while b"\r\n" not in buf:
                data = await r.read(4096)
                if not data:
                    raise ConnectionError(f"{mn}: gateway closed the connection")
                buf += data
            latencies[k].append(time.perf_counter() - sent)
        w.close()

    await asyncio.gather(*(dau(j, mn, r, w) for j, (mn, (r, w)) in enumerate(zip(mns, conns, strict=True))))
    return latencies


def _concurrent(quick: bool) -> dict:
    import psutil

    from envcal.broker import Mosquitto, free_port

    n = 1_000 if quick else 10_000
    rounds = 3
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * n + 1024
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mns = _registry(tmp / "stations.toml", n)
        with Mosquitto(tmp / "mq") as broker:
            port = free_port()
            gw = _gateway(port, broker.url, tmp / "stations.toml",
                          ["--max-connections", str(n + 100), "--idle-timeout", "3600"])
            try:
                proc = psutil.Process(gw.pid)
                asyncio.run(_send_all(port, [_warm_frame(mns[0])], conns=1))
                time.sleep(1.0)
                rss0 = proc.memory_info().rss
                marks: dict[str, float] = {}

                def connected() -> None:
                    marks["connected"] = time.monotonic()

                t0 = time.monotonic()
                per_round = asyncio.run(_many(port, mns, rounds, PERIOD_S if not quick else 5.0, connected))
                rss1 = proc.memory_info().rss
                elapsed = time.monotonic() - t0
            finally:
                _stop(gw)
    def p(values: list[float], q: float) -> float:
        v = sorted(values)
        return v[min(len(v) - 1, int(q * len(v)))]

    lat = sorted(x for r in per_round for x in r)
    p50, p99 = p(lat, 0.5), p(lat, 0.99)
    return row("gateway_10k_daus", p99, None, None, connections=n, frames=len(lat),
               p50_s=p50, p99_s=p99, max_s=lat[-1], rss_idle_mib=rss0 / 2**20,
               rss_connected_mib=rss1 / 2**20, rss_per_connection_kib=(rss1 - rss0) / n / 1024,
               p99_by_round_s=[p(r, 0.99) for r in per_round],
               connect_s=marks.get("connected", t0) - t0, seconds=elapsed,
               period_s=PERIOD_S if not quick else 5.0, rounds=rounds)


def run(quick: bool) -> list[dict]:
    """Both gateway benchmarks (select with ``python -m benchmarks -k gateway``)."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return [_throughput(quick), _concurrent(quick)]
