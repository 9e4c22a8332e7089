"""The pure check core: HJ 75 / HJ 355 / 40 CFR 75 worked examples as plain arrays, no
database (arithmetic in the comments)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from envcal.checks.core import (
    Case,
    ChannelReadings,
    Reference,
    combine_levels,
    evaluate,
    evaluate_many,
)
from envcal.rules import load_pack

T0 = np.datetime64("2026-11-02T08:00:00", "us")
HJ75 = load_pack("hj75_2017")
HJ355 = load_pack("hj355_2019")
CFR75 = load_pack("cfr40_75")


def _readings(values, *, analyte="SO2", kind="span", unit="mg/m3", span=200.0, material="LOT-1",
              step_s=10, source="readings", level=None):
    v = np.asarray(values, dtype=np.float64)
    return ChannelReadings(analyzer="A1", station="S1", analyte=analyte, kind=kind,
                           check_id="CK-1", unit=unit, span=span,
                           ts=T0 + np.arange(len(v)) * np.timedelta64(step_s, "s"), values=v,
                           material=material, source=source, level=level)


def _flat(level, n=20):
    return [level] * n


@pytest.mark.parametrize(("mean", "verdict"), [
    (163.0, "pass"),   # (163 - 160)/200 x 100 = 1.5 % F.S. <= warn 2.0
    (165.0, "warn"),   # 2.5 % F.S.: exactly at the limit (decimal) -> within, beyond warn
    (166.0, "fail"),   # 3.0 % F.S. > 2.5
])
def test_core_hj75_span_drift_worked_example(mean, verdict):
    r = evaluate(_readings(_flat(mean)), Reference(160.0, 0.8), None, HJ75)
    assert r.verdict == verdict and r.rule == "hj75.gas.span_drift"
    assert r.error_fs_pct == pytest.approx((mean - 160.0) / 200.0 * 100.0, abs=1e-12)
    assert r.error_abs == pytest.approx(mean - 160.0) and r.n == 20 and r.mean == mean
    assert r.details["rules"][0]["verdict"] == verdict  # from the kernel's verdict stage
    assert r.start.tzinfo is dt.UTC and r.plateau_start is not None


def test_core_hj75_zero_check_drift_against_previous():
    # zero 1.2 on a 200 span; previous zero check 0.2: drift (1.2 - 0.2)/200 x 100 = 0.5 % F.S.
    r = evaluate(_readings(_flat(1.2), kind="zero", material=""), Reference(0.0, 0.0), 0.2, HJ75)
    assert r.verdict == "pass" and r.error_fs_pct == pytest.approx(0.6)
    assert r.drift_fs_pct == pytest.approx(0.5)
    assert evaluate(_readings(_flat(1.2), kind="zero", material=""), Reference(0.0, 0.0), None,
                    HJ75).drift_fs_pct is None


@pytest.mark.parametrize(("mean", "verdict", "rel"), [
    (2.25, "fail", 12.5),  # (2.25 - 2.00)/2.00 x 100 = 12.5 % > 10
    (2.18, "warn", 9.0),   # 9.0 % in (8, 10]
    (2.10, "pass", 5.0),
])
def test_core_hj355_std_sample_relative_error(mean, verdict, rel):
    r = evaluate(_readings(_flat(mean), analyte="NH3-N", kind="std_sample", unit="mg/L", span=10.0),
                 Reference(2.0, 0.02), None, HJ355)
    assert r.verdict == verdict and r.error_rel_pct == pytest.approx(rel)
    assert r.rule == "hj355.std_sample" and "HJ 355" in r.reason_en


def test_core_cfr75_o2_calibration_error_at_warning_level():
    # 21.3 - 20.9 = 0.40000000000000213 %: at the warning level 0.4 in decimal -> pass
    r = evaluate(_readings(_flat(21.3), analyte="O2", unit="%", span=25.0), Reference(20.9, 0.05),
                 None, CFR75)
    assert r.rule == "cfr75.o2.ce" and r.verdict == "pass"
    r = evaluate(_readings(_flat(21.45), analyte="O2", unit="%", span=25.0), Reference(20.9, 0.05),
                 None, CFR75)
    assert r.verdict == "fail" and r.error_abs == pytest.approx(0.55)


def test_core_invalid_reasons_without_numbers():
    ramp = evaluate(_readings(np.linspace(0, 180, 20)), Reference(160.0, 0.8), None, HJ75)
    assert ramp.verdict == "invalid" and ramp.reason_en.startswith("invalid: no stable plateau")
    short = evaluate(_readings(_flat(160.0, 3)), Reference(160.0, 0.8), None, HJ75)
    assert short.verdict == "invalid" and "too short" in short.reason_en and short.mean is None
    refused = evaluate(_readings(_flat(160.0)), Reference(None, None, refusal_code="expired",
                                                          refused_en="expired", refused_zh="过期"),
                       None, HJ75)
    assert refused.verdict == "invalid" and refused.details["material_refusal"] == "expired"
    norule = evaluate(_readings(_flat(1.0), analyte="CODcr", kind="std_sample"), Reference(1.0, 0.0),
                      None, HJ75)
    assert norule.verdict == "invalid" and norule.rule is None and "no rule" in norule.reason_en


def test_core_relative_error_against_zero_reference_is_invalid_not_an_exception():
    r = evaluate(_readings(_flat(0.1), analyte="NH3-N", kind="std_sample", unit="mg/L", span=10.0),
                 Reference(0.0, 0.0), None, HJ355)
    assert r.verdict == "invalid" and r.error_rel_pct is None and r.mean == pytest.approx(0.1)


def test_core_evaluate_many_equals_one_by_one():
    cases = [Case(_readings(_flat(160.0 + d)), Reference(160.0, 0.8), None, HJ75) for d in range(8)]
    cases.append(Case(_readings(_flat(2.25), analyte="NH3-N", kind="std_sample", unit="mg/L",
                                span=10.0), Reference(2.0, 0.02), None, HJ355))
    cases.append(Case(_readings(np.linspace(0, 180, 20)), Reference(160.0, 0.8), None, HJ75))
    batch = evaluate_many(cases)
    assert batch == [evaluate(c.readings, c.reference, c.previous, c.pack) for c in cases]
    assert [r.verdict for r in batch] == ["pass"] * 5 + ["warn", "fail", "fail", "fail", "invalid"]


def test_core_linearity_worst_level_stands_for_the_check():
    pack = load_pack("hj75_2017")
    levels = [evaluate(_readings(_flat(m), kind="span", level=k), Reference(ref, 0.5), None, pack)
              for k, (m, ref) in enumerate([(50.5, 50.0), (104.6, 100.0), (160.2, 160.0)])]
    r = combine_levels(levels)
    # errors 0.25, 2.3, 0.1 % F.S.: the 100 level (warn, 4.6/200 x 100 = 2.3 %) stands
    assert r.verdict == "warn" and r.reference == 100.0
    assert [lv["reference"] for lv in r.details["levels"]] == [50.0, 100.0, 160.0]
    assert r.details["max_abs_error_fs_pct"] == pytest.approx(2.3)
