"""End to end over a real Mosquitto: a QC check published as readings becomes a stored,
published, explained result under the right rule, and a failing one raises an alert."""

from __future__ import annotations

import datetime as dt
import json
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from envcal.certificates import import_certificate
from envcal.db import init_db, make_engine
from envcal.ingest import IngestService
from envcal.pipeline import attach
from envcal.protocols import json_v1
from envcal.protocols.records import CheckBlock, ReadingRecord
from envcal.registry import sync_registry
from envcal.verify import list_results

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
