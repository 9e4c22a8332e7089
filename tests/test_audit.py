import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from envcal import audit
from envcal.audit import GENESIS, entry_hash, verify_chain, verify_chain_status
from envcal.models import AuditLog


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """An audit key (and its head file next to it) configured for this test."""
    path = audit.init_key(tmp_path / "keys" / "audit.key")
    monkeypatch.setenv("ENVCAL_AUDIT_KEY_FILE", str(path))
    monkeypatch.delenv("ENVCAL_AUDIT_HEAD_FILE", raising=False)
    return audit.load_key(path), audit.head_path()


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
                                      {"version": 1, "note": "标准气体", "when": "2026-03-01"},
                                      rows[0].row_digest)
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


def test_cli_audit_verify(sqlite_url, keyed):
    from envcal.cli import app
    from envcal.db import make_engine

    eng = make_engine(sqlite_url)
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 0 and "0 entries" in r.output
    rows = _append(eng, 2)
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 0 and rows[-1].hash in r.output and "keyed, anchored" in r.output
    with eng.begin() as conn:
        conn.execute(sa.update(AuditLog).where(AuditLog.id == rows[0].id).values(object_id="X"))
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 1 and "altered" in r.output
    keyed[1].unlink()  # the anchor is gone while entries exist
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 1 and "head file" in r.output
    r = runner.invoke(app, ["audit", "verify", "--db", sqlite_url, "--unkeyed"])
    assert r.exit_code == 1 and "UNKEYED" not in r.output  # still altered
    eng.dispose()


def test_cli_audit_verify_needs_a_key(sqlite_url, monkeypatch):
    from envcal.cli import app

    monkeypatch.delenv("ENVCAL_AUDIT_KEY_FILE", raising=False)
    r = CliRunner().invoke(app, ["audit", "verify", "--db", sqlite_url])
    assert r.exit_code == 2 and "no audit key configured" in r.output


# --------------------------------------------------------------------------- keyed and anchored
def _verify(engine, keyed):
    key, head = keyed
    return {p.code for p in verify_chain(engine, key=key, head_file=head)}


def test_audit_keyed_rows_carry_mac_and_head_is_anchored(engine, keyed):
    rows = _append(engine, 3)
    key, head = keyed
    assert all(r.mac == audit.row_mac(key, r.hash) for r in rows)
    assert audit.read_head(head, key) == (rows[-1].id, rows[-1].hash)
    st = verify_chain_status(engine, key=key, head_file=head)
    assert st.problems == [] and st.keyed


def test_audit_removed_newest_rows_detected_by_anchor(engine, keyed):
    rows = _append(engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.delete(AuditLog).where(AuditLog.id >= rows[1].id))
    assert _verify(engine, keyed) == {"head_mismatch"}


def test_audit_rewritten_chain_without_key_detected(engine, keyed):
    """Change a row and recompute every later hash (the plain SHA-256 chain then verifies)."""
    rows = _append(engine, 4)
    with Session(engine) as s:
        chain = list(s.exec(select(AuditLog).order_by(AuditLog.id)))
    prev = chain[0].prev_hash
    with engine.begin() as conn:
        for i, r in enumerate(chain):
            actor = "mallory" if i == 1 else r.actor
            h = entry_hash(prev, r.ts, actor, r.action, r.object_type, r.object_id, r.details,
                           r.row_digest)
            conn.execute(sa.update(AuditLog).where(AuditLog.id == r.id).values(
                actor=actor, prev_hash="p" * 60 + f"{i:04d}", hash="h" * 60 + f"{i:04d}"))
            conn.execute(sa.update(AuditLog).where(AuditLog.id == r.id).values(prev_hash=prev, hash=h))
            prev = h
    assert verify_chain(engine) == []  # the unkeyed chain is fooled ...
    assert {"bad_mac", "head_mismatch"} <= _verify(engine, keyed)  # ... the keyed one is not
    with engine.begin() as conn:  # dropping the MACs does not help either
        conn.execute(sa.update(AuditLog).where(AuditLog.id >= rows[1].id).values(mac=None))
    assert "unkeyed" in _verify(engine, keyed)


def test_audit_forged_head_file_refused(engine, keyed):
    rows = _append(engine, 2)
    _, head = keyed
    head.write_text(f'{{"id": {rows[0].id}, "hash": "{rows[0].hash}", "mac": "{"0" * 64}"}}')
    assert "head" in _verify(engine, keyed)


# --------------------------------------------------------------------------- covered rows
def test_audit_covers_certificates_revocations_rules_and_accounts(engine, registry, keyed):
    """Editing covered rows directly in the database is detected, even with a valid chain."""
    from pathlib import Path

    from envcal.certificates import import_certificate, revoke_certificate
    from envcal.models import Certificate, CertificateValue, RuleConfirmation, User
    from envcal.users import add_user

    samples = Path(__file__).resolve().parents[1] / "reference_materials" / "samples"
    import_certificate(engine, samples / "gas_so2.json", actor="lab")
    import_certificate(engine, samples / "gas_no.json", actor="lab")
    revoke_certificate(engine, "GBW(E)080123-2026-017", "leaking cylinder", actor="lab")
    add_user(engine, "ann", "viewer", "password-123")
    with Session(engine) as s:
        audit.record(s, "ann", "rule.confirm", "rule", "hj75_2017/r1", {})
        s.add(RuleConfirmation(pack="hj75_2017", rule_id="r1", rule_sha256="a" * 64,
                               pack_version="1", citation="x", confirmed_by="ann",
                               confirmed_at=dt.datetime.now(dt.UTC)))
        s.flush()
        audit.record(s, "ann", "rule.confirm", "rule", "hj75_2017/r1", {})
        s.commit()
    assert verify_chain(engine, key=keyed[0], head_file=keyed[1]) == []

    def changed(stmt) -> set[str]:
        with engine.begin() as conn:
            conn.execute(stmt)
        return {p.message.split(":")[0] for p in verify_chain(engine, key=keyed[0], head_file=keyed[1])}

    v = CertificateValue.__table__
    c = Certificate.__table__
    so2 = "certificate 'GBW(E)080123-2026-017'"
    assert changed(sa.update(v).values(value=v.c.value * 2).where(v.c.analyte == "SO2")) == {so2}
    assert changed(sa.update(c).values(revoked_at=None)) == {so2}
    assert so2 in changed(sa.update(v).values(value=v.c.value / 2).where(v.c.analyte == "SO2"))
    assert "user 'ann'" in changed(sa.update(User).values(role="admin").where(User.name == "ann"))
    assert "rule 'hj75_2017/r1'" in changed(sa.update(RuleConfirmation).values(citation="forged"))
    with engine.begin() as conn:
        conn.execute(sa.insert(User).values(name="eve", role="admin", created_at=dt.datetime.now(dt.UTC)))
    problems = verify_chain(engine, key=keyed[0], head_file=keyed[1])
    assert any(p.code == "no_entry" and "'eve'" in p.message for p in problems)
