"""The MQTT outbox (envcal.outbox): republishing while the broker is away."""

from __future__ import annotations

import datetime as dt
import json
import time

import paho.mqtt.client as mqtt
import sqlalchemy as sa

from envcal.alerts import AlertEngine
from envcal.db import init_db, make_engine
from envcal.ingest import IngestCore
from envcal.outbox import Outbox
from envcal.registry import sync_registry
from envcal.verify import Verifier

TOPIC = "envcal/ZJ-NB-PP02/NB-PP02-CEMS/data"


def _zero_check(check_id: str, t0: dt.datetime, level: float = 6.0, n: int = 20) -> list[bytes]:
    """A zero check of SO2 steady at ``level`` mg/m3: 3.0 % F.S. > 2.5 % -> fail (opens an alert)."""
    out = []
    for i in range(n):
        phase = "start" if i == 0 else ("end" if i == n - 1 else "run")
        out.append(json.dumps({"ts": (t0 + dt.timedelta(seconds=15 * i)).isoformat(), "seq": i + 1,
                               "values": {"SO2": level}, "flags": {"SO2": "C"},
                               "check": {"id": check_id, "kind": "zero", "phase": phase}}).encode())
    return out


def test_outbox_republish_while_broker_away_queues_each_row_once(mosquitto, db_url, registry):
    """Republishing while disconnected used to queue one more copy of every unacknowledged
    row in paho's session per timer tick (unbounded memory, a flood on reconnect)."""
    engine = make_engine(db_url)
    init_db(engine)
    sync_registry(engine, registry)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-outbox-away", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.is_connected()
        mosquitto.stop()  # the broker goes away
        deadline = time.monotonic() + 10
        while c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not c.is_connected()

        outbox = Outbox(engine, lambda: c, republish_after=dt.timedelta(seconds=1), ack_timeout=0.2)
        alerts_ = AlertEngine(engine, registry, outbox=outbox)
        verifier = Verifier(engine, registry, listeners=[outbox.publish_results, alerts_.on_results])
        t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
        IngestCore(engine, registry).ingest([(TOPIC, m) for m in _zero_check("CK-AWAY-1", t0)])
        assert len(verifier.verify_pending()) == 1
        with engine.connect() as conn:
            rows = (conn.execute(sa.text("select count(*) from check_result")).scalar_one()
                    + conn.execute(sa.text("select count(*) from alert_event")).scalar_one())
        assert rows >= 2  # a result and at least the alert's opening
        assert outbox.wait_idle(10)
        wall = dt.datetime.now(dt.UTC)
        for i in range(30):  # 30 timer ticks with the broker away
            outbox.republish(None, wall + dt.timedelta(seconds=5 + 5 * i))
            assert outbox.wait_idle(10)
        assert len(c._out_messages) <= rows  # each row queued at most once, however long the outage
        outbox.close()
    finally:
        c.loop_stop()
        engine.dispose()
