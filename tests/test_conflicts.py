"""Conflicting duplicates are kept as records (real SQLite / PostgreSQL through IngestCore)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from support.mqtt_ingest import DATA, JSON_AZ, count, payload
from support.mqtt_ingest import now_utc as _now

from envcal.conflicts import list_conflicts, resolve_conflict
from envcal.ingest import IngestCore
from envcal.registry import sync_registry
from envcal.stats import stats
from envcal.users import Actor, PermissionDenied

CHECK = DATA.replace("/data", "/check")


def _value(engine) -> float:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return conn.execute(sa.text("select value from reading where analyte = 'SO2'")).scalar_one()


def test_conflicts_reading_other_value_recorded_first_stays(engine, registry):
    sync_registry(engine, registry)
    ts = (_now() - dt.timedelta(hours=1)).isoformat()
    core = IngestCore(engine, registry)
    core.ingest([(DATA, payload({"ts": ts, "seq": 1, "values": {"SO2": 10.0}}))])
    same = core.ingest([(DATA, payload({"ts": ts, "seq": 1, "values": {"SO2": 10.0}}))])
    assert same.conflicts == 0  # a plain redelivery is no conflict
    other = payload({"ts": ts, "seq": 1, "values": {"SO2": 99.0}})
    r = core.ingest([(DATA, other)])
    assert (r.rows, r.duplicates, r.conflicts) == (0, 1, 1)
    assert core.ingest([(DATA, other)]).conflicts == 0  # the same conflicting message again
    assert _value(engine) == 10.0  # the first stored value stays authoritative
    (c,) = list_conflicts(engine)
    assert c["kind"] == "reading" and c["analyzer_id"] == JSON_AZ
    assert c["stored"]["value"] == 10.0 and c["received"]["value"] == 99.0
    assert c["conflict_key"].startswith("SO2@")
    assert stats(engine)["conflicts"] == 1


def test_conflicts_check_summary_resent_with_other_content(engine, registry):
    sync_registry(engine, registry)
    base = _now() - dt.timedelta(hours=1)
    summ = {"id": "CK-1", "kind": "span", "analyte": "SO2", "start": base.isoformat(),
            "end": (base + dt.timedelta(minutes=5)).isoformat(), "material": "LOT-1",
            "measured": 160.2, "readings": [160.0, 160.4], "standard_value": 160.1, "verdict": "pass"}
    core = IngestCore(engine, registry)
    core.ingest([(CHECK, payload(summ))])
    assert core.ingest([(CHECK, payload(summ))]).conflicts == 0
    r = core.ingest([(CHECK, payload(dict(summ, measured=150.0, verdict="fail")))])
    assert r.conflicts == 1 and r.summary_ids == ()
    (c,) = list_conflicts(engine)
    assert c["kind"] == "check_summary" and c["conflict_key"] == "CK-1/SO2"
    assert (c["stored"]["measured"], c["received"]["measured"]) == (160.2, 150.0)
    assert count(engine, "check_summary") == 1


def test_conflicts_operator_takes_received_value(engine, registry):
    sync_registry(engine, registry)
    ts = (_now() - dt.timedelta(hours=1)).isoformat()
    core = IngestCore(engine, registry)
    core.ingest([(DATA, payload({"ts": ts, "values": {"SO2": 10.0}})),
                 (DATA, payload({"ts": ts, "values": {"SO2": 12.5}}))])  # in one batch too
    (c,) = list_conflicts(engine)
    with pytest.raises(PermissionDenied):
        resolve_conflict(engine, c["id"], take_received=True, actor=Actor("v", "viewer"))
    resolve_conflict(engine, c["id"], take_received=True, actor=Actor("ops", "staff"))
    assert _value(engine) == 12.5
    assert list_conflicts(engine) == []
    done = list_conflicts(engine, open_only=False)[0]
    assert (done["resolution"], done["resolved_by"]) == ("took_received", "ops")
    with pytest.raises(ValueError, match="already resolved"):
        resolve_conflict(engine, c["id"], take_received=False, actor=Actor("ops", "staff"))
    assert json.dumps(done, default=str)  # plain data for the app
