import datetime as dt
import json
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from envcal.audit import verify_chain
from envcal.instruments import (
    VerificationRecordError,
    add_verification_record,
    coverage,
    list_verification_records,
)
from envcal.models import Attachment, AuditLog, InstrumentVerification
from envcal.registry import sync_registry

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "reference_materials" / "samples" / "GBW(E)080123-2026-017.pdf"
INST = "浙江省计量科学研究院"
CST = dt.timezone(dt.timedelta(hours=8))
AT = dt.datetime(2026, 11, 27, 8, 0, tzinfo=CST)


def _add(engine, analyzer, number, date="2026-03-01", result="qualified", valid="2027-02-28", **kw):
    return add_verification_record(engine, analyzer, number, INST, date, result, valid, **kw)


def test_verification_record_add_and_list(engine, registry):
    sync_registry(engine, registry)
    o = _add(engine, "JX-PP01-CEMS", "JJ2026-0117", errors={"SO2": {"error_pct_fs": 1.2}},
             pdf=PDF, actor="lab")
    assert o.status == "created"
    again = _add(engine, "JX-PP01-CEMS", "JJ2026-0117", errors={"SO2": {"error_pct_fs": 1.2}},
                 pdf=PDF, actor="lab")
    assert (again.status, again.id) == ("unchanged", o.id)
    with pytest.raises(VerificationRecordError, match="already recorded with different content"):
        _add(engine, "JX-PP01-CEMS", "JJ2026-0117", result="not_qualified")
    rows = list_verification_records(engine)
    assert len(rows) == 1 and rows[0]["errors"] == {"SO2": {"error_pct_fs": 1.2}}
    assert rows[0]["valid_until"] == "2027-02-28" and rows[0]["attachment_sha256"]
    with Session(engine) as s:
        assert s.get(Attachment, rows[0]["attachment_sha256"]).size == PDF.stat().st_size
        assert list(s.exec(select(AuditLog.action))) == ["instrument_verification.create"]
    assert verify_chain(engine) == []


def test_verification_record_refusals_store_nothing(engine, registry, tmp_path):
    sync_registry(engine, registry)
    with pytest.raises(VerificationRecordError) as ei:
        add_verification_record(engine, "JX-PP01-CEMS", "N1", INST, "2026-05-01", "passed",
                                "2026-04-01", errors="{bad json", pdf=b"not a pdf at all")
    msgs = ei.value.problems
    assert any(m.startswith("result: 'passed'") for m in msgs)
    assert any(m.startswith("valid_until: 2026-04-01 is before") for m in msgs)
    assert any(m.startswith("errors: not valid JSON") for m in msgs)
    assert any(m.startswith("pdf:") and "not a PDF" in m for m in msgs)
    with pytest.raises(VerificationRecordError, match="unknown analyzer 'NOPE'"):
        _add(engine, "NOPE", "N2")
    with pytest.raises(VerificationRecordError, match="date: '2026-13-01' is not a date"):
        _add(engine, "JX-PP01-CEMS", "N3", date="2026-13-01")
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * 5000 + b"\n%%EOF\n")
    with pytest.raises(VerificationRecordError, match="over the limit of 1000 bytes"):
        _add(engine, "JX-PP01-CEMS", "N4", pdf=big, max_bytes=1000)
    with Session(engine) as s:
        assert s.exec(select(InstrumentVerification)).all() == []
        assert s.exec(select(Attachment)).all() == []
        assert s.exec(select(AuditLog)).all() == []


def test_coverage_records(engine, registry):
    sync_registry(engine, registry)
    ids = sorted(registry.analyzers)
    assert len(ids) == 8
    ok = ids[:5]
    for i, aid in enumerate(ok):
        _add(engine, aid, f"OK-{i}")
    _add(engine, ids[5], "EXP-1", date="2025-06-01", valid="2026-05-31")  # expired
    _add(engine, ids[6], "NQ-1", result="not_qualified",
         errors={"NH3-N": {"indication_error_pct": 12.0}})  # not qualified
    rep = coverage(engine, AT, registry, routine=False)
    assert (rep.total, rep.verified) == (8, 5)
    assert rep.rate == pytest.approx(5 / 8) and not rep.meets_target and rep.target == 0.96
    assert not rep.checks_evaluated
    by = {a.analyzer_id: a for a in rep.analyzers}
    assert all(by[a].verified and by[a].checks == "not evaluated" for a in ok)
    assert "expired on 2026-05-31" in by[ids[5]].reasons[0]
    assert "not qualified" in by[ids[6]].reasons[0]
    assert by[ids[7]].reasons == ["no instrument verification record"]
    # before the 2026 records only the (then valid) 2025 record counts; valid_until day counts
    early = coverage(engine, dt.datetime(2026, 2, 1, tzinfo=CST), registry, routine=False)
    assert [a.analyzer_id for a in early.analyzers if a.verified] == [ids[5]]
    assert coverage(engine, dt.datetime(2027, 2, 28, 23, tzinfo=CST), registry,
                    routine=False).verified == 5
    # default population: every analyzer in the database
    assert coverage(engine, AT).total == 8


def test_coverage_with_routine_checks(sqlite_engine, registry):
    sync_registry(sqlite_engine, registry)
    ids = sorted(registry.analyzers)
    for i, aid in enumerate(ids):
        _add(sqlite_engine, aid, f"OK-{i}")
    rep = coverage(sqlite_engine, AT, registry, routine=False)
    assert rep.rate == 1.0 and rep.meets_target
    day = dt.timedelta(hours=24)
    required = {ids[0]: [("zero", day), ("span", day)], ids[1]: [("std_sample", 7 * day)]}
    last = {(ids[0], "zero"): AT - dt.timedelta(hours=3),
            (ids[0], "span"): AT - dt.timedelta(hours=30),
            (ids[1], "std_sample"): None}
    rep = coverage(sqlite_engine, AT, registry, required_checks=required,
                   last_check=lambda a, k: last.get((a, k), None))
    assert rep.checks_evaluated
    by = {a.analyzer_id: a for a in rep.analyzers}
    assert by[ids[0]].checks == "overdue" and len(by[ids[0]].reasons) == 1
    assert "last span check" in by[ids[0]].reasons[0]
    assert "no std_sample check" in by[ids[1]].reasons[0]
    assert by[ids[2]].verified and by[ids[2]].checks == "up to date"
    assert rep.verified == 6 and rep.rate == pytest.approx(0.75)
    assert json.loads(json.dumps(rep.to_dict()))["formula"] == "rate = N_verified / N_total"


def test_coverage_routine_checks_from_rule_packs(sqlite_engine, registry):
    from envcal.instruments import routine_checks
    from envcal.verify import store_results

    sync_registry(sqlite_engine, registry)
    for i, aid in enumerate(sorted(registry.analyzers)):
        _add(sqlite_engine, aid, f"OK-{i}")
    required, _ = routine_checks(sqlite_engine, registry)
    # HJ 75-2017: daily zero and span checks of the CEMS channels
    assert dict(required["NB-PP02-CEMS"]) == {"zero": dt.timedelta(hours=24),
                                               "span": dt.timedelta(hours=24)}
    rep = coverage(sqlite_engine, AT, registry)
    by = {a.analyzer_id: a for a in rep.analyzers}
    assert rep.checks_evaluated and by["NB-PP02-CEMS"].checks == "overdue"
    assert any("no zero check on record" in r for r in by["NB-PP02-CEMS"].reasons)
    base = {"analyzer": "NB-PP02-CEMS", "station": "ZJ-NB-PP02", "analyte": "SO2", "unit": "mg/m3",
            "span": 200.0, "n": 10, "verdict": "pass", "pack": "hj75_2017", "pack_version": "x",
            "source": "readings"}
    store_results(sqlite_engine, [
        {**base, "kind": k, "check_id": f"CK-{k}", "start": AT - dt.timedelta(hours=2),
         "end": AT - dt.timedelta(hours=2) + dt.timedelta(minutes=5)} for k in ("zero", "span")])
    by = {a.analyzer_id: a for a in coverage(sqlite_engine, AT, registry).analyzers}
    assert by["NB-PP02-CEMS"].checks == "up to date" and by["NB-PP02-CEMS"].verified


def test_cli_verify_record(sqlite_url, tmp_path):
    from envcal.cli import app

    runner = CliRunner()
    stations = str(ROOT / "stations")
    args = ["instruments", "verify-record", "add", "--analyzer", "SX-WW01-WQ", "--number",
            "JJ-W-2026-33", "--institute", INST, "--date", "2026-04-10", "--result", "qualified",
            "--valid-until", "2027-04-09", "--errors", '{"CODcr": {"error_pct": 3.1}}',
            "--pdf", str(PDF), "--stations", stations, "--db", sqlite_url]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "created" in r.output, r.output
    r = runner.invoke(app, ["instruments", "verify-record", "list", "--json", "--db", sqlite_url])
    rows = json.loads(r.output)
    assert [x["number"] for x in rows] == ["JJ-W-2026-33"]
    bad = args.copy()
    bad[bad.index("qualified")] = "ok"
    bad[bad.index("JJ-W-2026-33")] = "JJ-W-2026-34"
    r = runner.invoke(app, bad)
    assert r.exit_code == 1 and "result: 'ok'" in r.output
    r = runner.invoke(app, ["instruments", "coverage", "--at", "2026-11-27T08:00:00+08:00",
                            "--stations", stations, "--json", "--db", sqlite_url])
    rep = json.loads(r.output)
    # the record is valid, but no routine check of the rule pack has been run yet
    assert (rep["verified"], rep["total"]) == (0, 8)
    r = runner.invoke(app, ["instruments", "coverage", "--at", "2026-11-27T08:00:00+08:00",
                            "--stations", stations, "--json", "--records-only", "--db", sqlite_url])
    rep = json.loads(r.output)
    assert (rep["verified"], rep["total"]) == (1, 8)


def test_verification_due_before_and_after_expiry(sqlite_engine, registry):
    from envcal.instruments import verification_due, verification_due_alert

    sync_registry(sqlite_engine, registry)
    ids = sorted(registry.analyzers)
    _add(sqlite_engine, ids[0], "LONG", valid="2027-06-30")  # months left: nothing due
    _add(sqlite_engine, ids[1], "SOON", valid="2026-12-10")  # 13 days left
    _add(sqlite_engine, ids[2], "OLD", date="2025-06-01", valid="2026-05-31")  # expired
    due = verification_due(sqlite_engine, AT, ids[:4])
    assert due[ids[0]] is None and due[ids[3]] is None  # ids[3]: never verified, no due date
    assert (due[ids[1]].state, due[ids[1]].record, due[ids[1]].days) == ("due", "SOON", 13)
    assert (due[ids[2]].state, due[ids[2]].days) == ("overdue", 180)
    assert verification_due(sqlite_engine, AT, [ids[1]], lead_days=10)[ids[1]] is None
    a = verification_due_alert(due[ids[2]])
    assert a["severity"] == "warning" and "2026-05-31" in a["title_zh"]
    assert a["evidence"] == {"state": "overdue", "record": "OLD", "valid_until": "2026-05-31",
                             "days": 180}


def test_verification_due_alert_from_the_engine_timer(sqlite_engine, registry):
    from envcal.alerts import AlertConfig, AlertEngine, list_alerts

    sync_registry(sqlite_engine, registry)
    ids = sorted(registry.analyzers)
    _add(sqlite_engine, ids[1], "SOON", valid="2026-12-10")
    ae = AlertEngine(sqlite_engine, registry, config=AlertConfig(verification_due_days=30))
    try:
        ae.tick(AT)
        got = [(a["analyzer"], a["kind"]) for a in list_alerts(sqlite_engine, kind="verification_due")]
        assert got == [(ids[1], "verification_due")]
        # renewed: the alert resolves at the next tick
        _add(sqlite_engine, ids[1], "RENEWED", date="2026-11-20", valid="2027-11-19")
        ae.tick(AT)
        states = [a["state"] for a in list_alerts(sqlite_engine, kind="verification_due")]
        assert states == ["resolved"]
    finally:
        ae.close()
