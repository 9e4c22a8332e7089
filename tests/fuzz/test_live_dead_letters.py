"""Malformed payloads in a live run: N bad messages of every kind, mixed with valid ones,
published to a running ingest service over a real Mosquitto; the dead-letter table must hold
exactly N rows, each with a reason, and every valid reading must be stored."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid

import pytest
import sqlalchemy as sa
from fuzz_inputs import hj212_seeds, mutate
from support.mqtt_ingest import DATA, Publisher, count, payload, prepared, reading, wait_for

from envcal.ingest import IngestService
from envcal.protocols import hj212, json_v1
from envcal.protocols.records import ProtocolError

pytestmark = pytest.mark.slow
HJ_TOPIC = "envcal/ZJ-JX-PP01/JX-PP01-CEMS/hj212"
HJ_MN = "33040000000001"


def _malformed(rng: random.Random, base: dt.datetime, now: dt.datetime, n_fuzz: int) -> list[tuple[str, bytes]]:
    late = (now + dt.timedelta(hours=3)).isoformat()
    good_frame = hj212.encode_frame(cn="2011", mn=HJ_MN, data_time=base, cp={"a21026-Rtd": 1.0})
    bad = [
        (DATA, b"\xff\xfe not json"), (DATA, b"{}"), (DATA, b"[]"), (DATA, b"x" * (70 * 1024)),
        (DATA, payload({"ts": base.isoformat(), "values": {"SO2": float("nan")}})),
        ("envcal/ZJ-NB-PP02/GHOST/data", payload(reading(1, base))),
        (DATA, payload({"ts": base.isoformat(), "values": {"pH": 7.0}})),
        (DATA, payload({"ts": late, "values": {"SO2": 1.0}})),
        ("envcal/ZJ-HZ-AQ01/NB-PP02-CEMS/data", payload(reading(1, base))),
        ("envcal/ZJ-NB-PP02/NB-PP02-CEMS/status", b"sleeping"),
        (HJ_TOPIC, good_frame[:-6] + b"0000\r\n"),  # bad CRC
        (HJ_TOPIC, hj212.encode_frame(cn="2011", mn="99999999999999", data_time=base, cp={"a21026-Rtd": 1.0})),
        (HJ_TOPIC, b"##0000"),
    ]
    seeds = [payload(reading(1, base))]
    frames = hj212_seeds()
    while len(bad) < 13 + n_fuzz:  # fuzzed payloads that the decoders certainly refuse
        if rng.random() < 0.5:
            p = mutate(rng, rng.choice(seeds))
            try:
                json_v1.decode_readings(p, now=now)
            except ProtocolError:
                bad.append((DATA, p))
        else:
            p = mutate(rng, rng.choice(frames), max_len=5000)
            try:
                hj212.decode_frame(p)
            except ProtocolError:
                bad.append((HJ_TOPIC, p))
    return bad


def test_live_malformed_payloads_all_dead_lettered(mosquitto, sqlite_url):
    rng = random.Random(2026)
    now = dt.datetime.now(dt.UTC)
    base = now.replace(microsecond=0) - dt.timedelta(hours=2)
    bad = _malformed(rng, base, now, n_fuzz=487)
    n_bad = len(bad)
    good = [(DATA, json.dumps([reading(s, base)]).encode()) for s in range(1, 1001)]
    items = good + bad
    rng.shuffle(items)
    eng, reg = prepared(sqlite_url)
    svc = IngestService(mosquitto.url, eng, reg, client_id=f"live-{uuid.uuid4().hex[:6]}",
                        batch_seconds=0.05).start()
    assert svc.ready.wait(10)
    pub = Publisher(mosquitto)
    try:
        pub.publish(items, chunk=100)
        wait_for(lambda: svc.totals["messages"] >= len(items), 60, "every message handled")
        time.sleep(0.3)
        assert svc._worker.is_alive() and svc.error is None, svc.error
    finally:
        svc.stop()
        pub.close()
    assert n_bad == 500
    assert count(eng, "dead_letter") == n_bad
    with eng.connect() as conn:
        empty = conn.execute(sa.text("select count(*) from dead_letter where reason is null or reason = ''")).scalar_one()
    assert empty == 0
    assert count(eng, "reading") == 2 * 1000
    assert svc.totals["dead_letters"] == n_bad
    eng.dispose()
