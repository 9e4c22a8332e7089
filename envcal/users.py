"""Local accounts, roles and permission checks of the Streamlit app.

Roles
-----
``viewer``  reads everything;
``staff``   also acknowledges and resolves alerts;
``lab``     also uploads and revokes CRM certificates;
``admin``   everything, including confirming rules and managing users.

Passwords are stored as argon2id hashes (argon2-cffi defaults, RFC 9106). After
:data:`MAX_FAILURES` failed logins within :data:`LOCKOUT` an account is locked until the
window passes. Every action function that changes state calls :func:`require` first, so a
permission is enforced in server code whatever the page shows.

Sessions: the app calls :func:`session_actor` on every request (every Streamlit rerun). It
re-reads the account, so a disabled account is signed out and a changed role applies at the
next interaction, and it ends a session after :data:`SESSION_IDLE` without activity or
:data:`SESSION_LIFETIME` after sign-in, whatever the activity.

References
----------
RFC 9106, *Argon2 Memory-Hard Function for Password Hashing*.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal import audit
from envcal.models import LoginAttempt, User, utcnow

ROLES: tuple[str, ...] = ("viewer", "staff", "lab", "admin")

#: permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "alert.ack": frozenset({"staff", "admin"}),
    "alert.resolve": frozenset({"staff", "admin"}),
    "device.command": frozenset({"staff", "admin"}),  # HJ 212 commands down to a DAU
    "certificate.upload": frozenset({"lab", "admin"}),
    "certificate.revoke": frozenset({"lab", "admin"}),
    "rule.confirm": frozenset({"admin"}),
    "user.manage": frozenset({"admin"}),
}

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
#: A session without a request for this long is signed out (``ENVCAL_SESSION_TIMEOUT_MIN``).
SESSION_IDLE = dt.timedelta(minutes=30)
#: A session is signed out this long after sign-in, active or not (``ENVCAL_SESSION_MAX_HOURS``).
SESSION_LIFETIME = dt.timedelta(hours=12)
_HASHER = PasswordHasher()


class UserError(ValueError):
    """A refused account operation or login (message says why)."""


class PermissionDenied(PermissionError):
    """The acting user's role lacks the permission an action needs."""


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user name and role (from a login, or the CLI)."""

    name: str
    role: str

    def can(self, permission: str) -> bool:
        """Whether this actor's role holds ``permission`` (see :data:`PERMISSIONS`)."""
        return self.role in PERMISSIONS.get(permission, frozenset())


def require(actor: Actor | None, permission: str) -> Actor:
    """Raise :class:`PermissionDenied` unless ``actor`` holds ``permission``.

    Parameters
    ----------
    actor : Actor or None
        The logged-in user (None: nobody is logged in).
    permission : str
        A key of :data:`PERMISSIONS`, e.g. ``"alert.ack"``.

    Returns
    -------
    Actor
        ``actor`` itself, for chaining.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    if actor is None:
        raise PermissionDenied(f"{permission}: not logged in")
    if not actor.can(permission):
        allowed = ", ".join(sorted(PERMISSIONS[permission]))
        raise PermissionDenied(f"{permission}: role {actor.role!r} of {actor.name!r} is not "
                               f"allowed (needs one of: {allowed})")
    return actor


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 128 or any(c.isspace() for c in name):
        raise UserError("name: 1-128 characters without spaces")
    return name


def add_user(engine: Engine, name: str, role: str, password: str | None = None, *,
             actor: str = "cli", replace: bool = False) -> User:
    """Create (or with ``replace`` update) a local account.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    name : str
        Login name (no spaces).
    role : str
        One of :data:`ROLES`.
    password : str, optional
        At least 8 characters; hashed with argon2id. None: no local password (OIDC only).
    actor : str, default "cli"
        Who creates the account (audit trail).
    replace : bool, default False
        Update the role / password of an existing account instead of refusing.

    Returns
    -------
    User

    Raises
    ------
    UserError
        Bad name, unknown role, short password, or an existing name without ``replace``.
    """
    name = _check_name(name)
    if role not in ROLES:
        raise UserError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if password is not None and len(password) < 8:
        raise UserError("password: at least 8 characters")
    h = _HASHER.hash(password) if password is not None else None
    with Session(engine, expire_on_commit=False) as s:
        row = s.get(User, name)
        if row is not None and not replace:
            raise UserError(f"name: user {name!r} exists (use --replace to change it)")
        action = "user.create" if row is None else "user.update"
        if row is None:
            row = User(name=name, role=role, password_hash=h, created_at=utcnow())
        else:
            row.role, row.password_hash, row.disabled = role, h, False
        s.add(row)
        audit.record(s, actor, action, "user", name, {"role": role, "password": h is not None})
        s.commit()
    return row


def list_users(engine: Engine) -> list[dict]:
    """Accounts as dicts: name, role, created_at (ISO), disabled, local (has a password)."""
    with Session(engine) as s:
        rows = list(s.exec(select(User).order_by(User.name)))
    return [{"name": u.name, "role": u.role, "created_at": u.created_at.isoformat(),
             "disabled": u.disabled, "local": u.password_hash is not None} for u in rows]


def set_disabled(engine: Engine, name: str, disabled: bool, *, actor: Actor) -> None:
    """Disable or re-enable an account (admin only, audit-logged)."""
    require(actor, "user.manage")
    with Session(engine) as s:
        row = s.get(User, name)
        if row is None:
            raise UserError(f"name: no user {name!r}")
        row.disabled = disabled
        s.add(row)
        audit.record(s, actor.name, "user.disable" if disabled else "user.enable", "user", name)
        s.commit()


def _recent_failures(s: Session, name: str, now: dt.datetime) -> int:
    c = LoginAttempt.__table__.c
    last_ok = s.exec(sa.select(sa.func.max(c.ts)).where(c.name == name, c.ok == sa.true())).scalar()
    q = sa.select(sa.func.count()).where(c.name == name, c.ok == sa.false(), c.ts >= now - LOCKOUT)
    if last_ok is not None:
        q = q.where(c.ts > last_ok)
    return int(s.exec(q).scalar() or 0)


def authenticate(engine: Engine, name: str, password: str, *,
                 now: dt.datetime | None = None) -> Actor:
    """Check a local login; every attempt is recorded.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    name, password : str
    now : datetime, optional
        Time of the attempt (timezone-aware), default now.

    Returns
    -------
    Actor

    Raises
    ------
    UserError
        Wrong name or password (one message for both), disabled or locked account.
    """
    now = now or utcnow()
    name = (name or "").strip()
    with Session(engine) as s:
        if _recent_failures(s, name, now) >= MAX_FAILURES:
            s.add(LoginAttempt(name=name[:128], ts=now, ok=False))
            s.commit()
            raise UserError(f"account locked after {MAX_FAILURES} failed logins; try again "
                            f"in {int(LOCKOUT.total_seconds() // 60)} minutes")
        row = s.get(User, name) if name else None
        ok = False
        if row is not None and row.password_hash and not row.disabled:
            try:
                ok = _HASHER.verify(row.password_hash, password or "")
            except (VerificationError, InvalidHashError):
                ok = False
        s.add(LoginAttempt(name=name[:128], ts=now, ok=ok))
        who = Actor(row.name, row.role) if ok else None
        if ok and _HASHER.check_needs_rehash(row.password_hash):
            row.password_hash = _HASHER.hash(password)
            s.add(row)
            # the account's rows are covered by the audit trail (envcal.audit.COVERED)
            audit.record(s, row.name, "user.rehash", "user", row.name)
        s.commit()
    if who is None:
        raise UserError("wrong name or password")
    return who


def actor_for(engine: Engine, name: str, *, default_role: str | None = None) -> Actor | None:
    """The actor of an existing, enabled account (used for OIDC logins, matched by e-mail or
    name); ``default_role`` for an unknown name, else None."""
    with Session(engine) as s:
        row = s.get(User, name)
    if row is not None:
        return None if row.disabled else Actor(row.name, row.role)
    return Actor(name, default_role) if default_role in ROLES else None


@dataclass(frozen=True)
class SessionCheck:
    """Outcome of :func:`session_actor`: the actor to use now (None: signed out) and why."""

    actor: Actor | None
    reason: str  # ok | idle | lifetime | disabled | unknown | role_changed


def session_actor(engine: Engine, actor: Actor, *, signed_in_at: float, last_seen: float,
                  now: float, idle_s: float = SESSION_IDLE.total_seconds(),
                  lifetime_s: float = SESSION_LIFETIME.total_seconds()) -> SessionCheck:
    """Re-validate a signed-in session for one request: timeouts first, then the account.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    actor : Actor
        The actor stored in the session at sign-in (or at the previous request).
    signed_in_at, last_seen, now : float
        Sign-in time, time of the previous request and now [s since the epoch].
    idle_s : float
        Idle timeout [s].
    lifetime_s : float
        Absolute session lifetime [s].

    Returns
    -------
    SessionCheck
        ``actor`` None when the session must end (idle, lifetime, account disabled or
        gone); else the account's *current* name and role (``role_changed`` when the role
        differs from the session's).

    References
    ----------
    OWASP Application Security Verification Standard 4.0.3, V3.3 (session timeouts) and
    V4.1.3 (access control enforced on every request).
    """
    if now - last_seen > idle_s:
        return SessionCheck(None, "idle")
    if now - signed_in_at > lifetime_s:
        return SessionCheck(None, "lifetime")
    with Session(engine) as s:
        row = s.get(User, actor.name)
    if row is None:
        return SessionCheck(None, "unknown")
    if row.disabled or row.role not in ROLES:
        return SessionCheck(None, "disabled")
    fresh = Actor(row.name, row.role)
    return SessionCheck(fresh, "ok" if fresh == actor else "role_changed")
