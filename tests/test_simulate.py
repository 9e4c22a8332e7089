"""The station simulator: deterministic bytes, valid wire formats, checks, faults, MQTT delivery."""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from envcal.protocols import hj212, json_v1
from envcal.protocols.records import ProtocolError
from envcal.registry import Registry
from envcal.simulate import (
    ALERT_KINDS,
    TZ,
    Fault,
    Simulator,
    SimulatorError,
    expected_alerts,
    load_faults,
    load_materials,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FAULTS = ROOT / "stations" / "faults" / "default.toml"
START = dt.datetime(2026, 10, 1, tzinfo=TZ)


def _sub(reg: Registry, *ids: str) -> Registry:
    """A registry with only the named analyzers (and their stations)."""
    ans = {i: reg.analyzers[i] for i in ids}
    sts = {a.station: reg.stations[a.station] for a in ans.values()}
    return Registry(stations=sts, analyzers=ans)


def _run(reg, days=1.0, faults=None, seed=3, start=START):
    sim = Simulator(reg, faults=faults, seed=seed, start=start, days=days)
    return sim, list(sim.messages())


def _decode_json(msgs, analyzer=None):
    """(records, failures) of the JSON data messages (of one analyzer)."""
    recs, bad = [], 0
    for _, topic, payload in msgs:
        if not topic.endswith("/data") or (analyzer and topic.split("/")[2] != analyzer):
            continue
        try:
            recs.extend(json_v1.decode_readings(payload))
        except ProtocolError:
            bad += 1
    return recs, bad


def _checks(recs):
    out = collections.defaultdict(list)
    for r in recs:
        if r.check is not None:
            out[r.check.id].append(r)
    return out


def _plateau(readings, analyte):
    return float(np.mean([r.values[analyte] for r in readings[-10:]]))


# ------------------------------------------------------------------------------ determinism
def test_messages_same_seed_same_bytes(registry):
    reg = _sub(registry, "JX-PP01-CEMS", "NB-AQ01-PM", "SX-WW01-WQ")
    faults = load_faults(DEFAULT_FAULTS)
    faults = [f for f in faults if f.analyzer in reg.analyzers]
    _, a = _run(reg, days=3, faults=faults, seed=11)
    _, b = _run(reg, days=3, faults=faults, seed=11)
    _, c = _run(reg, days=3, faults=faults, seed=12)
    assert len(a) > 5000
    assert a == b
    assert a != c


def test_messages_time_ordered_and_topics(registry):
    sim, msgs = _run(registry, days=1)
    times = [m[0] for m in msgs]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < START + dt.timedelta(days=1)
    topics = {m[1] for m in msgs}
    for a in registry.analyzers.values():
        leaf = "hj212" if a.protocol == "hj212" else "data"
        assert f"envcal/{a.station}/{a.id}/{leaf}" in topics
    assert len(sim.status_topics()) == len(registry.analyzers)


def test_default_start_ends_before_now(registry):
    sim = Simulator(_sub(registry, "HZ-AQ01-PM"), days=2)
    assert sim.start.utcoffset() == dt.timedelta(hours=8)
    assert (sim.start.hour, sim.start.minute) == (0, 0)
    assert sim.start + dt.timedelta(days=2) <= dt.datetime.now(TZ)


# ------------------------------------------------------------------------------ wire formats
def test_hj212_frames_decode_with_valid_crc(registry):
    reg = _sub(registry, "JX-PP01-CEMS", "SX-WW01-WQ")
    _, msgs = _run(reg, days=1)
    cns = collections.Counter()
    flags = collections.Counter()
    for _, topic, payload in msgs:
        if not topic.endswith("/hj212"):
            continue
        body = payload[:-2]
        assert payload.endswith(b"\r\n")
        seg = body[6:-4]
        assert int(body[2:6]) == len(seg)
        assert int(body[-4:], 16) == hj212.crc16_hj212(seg)
        frame = hj212.decode_frame(payload)
        an = reg.by_mn(frame.mn)
        assert an is not None and topic.split("/")[2] == an.id
        code_map = {c.code: c.analyte for c in an.channels if c.code}
        recs = hj212.frame_to_records(frame, code_map)
        assert recs and set(recs[0].values) == set(code_map.values())
        cns[(an.id, frame.cn)] += 1
        for f in frame.flags.values():
            flags[f] += 1
    assert cns[("JX-PP01-CEMS", "2011")] == 1440  # real-time, every minute
    assert cns[("SX-WW01-WQ", "2061")] == 24  # hourly
    assert flags["C"] > 0 and flags["N"] > 0  # C while a channel is in a check


def test_json_payloads_decode_and_match_encoder(registry):
    reg = _sub(registry, "NB-PP02-CEMS", "HZ-SW01-WQ", "HZ-AQ01-GAS")
    _, msgs = _run(reg, days=1)
    recs, bad = _decode_json(msgs)
    assert bad == 0 and len(recs) > 2000
    # the simulator's fast JSON writer is byte-identical to json_v1.encode_readings
    for _, topic, payload in msgs[:50] + msgs[-50:]:
        if topic.endswith("/data"):
            assert json_v1.encode_readings(json_v1.decode_readings(payload)) == payload
    # seq increases by one per analyzer
    seqs = collections.defaultdict(list)
    for _, topic, payload in msgs:
        seqs[topic.split("/")[2]].extend(r.seq for r in json_v1.decode_readings(payload))
    for s in seqs.values():
        assert s == list(range(1, len(s) + 1))


def test_no_two_values_share_the_storage_key(registry):
    """Ingest keys readings by (analyzer, analyte, ts): a collision would lose a value."""
    _, msgs = _run(registry, days=1)
    keys = collections.Counter()
    for _, topic, payload in msgs:
        an = registry.analyzers[topic.split("/")[2]]
        if topic.endswith("/hj212"):
            codes = {c.code: c.analyte for c in an.channels if c.code}
            recs = hj212.frame_to_records(hj212.decode_frame(payload), codes)
        else:
            recs = json_v1.decode_readings(payload)
        for r in recs:
            for analyte in r.values:
                keys[(an.id, analyte, r.ts)] += 1
    assert len(keys) > 20000
    assert max(keys.values()) == 1


def test_water_analyzers_batch_interval(registry):
    _, msgs = _run(_sub(registry, "HZ-SW01-WQ"), days=2)
    recs, _ = _decode_json(msgs)
    routine = [r for r in recs if r.check is None]
    assert len(routine) == 12  # every 4 h
    assert set(routine[0].values) == {"CODcr", "NH3-N", "TP", "TN", "pH"}


# ------------------------------------------------------------------------------ checks
def test_checks_phases_and_only_checked_analyte(registry):
    sim, msgs = _run(registry, days=1)
    recs, _ = _decode_json(msgs)
    checks = _checks(recs)
    assert len(checks) == sim.stats["checks"] > 0
    kinds = collections.defaultdict(set)
    by_id = {c.id: c for c in sim.checks}
    for cid, rs in checks.items():
        ev = by_id[cid]
        assert re.fullmatch(rf"CK-{ev.analyzer}-\d{{12}}-{re.escape(ev.analyte)}-{ev.kind}", cid)
        assert [r.check.phase for r in rs] == ["start"] + ["run"] * (len(rs) - 2) + ["end"]
        assert 20 <= len(rs) <= 72
        for r in rs:
            assert set(r.values) == {ev.analyte}
            assert r.flags[ev.analyte] == "C"
            assert r.check.kind == ev.kind
        assert all(r.ts.second % 60 != 0 for r in rs)  # never on a routine reading's minute
        spacing = {(b.ts - a.ts).total_seconds() for a, b in zip(rs, rs[1:], strict=False)}
        assert spacing <= set(np.arange(10.0, 20.5, 0.5))
        span = registry.analyzers[ev.analyzer].channel(ev.analyte).span
        assert abs(_plateau(rs, ev.analyte) - ev.reference) < 0.01 * span  # plateau reached
        kinds[ev.analyzer].add(ev.kind)
    assert kinds["JX-PP01-CEMS"] == {"zero", "span"}
    assert kinds["HZ-AQ01-GAS"] >= {"zero", "span"}
    assert kinds["SX-WW01-WQ"] == {"std_sample"}
    assert kinds["HZ-AQ01-PM"] == {"flow"}


def test_check_materials_from_certificates(registry):
    mats = {m.id: m for m in load_materials()}
    sim, _ = _run(_sub(registry, "JX-PP01-CEMS", "SX-WW01-WQ", "HZ-AQ01-PM"), days=1)
    seen = {(c.analyzer, c.analyte, c.kind): c for c in sim.checks}
    so2 = seen[("JX-PP01-CEMS", "SO2", "span")]
    assert [(v.analyte, v.value, v.unit) for v in mats[so2.material].values] == [
        ("SO2", 56.0, "umol/mol")]
    assert so2.reference == pytest.approx(160.15, abs=0.01)  # 56 umol/mol * 64.06 / 22.4
    nox = seen[("JX-PP01-CEMS", "NOx", "span")]
    assert nox.material in mats and nox.reference > 0
    assert mats[seen[("JX-PP01-CEMS", "SO2", "zero")].material].kind == "zero_material"
    nh3 = seen[("SX-WW01-WQ", "NH3-N", "std_sample")]
    assert nh3.reference == next(v.value for v in mats[nh3.material].values if v.analyte == "NH3-N")
    flow = seen[("HZ-AQ01-PM", "flow", "flow")]
    assert flow.material == "" and flow.reference == 16.67


def test_step_response_t90(registry):
    sim, msgs = _run(_sub(registry, "JX-PP01-CEMS"), days=1)
    recs, _ = _decode_json(msgs)
    ev = next(c for c in sim.checks if c.kind == "span" and c.analyte == "SO2")
    rs = _checks(recs)[ev.id]
    y = np.array([r.values["SO2"] for r in rs])
    t = np.array([(r.ts - rs[0].ts).total_seconds() for r in rs])
    y0, y1 = y[0], _plateau(rs, "SO2")
    t90 = t[np.argmax((y - y0) / (y1 - y0) >= 0.9)]
    assert 45 <= t90 <= 135


# ------------------------------------------------------------------------------ faults
def test_fault_drift_raises_span_plateau(registry):
    reg = _sub(registry, "JX-PP01-CEMS")
    drift = [Fault(type="drift", analyzer="JX-PP01-CEMS", analyte="SO2", per_day=0.4, start_day=1)]
    sim0, clean = _run(reg, days=5)
    sim1, drifted = _run(reg, days=5, faults=drift)
    c0, c1 = _checks(_decode_json(clean)[0]), _checks(_decode_json(drifted)[0])
    spans = [c for c in sim0.checks if c.analyte == "SO2" and c.kind == "span"]
    assert len(spans) == 5
    for ev in spans:
        d = ev.t0 / 86400 - 1
        expected = 0.4 / 100 * 200.0 * max(d, 0.0)  # % F.S. per day * span [mg/m3]
        diff = _plateau(c1[ev.id], "SO2") - _plateau(c0[ev.id], "SO2")
        assert diff == pytest.approx(expected, abs=0.1)
    assert expected > 2.0  # the last span check is ~1.2 % F.S. (2.4 mg/m3) high
    # zero checks (no concentration) do not move with a span drift
    zeros = [c for c in sim0.checks if c.analyte == "SO2" and c.kind == "zero"]
    assert abs(_plateau(c1[zeros[-1].id], "SO2") - _plateau(c0[zeros[-1].id], "SO2")) < 0.1


def test_fault_bias_std_sample(registry):
    reg = _sub(registry, "SX-WW01-WQ")
    bias = [Fault(type="bias", analyzer="SX-WW01-WQ", analyte="NH3-N", percent=15.0, start_day=1)]
    sim, msgs = _run(reg, days=3, faults=bias)
    checks = _checks(_decode_json(msgs)[0])
    rel = []
    for ev in sim.checks:
        if ev.analyte == "NH3-N":
            rel.append((_plateau(checks[ev.id], "NH3-N") - ev.reference) / ev.reference * 100)
    assert abs(rel[0]) < 4 and all(11 < r < 19 for r in rel[1:])  # 15 % +- scatter


def test_fault_stuck_value(registry):
    reg = _sub(registry, "HZ-AQ02-PM")
    stuck = [Fault(type="stuck", analyzer="HZ-AQ02-PM", analyte="PM2.5", hours=6, start_day=0.25)]
    _, msgs = _run(reg, days=1, faults=stuck)
    recs = [r for r in _decode_json(msgs)[0] if r.check is None]
    pm = np.array([r.values["PM2.5"] for r in recs])
    assert len(set(pm[360:720])) == 1  # 06:00-12:00 flat
    assert len(set(pm[:360])) > 50 and len(set(pm[720:])) > 50
    assert len(set(r.values["PM10"] for r in recs[360:720])) > 50  # other channel untouched


def test_fault_noise_growth(registry):
    reg = _sub(registry, "HZ-AQ01-PM")
    noise = [Fault(type="noise", analyzer="HZ-AQ01-PM", analyte="flow", per_day=3.0, start_day=1)]
    _, clean = _run(reg, days=3)
    _, noisy = _run(reg, days=3, faults=noise)

    def sd(msgs, day):
        recs = [r for r in _decode_json(msgs)[0] if r.check is None]
        return np.std([r.values["flow"] for r in recs[day * 1440:(day + 1) * 1440]])

    assert sd(noisy, 0) == pytest.approx(sd(clean, 0))
    assert sd(noisy, 2) > 3 * sd(clean, 2)


def test_fault_drop_and_malformed_counted(registry):
    reg = _sub(registry, "NB-AQ01-PM", "JX-PP01-CEMS")
    faults = [Fault(type="drop", analyzer="NB-AQ01-PM", probability=0.02),
              Fault(type="malformed", analyzer="NB-AQ01-PM", probability=0.01, max_count=5),
              Fault(type="malformed", analyzer="JX-PP01-CEMS", probability=0.01, max_count=3)]
    sim, msgs = _run(reg, days=1, faults=faults)
    recs, bad_json = _decode_json(msgs, "NB-AQ01-PM")
    assert bad_json == 5
    _, bad_jx = _decode_json(msgs, "JX-PP01-CEMS")
    bad_frames = 0
    for _, topic, payload in msgs:
        if topic.endswith("/hj212"):
            try:
                hj212.decode_frame(payload)
            except hj212.Hj212Error as exc:
                assert "CRC" in str(exc)
                bad_frames += 1
    assert bad_frames + bad_jx == 3 and bad_frames > 0
    assert sim.stats["malformed"] == 8 and sim.stats["dropped"] > 10
    sent = 1440 + sum(len(c.times) for c in sim.checks if c.analyzer == "NB-AQ01-PM")
    assert max(r.seq for r in recs) > sent - 5
    assert sent - len(recs) == sim.stats["dropped"] + bad_json  # every loss is a seq gap


def test_fault_material_and_falsify(registry):
    reg = _sub(registry, "HZ-SW01-WQ", "NB-PP02-CEMS")
    faults = [Fault(type="material", analyzer="HZ-SW01-WQ", analyte="NH3-N", material="LOT-UNKNOWN",
                    start_day=1),
              Fault(type="falsify", analyzer="NB-PP02-CEMS", analyte="NOx", limit=50.0, flag="M",
                    excursions_per_day=3, excursion=30.0)]
    sim, msgs = _run(reg, days=2, faults=faults)
    recs, _ = _decode_json(msgs)
    mats = {r.check.id: r.check.material for r in recs if r.check and "NH3-N" in r.values}
    by_day = sorted((cid, m) for cid, m in mats.items())
    assert by_day[0][1] != "LOT-UNKNOWN" and by_day[-1][1] == "LOT-UNKNOWN"
    nox = [r for r in recs if r.check is None and "NOx" in r.values]
    process = [r for r in nox if r.flags["NOx"] != "C"]  # C: the daily zero/span check gas
    high = [r for r in process if r.values["NOx"] > 50.0]
    assert len(high) > 30
    assert all(r.flags["NOx"] == "M" for r in high)
    assert all(r.flags["NOx"] == "N" for r in process if r.values["NOx"] <= 50.0)


# ------------------------------------------------------------------------------ fault files
def test_default_fault_file_covers_families_and_spares_hz_aq01(registry):
    faults = load_faults(DEFAULT_FAULTS)
    Simulator(registry, faults=faults, start=START, days=30)  # validates against the registry
    exp = expected_alerts(faults)
    assert "HZ-AQ01-PM" not in exp and "HZ-AQ01-GAS" not in exp
    assert "drift_trend" in exp["JX-PP01-CEMS"] and "material_invalid" in exp["HZ-SW01-WQ"]
    assert {f.type for f in faults} >= {"drift", "bias", "stuck", "drop", "malformed", "material",
                                        "falsify"}
    assert all(f.expect and set(f.expect) <= set(ALERT_KINDS) for f in faults)


@pytest.mark.parametrize("text, message", [
    ('[[faults]]\ntype="drift"\nanalyzer="JX-PP01-CEMS"\nanalyte="SO2"\nper_day=1\ncolour="red"\n',
     "unknown key"),
    ('[[faults]]\ntype="drift"\nanalyzer="JX-PP01-CEMS"\nanalyte="SO2"\n', "needs per_day"),
    ('[[faults]]\ntype="stuck"\nanalyzer="JX-PP01-CEMS"\nanalyte="SO2"\nhours=2\nper_day=1\n',
     "does not take per_day"),
    ('[[faults]]\ntype="bias"\nanalyzer="JX-PP01-CEMS"\nanalyte="SO2"\n', "percent or offset"),
    ('[[faults]]\ntype="warp"\nanalyzer="JX-PP01-CEMS"\n', "type"),
    ('[[faults]]\ntype="drop"\nanalyzer="JX-PP01-CEMS"\nprobability=0.1\nexpect="boom"\n',
     "unknown alert kind"),
    ('[[faults]]\ntype="drop"\nanalyzer="JX-PP01-CEMS"\nprobability=0.1\nstart_day=3\nend_day=2\n',
     "end_day"),
    ("[[faults]\n", "invalid TOML"),
])
def test_fault_file_invalid_rejected(tmp_path, text, message):
    p = tmp_path / "f.toml"
    p.write_text(text)
    with pytest.raises(SimulatorError, match=message):
        load_faults(p)


def test_fault_unknown_analyzer_or_channel_rejected(registry):
    with pytest.raises(SimulatorError, match="unknown analyzer"):
        Simulator(registry, faults=[Fault(type="drop", analyzer="XX", probability=0.1)], start=START)
    with pytest.raises(SimulatorError, match="no channel 'PM2.5'"):
        Simulator(registry, faults=[Fault(type="stuck", analyzer="JX-PP01-CEMS", analyte="PM2.5",
                                          hours=1)], start=START)


# ------------------------------------------------------------------------------ MQTT
class _Collector:
    def __init__(self, url_port: int) -> None:
        self.count = collections.Counter()
        self.status: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-test-sub")
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a, **k: self.ready.set()
        self.c.connect("127.0.0.1", url_port)
        self.c.subscribe("envcal/#", qos=1)
        self.c.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            if msg.topic.endswith("/status"):
                self.status[msg.topic] = msg.payload
            else:
                self.count[msg.topic] += 1

    def total(self) -> int:
        with self.lock:
            return sum(self.count.values())

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_publish_delivers_every_message(registry, mosquitto):
    reg = _sub(registry, "JX-PP01-CEMS", "NB-AQ01-PM", "HZ-SW01-WQ")
    faults = [Fault(type="drop", analyzer="NB-AQ01-PM", probability=0.05)]
    sim = Simulator(reg, faults=faults, seed=5, start=START, days=0.5)
    expected = collections.Counter(m[1] for m in sim.messages())
    sub = _Collector(mosquitto.port)
    try:
        stats = sim.publish(mosquitto.url, speed=0)
        deadline = time.monotonic() + 30
        while sub.total() < stats["messages"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert stats["messages"] == sum(expected.values())
        assert sub.count == expected  # every message, once
        assert stats["dropped"] > 0
        assert set(sub.status) == set(sim.status_topics())
        assert set(sub.status.values()) == {b"offline"}  # graceful end of the run
    finally:
        sub.close()


def test_publish_speed_paces_and_stop_ends_early(registry, mosquitto):
    reg = _sub(registry, "HZ-AQ01-PM")
    sim = Simulator(reg, seed=1, start=START, days=0.02)  # 28.8 simulated minutes
    t0 = time.monotonic()
    stats = sim.publish(mosquitto.url, speed=3000)  # -> ~0.58 s of real time
    assert time.monotonic() - t0 >= 0.5
    assert stats["published"] == stats["messages"] == 29
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    stats = Simulator(reg, seed=1, start=START, days=1).publish(mosquitto.url, speed=60, stop=stop)
    assert time.monotonic() - t0 < 10
    assert 0 < stats["published"] < 1440


def test_cli_simulate_publishes(registry, mosquitto, tmp_path):
    from envcal.cli import app

    reg_file = tmp_path / "one.toml"
    reg_file.write_text(re.sub(r"\n# -+ flue gas.*", "\n", (ROOT / "stations" / "zhejiang.toml").read_text(),
                               flags=re.S))
    sub = _Collector(mosquitto.port)
    try:
        res = CliRunner().invoke(app, ["simulate", "--broker", mosquitto.url, "--stations", str(reg_file),
                                       "--days", "0.1", "--start", "2026-10-01T00:00:00", "--seed", "2",
                                       "--json"])
        assert res.exit_code == 0, res.output
        stats = json.loads(res.stdout.strip().splitlines()[-1])
        deadline = time.monotonic() + 20
        while sub.total() < stats["messages"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats["messages"] == sub.total() > 500
        assert {t.split("/")[2] for t in sub.count} == {"HZ-AQ01-PM", "HZ-AQ01-GAS", "HZ-AQ02-PM",
                                                        "NB-AQ01-PM"}
    finally:
        sub.close()


def test_cli_simulate_bad_fault_file_exit_2(tmp_path):
    from envcal.cli import app

    p = tmp_path / "bad.toml"
    p.write_text('[[faults]]\ntype="drop"\nanalyzer="NOPE"\nprobability=0.5\n')
    res = CliRunner().invoke(app, ["simulate", "--broker", "mqtt://127.0.0.1:9", "--faults", str(p),
                                   "--stations", str(ROOT / "stations")])
    assert res.exit_code == 2
    assert "unknown analyzer 'NOPE'" in res.output
