"""Trend statistics and 40 CFR 58 App A period statistics (quantiles computed at the edge)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from envcal.registry import sync_registry
from envcal.rules import load_pack
from envcal.trends import cfr58_statistics, channel_trend, period_statistics, trend_of
from envcal.verify import store_results

T0 = dt.datetime(2026, 10, 1, 8, 0, tzinfo=dt.UTC)


def test_trends_cfr58_hand_example():
    # d = [1, -2, 3, 4, 2] %: CV_ub = sqrt(106/20) x sqrt(4/chi2_{0.1,4} = 1.063623) = 4.464512 %
    # bias: AB = 2.4, AS = 1.140175, t_{0.95,4} = 2.131847 -> 2.4 + 2.131847 x 1.140175/sqrt(5)
    # = 3.487033 %, sign + (P25 = 1, P75 = 3)
    cv, bias, sign = cfr58_statistics(np.array([1.0, -2.0, 3.0, 4.0, 2.0]))
    assert cv == pytest.approx(4.464512, abs=1e-6)
    assert bias == pytest.approx(3.487033, abs=1e-6)
    assert sign == 1


def _result(i, d, analyzer="HZ-AQ01-GAS", analyte="O3", kind="span", verdict="pass"):
    t = T0 + dt.timedelta(days=14 * i)
    return {"analyzer": analyzer, "station": "ZJ-HZ-AQ01", "analyte": analyte, "kind": kind,
            "check_id": f"CK-{i}", "source": "readings", "start": t, "end": t + dt.timedelta(minutes=5),
            "unit": "umol/mol", "span": 0.5, "n": 10, "error_rel_pct": d, "error_fs_pct": d / 10,
            "verdict": verdict, "pack": "cfr40_58a", "pack_version": "x"}


def test_trends_period_statistics_from_results(sqlite_engine, registry):
    sync_registry(sqlite_engine, registry)
    store_results(sqlite_engine, [_result(i, d) for i, d in enumerate([1.0, -2.0, 3.0, 4.0, 2.0])]
                  + [_result(9, 50.0, verdict="invalid")])  # invalid checks do not count
    pack = load_pack("cfr40_58a")
    st = period_statistics(sqlite_engine, pack, "HZ-AQ01-GAS", "O3", T0, T0 + dt.timedelta(days=365))
    assert st.n == 5
    assert st.cv_ub == pytest.approx(4.464512, abs=1e-6)
    assert st.bias_ub == pytest.approx(3.487033, abs=1e-6)
    lim = pack.statistics.limit_for("O3")
    assert st.cv_ok == (4.464512 <= lim.cv_ub) and st.bias_ok == (3.487033 <= lim.bias_ub)


def test_trends_linear_drift_forecast():
    # errors grow 0.25 % F.S. per day from 0: after 8 days 2.0 %; limit 2.5 % crossed at day 10
    t = np.arange(9, dtype=float) + 20000.0
    y = 0.25 * (t - 20000.0)
    tr = trend_of(t, y, 2.5)
    assert tr.slope_per_day == pytest.approx(0.25)
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=20010)
    assert abs((tr.crossing - expected).total_seconds()) < 1.0
    assert tr.ewma is not None and tr.ewma > 0


def test_trends_noise_has_no_confident_crossing():
    rng = np.random.default_rng(3)
    t = np.arange(30, dtype=float)
    y = rng.normal(0.0, 0.3, 30)
    tr = trend_of(t, y, 2.5)
    # a flat noisy series: the late edge of the band never crosses
    assert tr.crossing_late is None or tr.crossing_late > tr.last_check + dt.timedelta(days=30)
    assert not tr.cusum_alarm


def test_trends_channel_trend_reads_stored_results(sqlite_engine, registry):
    sync_registry(sqlite_engine, registry)
    store_results(sqlite_engine, [_result(i, 10.0 * i) for i in range(8)])
    tr = channel_trend(sqlite_engine, "HZ-AQ01-GAS", "O3", "span", "error_fs_pct", 10.0)
    # error_fs_pct = i per 14 days -> slope 1/14 % F.S. per day
    assert tr.n == 8 and tr.slope_per_day == pytest.approx(1 / 14)


def test_trends_too_few_points_no_forecast_as_the_alert_engine():
    # 6 checks (< min_points 7): neither a forecast on the page nor a drift_trend alert
    t = np.arange(6, dtype=float) + 20000.0
    tr = trend_of(t, 0.25 * (t - 20000.0), 2.5)
    assert tr.n == 6 and tr.crossing is None and tr.slope_per_day is None and not tr.alarm


def test_trends_step_restarts_the_fit():
    # drift to 1.75, then a recalibration back to 0.05 (step > 0.4 x 2.5): no forecast
    t = np.arange(9, dtype=float)
    y = np.array([0.25 * d for d in range(8)] + [0.05])
    assert trend_of(t[:8], y[:8], 2.5).alarm
    tr = trend_of(t, y, 2.5)
    assert not tr.alarm and tr.crossing is None
