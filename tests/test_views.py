import datetime as dt
import os
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from envcal import views
from envcal.alerts import AlertEngine
from envcal.db import init_db, make_engine, normalize_url
from envcal.models import OutOfControlPeriod
from envcal.registry import load_registry
from envcal.ui.seed import DRIFTING, SILENT, STATIONS, seed_demo

NOW = dt.datetime(2026, 11, 27, 4, 0, tzinfo=dt.UTC)


def _pg_database() -> str:
    """A fresh PostgreSQL database (as tests/conftest.py makes them), or skip."""
    base = os.environ.get("ENVCAL_TEST_PG_URL")
    if not base:
        pytest.skip("ENVCAL_TEST_PG_URL is not set (no PostgreSQL server to test against)")
    name = f"envcal_t_{uuid.uuid4().hex[:12]}"
    try:
        admin = make_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {base} not reachable: {exc}")
    return sa.engine.make_url(normalize_url(base)).set(database=name).render_as_string(
        hide_password=False)


def _drop(url: str) -> None:
    admin = make_engine(os.environ["ENVCAL_TEST_PG_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" '
                             "WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo(request, tmp_path_factory):
    """A seeded demo network at NOW, on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('views') / 'envcal.db'}"
    else:
        url = _pg_database()
    eng = make_engine(url)
    init_db(eng)
    info = seed_demo(eng, now=NOW, users=False)
    yield eng, info
    eng.dispose()
    if request.param == "postgresql":
        _drop(url)


def test_views_states_worst_first(demo):
    eng, _ = demo
    st = views.analyzer_states(eng, NOW)
    by = dict(zip(st["analyzer"], st["state"], strict=True))
    assert by[DRIFTING[0]] == "out_of_control"
    assert by[SILENT] == "no_data"
    assert st.iloc[0]["analyzer"] == DRIFTING[0]
    assert set(st["state"]) <= set(views.STATES)
    assert st.loc[st["analyzer"] == SILENT, "reason"].item() == "no_result"


def test_views_states_before_the_drift_in_control(demo):
    eng, _ = demo
    st = views.analyzer_states(eng, NOW - dt.timedelta(days=20))
    assert st.loc[st["analyzer"] == DRIFTING[0], "state"].item() == "in_control"


def test_views_overview_kpis(demo):
    eng, _ = demo
    o = views.overview(eng, NOW)
    assert o.total == 8
    assert sum(o.states.values()) == 8
    assert o.states["out_of_control"] == 1 and o.states["no_data"] == 1
    assert o.coverage_rate == pytest.approx(6 / 8)
    assert o.coverage_target == 0.96
    assert "N_verified / N_total" in o.coverage_formula
    assert set(o.not_verified["analyzer"]) == {SILENT, "SX-WW01-WQ"}
    assert 0 < o.passed_today <= o.checks_today
    worst = dict(zip(o.stations["station"], o.stations["worst"], strict=True))
    assert worst["ZJ-JX-PP01"] == "out_of_control"
    assert worst["ZJ-HZ-AQ02"] == "no_data"
    assert set(o.alerts_by_severity) == set(views.SEVERITIES)


def test_views_control_chart_drift(demo):
    eng, _ = demo
    cc = views.control_chart(eng, *DRIFTING)
    assert cc.quantity == "error_fs_pct" and cc.limit == 2.5 and cc.warn == 2.0
    assert cc.rule_status == "unverified" and "HJ 75-2017" in cc.rule_source
    assert len(cc.ewma) == len(cc.results) == len(cc.cusum_plus)
    assert cc.trend.slope_per_day > 0.05
    assert cc.trend.cusum_alarm
    assert (cc.results["verdict"] == "fail").sum() >= 3
    assert len(cc.periods) >= 1


def test_views_readings_around_check_marks_plateau(demo):
    eng, info = demo
    cr = views.readings_around_check(eng, info["drifting_result"])
    assert len(cr.readings) > 60
    inside = cr.readings[cr.readings["check_id"].notna()]
    assert set(inside["flag"]) == {"C"}
    assert cr.plateau_start < cr.plateau_end
    assert cr.readings["ts"].min() < pd.Timestamp(cr.result["start"])


def _stored_periods(eng) -> set[tuple]:
    """(analyzer, analyte, rule, start, end) of every period the alert engine stored."""
    p = OutOfControlPeriod.__table__.c
    with eng.connect() as conn:
        return set(conn.execute(sa.select(p.analyzer_id, p.analyte, p.rule_id, p.start, p.end)))


def _shown_periods(df: pd.DataFrame) -> set[tuple]:
    return {(a, x, r, pd.Timestamp(s).to_pydatetime(),
             None if e is None or pd.isna(e) else pd.Timestamp(e).to_pydatetime())
            for a, x, r, s, e in zip(df["analyzer"], df["analyte"], df["rule"], df["start"],
                                     df["end"], strict=True)}


def test_views_periods_exactly_those_the_alert_engine_stored(demo):
    eng, _ = demo
    stored = _stored_periods(eng)
    df = views.out_of_control_periods(eng)
    assert list(df.columns) == views.PERIOD_COLUMNS
    assert len(df) == len(stored) >= 2
    assert _shown_periods(df) == stored
    drifting = df[(df["analyzer"] == DRIFTING[0]) & (df["analyte"] == DRIFTING[1])]
    assert len(drifting) >= 1
    assert set(drifting["kind"]) <= {"zero", "span"}  # the check that opened each period
    assert drifting["source"].str.contains("HJ 75-2017").all()
    one = views.out_of_control_periods(eng, analyzer=DRIFTING[0])
    assert _shown_periods(one) == {p for p in stored if p[0] == DRIFTING[0]}


def test_views_periods_nothing_stored_nothing_shown(demo):
    """With the engine's periods removed the view shows none, although the failing results
    are still there: the view reads periods, it does not derive them."""
    eng, _ = demo
    before = _stored_periods(eng)
    inside = NOW - dt.timedelta(days=1)  # within the drifting channel's newest stored period
    st = views.analyzer_states(eng, inside)
    assert st.loc[st["analyzer"] == DRIFTING[0], "reason"].item() == "open_period"
    try:
        with eng.begin() as conn:
            conn.execute(OutOfControlPeriod.__table__.delete())
        assert len(views.out_of_control_periods(eng)) == 0
        assert len(views.control_chart(eng, *DRIFTING).periods) == 0
        st = views.analyzer_states(eng, inside)
        assert st.loc[st["analyzer"] == DRIFTING[0], "reason"].item() == "newest_failed"
    finally:
        ae = AlertEngine(eng, load_registry(STATIONS))
        try:
            ae.reevaluate_all()  # the engine stores the same periods again
        finally:
            ae.close()
    assert _stored_periods(eng) == before
    assert _shown_periods(views.out_of_control_periods(eng)) == before


def test_views_ooc_hours_merge_overlaps():
    s = NOW
    periods = pd.DataFrame({"analyzer": ["A", "A", "B"], "analyte": ["SO2", "NOx", "SO2"],
                            "kind": "span", "rule": "hj75.ooc.drift",
                            "start": [s, s + dt.timedelta(hours=2), s],
                            "end": [s + dt.timedelta(hours=4), s + dt.timedelta(hours=6), None],
                            "source": "HJ 75-2017"})
    h = views.out_of_control_hours(periods, s, s + dt.timedelta(hours=10))
    assert h["A"] == pytest.approx(6.0)  # 0-4 and 2-6 merged
    assert h["B"] == pytest.approx(10.0)  # open: counted to the end of the window


def test_views_integrity_score_formula():
    assert views.integrity_score(0, 0, 0, 0, 0) == 100.0
    assert views.integrity_score(0.1, 0.5, 0.25, 1, 2) == pytest.approx(100 - 3 - 10 - 5 - 10 - 10)
    assert views.integrity_score(1, 1, 1, 9, 9) == 0.0


def test_views_operator_integrity(demo):
    eng, _ = demo
    df = views.operator_integrity(eng, NOW - dt.timedelta(days=30), NOW)
    assert list(df["score"]) == sorted(df["score"])
    row = df[df["operator"] == "嘉兴某发电有限责任公司"].iloc[0]
    assert row["failed"] >= 3 and row["ooc_hours"] > 24
    again = views.integrity_score(row["r_fail"], row["r_overdue"], row["r_ooc"],
                                  row["falsification"], row["expired_crm"])
    assert row["score"] == pytest.approx(again) and row["score"] < 100


def test_views_certificates_and_detail(demo):
    eng, _ = demo
    df = views.certificates_frame(eng, on=NOW.date())
    assert {"valid"} >= set(df["state"])
    used = df.set_index("id")["results"]
    assert used["GBW(E)080123-2026-017"] > 0
    d, res = views.certificate_detail(eng, "GBW(E)080123-2026-017")
    assert d["values"][0]["analyte"] == "SO2"
    assert len(res) == used["GBW(E)080123-2026-017"]


def test_views_rules_frame_every_pack(demo):
    eng, _ = demo
    df = views.rules_frame(eng)
    assert {"hj75_2017", "hj355_2019", "cfr40_75"} <= set(df["pack"])
    assert set(df["status"]) <= {"confirmed", "unverified"}
    assert df["source"].str.len().min() > 3


def test_views_alerts_frame_filters(demo):
    eng, _ = demo
    allf = views.alerts_frame(eng)
    assert list(allf.columns) == views.ALERT_COLUMNS
    opened = views.alerts_frame(eng, state="open")
    assert (opened["state"] != "resolved").all()
    assert len(views.alerts_frame(eng, station="ZJ-NOWHERE")) == 0


def test_views_month_bounds_china_time():
    s, e = views.month_bounds(2026, 12)
    assert s == dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC)
    assert e == dt.datetime(2026, 12, 31, 16, tzinfo=dt.UTC)


def test_views_naive_time_refused(demo):
    eng, _ = demo
    with pytest.raises(ValueError, match="naive"):
        views.analyzer_states(eng, dt.datetime(2026, 11, 27))


def test_views_empty_database(sqlite_engine):
    o = views.overview(sqlite_engine, NOW)
    assert o.total == 0 and o.coverage_rate is None
    assert len(views.out_of_control_periods(sqlite_engine)) == 0
    with sqlite_engine.connect() as c:
        assert c.execute(sa.text("select count(*) from check_result")).scalar() == 0
