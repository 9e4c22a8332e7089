import datetime as dt

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from envcal.cli import app
from envcal.models import AuditLog, User
from envcal.users import (
    MAX_FAILURES,
    Actor,
    PermissionDenied,
    UserError,
    add_user,
    authenticate,
    list_users,
    require,
    set_disabled,
)


def test_users_add_hashes_with_argon2_and_audits(engine):
    add_user(engine, "li.wei", "staff", "correct horse 1")
    with engine.connect() as c:
        h = c.execute(sa.select(User.password_hash)).scalar()
        audit = c.execute(sa.select(AuditLog.action, AuditLog.object_id)).all()
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert audit == [("user.create", "li.wei")]


def test_users_authenticate_right_and_wrong(engine):
    add_user(engine, "lab1", "lab", "secret-pass")
    assert authenticate(engine, "lab1", "secret-pass") == Actor("lab1", "lab")
    with pytest.raises(UserError, match="wrong name or password"):
        authenticate(engine, "lab1", "nope-nope")
    with pytest.raises(UserError, match="wrong name or password"):
        authenticate(engine, "ghost", "secret-pass")


def test_users_lockout_after_failures(sqlite_engine):
    add_user(sqlite_engine, "a", "viewer", "password1")
    t0 = dt.datetime(2026, 11, 27, 8, tzinfo=dt.UTC)
    for i in range(MAX_FAILURES):
        with pytest.raises(UserError):
            authenticate(sqlite_engine, "a", "bad", now=t0 + dt.timedelta(seconds=i))
    with pytest.raises(UserError, match="locked"):
        authenticate(sqlite_engine, "a", "password1", now=t0 + dt.timedelta(minutes=1))
    # after the lock-out window the right password works again
    assert authenticate(sqlite_engine, "a", "password1", now=t0 + dt.timedelta(minutes=20)).role == "viewer"


def test_users_refuses_bad_input(sqlite_engine):
    with pytest.raises(UserError, match="role"):
        add_user(sqlite_engine, "x", "root", "password1")
    with pytest.raises(UserError, match="8 characters"):
        add_user(sqlite_engine, "x", "viewer", "short")
    add_user(sqlite_engine, "x", "viewer", "password1")
    with pytest.raises(UserError, match="exists"):
        add_user(sqlite_engine, "x", "admin", "password1")


def test_users_disabled_cannot_log_in(sqlite_engine):
    add_user(sqlite_engine, "x", "viewer", "password1")
    with pytest.raises(PermissionDenied):
        set_disabled(sqlite_engine, "x", True, actor=Actor("x", "viewer"))
    set_disabled(sqlite_engine, "x", True, actor=Actor("root", "admin"))
    with pytest.raises(UserError):
        authenticate(sqlite_engine, "x", "password1")


@pytest.mark.parametrize(("role", "perm", "ok"), [
    ("viewer", "alert.ack", False), ("staff", "alert.ack", True),
    ("staff", "certificate.upload", False), ("lab", "certificate.upload", True),
    ("lab", "rule.confirm", False), ("admin", "rule.confirm", True),
    ("admin", "certificate.revoke", True), ("viewer", "read", True),
])
def test_users_require_roles(role, perm, ok):
    if ok:
        assert require(Actor("u", role), perm).role == role
    else:
        with pytest.raises(PermissionDenied, match=perm):
            require(Actor("u", role), perm)


def test_users_require_nobody_refused():
    with pytest.raises(PermissionDenied, match="not logged in"):
        require(None, "read")


def test_users_cli_add_and_list(sqlite_url):
    r = CliRunner().invoke(app, ["users", "add", "wang", "--role", "lab", "--password-stdin",
                                 "--db", sqlite_url], input="lab-password\n")
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["users", "list", "--json", "--db", sqlite_url])
    assert r.exit_code == 0
    assert '"name": "wang"' in r.output and '"role": "lab"' in r.output
    r = CliRunner().invoke(app, ["users", "add", "wang2", "--role", "god", "--password-stdin",
                                 "--db", sqlite_url], input="lab-password\n")
    assert r.exit_code == 1
    assert "role" in r.output


def test_users_list_shows_accounts(sqlite_engine):
    add_user(sqlite_engine, "b", "admin", "password1")
    add_user(sqlite_engine, "a", "viewer", None)
    rows = list_users(sqlite_engine)
    assert [(r["name"], r["role"], r["local"]) for r in rows] == [("a", "viewer", False),
                                                                  ("b", "admin", True)]


def test_users_cli_sso_account_has_no_password(sqlite_url):
    r = CliRunner().invoke(app, ["users", "add", "li@example.org", "--role", "viewer", "--sso",
                                 "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    from envcal.db import make_engine

    eng = make_engine(sqlite_url)
    assert list_users(eng)[0]["local"] is False
    with pytest.raises(UserError):
        authenticate(eng, "li@example.org", "")


def test_session_actor_rereads_account_and_enforces_timeouts(engine):
    from envcal.users import (
        SESSION_IDLE,
        SESSION_LIFETIME,
        Actor,
        add_user,
        session_actor,
        set_disabled,
    )

    add_user(engine, "ann", "admin", "password-123")
    ann = Actor("ann", "admin")
    t0 = 1_000_000.0
    assert session_actor(engine, ann, signed_in_at=t0, last_seen=t0, now=t0 + 60).reason == "ok"
    add_user(engine, "ann", "viewer", "password-123", actor="bob", replace=True)  # demoted
    chk = session_actor(engine, ann, signed_in_at=t0, last_seen=t0, now=t0 + 60)
    assert chk.actor == Actor("ann", "viewer") and not chk.actor.can("rule.confirm")
    set_disabled(engine, "ann", True, actor=Actor("bob", "admin"))
    assert session_actor(engine, ann, signed_in_at=t0, last_seen=t0, now=t0 + 60).actor is None
    set_disabled(engine, "ann", False, actor=Actor("bob", "admin"))
    idle = SESSION_IDLE.total_seconds()
    assert session_actor(engine, ann, signed_in_at=t0, last_seen=t0, now=t0 + idle + 1).reason == "idle"
    life = SESSION_LIFETIME.total_seconds()
    late = t0 + life + 1  # active a second ago, but signed in too long ago
    assert session_actor(engine, ann, signed_in_at=t0, last_seen=late - 1, now=late).reason == "lifetime"
    assert session_actor(engine, Actor("ghost", "admin"), signed_in_at=t0, last_seen=t0,
                         now=t0).actor is None
