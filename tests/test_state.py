"""Analyzer state and operator integrity from stored periods and alerts (envcal.state)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import Session

from envcal import state, views
from envcal.db import init_db, make_engine
from envcal.models import Alert
from envcal.ui.seed import DRIFTING, SILENT, seed_demo

NOW = dt.datetime(2026, 11, 27, 4, 0, tzinfo=dt.UTC)
FALSIFIED_AT = NOW - dt.timedelta(days=3)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The demo network, plus a falsification alert (the alert engine's data_quality alert
    with C/M-pattern evidence, severity critical) on an analyzer that is otherwise in control."""
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('state') / 'envcal.db'}")
    init_db(eng)
    seed_demo(eng, now=NOW, users=False)
    st = state.analyzer_states(eng, NOW)
    victim = st[st["state"] == "in_control"].iloc[0]
    with Session(eng) as s:
        s.add(Alert(analyzer_id=victim["analyzer"], station_id=victim["station"], analyte="SO2",
                    kind="data_quality", severity="critical", state="open",
                    open_key=f"{victim['analyzer']}|SO2|data_quality", opened_at=FALSIFIED_AT,
                    updated_at=FALSIFIED_AT, title_en="data quality (falsification)",
                    evidence={"tests": {"falsification": {
                        "test": "episodes_near_limit", "episodes": 9, "episodes_near_limit": 8,
                        "p0": 0.05, "q0": 0.1, "p_value": 1e-7}},
                        "window": {}, "last_seen": FALSIFIED_AT.isoformat()}))
        s.commit()
    yield eng, victim
    eng.dispose()


def test_state_of_rules_in_order():
    assert state.state_of(open_period=True, critical_alerts=0, out_of_tolerance=False,
                          newest_verdicts=["pass"]) == ("out_of_control", "open_period")
    assert state.state_of(open_period=False, critical_alerts=1, out_of_tolerance=False,
                          newest_verdicts=[]) == ("out_of_control", "critical_alert")
    assert state.state_of(open_period=False, critical_alerts=0, out_of_tolerance=False,
                          newest_verdicts=[]) == ("no_data", "no_result")
    assert state.state_of(open_period=False, critical_alerts=0, out_of_tolerance=True,
                          newest_verdicts=["fail"]) == ("warning", "out_of_tolerance")
    assert state.state_of(open_period=False, critical_alerts=0, out_of_tolerance=False,
                          newest_verdicts=["pass", "fail"]) == ("warning", "newest_failed")
    assert state.state_of(open_period=False, critical_alerts=0, out_of_tolerance=False,
                          newest_verdicts=["pass", "invalid"]) == ("warning", "newest_warn")
    assert state.state_of(open_period=False, critical_alerts=0, out_of_tolerance=False,
                          newest_verdicts=["pass"]) == ("in_control", "")


def test_state_is_falsification_only_with_evidence():
    assert state.is_falsification("data_quality", {"tests": {"falsification": {}}})
    assert not state.is_falsification("data_quality", {"tests": {"flat_line": {}}})
    assert not state.is_falsification("falsification_like_kind", {"tests": {"falsification": {}}})
    assert not state.is_falsification("data_quality", None)


def test_state_open_falsification_alert_is_out_of_control(seeded):
    eng, victim = seeded
    st = views.analyzer_states(eng, NOW)  # the page's call
    row = st[st["analyzer"] == victim["analyzer"]].iloc[0]
    assert (row["state"], row["reason"]) == ("out_of_control", "critical_alert")
    assert row["open_critical"] == 1
    by = dict(zip(st["analyzer"], st["reason"], strict=True))
    assert by[DRIFTING[0]] == "open_period" and by[SILENT] == "no_result"
    before = state.analyzer_states(eng, FALSIFIED_AT - dt.timedelta(hours=1))
    assert before.loc[before["analyzer"] == victim["analyzer"], "state"].item() == "in_control"


def test_state_falsification_counts_in_integrity(seeded):
    eng, victim = seeded
    df = views.operator_integrity(eng, NOW - dt.timedelta(days=30), NOW)
    row = df[df["operator"] == victim["operator"]].iloc[0]
    assert row["falsification"] == 1
    assert row["score"] == pytest.approx(state.integrity_score(
        row["r_fail"], row["r_overdue"], row["r_ooc"], 1, row["expired_crm"]))
    assert row["score"] <= 90.0
    earlier = views.operator_integrity(eng, NOW - dt.timedelta(days=30), FALSIFIED_AT)
    assert earlier[earlier["operator"] == victim["operator"]].iloc[0]["falsification"] == 0


def test_state_is_critical_ignores_escalation():
    assert state.is_critical("out_of_control", "warning", False, None)
    assert state.is_critical("data_quality", "warning", True, {"tests": {"falsification": {}}})
    assert state.is_critical("material_invalid", "critical", False, None)
    assert not state.is_critical("check_overdue", "critical", True, None)  # escalated warning
    assert not state.is_critical("data_quality", "warning", False, {"tests": {"flat_line": {}}})


def test_state_escalated_overdue_alert_is_not_out_of_control(tmp_path):
    """An overdue-check alert left unacknowledged past the escalation time is stored as
    critical (to call staff) but leaves the analyzer a warning, not out of control."""
    eng = make_engine(f"sqlite:///{tmp_path / 'envcal.db'}")
    init_db(eng)
    seed_demo(eng, now=NOW, users=False)
    st = state.analyzer_states(eng, NOW)
    aid, station = st[st["state"] == "in_control"].iloc[0][["analyzer", "station"]]
    t0 = NOW - dt.timedelta(days=1)
    with Session(eng) as s:
        s.add(Alert(analyzer_id=aid, station_id=station, analyte="SO2", kind="check_overdue",
                    severity="critical", state="open", open_key=f"{aid}|SO2|check_overdue",
                    opened_at=t0, updated_at=t0, escalated_at=t0 + dt.timedelta(hours=4),
                    title_en="check overdue", evidence={}))
        s.commit()
    after = state.analyzer_states(eng, NOW).set_index("analyzer")
    assert after.loc[aid, "state"] != "out_of_control"
    assert after.loc[aid, "open_critical"] == 0
    eng.dispose()
