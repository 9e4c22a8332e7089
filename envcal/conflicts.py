"""Conflicting duplicates: kept as records, never silently dropped.

A reading is identified by (analyzer, analyte, time) and a check summary by (analyzer,
check id, analyte). A redelivery with the same content inserts nothing, as before. One
with *other* content (another value or flag; a summary with other numbers or times) is a
conflict: the first stored row stays authoritative and an :class:`envcal.models.IngestConflict`
row keeps what arrived, with the stored content beside it, until an operator decides
(:func:`resolve_conflict`). Conflicts are counted in ``envcal stats`` (``conflicts``) and
listed by :func:`list_conflicts` for the app.

References
----------
HJ 212-2017 clause 6.6 (data flags; a re-sent reading carries the same time stamp);
DESIGN.md section 2 (exactly once: natural unique keys).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.models import CheckSummaryRecord, IngestConflict, Reading, utcnow

#: Fields of a check summary compared for a conflict.
SUMMARY_FIELDS = ("kind", "start", "end", "material", "measured", "readings", "standard_value",
                  "device_verdict")


def _plain(v):
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _same(a, b) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _chunks(seq: Sequence, n: int = 500):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def reading_conflicts(conn: sa.Connection, rows: Sequence[tuple], now: dt.datetime) -> list[dict]:
    """Conflict records for reading tuples whose key is stored with another value or flag.

    Parameters
    ----------
    conn : Connection
        Inside the batch's transaction, after the readings were inserted.
    rows : sequence of tuple
        Reading tuples in :data:`envcal.ingest` column order (analyzer_id, analyte, ts,
        value, flag, seq, check_id, check_kind, check_phase, material, received_at).
    now : datetime
        Detection time.

    Returns
    -------
    list of dict
        :class:`envcal.models.IngestConflict` column values.
    """
    r = Reading.__table__.c
    by_analyzer: dict[str, list[tuple]] = {}
    for row in rows:
        by_analyzer.setdefault(row[0], []).append(row)
    out: list[dict] = []
    for aid, items in by_analyzer.items():
        stored: dict[tuple, tuple] = {}
        times = sorted({row[2] for row in items})
        for part in _chunks(times):
            q = sa.select(r.analyte, r.ts, r.value, r.flag, r.seq).where(r.analyzer_id == aid,
                                                                         r.ts.in_(part))
            for analyte, ts, value, flag, seq in conn.execute(q):
                stored[(analyte, ts.astimezone(dt.UTC))] = (value, flag, seq)
        for row in items:
            s = stored.get((row[1], row[2].astimezone(dt.UTC)))
            if s is None or (_same(s[0], row[3]) and s[1] == row[4]):
                continue
            received = {"value": _plain(row[3]), "flag": row[4], "seq": row[5]}
            out.append({"detected_at": now, "kind": "reading", "analyzer_id": aid,
                        "conflict_key": f"{row[1]}@{_plain(row[2])}",
                        "stored": {"value": _plain(s[0]), "flag": s[1], "seq": s[2]},
                        "received": received, "received_sha256": _digest(received)})
    return out


def summary_conflicts(conn: sa.Connection, summaries: Sequence[dict], now: dt.datetime) -> list[dict]:
    """Conflict records for check summaries stored under the same id with other content.

    Parameters
    ----------
    conn : Connection
        Inside the batch's transaction, after the summaries were inserted.
    summaries : sequence of dict
        :class:`envcal.models.CheckSummaryRecord` column values.
    now : datetime

    Returns
    -------
    list of dict
    """
    t = CheckSummaryRecord.__table__.c
    out: list[dict] = []
    for s in summaries:
        row = conn.execute(sa.select(*[t[f] for f in SUMMARY_FIELDS]).where(
            t.analyzer_id == s["analyzer_id"], t.check_id == s["check_id"],
            t.analyte == s["analyte"])).first()
        if row is None:
            continue
        stored = dict(zip(SUMMARY_FIELDS, row, strict=True))
        if all(_same(stored[f], s.get(f)) for f in SUMMARY_FIELDS):
            continue
        received = {f: _plain(s.get(f)) for f in SUMMARY_FIELDS}
        out.append({"detected_at": now, "kind": "check_summary", "analyzer_id": s["analyzer_id"],
                    "conflict_key": f"{s['check_id']}/{s['analyte']}"[:256],
                    "stored": {f: _plain(v) for f, v in stored.items()},
                    "received": received, "received_sha256": _digest(received)})
    return out


def store_conflicts(conn: sa.Connection, insert, rows: Sequence[dict]) -> int:
    """Insert conflict records; a redelivered conflicting message inserts nothing.

    Parameters
    ----------
    conn : Connection
    insert : callable
        The dialect's ``insert`` (``sqlalchemy.dialects.<db>.insert``).
    rows : sequence of dict

    Returns
    -------
    int
        Records inserted.
    """
    if not rows:
        return 0
    t = IngestConflict.__table__
    stmt = insert(t).on_conflict_do_nothing().returning(t.c.id)
    return sum(conn.execute(stmt, r).first() is not None for r in rows)


def list_conflicts(engine: Engine, *, open_only: bool = True, analyzer_id: str | None = None,
                   limit: int = 500) -> list[dict]:
    """Conflict records, newest first (for the app and scripts; read only).

    Parameters
    ----------
    engine : Engine
    open_only : bool, default True
        Only those no operator has decided yet.
    analyzer_id : str, optional
    limit : int, default 500

    Returns
    -------
    list of dict
        id, detected_at, kind, analyzer_id, conflict_key, stored, received, resolution,
        resolved_by, resolved_at.
    """
    t = IngestConflict.__table__.c
    q = sa.select(IngestConflict.__table__).order_by(t.id.desc()).limit(limit)
    if open_only:
        q = q.where(t.resolution.is_(None))
    if analyzer_id is not None:
        q = q.where(t.analyzer_id == analyzer_id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def resolve_conflict(engine: Engine, conflict_id: int, *, take_received: bool, actor) -> None:
    """An operator's decision on a conflict (audit-logged; needs ``alert.resolve``).

    Parameters
    ----------
    engine : Engine
    conflict_id : int
    take_received : bool
        False: the stored value stays (the default outcome). True: a reading conflict's
        received value and flag replace the stored ones in the hot store.
    actor : envcal.users.Actor

    Raises
    ------
    ValueError
        Unknown or already resolved conflict, or ``take_received`` for a check summary.
    """
    from sqlmodel import Session

    from envcal import audit
    from envcal.users import require

    require(actor, "alert.resolve")
    with Session(engine) as s:
        c = s.get(IngestConflict, conflict_id)
        if c is None or c.resolution is not None:
            raise ValueError(f"conflict {conflict_id}: not found or already resolved")
        if take_received:
            if c.kind != "reading":
                raise ValueError("only a reading conflict can take the received value")
            analyte, _, ts = c.conflict_key.partition("@")
            r = Reading.__table__
            res = s.connection().execute(r.update().where(
                r.c.analyzer_id == c.analyzer_id, r.c.analyte == analyte,
                r.c.ts == dt.datetime.fromisoformat(ts)).values(
                value=c.received["value"], flag=c.received["flag"]))
            if res.rowcount != 1:
                raise ValueError(f"conflict {conflict_id}: the reading is no longer in the hot store")
        c.resolution = "took_received" if take_received else "kept_stored"
        c.resolved_by, c.resolved_at = actor.name, utcnow()
        s.add(c)
        audit.record(s, actor.name, "conflict.resolve", "ingest_conflict", str(conflict_id),
                     {"resolution": c.resolution, "key": c.conflict_key})
        s.commit()
