"""Dead letters: bounded storage (prefix + size + hash) and retained messages stored once
(real SQLite / PostgreSQL, real Mosquitto)."""

from __future__ import annotations

import hashlib
import uuid

import sqlalchemy as sa
from support.mqtt_ingest import DATA, JSON_AZ, count, prepared, wait_for

from envcal.dead_letters import PAYLOAD_PREFIX
from envcal.ingest import IngestCore, IngestService
from envcal.registry import sync_registry

STATUS = f"envcal/ZJ-NB-PP02/{JSON_AZ}/status"


def test_dead_letters_oversized_payload_kept_bounded_with_hash_and_size(engine, registry):
    sync_registry(engine, registry)
    big = b"[" + b"x" * 200_000 + b"]"
    r = IngestCore(engine, registry).ingest([(DATA, big)])
    assert r.dead_letters == 1
    with engine.connect() as conn:
        row = conn.execute(sa.text("select payload, payload_size, payload_sha256, reason "
                                   "from dead_letter")).one()
    assert bytes(row.payload) == big[:PAYLOAD_PREFIX]
    assert row.payload_size == len(big)
    assert row.payload_sha256 == hashlib.sha256(big).hexdigest()
    assert "oversized" in row.reason


def test_dead_letters_retained_bad_message_stored_once_across_resubscriptions(mosquitto, sqlite_url):
    import paho.mqtt.client as mqtt

    eng, reg = prepared(sqlite_url)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                      protocol=mqtt.MQTTv5)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        pub.publish(STATUS, b"sleeping", qos=1, retain=True).wait_for_publish(10)
        for i in range(3):  # three new subscriptions: the broker sends the retained message each time
            svc = IngestService(mosquitto.url, eng, reg, client_id=f"ingest-ret-{i}",
                                batch_seconds=0.05).start()
            try:
                assert svc.ready.wait(10)
                wait_for(lambda s=svc: s.totals["messages"] >= 1, 10, "the retained message")
            finally:
                svc.stop()
        assert count(eng, "dead_letter") == 1
        pub.publish(STATUS, b"", qos=1, retain=True).wait_for_publish(10)  # clear it
    finally:
        pub.disconnect()
        pub.loop_stop()
        eng.dispose()
