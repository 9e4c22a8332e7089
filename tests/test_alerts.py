"""Alerts: each kind opens once, updates, resolves; out-of-control periods; dispatch."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from envcal import alerts
from envcal.alerts import AlertConfig, AlertEngine, AlertError, ooc_periods_kernel
from envcal.models import (
    Alert,
    AlertEvent,
    AuditLog,
    CheckResult,
    Finding,
    OutOfControlPeriod,
    Reading,
)
from envcal.registry import sync_registry
from envcal.rules import load_pack

A = "JX-PP01-CEMS"  # hj75_2017: span drift error_fs_pct, warn 2.0, limit 2.5 % F.S.; SO2 span 200
T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def reg_engine(engine, registry):
    sync_registry(engine, registry)
    return engine


def add_result(engine, day: float, err: float | None, *, kind="span", analyte="SO2", analyzer=A,
               verdict=None, details=None, material="LOT-1") -> dict:
    """One stored check result ``day`` days after T0 (10-min check ending at +10 min)."""
    pack = load_pack("hj75_2017")
    rule = pack.rules_for(kind, analyte)[0]
    if verdict is None:
        verdict = rule.verdict(err)
    start = T0 + dt.timedelta(days=day)
    end = start + dt.timedelta(minutes=10)
    row = dict(analyzer_id=analyzer, station_id="ZJ-JX-PP01", analyte=analyte, kind=kind,
               check_id=f"CK-{kind}-{analyte}-{day}", source="readings", start=start, end=end,
               unit="mg/m3", span=200.0, n=20, mean=None if err is None else 100 + 2 * err,
               error_fs_pct=err, verdict=verdict, rule=rule.id, pack="hj75_2017",
               pack_version="2026.1", material=material, reason_en=f"{verdict}", reason_zh=verdict,
               details=details or {}, evaluated_at=end, needs_review=False)
    with engine.begin() as conn:
        rid = conn.execute(CheckResult.__table__.insert().values(**row)).inserted_primary_key[0]
    return {"id": rid, "analyzer": analyzer, "analyte": analyte, "kind": kind, "end": end}


def all_alerts(engine, kind=None):
    with engine.connect() as conn:
        q = sa.select(Alert.__table__)
        if kind:
            q = q.where(Alert.__table__.c.kind == kind)
        return [dict(m) for m in conn.execute(q.order_by(Alert.__table__.c.id)).mappings()]


def events(engine):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(AlertEvent.alert_id, AlertEvent.action)
                                               .order_by(AlertEvent.id))]


# ----------------------------------------------------------------------------- out of control
def test_out_of_control_period_worked_example(reg_engine, registry):
    """HJ 75-2017 (hj75.ooc.drift, factor 1: any failed drift check).

    Daily span checks 08:00-08:10 UTC, errors [% F.S.]: 1 Mar 0.5 (pass), 2 Mar 0.8 (pass),
    3 Mar 3.1 (fail: out of control), 4 Mar 3.4 (fail, same period), 5 Mar 0.4 (pass after
    adjustment). Period: start = end of the 2 Mar check = 2026-03-02T08:10Z, end = end of the
    5 Mar check = 2026-03-05T08:10Z. Hourly readings at HH:30 inside are qa_ok False.
    """
    eng = AlertEngine(reg_engine, registry)
    with reg_engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), [
            dict(analyzer_id=A, analyte="SO2", ts=T0 + dt.timedelta(hours=h, minutes=30), value=20.0,
                 flag="N", received_at=T0) for h in range(6 * 24)])
    for day, err in enumerate([0.5, 0.8, 3.1, 3.4, 0.4]):
        eng.on_results([add_result(reg_engine, day, err)])
        if day == 2:
            ooc = all_alerts(reg_engine, "out_of_control")
            assert len(ooc) == 1 and ooc[0]["state"] == "open" and ooc[0]["severity"] == "critical"
        if day == 3:  # new failing evidence: same alerts, updated
            assert len(all_alerts(reg_engine, "out_of_tolerance")) == 1
    periods = alerts.list_periods(reg_engine)
    assert len(periods) == 1
    p = periods[0]
    assert p["start"] == "2026-03-02T08:10:00Z"
    assert p["end"] == "2026-03-05T08:10:00Z"
    assert p["rule_id"] == "hj75.ooc.drift" and "HJ 75-2017" in p["source"]
    for kind in ("out_of_control", "out_of_tolerance"):
        (a,) = all_alerts(reg_engine, kind)
        assert a["state"] == "resolved" and a["open_key"] is None
    r = Reading.__table__.c
    with reg_engine.connect() as conn:
        rows = conn.execute(sa.select(r.ts, r.qa_ok).order_by(r.ts)).all()
    start, end = dt.datetime(2026, 3, 2, 8, 10, tzinfo=dt.UTC), dt.datetime(2026, 3, 5, 8, 10, tzinfo=dt.UTC)
    for ts, qa in rows:
        ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
        assert (qa is False) == (start < ts <= end), ts
    assert sum(1 for _, q in rows if q is False) == 72
    # replay: nothing new
    n_events = len(events(reg_engine))
    assert eng.reevaluate_all() == []
    assert len(events(reg_engine)) == n_events
    with reg_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(OutOfControlPeriod.__table__)).scalar() == 1
        actions = [a for (a,) in conn.execute(sa.select(AuditLog.action))]
    assert "alert.open" in actions and "alert.resolve" in actions


def test_ooc_kernel_consecutive_2x5():
    """40 CFR 60 App. F: 5 consecutive checks above 2x spec; the period starts at the 5th."""
    q = np.array([0.1, 2.2, 2.4, 2.3, 2.6, 2.2, 2.1, 0.1]) / 1.0  # |q| / limit
    passed = q <= 1.0
    st, tr, cl, state = ooc_periods_kernel(np.array([0, 8]), q, passed, np.array([2.0]), np.array([5]))
    assert list(st) == [5] and list(tr) == [5] and list(cl) == [7]
    st, tr, cl, _ = ooc_periods_kernel(np.array([0, 8]), q, passed, np.array([2.0]), np.array([6]))
    assert list(st) == [6] and list(cl) == [7]
    q2 = np.array([0.1, 2.2, 2.4, 0.5, 2.6, 2.2])
    st, tr, cl, _ = ooc_periods_kernel(np.array([0, 6]), q2, q2 <= 1, np.array([2.0]), np.array([5]))
    assert len(st) == 0


def test_ooc_hj75_span_period_not_closed_by_zero_pass(reg_engine, registry):
    """HJ 75-2017 (close = same_kind): zero and span drift are separate series.

    Checks [% F.S.], limit 2.5: day 0 span 0.5 pass, zero 0.3 pass; day 1 span 3.1 fail
    (opens: start = end of the day-0 span check, 2026-03-01T08:10Z); day 2 zero 0.2 pass
    (a passing check of the other kind: the period stays open, the old single-series code
    closed it here), span 3.0 still failing; day 3 span 0.4 pass after adjustment: closed
    at its end, 2026-03-04T08:10Z.
    """
    eng = AlertEngine(reg_engine, registry)
    eng.on_results([add_result(reg_engine, 0, 0.5), add_result(reg_engine, 0, 0.3, kind="zero")])
    eng.on_results([add_result(reg_engine, 1, 3.1)])
    (a,) = all_alerts(reg_engine, "out_of_control")
    assert a["state"] == "open"
    eng.on_results([add_result(reg_engine, 2, 0.2, kind="zero")])
    (p,) = alerts.list_periods(reg_engine)
    assert p["end"] is None and p["start"] == "2026-03-01T08:10:00Z"
    assert all_alerts(reg_engine, "out_of_control")[0]["state"] == "open"
    eng.on_results([add_result(reg_engine, 2.01, 3.0)])
    assert alerts.list_periods(reg_engine)[0]["end"] is None
    closer = add_result(reg_engine, 3, 0.4)
    eng.on_results([closer])
    (p,) = alerts.list_periods(reg_engine)
    assert p["end"] == "2026-03-04T08:10:00Z" and p["closed_by_result"] == closer["id"]
    assert all_alerts(reg_engine, "out_of_control")[0]["state"] == "resolved"


def _cd(rid, day, kind, err, rule):
    """A 40 CFR 60 App. F daily CD result dict as the alert engine reads it."""
    end = T0 + dt.timedelta(days=day, minutes=10 if kind == "zero" else 20)
    verdict = "pass" if abs(err) <= rule.limit else "fail"
    return {"id": rid, "kind": kind, "start": end - dt.timedelta(minutes=10), "end": end,
            "verdict": verdict, "rule": rule.id, "check_id": f"CD-{kind}-{day}",
            "error_abs": None, "error_rel_pct": None, "error_fs_pct": err, "drift_fs_pct": None,
            "en": None}


def test_ooc_cfr60f_4x_closes_only_when_both_levels_pass():
    """40 CFR 60 App. F Proc. 1 §4.3.1 (close = all_kinds), cfr60f.ooc.4x1, CD limit 2.5 %.

    Day 0: zero 0.5, high 0.6 (pass). Day 1: zero 0.4 pass, high 10.5 > 4 x 2.5 = 10: opens,
    start = end of the preceding passing high-level check (day 0, 08:20). Day 2: zero 0.3
    passes, high 3.0 still fails: open. Day 3: high 0.5 passes (08:20), the zero check
    passed at 08:10 after the trigger too: closes at the later pass, day 3 08:20. Swapped on
    day 4/5: high passes first, then a zero check fails (3.0 > 2.5, no trigger) at day 6 after
    a 4x zero trigger on day 5 -> open until day 7 when zero passes.
    """
    pack = load_pack("cfr40_60f")
    cond = {c.id: c for c in pack.out_of_control}["cfr60f.ooc.4x1"]
    z, h = pack.rule("cfr60f.gas.cd_zero"), pack.rule("cfr60f.gas.cd_span")
    hist = [_cd(1, 0, "zero", 0.5, z), _cd(2, 0, "span", 0.6, h),
            _cd(3, 1, "zero", 0.4, z), _cd(4, 1, "span", 10.5, h),
            _cd(5, 2, "zero", 0.3, z), _cd(6, 2, "span", 3.0, h),
            _cd(7, 3, "zero", 0.2, z), _cd(8, 3, "span", 0.5, h)]
    (p,) = alerts.condition_periods(pack, cond, hist[:6], "SO2")
    assert p["end"] is None and p["opened_by_result"] == 4
    assert p["start"] == T0 + dt.timedelta(minutes=20) and p["start_result"] == 2
    (p,) = alerts.condition_periods(pack, cond, hist, "SO2")
    assert (p["closed_by_result"], p["end"]) == (8, T0 + dt.timedelta(days=3, minutes=20))
    assert p["evidence"]["close"] == "all_kinds" and p["evidence"]["close_kinds"] == ["span", "zero"]
    # the high level passing first is not enough either: the zero level must pass too
    more = [_cd(9, 5, "zero", 11.0, z), _cd(10, 5, "span", 0.4, h),
            _cd(11, 6, "zero", 3.0, z), _cd(12, 6, "span", 0.3, h),
            _cd(13, 7, "zero", 0.1, z), _cd(14, 7, "span", 0.2, h)]
    p1, p2 = alerts.condition_periods(pack, cond, hist + more, "SO2")
    assert p1["closed_by_result"] == 8
    assert (p2["opened_by_result"], p2["closed_by_result"]) == (9, 13)
    # same_kind on the same data (the HJ 75 reading) would close at the first high pass
    same = cond.model_copy(update={"close": "same_kind"})
    (p,) = alerts.condition_periods(pack, same, hist, "SO2")
    assert p["closed_by_result"] == 8  # high passes at day 3 (day-2 zero pass does not count)
    (p,) = alerts.condition_periods(pack, same, hist[:6] + [_cd(7, 3, "zero", 0.2, z)], "SO2")
    assert p["end"] is None


def test_ooc_cfr60f_2x5_counts_runs_per_kind():
    """cfr60f.ooc.2x5: five consecutive daily high-level CDs above 2 x 2.5 = 5 % open the
    period although the zero checks in between pass (they used to break the run)."""
    pack = load_pack("cfr40_60f")
    cond = {c.id: c for c in pack.out_of_control}["cfr60f.ooc.2x5"]
    z, h = pack.rule("cfr60f.gas.cd_zero"), pack.rule("cfr60f.gas.cd_span")
    hist = []
    for d in range(5):
        hist += [_cd(2 * d + 1, d, "zero", 0.2, z), _cd(2 * d + 2, d, "span", 5.5, h)]
    (p,) = alerts.condition_periods(pack, cond, hist, "SO2")
    assert p["opened_by_result"] == 10 and p["end"] is None
    assert p["start"] == T0 + dt.timedelta(days=4, minutes=20)  # completion of the 5th check
    assert alerts.condition_periods(pack, cond, hist[:-1], "SO2") == []


# ----------------------------------------------------------------------------- drift trend
def test_drift_trend_opens_updates_and_resolves(reg_engine, registry):
    eng = AlertEngine(reg_engine, registry)
    errs = [0.25 * d for d in range(8)]  # 0 .. 1.75 % F.S., still passing (warn at 2.0)
    opened_at = None
    for d, e in enumerate(errs):
        eng.on_results([add_result(reg_engine, d, e)])
        if all_alerts(reg_engine, "drift_trend") and opened_at is None:
            opened_at = d
    assert opened_at == 6  # seventh point (drift_min_points = 7)
    (a,) = all_alerts(reg_engine, "drift_trend")
    tr = a["evidence"]["trends"]["span"]
    assert tr["slope_per_day"] == pytest.approx(0.25)
    assert tr["days_to_limit"] == pytest.approx(3.0)  # (2.5 - 1.75) / 0.25
    assert len(a["result_ids"]) == 2  # updated with the 8th check
    # recalibration: back to zero -> the fit restarts, the alert resolves
    eng.on_results([add_result(reg_engine, 8, 0.05)])
    (a,) = all_alerts(reg_engine, "drift_trend")
    assert a["state"] == "resolved"
    assert not all_alerts(reg_engine, "out_of_tolerance")


def test_drift_trend_raised_inside_one_batch_that_ends_failing(reg_engine, registry):
    """A batch holding several days of checks (a fast-forwarded or backfilled run): the trend
    alarm at its 7th check is raised even though the batch's newest check already fails
    (and so ends it); judging the checks one by one gives the same alert."""
    eng = AlertEngine(reg_engine, registry)
    errs = [0.25 * d for d in range(8)] + [2.9]  # passes for 8 days, then out of tolerance
    eng.on_results([add_result(reg_engine, d, e) for d, e in enumerate(errs)])
    (a,) = all_alerts(reg_engine, "drift_trend")
    assert a["state"] == "resolved"
    assert a["evidence"]["trends"]["span"]["slope_per_day"] == pytest.approx(0.25)
    assert a["opened_at"] == T0 + dt.timedelta(days=6, minutes=10)  # the 7th check
    assert all_alerts(reg_engine, "out_of_tolerance")[0]["state"] == "open"


def test_noise_without_drift_opens_nothing(reg_engine, registry):
    rng = np.random.default_rng(7)
    eng = AlertEngine(reg_engine, registry)
    for d in range(40):
        for kind in ("zero", "span"):
            eng.on_results([add_result(reg_engine, d, float(rng.normal(0, 0.4)), kind=kind)])
    assert all_alerts(reg_engine) == []


# ----------------------------------------------------------------------------- overdue, material
def test_check_overdue_opens_and_resolves(reg_engine, registry):
    eng = AlertEngine(reg_engine, registry)
    add_result(reg_engine, 0, 0.1, kind="zero")
    add_result(reg_engine, 0, 0.1, kind="span")
    assert eng.tick(T0 + dt.timedelta(hours=20)) == []
    out = eng.tick(T0 + dt.timedelta(hours=27))  # due at 24 h x 1.1 = 26.4 h after 08:10
    assert [(o["kind"], o["analyte"], o["event"]) for o in out] == [("check_overdue", "SO2", "open")]
    assert set(out[0]["evidence"]["overdue"]) == {"span", "zero"}
    add_result(reg_engine, 1.2, 0.1, kind="zero")
    out = eng.tick(T0 + dt.timedelta(hours=30))
    assert [o["event"] for o in out] == ["update"] and set(out[0]["evidence"]["overdue"]) == {"span"}
    add_result(reg_engine, 1.2, 0.1, kind="span")
    out = eng.tick(T0 + dt.timedelta(hours=31))
    assert [o["event"] for o in out] == ["resolve"]
    assert len(all_alerts(reg_engine, "check_overdue")) == 1


def test_check_overdue_no_event_while_only_lateness_grows(reg_engine, registry):
    """Each tick recomputes hours_late; the same overdue checks must not publish an update
    event per tick, only when the set of overdue checks changes."""
    eng = AlertEngine(reg_engine, registry)
    add_result(reg_engine, 0, 0.1, kind="zero")
    add_result(reg_engine, 0, 0.1, kind="span")
    assert [o["event"] for o in eng.tick(T0 + dt.timedelta(hours=27))] == ["open"]
    for h in (27.5, 28, 29, 30):  # (escalation to staff would come later, and is an event)
        assert eng.tick(T0 + dt.timedelta(hours=h)) == []
    (a,) = all_alerts(reg_engine, "check_overdue")
    assert a["evidence"]["overdue"]["zero"]["hours_late"] == pytest.approx(30 - 0.1667 - 26.4, abs=0.02)
    assert events(reg_engine) == [(a["id"], "open")]
    add_result(reg_engine, 1.5, 0.1, kind="zero")  # one of the two is done: the finding changed
    assert [o["event"] for o in eng.tick(T0 + dt.timedelta(hours=30.5))] == ["update"]


def test_material_invalid_from_refusal_and_revocation(reg_engine, registry):
    eng = AlertEngine(reg_engine, registry)
    r = add_result(reg_engine, 0, None, verdict="invalid", details={"material_refusal": "expired"},
                   material="LOT-OLD")
    out = eng.on_results([r])
    assert [(o["kind"], o["event"]) for o in out] == [("material_invalid", "open")]
    assert out[0]["evidence"]["refusal"] == "expired" and out[0]["results"] == [r["id"]]
    r2 = add_result(reg_engine, 1, None, verdict="invalid", details={"material_refusal": "revoked"})
    out = eng.on_results([r2])
    assert [o["event"] for o in out] == ["update"] and out[0]["results"] == [r["id"], r2["id"]]
    out = eng.on_results([add_result(reg_engine, 2, 0.2)])
    assert [(o["kind"], o["event"]) for o in out] == [("material_invalid", "resolve")]
    with reg_engine.begin() as conn:
        conn.execute(Finding.__table__.insert().values(
            created_at=T0, kind="material_revoked", object_type="certificate", object_id="LOT-1",
            details={"reason": "contaminated", "revoked_by": "lab", "result_ids": [r2["id"]],
                     "analyzers": [A]}))
    now = T0 + dt.timedelta(days=2, hours=1)
    out = [o for o in eng.tick(now) if o["kind"] == "material_invalid"]
    assert len(out) == 1 and out[0]["analyte"] is None and out[0]["severity"] == "critical"
    assert [o for o in eng.tick(now + dt.timedelta(minutes=1)) if o["kind"] == "material_invalid"] == []


# ----------------------------------------------------------------------------- state machine
def test_ack_resolve_and_replay_does_not_reopen(reg_engine, registry):
    eng = AlertEngine(reg_engine, registry, config=AlertConfig(escalate_after_h=1.0))
    eng.on_results([add_result(reg_engine, 0, 3.0)])
    oot = all_alerts(reg_engine, "out_of_tolerance")[0]
    ooc = all_alerts(reg_engine, "out_of_control")[0]
    with pytest.raises(AlertError):
        alerts.acknowledge(reg_engine, oot["id"], "", "x")
    j = alerts.acknowledge(reg_engine, oot["id"], "wang", "technician on the way")
    assert j["state"] == "acknowledged" and j["acknowledged_by"] == "wang"
    out = eng.tick(T0 + dt.timedelta(hours=2))
    esc = [o for o in out if o["event"] == "escalate"]
    assert [o["id"] for o in esc] == [ooc["id"]]  # the acknowledged one is not escalated
    alerts.resolve(reg_engine, oot["id"], "wang", "analyzer replaced")
    assert eng.reevaluate_all() == []  # same evidence: not reopened
    assert len(all_alerts(reg_engine, "out_of_tolerance")) == 1
    eng.on_results([add_result(reg_engine, 1, 3.2)])  # new failing check: a new alert
    assert [a["state"] for a in all_alerts(reg_engine, "out_of_tolerance")] == ["resolved", "open"]


def test_open_key_is_unique_in_the_database(reg_engine):
    row = dict(analyzer_id=A, station_id="ZJ-JX-PP01", analyte="SO2", kind="drift_trend",
               severity="warning", state="open", open_key=alerts.open_key(A, "SO2", "drift_trend"),
               opened_at=T0, updated_at=T0)
    with reg_engine.begin() as conn:
        conn.execute(Alert.__table__.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError), reg_engine.begin() as conn:
        conn.execute(Alert.__table__.insert().values(**row))
    with reg_engine.begin() as conn:  # resolved ones (NULL key) never collide
        conn.execute(Alert.__table__.insert().values(**{**row, "open_key": None, "state": "resolved"}))
        conn.execute(Alert.__table__.insert().values(**{**row, "open_key": None, "state": "resolved"}))


def test_config_unknown_key_is_an_error(tmp_path):
    with pytest.raises(AlertError, match="unknown key"):
        AlertConfig.from_mapping({"drift_horizon": 3})
    p = tmp_path / "envcal.toml"
    p.write_text("[alerts]\ndrift_horizon_days = 3\nfalsify_limits = { NOx = 100 }\n")
    c = AlertConfig.from_toml(p)
    assert c.drift_horizon_days == 3.0 and c.falsify_limits == {"NOx": 100.0}


# ----------------------------------------------------------------------------- data quality
def _minute_readings(analyzer, analyte, start, values, flags=None):
    flags = flags or ["N"] * len(values)
    return [dict(analyzer_id=analyzer, analyte=analyte, ts=start + dt.timedelta(minutes=i),
                 value=float(v), flag=f, received_at=start) for i, (v, f) in enumerate(zip(values, flags, strict=True))]


def test_data_quality_flat_line_opens_and_resolves(sqlite_engine, registry):
    sync_registry(sqlite_engine, registry)
    rng = np.random.default_rng(1)
    pm = 35 + rng.normal(0, 2, 360)
    pm[120:210] = pm[120]  # stuck for 90 min
    with sqlite_engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), _minute_readings("HZ-AQ02-PM", "PM2.5", T0, pm))
    eng = AlertEngine(sqlite_engine, registry)
    out = [o for o in eng.tick(T0 + dt.timedelta(minutes=359)) if o["kind"] == "data_quality"]
    assert [(o["analyzer"], o["analyte"]) for o in out] == [("HZ-AQ02-PM", "PM2.5")]
    assert set(out[0]["evidence"]["tests"]) == {"flat_line"}
    t1 = T0 + dt.timedelta(minutes=360)
    with sqlite_engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), _minute_readings("HZ-AQ02-PM", "PM2.5", t1,
                                                                  35 + rng.normal(0, 2, 420)))
    out = [o for o in eng.tick(t1 + dt.timedelta(minutes=419)) if o["kind"] == "data_quality"]
    assert [o["event"] for o in out] == ["resolve"]


def test_data_quality_clean_noise_opens_nothing(sqlite_engine, registry):
    sync_registry(sqlite_engine, registry)
    rng = np.random.default_rng(2)
    rows = []
    for aid, x in (("HZ-AQ02-PM", "PM2.5"), ("NB-PP02-CEMS", "NOx"), ("NB-PP02-CEMS", "SO2")):
        rows += _minute_readings(aid, x, T0, 30 + rng.normal(0, 3, 600))
    with sqlite_engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), rows)
    eng = AlertEngine(sqlite_engine, registry)
    out = eng.tick(T0 + dt.timedelta(minutes=599))
    assert [o for o in out if o["kind"] == "data_quality"] == []



def test_falsify_window_bounded_over_a_day_of_5s_ticks(sqlite_engine, registry):
    # real time: a 5 s timer for a day is 17 280 ticks; one entry per tick grew without bound
    eng = AlertEngine(sqlite_engine, registry)
    key = ("HZ-AQ02-PM", "PM2.5")
    rng = np.random.default_rng(3)
    ticks = [T0 + dt.timedelta(seconds=5 * i) for i in range(17_280 + 2_000)]
    counts = rng.integers(0, 4, size=(len(ticks), len(alerts.FALSIFY_COUNTS)))
    window = dt.timedelta(hours=eng.config.dq_window_h)
    width = window / alerts.FALSIFY_BUCKETS
    longest = 0
    for i, (t, c) in enumerate(zip(ticks, counts, strict=True)):
        got = eng._falsify_window(key, t, tuple(int(v) for v in c))
        longest = max(longest, len(eng._falsify_hist[key]))
        if i % 997 == 0 or i == len(ticks) - 1:
            tt = np.array([(x - T0).total_seconds() for x in ticks[:i + 1]])
            now_s = (t - T0).total_seconds()
            exact = counts[:i + 1][tt > now_s - window.total_seconds()].sum(axis=0)
            wider = counts[:i + 1][tt > now_s - (window + width).total_seconds()].sum(axis=0)
            # the whole window, and at most one bucket more
            assert np.all(exact <= got) and np.all(np.array(got) <= wider), (i, exact, got, wider)
    assert longest <= alerts.FALSIFY_BUCKETS + 2


def test_falsify_window_bounded_through_data_quality_ticks(sqlite_engine, registry):
    sync_registry(sqlite_engine, registry)
    start = T0 - dt.timedelta(hours=1, minutes=2)
    rng = np.random.default_rng(4)
    n = 3600 // 10 * 6  # a reading every 10 s for 6 h
    rows = [dict(analyzer_id="HZ-AQ02-PM", analyte="PM2.5", ts=start + dt.timedelta(seconds=10 * i),
                 value=float(35 + rng.normal(0, 2)), flag="N", received_at=start) for i in range(n)]
    with sqlite_engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), rows)
    eng = AlertEngine(sqlite_engine, registry, config=AlertConfig(dq_window_h=0.5))
    # a tick every 10 s of data time for 4 h: 1440 ticks, 180 of them inside the window
    for i in range(1440):
        eng._data_quality(T0 + dt.timedelta(seconds=10 * i))
    assert len(eng._falsify_hist[("HZ-AQ02-PM", "PM2.5")]) <= alerts.FALSIFY_BUCKETS + 2


# ----------------------------------------------------------------------------- dispatch
def test_alert_arrives_on_mqtt_topic(reg_engine, registry, mosquitto):
    import paho.mqtt.client as mqtt

    got: list[tuple[str, dict, float]] = []
    arrived = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-sub")
    sub.on_message = lambda c, u, m: (got.append((m.topic, json.loads(m.payload), time.perf_counter())),
                                      arrived.set())
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("envcal/alerts/#", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-pub")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    time.sleep(0.3)
    try:
        eng = AlertEngine(reg_engine, registry, publisher=lambda t, p: pub.publish(t, p, qos=1))
        t0 = time.perf_counter()
        eng.on_results([add_result(reg_engine, 0, 3.3)])
        assert arrived.wait(10)
        deadline = time.time() + 5
        while len(got) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        pub.loop_stop()
    topics = {t for t, _, _ in got}
    assert topics == {f"envcal/alerts/ZJ-JX-PP01/{A}"}
    kinds = {p["kind"] for _, p, _ in got}
    assert kinds == {"out_of_tolerance", "out_of_control"}
    for _, p, _ in got:
        assert {"id", "analyzer", "station", "analyte", "kind", "severity", "state", "opened_at",
                "updated_at", "evidence", "results"} <= set(p)
    print(f"alert latency {1000 * (got[0][2] - t0):.1f} ms")


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    hits: list[bytes] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).hits.append(body)
        if len(type(self).hits) == 1:
            time.sleep(1.0)  # slow and failing: ingest must not wait for it
            self.send_response(500)
        else:
            self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_webhook_failure_does_not_block_and_is_retried(reg_engine, registry):
    _FlakyHandler.hits = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    eng = AlertEngine(reg_engine, registry, webhook_url=url,
                      config=AlertConfig(webhook_backoff_s=0.1))
    try:
        t0 = time.perf_counter()
        eng.on_results([add_result(reg_engine, 0, 3.3)])
        assert time.perf_counter() - t0 < 1.0  # returned while the webhook was still hanging
        deadline = time.time() + 15
        while time.time() < deadline:
            listed = alerts.list_alerts(reg_engine)
            if all(a.get("webhook", {}).get("delivered") == 1 for a in listed):
                break
            time.sleep(0.1)
    finally:
        eng.close()
        srv.shutdown()
    assert len(listed) == 2 and all(a["webhook"]["delivered"] == 1 for a in listed)
    with reg_engine.connect() as conn:
        rows = conn.execute(sa.text("select attempts, last_error from webhook_delivery order by attempts desc")).all()
    assert rows[0][0] == 2 and "500" in rows[0][1]
    assert len(_FlakyHandler.hits) == 3


# ----------------------------------------------------------------------------- CLI
def test_cli_list_ack_resolve(sqlite_url, registry):
    from envcal.cli import app
    from envcal.db import init_db, make_engine

    eng = make_engine(sqlite_url)
    init_db(eng)
    sync_registry(eng, registry)
    AlertEngine(eng, registry).on_results([add_result(eng, 0, 3.3)])
    runner = CliRunner()
    res = runner.invoke(app, ["alerts", "list", "--db", sqlite_url, "--json", "--open"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert {a["kind"] for a in listed} == {"out_of_tolerance", "out_of_control"}
    aid = listed[0]["id"]
    res = runner.invoke(app, ["alerts", "ack", str(aid), "--db", sqlite_url, "--by", "li", "--note", "seen"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["alerts", "resolve", str(aid), "--db", sqlite_url, "--by", "li", "--note", "fixed"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["alerts", "resolve", str(aid), "--db", sqlite_url, "--by", "li", "--note", "again"])
    assert res.exit_code == 2 and "already resolved" in res.output
    res = runner.invoke(app, ["alerts", "list", "--db", sqlite_url, "--json", "--open"])
    assert len(json.loads(res.output)) == 1
    assert alerts.alert_counts(eng)["alerts"] == 2
    eng.dispose()


# ----------------------------------------------------------------------------- peer drift
def test_peer_drift_opens_for_the_drifting_station_only(tmp_path, sqlite_engine):
    from envcal.registry import load_registry

    coords = [(30.27, 120.08), (30.31, 120.20), (30.25, 120.25), (30.30, 120.15)]
    st = "".join(f'[[stations]]\nid = "S{i}"\nname = "s{i}"\nkind = "ambient_air"\nlat = {la}\n'
                 f'lon = {lo}\noperator = "x"\n\n' for i, (la, lo) in enumerate(coords))
    an = "".join(f'[[analyzers]]\nid = "PM{i}"\nstation = "S{i}"\nmodel = "m"\nserial = "{i}"\n'
                 f'rule_pack = "hj817_2018"\nchannels = [{{ analyte = "PM2.5", unit = "ug/m3", span = 1000.0 }}]\n\n'
                 for i in range(4))
    (tmp_path / "reg.toml").write_text(st + an)
    reg = load_registry(tmp_path / "reg.toml")
    sync_registry(sqlite_engine, reg)
    rng = np.random.default_rng(5)
    day0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(4):
        for h in range(4 * 24):
            v = 35 + rng.normal(0, 3)
            if i == 3 and h < 3 * 24:
                v *= 1.6 + 0.1 * (h // 24)  # 60 %, 70 %, 80 % above the neighbours, then repaired
            rows.append(dict(analyzer_id=f"PM{i}", analyte="PM2.5", ts=day0 + dt.timedelta(hours=h),
                             value=v, flag="N", received_at=day0))
    with sqlite_engine.begin() as conn:
        conn.execute(Reading.__table__.insert(), rows)
    eng = AlertEngine(sqlite_engine, reg)
    out = [o for o in eng.tick(day0 + dt.timedelta(days=3, minutes=1)) if o["kind"] == "peer_drift"]
    assert [(o["analyzer"], o["event"]) for o in out] == [("PM3", "open")]
    dev = out[0]["evidence"]["daily_relative_deviation"]
    assert all(d > 0.5 for d in dev) and sorted(out[0]["evidence"]["neighbours"]) == ["PM0", "PM1", "PM2"]
    out = [o for o in eng.tick(day0 + dt.timedelta(days=4, minutes=1)) if o["kind"] == "peer_drift"]
    assert [(o["analyzer"], o["event"]) for o in out] == [("PM3", "resolve")]


def test_drift_trend_page_and_alert_one_model(reg_engine, registry):
    """The analyzer page's forecast (views.control_chart) and the drift_trend alert come
    from one model: the alert is open exactly when the page's trend says ``alarm``."""
    from envcal import views

    eng = AlertEngine(reg_engine, registry)
    # 0 .. 1.5 % F.S. in 6 checks: the page used to forecast (>= 5 points), no alert (< 7)
    for d, e in enumerate([0.0, 0.3, 0.6, 0.9, 1.2, 1.5]):
        eng.on_results([add_result(reg_engine, d, e)])
    cc = views.control_chart(reg_engine, A, "SO2", "span")
    assert not all_alerts(reg_engine, "drift_trend")
    assert cc.trend.crossing is None and not cc.trend.alarm
    eng.on_results([add_result(reg_engine, 6, 1.8)])
    cc = views.control_chart(reg_engine, A, "SO2", "span")
    (a,) = all_alerts(reg_engine, "drift_trend")
    assert cc.trend.alarm and a["state"] == "open"
    tr = a["evidence"]["trends"]["span"]
    assert cc.trend.days_to_limit == pytest.approx(tr["days_to_limit"])
    assert cc.trend.slope_per_day == pytest.approx(tr["slope_per_day"])
    eng.close()
