"""Ingest refuses what the archive could not hold, with the archive's own limits."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from support.mqtt_ingest import DATA, payload
from support.mqtt_ingest import now_utc as _now

from envcal.archive_limits import SEQ_MAX, TS_MAX, TS_MIN, reading_problem
from envcal.ingest import IngestCore
from envcal.registry import sync_registry


@pytest.mark.parametrize("body, why", [
    ({"ts": "0001-01-01T00:00:00+00:00", "values": {"SO2": 1.0}}, "outside the archive's range"),
    ({"ts": "1600-06-01T00:00:00+00:00", "values": {"SO2": 1.0}}, "outside the archive's range"),
    ({"ts": "1677-01-01T00:00:00+00:00", "values": {"SO2": 1.0}}, "outside the archive's range"),
    ({"seq": 2**63 - 1, "values": {"SO2": 1.0}}, "seq 9223372036854775807"),
    ({"values": {"SO2": 1.0}, "check": {"id": "CK\u0000x", "kind": "span", "phase": "run"}}, "U+0000"),
    ({"values": {"SO2": 1.0}, "check": {"id": "CK", "kind": "span", "phase": "run",
                                        "material": "L\u001fOT"}}, "U+001F"),
])
def test_ingest_refuses_unarchivable_reading(engine, registry, body, why):
    sync_registry(engine, registry)
    body = {"ts": (_now() - dt.timedelta(hours=1)).isoformat(), **body}
    r = IngestCore(engine, registry).ingest([(DATA, payload(body))])
    assert (r.rows, r.dead_letters) == (0, 1)
    with engine.connect() as conn:
        reason = conn.execute(sa.text("select reason from dead_letter")).scalar_one()
    assert why in reason


def test_archive_limits_edges():
    assert reading_problem(TS_MIN, SEQ_MAX) is None
    assert reading_problem(TS_MAX, None) is not None
    assert reading_problem(TS_MAX - dt.timedelta(microseconds=1), 0) is None
    assert reading_problem(TS_MIN, SEQ_MAX + 1) is not None
    assert reading_problem(TS_MIN, None, [("check id", "ok-id")]) is None


def test_ingest_refuses_hj212_flag_the_archive_cannot_hold(sqlite_engine, registry):
    from envcal.protocols import hj212

    sync_registry(sqlite_engine, registry)
    t = _now() - dt.timedelta(hours=1)
    frame = hj212.encode_frame(cn="2011", mn="33040000000001", data_time=t,
                               cp={"a21026-Rtd": 22.5, "a21026-Flag": "P"})
    r = IngestCore(sqlite_engine, registry).ingest([("envcal/ZJ-JX-PP01/JX-PP01-CEMS/hj212", frame)])
    assert (r.rows, r.dead_letters) == (0, 1)
    with sqlite_engine.connect() as conn:
        reason = conn.execute(sa.text("select reason from dead_letter")).scalar_one()
    assert "'P'" in reason and "Table 8" in reason
