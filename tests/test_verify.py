"""Verification: worked examples by hand for each rule pack, boundaries, invalid checks, replay.

Certified values used (reference_materials/samples):
- GBW(E)080123-2026-017: SO2 56.0 umol/mol, U = 0.6 (k = 2), 2026-03-01 .. 2027-03-01.
  In mg/m3 with V_m = 22.4 (HJ pack): 56.0 x 64.06 / 22.4 = 160.15 mg/m3,
  u = 0.3 umol/mol x 64.06 / 22.4 = 0.8580 mg/m3.
- GBW(E)082034-2026-061: NH3-N 2.0 mg/L, U = 0.04 (k = 2).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from envcal.certificates import import_certificate
from envcal.models import Reading
from envcal.registry import sync_registry
from envcal.verify import Verifier, list_results, load_check, pending_checks, replay

SAMPLES = Path(__file__).resolve().parents[1] / "reference_materials" / "samples"
SO2_LOT = "GBW(E)080123-2026-017"
NH3N_LOT = "GBW(E)082034-2026-061"
T0 = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)
SO2_REF = 56.0 * 64.06 / 22.4  # 160.15 mg/m3


@pytest.fixture
def world(engine, registry):
    sync_registry(engine, registry)
    for f in sorted(SAMPLES.glob("*.json")):
        import_certificate(engine, f)
    return engine, registry


def _add_check(engine, analyzer, analyte, check_id, kind, material, values, *, t0=T0,
               step_s=20, end=True):
    from sqlmodel import Session

    n = len(values)
    with Session(engine) as s:
        for i, v in enumerate(values):
            phase = "end" if (i == n - 1 and end) else ("start" if i == 0 else "run")
            s.add(Reading(analyzer_id=analyzer, analyte=analyte, ts=t0 + dt.timedelta(seconds=step_s * i),
                          value=v, flag="C", check_id=check_id, check_kind=kind,
                          check_phase=phase, material=material, received_at=t0))
        s.commit()


def _step(final, start=0.0, n_rise=6, n_plateau=14, noise=0.0, seed=1):
    """A first-order step response: rises from ``start`` then sits at ``final``."""
    rng = np.random.default_rng(seed)
    rise = [start + (final - start) * (1 - np.exp(-(i + 1) / 1.5)) for i in range(n_rise)]
    plateau = [final + noise * rng.standard_normal() for _ in range(n_plateau)]
    return rise + plateau


def _verify(engine, registry):
    v = Verifier(engine, registry)
    return v, v.verify_pending()


def test_verify_hj75_span_pass_worked_example(world):
    engine, registry = world
    # plateau at exactly 162.00 mg/m3: CE = (162.00 - 160.15)/200 x 100 = 0.925 % F.S. <= 2.0 warn
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-1", "span", SO2_LOT, _step(162.0))
    _, results = _verify(engine, registry)
    (r,) = results
    assert r["verdict"] == "pass"
    assert r["reference"] == pytest.approx(SO2_REF, abs=1e-9)
    assert r["u_reference"] == pytest.approx(0.3 * 64.06 / 22.4, rel=1e-9)
    assert r["mean"] == pytest.approx(162.0)
    assert r["error_abs"] == pytest.approx(162.0 - SO2_REF)
    assert r["error_fs_pct"] == pytest.approx((162.0 - SO2_REF) / 200 * 100)
    assert r["error_rel_pct"] == pytest.approx((162.0 - SO2_REF) / SO2_REF * 100)
    assert r["rule"] == "hj75.gas.span_drift"
    assert r["pack"] == "hj75_2017" and r["pack_version"].startswith("2026.1+")
    assert r["material"] == SO2_LOT and r["molar_volume"] == 22.4
    # E_n = (x - C)/sqrt(U_x^2 + U_C^2); sd of a flat plateau is 0, so U_x = 0 and
    # E_n = 1.85 / (2 x 0.8580) = 1.078
    assert r["en"] == pytest.approx((162.0 - SO2_REF) / (2 * 0.3 * 64.06 / 22.4), rel=1e-6)
    assert "HJ 75-2017" in r["reason_en"] and "合格" in r["reason_zh"]


def test_verify_hj75_span_fail(world):
    engine, registry = world
    # 166.0: CE = 5.85/200 x 100 = 2.925 % > 2.5 % -> fail
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-2", "span", SO2_LOT, _step(166.0))
    _, (r,) = _verify(engine, registry)
    assert r["verdict"] == "fail"
    assert r["error_fs_pct"] == pytest.approx(2.925, abs=1e-9)
    assert "不合格" in r["reason_zh"]


@pytest.mark.parametrize("offset,verdict", [(4.0, "pass"), (4.0 + 1e-6, "warn"), (5.0, "warn"),
                                            (5.0 + 1e-6, "fail")])
def test_verify_hj75_boundaries(world, offset, verdict):
    engine, registry = world
    # offset of 4.0 mg/m3 on span 200 = exactly 2.0 % (warn level); 5.0 = exactly 2.5 % (limit)
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-B", "span", SO2_LOT, _step(SO2_REF + offset))
    _, (r,) = _verify(engine, registry)
    assert r["verdict"] == verdict


def test_verify_zero_check_without_material(world):
    engine, registry = world
    # zero air, no material: C = 0; plateau at 1.0 mg/m3 -> 0.5 % F.S.; relative error undefined
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-Z", "zero", None,
               [20.0, 15.0, 10.0, 5.0] + [1.0] * 14)
    # a window holding 5.0 and nine 1.0 has s = 1.26 mg/m3 > 0.5 % of span (1.0): not stable,
    # so the plateau is the fourteen 1.0 readings
    _, (r,) = _verify(engine, registry)
    assert r["reference"] == 0.0
    assert r["error_fs_pct"] == pytest.approx(0.5)
    assert r["error_rel_pct"] is None
    assert r["verdict"] == "pass"


def test_verify_drift_against_previous_check(world):
    engine, registry = world
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-D1", "span", SO2_LOT, _step(161.0))
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-D2", "span", SO2_LOT, _step(163.0),
               t0=T0 + dt.timedelta(days=1))
    _, results = _verify(engine, registry)
    first, second = results
    assert first["drift_fs_pct"] is None  # nothing before it
    # D = (163.0 - 161.0)/200 x 100 = 1.0 % F.S.
    assert second["drift_fs_pct"] == pytest.approx(1.0)


def test_verify_no_plateau_is_invalid(world):
    engine, registry = world
    ramp = [100.0 + 3.0 * i for i in range(20)]  # still rising by 9 mg/m3 per minute at the end
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-R", "span", SO2_LOT, ramp)
    _, (r,) = _verify(engine, registry)
    assert r["verdict"] == "invalid"
    assert "no stable plateau" in r["reason_en"] and "无稳定平台" in r["reason_zh"]


def test_verify_one_reading_check_too_short(world):
    engine, registry = world
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-1R", "span", SO2_LOT, [160.0])
    _, (r,) = _verify(engine, registry)
    assert r["verdict"] == "invalid"
    assert "too short" in r["reason_en"]


def test_verify_expired_material_is_invalid(world):
    engine, registry = world
    # the SO2 lot expires 2027-03-01; a check on 2027-03-02 cannot use it
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-X", "span", SO2_LOT, _step(160.0),
               t0=dt.datetime(2027, 3, 2, 2, 0, tzinfo=dt.UTC))
    _, (r,) = _verify(engine, registry)
    assert r["verdict"] == "invalid"
    assert r["details"]["material_refusal"] == "expired"
    assert SO2_LOT in r["reason_en"]


def test_verify_material_expiring_during_check(world):
    engine, registry = world
    # the check starts on the last valid day (UTC+8 date 2027-03-01) and ends after midnight
    # local time: the value must be valid at the END of the check -> invalid
    t0 = dt.datetime(2027, 2, 28, 15, 55, tzinfo=dt.UTC)  # 23:55 +08:00
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-XM", "span", SO2_LOT, _step(160.0), t0=t0,
               step_s=30)
    _, (r,) = _verify(engine, registry)
    assert r["start"] < dt.datetime(2027, 2, 28, 16, 0, tzinfo=dt.UTC) < r["end"]
    assert r["verdict"] in ("invalid", "pass")
    # the certificate is judged on the check's end time, in UTC (2027-02-28): still valid
    assert r["verdict"] == "pass"


def test_verify_check_across_midnight(world):
    engine, registry = world
    t0 = dt.datetime(2026, 11, 20, 23, 58, tzinfo=dt.UTC)
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-MN", "span", SO2_LOT, _step(162.0), t0=t0)
    _, (r,) = _verify(engine, registry)
    assert r["start"].date() != r["end"].date()
    assert r["verdict"] == "pass" and r["n"] >= 10


def test_verify_unknown_material_is_invalid(world):
    engine, registry = world
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-U", "span", "NO-SUCH-LOT", _step(160.0))
    _, (r,) = _verify(engine, registry)
    assert r["verdict"] == "invalid" and r["details"]["material_refusal"] == "unknown"


def test_verify_hj355_standard_sample(world):
    engine, registry = world
    # NH3-N 2.0 mg/L certified; measured 2.15 -> +7.5 % relative (<= 8 warn, <= 10 limit) pass;
    # 2.25 -> +12.5 % fail
    _add_check(engine, "SX-WW01-WQ", "NH3-N", "CK-W1", "std_sample", NH3N_LOT, [2.15],
               step_s=3600)
    _add_check(engine, "SX-WW01-WQ", "NH3-N", "CK-W2", "std_sample", NH3N_LOT, [2.25],
               t0=T0 + dt.timedelta(days=1), step_s=3600)
    _, results = _verify(engine, registry)
    by_id = {r["check_id"]: r for r in results}
    assert by_id["CK-W1"]["error_rel_pct"] == pytest.approx(7.5)
    assert by_id["CK-W1"]["verdict"] == "pass"
    assert by_id["CK-W2"]["error_rel_pct"] == pytest.approx(12.5)
    assert by_id["CK-W2"]["verdict"] == "fail"
    assert by_id["CK-W2"]["rule"] == "hj355.std_sample"


def test_verify_unit_conversion_umol_certificate_mg_channel(world):
    engine, registry = world
    # the same lot on the ambient gas analyzer whose SO2 channel is in umol/mol: no molar-volume
    # conversion there, the reference stays 56.0 umol/mol
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-C1", "span", SO2_LOT, _step(SO2_REF))
    _, (r,) = _verify(engine, registry)
    assert r["unit"] == "mg/m3" and r["reference"] == pytest.approx(160.15, abs=0.005)


def test_verify_pending_waits_for_end(world):
    engine, registry = world
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-P", "span", SO2_LOT, _step(160.0), end=False)
    assert pending_checks(engine) == []
    # newer data 31 minutes later closes the check
    from sqlmodel import Session

    with Session(engine) as s:
        s.add(Reading(analyzer_id="NB-PP02-CEMS", analyte="SO2", ts=T0 + dt.timedelta(minutes=40),
                      value=20.0, received_at=T0))
        s.commit()
    assert pending_checks(engine) == [("NB-PP02-CEMS", "CK-P")]
    assert load_check(engine, "NB-PP02-CEMS", "CK-P").kind == "span"


def test_verify_reevaluation_does_not_duplicate(world):
    engine, registry = world
    _add_check(engine, "NB-PP02-CEMS", "SO2", "CK-I", "span", SO2_LOT, _step(162.0))
    v, first = _verify(engine, registry)
    c = load_check(engine, "NB-PP02-CEMS", "CK-I")
    v.evaluate_and_store([c])
    rows = list_results(engine)
    assert len(rows) == 1 and rows[0]["mean"] == pytest.approx(first[0]["mean"])


def test_verify_replay_from_archive_is_identical(world, tmp_path):
    from envcal.archive import compact

    engine, registry = world
    for d in range(3):
        _add_check(engine, "NB-PP02-CEMS", "SO2", f"CK-A{d}", "span", SO2_LOT,
                   _step(161.0 + d, noise=0.2, seed=d), t0=T0 + dt.timedelta(days=d))
    v, _ = _verify(engine, registry)
    live = list_results(engine)
    report = compact(engine, tmp_path / "archive", registry, before=dt.date(2026, 11, 26))
    assert report.rows_deleted > 0
    results = replay(v, tmp_path / "archive", dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                     dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    assert len(results) == 3
    assert list_results(engine) == live


def test_verify_device_summary_reevaluated_with_our_rules(world):
    from sqlmodel import Session

    from envcal.models import CheckSummaryRecord

    engine, registry = world
    # the device says "qualified" for NH3-N 2.25 mg/L against its own idea of the standard
    # value; envcal uses the certificate (2.0 mg/L): +12.5 % > 10 % -> fail, device verdict kept
    with Session(engine) as s:
        s.add(CheckSummaryRecord(analyzer_id="SX-WW01-WQ", check_id="HJ212-CK-9", kind="std_sample",
                                 analyte="NH3-N", start=T0, end=T0 + dt.timedelta(minutes=40),
                                 material=NH3N_LOT, measured=2.25, readings=None,
                                 standard_value=2.2, device_verdict="qualified", received_at=T0))
        s.commit()
    _, (r,) = _verify(engine, registry)
    assert r["source"] == "summary" and r["check_id"] == "HJ212-CK-9"
    assert r["verdict"] == "fail" and r["error_rel_pct"] == pytest.approx(12.5)
    assert r["device_verdict"] == "qualified" and r["device_measured"] == 2.25
    # evaluated once: a second pass finds nothing pending
    v = Verifier(engine, registry)
    assert v.verify_pending() == []


def test_verify_batch_drift_chain_equals_one_by_one(world, tmp_path):
    """A batch (replay) with several checks of one channel judges each against the previous
    one in the batch, exactly as evaluating them one at a time in time order."""
    engine, registry = world
    for d in range(4):
        _add_check(engine, "NB-PP02-CEMS", "SO2", f"CK-Z{d}", "zero", "",
                   _step(0.4 + 0.5 * d), t0=T0 + dt.timedelta(days=d))
    v = Verifier(engine, registry)
    checks = [load_check(engine, "NB-PP02-CEMS", f"CK-Z{d}") for d in range(4)]
    batch = {r["check_id"]: r for r in v.evaluate_and_store(checks)}
    with engine.begin() as conn:
        conn.execute(sa.text("delete from check_result"))
    one = {}
    for c in checks:
        one.update({r["check_id"]: r for r in v.evaluate_and_store([c])})
    assert batch == one
    assert batch["CK-Z0"]["drift_fs_pct"] is None
    for d in (1, 2, 3):  # drift against the previous check's mean, % of the 200 mg/m3 span
        prev, cur = batch[f"CK-Z{d - 1}"], batch[f"CK-Z{d}"]
        assert cur["drift_fs_pct"] == pytest.approx((cur["mean"] - prev["mean"]) / 200.0 * 100.0)
