"""Append-only audit trail with a SHA-256 hash chain.

Every create, supersede, revoke and user action is one :class:`envcal.models.AuditLog` row,
written in the same transaction as the change it records. Each row carries the hash of
the row before it (``prev_hash``; the first row's is 64 zeros) and its own hash::

    hash = SHA-256( prev_hash + canonical_json({ts, actor, action, object_type,
                                                object_id, details}) )

``canonical_json`` sorts keys, uses no whitespace, keeps non-ASCII text as UTF-8 and
writes ``ts`` as UTC ISO 8601 with microseconds. Rows are chained in ``id`` order, so
:func:`verify_chain` detects an altered row (its hash no longer matches), a deleted or
re-ordered row (the next row's ``prev_hash`` no longer matches). Removing the newest rows
leaves a shorter valid chain: compare the head hash (``envcal audit verify`` prints it)
with one recorded elsewhere (``expected_head``) to detect that.

Concurrency: two writers must not read the same last hash. On PostgreSQL :func:`record`
takes a transaction-scoped advisory lock (``pg_advisory_xact_lock``) before reading the
last hash; on SQLite it first takes the database write lock (a no-op ``UPDATE`` inside the
transaction, i.e. ``BEGIN IMMEDIATE`` semantics). Both are released at commit. As a last
line of defence ``prev_hash`` is unique, so a fork fails loudly instead of being stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal.models import AuditLog, utcnow

#: ``prev_hash`` of the first row.
GENESIS = "0" * 64
#: Advisory lock key (PostgreSQL) serializing audit writers: ASCII "envcalAU".
ADVISORY_KEY = 0x656E7663616C4155


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, no whitespace, UTF-8 kept, other types via ``str``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default)


def _default(o: Any) -> Any:
    if isinstance(o, dt.datetime):
        return _iso(o) if o.tzinfo else o.isoformat()
    if isinstance(o, (dt.date, dt.time)):
        return o.isoformat()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, ts: dt.datetime, actor: str, action: str, object_type: str,
               object_id: str, details: Any) -> str:
    """SHA-256 (hex) of one audit entry chained to ``prev_hash``.

    Parameters
    ----------
    prev_hash : str
        Hash of the previous entry (64 hex digits; :data:`GENESIS` for the first).
    ts : datetime
        Time of the entry (timezone-aware; hashed as UTC ISO 8601 with microseconds).
    actor, action, object_type, object_id : str
        Who did what to which object.
    details : JSON-like
        Free details (hashed as canonical JSON).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    body = canonical_json({"ts": _iso(ts), "actor": actor, "action": action,
                           "object_type": object_type, "object_id": object_id,
                           "details": details})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _lock(session: Session) -> None:
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY})
    elif conn.dialect.name == "sqlite":
        # A write statement takes SQLite's write lock (waiting up to busy_timeout) and keeps it
        # to commit; reads after it see the newest committed chain head.
        conn.execute(sa.text("UPDATE audit_log SET id = id WHERE 1 = 0"))


def record(session: Session, actor: str, action: str, object_type: str, object_id: str,
           details: dict | None = None, *, ts: dt.datetime | None = None) -> AuditLog:
    """Append one entry to the audit trail inside ``session``'s transaction.

    The caller commits (the entry and the change it records commit together). The writer
    lock is held from here until that commit.

    Parameters
    ----------
    session : sqlmodel.Session
        Open session; the entry is added and flushed.
    actor : str
        Who (user name, ``cli``, a service name).
    action : str
        What, e.g. ``certificate.create``, ``certificate.supersede``, ``certificate.revoke``.
    object_type, object_id : str
        The object acted on, e.g. ``certificate`` / ``GBW(E)080123-2026-017``.
    details : dict, optional
        JSON-serializable details (dates and times are stored as ISO strings).
    ts : datetime, optional
        Time of the action (timezone-aware); default now (UTC).

    Returns
    -------
    AuditLog
        The flushed row (``id`` and ``hash`` set).
    """
    ts = ts or utcnow()
    if ts.tzinfo is None:
        raise ValueError("audit time must be timezone-aware")
    ts = ts.astimezone(dt.UTC)
    details = json.loads(canonical_json(details)) if details is not None else None
    _lock(session)
    prev = session.exec(select(AuditLog.hash).order_by(AuditLog.id.desc()).limit(1)).first()
    prev = prev or GENESIS
    h = entry_hash(prev, ts, actor, action, object_type, str(object_id), details)
    row = AuditLog(ts=ts, actor=actor, action=action, object_type=object_type,
                   object_id=str(object_id), details=details, prev_hash=prev, hash=h)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class ChainProblem:
    """One break in the audit chain: the row it was found at, a code and a message."""

    id: int | None
    code: str  # altered | broken_link | head_mismatch
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ChainStatus:
    """Result of :func:`verify_chain_status`: entries checked, head hash and problems."""

    entries: int
    head: str
    problems: list[ChainProblem]


def verify_chain_status(engine: Engine, expected_head: str | None = None) -> ChainStatus:
    """Walk the audit trail in ``id`` order and check every hash and link.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    expected_head : str, optional
        A head hash recorded earlier outside the database; when given, the chain must
        contain it (detects removal of the newest rows).

    Returns
    -------
    ChainStatus
    """
    problems: list[ChainProblem] = []
    expected_prev = GENESIS
    prev_id: int | None = None
    n = 0
    seen_expected = expected_head is None
    with Session(engine) as s:
        for row in s.exec(select(AuditLog).order_by(AuditLog.id).execution_options(yield_per=1000)):
            n += 1
            if row.prev_hash != expected_prev:
                where = f"row id={prev_id}" if prev_id is not None else "the start of the chain"
                problems.append(ChainProblem(
                    row.id, "broken_link",
                    f"audit row id={row.id}: prev_hash {row.prev_hash[:12]}... does not match "
                    f"{where} ({expected_prev[:12]}...): a row was deleted, inserted or re-ordered"))
            h = entry_hash(row.prev_hash, row.ts, row.actor, row.action, row.object_type,
                           row.object_id, row.details)
            if h != row.hash:
                problems.append(ChainProblem(
                    row.id, "altered",
                    f"audit row id={row.id}: content does not match its hash: the row was altered"))
            if row.hash == expected_head:
                seen_expected = True
            expected_prev = row.hash
            prev_id = row.id
    if not seen_expected:
        problems.append(ChainProblem(None, "head_mismatch",
                                     f"expected head {expected_head} is not in the chain: "
                                     "newest rows were removed or the chain was rewritten"))
    return ChainStatus(n, expected_prev, problems)


def verify_chain(engine: Engine, expected_head: str | None = None) -> list[ChainProblem]:
    """Problems in the audit chain (empty when intact). See :func:`verify_chain_status`."""
    return verify_chain_status(engine, expected_head).problems
