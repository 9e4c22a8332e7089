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

Keyed and anchored (tamper evidence against someone who can write the database):

- ``mac = HMAC-SHA256(key, hash)`` on every row written while an audit key is configured
  (``ENVCAL_AUDIT_KEY_FILE`` / ``audit_key_file`` in ``envcal.toml``; create one with
  ``envcal audit init-key``). The key lives outside the database, so a changed row whose
  later hashes were recomputed still fails: its MACs cannot be recomputed.
- the head (newest id and hash, with its MAC) is written to the head file
  (``ENVCAL_AUDIT_HEAD_FILE``, default ``<key file>.head``) after every commit that added
  entries; :func:`verify_chain_status` requires the anchored entry in the chain, so deleting
  the newest rows is detected.
- covered objects: certificate versions with their values (revocations included), rule
  confirmations and app accounts. Each entry about one of them carries ``row_digest``, the
  SHA-256 of the object's stored rows right after the action (part of ``hash``); verify
  recomputes it from the rows as they are now and reports every object whose rows changed
  outside the trail, and every object that has no entry at all.

Concurrency: two writers must not read the same last hash. On PostgreSQL :func:`record`
takes a transaction-scoped advisory lock (``pg_advisory_xact_lock``) before reading the
last hash; on SQLite it first takes the database write lock (a no-op ``UPDATE`` inside the
transaction, i.e. ``BEGIN IMMEDIATE`` semantics). Both are released at commit. As a last
line of defence ``prev_hash`` is unique, so a fork fails loudly instead of being stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal.models import AuditLog, Certificate, CertificateValue, RuleConfirmation, User, utcnow

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
               object_id: str, details: Any, row_digest: str | None = None) -> str:
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
    row_digest : str, optional
        :func:`object_digest` of a covered object (hashed only when given).

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    fields = {"ts": _iso(ts), "actor": actor, "action": action, "object_type": object_type,
              "object_id": object_id, "details": details}
    if row_digest is not None:
        fields["row_digest"] = row_digest
    body = canonical_json(fields)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- key and head
class AuditKeyError(ValueError):
    """The audit key or head file is unusable (message says which and why)."""


def key_path() -> Path | None:
    """The configured audit key file (``ENVCAL_AUDIT_KEY_FILE`` / ``audit_key_file``), or None."""
    from envcal.config import setting

    p = setting("audit_key_file")
    return Path(p) if p else None


def head_path() -> Path | None:
    """The configured head file (``ENVCAL_AUDIT_HEAD_FILE``; default ``<key file>.head``)."""
    from envcal.config import setting

    p = setting("audit_head_file")
    if p:
        return Path(p)
    k = key_path()
    return k.with_name(k.name + ".head") if k is not None else None


def load_key(path: Path | None = None) -> bytes | None:
    """The audit key (hex text in the key file), or None when none is configured.

    Parameters
    ----------
    path : Path, optional
        Key file; default :func:`key_path`.

    Returns
    -------
    bytes or None

    Raises
    ------
    AuditKeyError
        A configured key file that is missing, readable by others or not 32+ hex bytes.
    """
    path = path if path is not None else key_path()
    if path is None:
        return None
    try:
        if os.stat(path).st_mode & 0o077:
            raise AuditKeyError(f"audit key file {path}: readable by others (chmod 600 it)")
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise AuditKeyError(f"audit key file {path}: not found (envcal audit init-key)") from None
    except (ValueError, UnicodeDecodeError):
        raise AuditKeyError(f"audit key file {path}: want hex digits") from None
    if len(key) < 32:
        raise AuditKeyError(f"audit key file {path}: at least 32 bytes (64 hex digits)")
    return key


def init_key(path: str | Path) -> Path:
    """Create a new random 32-byte audit key file (mode 0600); refuses to overwrite one.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        A file is there already (a key is never replaced silently).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def row_mac(key: bytes, h: str) -> str:
    """HMAC-SHA256 (hex) of an entry hash.

    References
    ----------
    RFC 2104 (HMAC); FIPS 180-4 (SHA-256).
    """
    return hmac.new(key, h.encode("ascii"), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, entry_id: int, h: str) -> str:
    return hmac.new(key, f"head:{entry_id}:{h}".encode("ascii"), hashlib.sha256).hexdigest()


def write_head(entry_id: int, h: str, *, key: bytes, path: Path) -> None:
    """Anchor the chain head outside the database: ``{"id", "hash", "mac"}`` (atomic rename).

    Parameters
    ----------
    entry_id : int
        ``audit_log.id`` of the newest entry.
    h : str
        Its hash.
    key : bytes
        The audit key (the head's MAC).
    path : Path
        The head file.

    References
    ----------
    RFC 2104 (HMAC).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"id": entry_id, "hash": h, "mac": _head_mac(key, entry_id, h)}) + "\n",
                   encoding="ascii")
    os.replace(tmp, path)


def read_head(path: Path, key: bytes) -> tuple[int, str]:
    """The anchored (id, hash) of the head file.

    Parameters
    ----------
    path : Path
    key : bytes

    Returns
    -------
    (int, str)

    Raises
    ------
    AuditKeyError
        The file is missing, unreadable, or its MAC does not match (forged, or another key).
    """
    try:
        d = json.loads(path.read_text(encoding="ascii"))
        entry_id, h, mac = int(d["id"]), str(d["hash"]), str(d["mac"])
    except FileNotFoundError:
        raise AuditKeyError(f"audit head file {path}: not found") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise AuditKeyError(f"audit head file {path}: unreadable") from None
    if not hmac.compare_digest(mac, _head_mac(key, entry_id, h)):
        raise AuditKeyError(f"audit head file {path}: its MAC does not match (forged or another key)")
    return entry_id, h


def _after_commit(session: Session) -> None:
    pending = session.info.pop("envcal_audit_head", None)
    if pending is None:
        return
    entry_id, h, key, path = pending
    try:
        write_head(entry_id, h, key=key, path=path)
    except OSError as exc:  # the entries are committed; verify will report the stale head
        import logging

        logging.getLogger("envcal.audit").error("audit head file %s not written: %s", path, exc)


# --------------------------------------------------------------------------- covered objects
def _rows(session: Session, stmt) -> list[dict]:
    return [{k: v for k, v in r._mapping.items()} for r in session.connection().execute(stmt)]


def _certificate_rows(session: Session, object_id: str) -> list[dict]:
    c, v = Certificate.__table__, CertificateValue.__table__
    certs = _rows(session, sa.select(c).where(c.c.cert_id == object_id).order_by(c.c.pk))
    values = _rows(session, sa.select(v).where(v.c.certificate_pk.in_([x["pk"] for x in certs]))
                   .order_by(v.c.id)) if certs else []
    return certs + values


def _rule_rows(session: Session, object_id: str) -> list[dict]:
    pack, _, rule_id = object_id.partition("/")
    t = RuleConfirmation.__table__
    return _rows(session, sa.select(t).where(t.c.pack == pack, t.c.rule_id == rule_id).order_by(t.c.id))


def _user_rows(session: Session, object_id: str) -> list[dict]:
    t = User.__table__
    return _rows(session, sa.select(t).where(t.c.name == object_id))


#: object_type -> (rows of one object, query of every object id in the tables)
COVERED: dict[str, tuple[Callable[[Session, str], list[dict]], Any]] = {
    "certificate": (_certificate_rows, sa.select(Certificate.__table__.c.cert_id).distinct()),
    "rule": (_rule_rows, sa.select(RuleConfirmation.__table__.c.pack + "/"
                                   + RuleConfirmation.__table__.c.rule_id).distinct()),
    "user": (_user_rows, sa.select(User.__table__.c.name)),
}


def object_digest(session: Session, object_type: str, object_id: str) -> str | None:
    """SHA-256 of a covered object's stored rows (canonical JSON), None if not covered.

    Parameters
    ----------
    session : Session
    object_type : str
        A key of :data:`COVERED`.
    object_id : str

    Returns
    -------
    str or None
    """
    spec = COVERED.get(object_type)
    if spec is None:
        return None
    rows = spec[0](session, object_id)
    return hashlib.sha256(canonical_json(rows).encode("utf-8")).hexdigest()


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
    key = load_key()
    _lock(session)
    session.flush()  # the change this entry records, so its rows can be digested
    digest = object_digest(session, object_type, str(object_id))
    prev = session.exec(select(AuditLog.hash).order_by(AuditLog.id.desc()).limit(1)).first()
    prev = prev or GENESIS
    h = entry_hash(prev, ts, actor, action, object_type, str(object_id), details, digest)
    row = AuditLog(ts=ts, actor=actor, action=action, object_type=object_type,
                   object_id=str(object_id), details=details, prev_hash=prev, hash=h,
                   row_digest=digest, mac=row_mac(key, h) if key is not None else None)
    session.add(row)
    session.flush()
    if key is not None:
        session.info["envcal_audit_head"] = (row.id, h, key, head_path())
        if not sa.event.contains(session, "after_commit", _after_commit):
            sa.event.listen(session, "after_commit", _after_commit)
    return row


@dataclass(frozen=True)
class ChainProblem:
    """One break in the audit chain: the row it was found at, a code and a message."""

    id: int | None
    code: str  # altered | broken_link | head_mismatch | bad_mac | unkeyed | head | object_changed | no_entry
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ChainStatus:
    """Result of :func:`verify_chain_status`: entries checked, head hash and problems."""

    entries: int
    head: str
    problems: list[ChainProblem]
    keyed: bool = False  # MACs and the anchored head were checked
    after_anchor: int = 0  # entries newer than the anchored head (written since, or in flight)


def verify_chain_status(engine: Engine, expected_head: str | None = None, *,
                        key: bytes | None = None, head_file: Path | None = None) -> ChainStatus:
    """Walk the audit trail in ``id`` order and check every hash, link, MAC and covered object.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    expected_head : str, optional
        A head hash recorded earlier outside the database; when given, the chain must
        contain it (detects removal of the newest rows).
    key : bytes, optional
        The audit key: every row after the first keyed one must carry a matching MAC.
    head_file : Path, optional
        With ``key``: the anchored head must be in the chain at its id.

    Returns
    -------
    ChainStatus

    References
    ----------
    RFC 2104 (HMAC); FIPS 180-4 (SHA-256).
    """
    problems: list[ChainProblem] = []
    expected_prev = GENESIS
    prev_id: int | None = None
    n = 0
    seen_expected = expected_head is None
    anchor = None
    head_error = None
    if key is not None and head_file is not None:
        try:
            anchor = read_head(head_file, key)
        except AuditKeyError as exc:
            head_error = ChainProblem(None, "head", str(exc))
    anchor_seen = anchor is None
    after_anchor = 0
    keyed_seen = False
    latest: dict[tuple[str, str], tuple[int, str | None]] = {}
    with Session(engine) as s:
        for row in s.exec(select(AuditLog).order_by(AuditLog.id).execution_options(yield_per=1000)):
            n += 1
            if row.object_type in COVERED:
                latest[(row.object_type, row.object_id)] = (row.id, row.row_digest)
            if key is not None:
                if row.mac is None:
                    if keyed_seen:
                        problems.append(ChainProblem(row.id, "unkeyed", (
                            f"audit row id={row.id}: no MAC after keyed rows: inserted or "
                            "rewritten without the audit key")))
                elif not hmac.compare_digest(row.mac, row_mac(key, row.hash)):
                    keyed_seen = True
                    problems.append(ChainProblem(row.id, "bad_mac", (
                        f"audit row id={row.id}: its MAC does not match: the row was altered or "
                        "its hash recomputed without the audit key")))
                else:
                    keyed_seen = True
            if anchor is not None and anchor_seen:
                after_anchor += 1
            if anchor is not None and row.id == anchor[0]:
                anchor_seen = row.hash == anchor[1]
            if row.prev_hash != expected_prev:
                where = f"row id={prev_id}" if prev_id is not None else "the start of the chain"
                problems.append(ChainProblem(
                    row.id, "broken_link",
                    f"audit row id={row.id}: prev_hash {row.prev_hash[:12]}... does not match "
                    f"{where} ({expected_prev[:12]}...): a row was deleted, inserted or re-ordered"))
            h = entry_hash(row.prev_hash, row.ts, row.actor, row.action, row.object_type,
                           row.object_id, row.details, row.row_digest)
            if h != row.hash:
                problems.append(ChainProblem(
                    row.id, "altered",
                    f"audit row id={row.id}: content does not match its hash: the row was altered"))
            if row.hash == expected_head:
                seen_expected = True
            expected_prev = row.hash
            prev_id = row.id
        problems += _object_problems(s, latest)
    if head_error is not None and (n or head_file.exists()):  # nothing written yet: no head
        problems.insert(0, head_error)
    if not anchor_seen:
        problems.append(ChainProblem(None, "head_mismatch", (
            f"anchored head id={anchor[0]} {anchor[1][:12]}... is not in the chain: newest rows "
            "were removed or the chain was rewritten")))
    if not seen_expected:
        problems.append(ChainProblem(None, "head_mismatch",
                                     f"expected head {expected_head} is not in the chain: "
                                     "newest rows were removed or the chain was rewritten"))
    return ChainStatus(n, expected_prev, problems, keyed=key is not None and head_file is not None,
                       after_anchor=after_anchor)


def _object_problems(s: Session, latest: dict[tuple[str, str], tuple[int, str | None]]
                     ) -> list[ChainProblem]:
    """Covered objects whose stored rows differ from their last audit entry, or have none."""
    out: list[ChainProblem] = []
    for object_type, (_, all_ids) in COVERED.items():
        ids = {str(x) for x in s.connection().execute(all_ids).scalars()}
        ids |= {oid for (ot, oid) in latest if ot == object_type}
        for oid in sorted(ids):
            entry = latest.get((object_type, oid))
            if entry is None:
                out.append(ChainProblem(None, "no_entry", (
                    f"{object_type} {oid!r}: stored without any audit entry (written directly "
                    "into the database)")))
                continue
            entry_id, digest = entry
            if digest is None:
                continue  # entry written before rows were digested: not checkable
            if object_digest(s, object_type, oid) != digest:
                out.append(ChainProblem(entry_id, "object_changed", (
                    f"{object_type} {oid!r}: its stored rows differ from audit row id={entry_id}: "
                    "changed, added or deleted outside the audit trail")))
    return out


def verify_chain(engine: Engine, expected_head: str | None = None, **kw) -> list[ChainProblem]:
    """Problems in the audit chain (empty when intact). See :func:`verify_chain_status`."""
    return verify_chain_status(engine, expected_head, **kw).problems
