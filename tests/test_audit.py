import datetime as dt
import threading

import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from envcal import audit
from envcal.audit import GENESIS, entry_hash, verify_chain, verify_chain_status
from envcal.models import AuditLog


def _append(engine, n: int, actor: str = "lab") -> list[AuditLog]:
    rows = []
    for i in range(n):
        with Session(engine, expire_on_commit=False) as s:
            rows.append(audit.record(s, actor, "certificate.create", "certificate", f"LOT-{i}",
                                     {"version": 1, "note": "标准气体", "when": dt.date(2026, 3, 1)}))
            s.commit()
    return rows


def test_audit_chain_intact(engine):
    rows = _append(engine, 4)
    assert rows[0].prev_hash == GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert rows[0].hash == entry_hash(GENESIS, rows[0].ts, "lab", "certificate.create",
                                      "certificate", "LOT-0",
                                      {"version": 1, "note": "标准气体", "when": "2026-03-01"})
    st = verify_chain_status(engine)
    assert (st.entries, st.head, st.problems) == (4, rows[-1].hash, [])


def test_audit_chain_empty_is_intact(engine):
    st = verify_chain_status(engine)
    assert (st.entries, st.head, st.problems) == (0, GENESIS, [])


def test_audit_altered_row_detected(engine):
    rows = _append(engine, 4)
    with engine.begin() as conn:
        conn.execute(sa.update(AuditLog).where(AuditLog.id == rows[1].id)
                     .values(actor="mallory"))
    problems = verify_chain(engine)
    assert [(p.id, p.code) for p in problems] == [(rows[1].id, "altered")]


def test_audit_altered_details_and_time_detected(engine):
    rows = _append(engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.update(AuditLog).where(AuditLog.id == rows[0].id)
                     .values(details={"version": 2}))
        conn.execute(sa.update(AuditLog).where(AuditLog.id == rows[2].id)
                     .values(ts=rows[2].ts + dt.timedelta(seconds=1)))
    assert {(p.id, p.code) for p in verify_chain(engine)} == {(rows[0].id, "altered"),
                                                              (rows[2].id, "altered")}


def test_audit_deleted_row_detected(engine):
    rows = _append(engine, 4)
    with engine.begin() as conn:
        conn.execute(sa.delete(AuditLog).where(AuditLog.id == rows[1].id))
    problems = verify_chain(engine)
    assert [(p.id, p.code) for p in problems] == [(rows[2].id, "broken_link")]
    assert f"row id={rows[0].id}" in problems[0].message


def test_audit_reordered_rows_detected(engine):
    rows = _append(engine, 4)
    a, b = rows[1], rows[2]
    cols = ("ts", "actor", "action", "object_type", "object_id", "details", "prev_hash", "hash")
    with engine.begin() as conn:
        # swap the contents of two rows (hashes are unique: park one first)
        conn.execute(sa.update(AuditLog).where(AuditLog.id == a.id)
                     .values(hash="x" * 64, prev_hash="y" * 64))
        conn.execute(sa.update(AuditLog).where(AuditLog.id == b.id)
                     .values(**{c: getattr(a, c) for c in cols}))
        conn.execute(sa.update(AuditLog).where(AuditLog.id == a.id)
                     .values(**{c: getattr(b, c) for c in cols}))
    problems = verify_chain(engine)
    assert problems and {p.code for p in problems} == {"broken_link"}


def test_audit_removed_tail_detected_with_expected_head(engine):
    rows = _append(engine, 3)
    head = verify_chain_status(engine).head
    with engine.begin() as conn:
        conn.execute(sa.delete(AuditLog).where(AuditLog.id == rows[-1].id))
    assert verify_chain(engine) == []  # a shorter chain is still a chain ...
    problems = verify_chain(engine, expected_head=head)  # ... but not the one recorded
    assert [p.code for p in problems] == ["head_mismatch"]


def _hammer(engine, threads: int, per_thread: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with Session(engine) as s:
                    # a read before the write, as the importers do
                    s.exec(select(AuditLog.id).limit(1)).all()
                    audit.record(s, f"writer-{k}", "test.append", "thing", f"{k}-{i}", {"i": i})
                    s.commit()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def test_audit_concurrent_writers_do_not_fork(engine):
    errors = _hammer(engine, threads=4, per_thread=8)
    assert errors == []
    st = verify_chain_status(engine)
    assert st.entries == 32 and st.problems == []
    with Session(engine) as s:
        prevs = list(s.exec(select(AuditLog.prev_hash)))
    assert len(set(prevs)) == 32


def test_cli_audit_verify(sqlite_url):
    from envcal.cli import app
    from envcal.db import make_engine

    eng = make_engine(sqlite_url)
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 0 and "0 entries" in r.output
    rows = _append(eng, 2)
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 0 and rows[-1].hash in r.output
    with eng.begin() as conn:
        conn.execute(sa.update(AuditLog).where(AuditLog.id == rows[0].id).values(object_id="X"))
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 1 and "altered" in r.output
    eng.dispose()
