"""Storage of check results: one ``check_result`` row per (analyzer, analyte, check id).

Rows are written from :meth:`envcal.checks.result.CheckResult.to_row` and read back into
:class:`~envcal.checks.result.CheckResult`, so the table, the MQTT payload and the JSON of
``envcal results list`` share one schema. Evaluating the same check again (a redelivery,
``envcal verify replay``) rewrites the same numbers.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from envcal.checks.result import CheckResult
from envcal.models import CheckResult as CheckResultRow
from envcal.models import utcnow

_KEY = ["analyzer_id", "analyte", "check_id"]


def as_result(r: CheckResult | Mapping[str, Any]) -> CheckResult:
    """A result, or a mapping with exactly its field names, as a :class:`CheckResult`."""
    return r if isinstance(r, CheckResult) else CheckResult.from_mapping(r)


def store_results(engine: Engine, results: Sequence[CheckResult | Mapping[str, Any]], *,
                  only_new: bool = False) -> list[CheckResult]:
    """Insert or update results by (analyzer, analyte, check id) in one transaction.

    Parameters
    ----------
    engine : Engine
    results : sequence of CheckResult (or mappings with exactly its fields)
    only_new : bool, default False
        Insert only results whose (analyzer, analyte, check id) has none yet; keep the
        stored one otherwise (``INSERT ... ON CONFLICT DO NOTHING``).

    Returns
    -------
    list of CheckResult
        The results written (all of them unless ``only_new``).
    """
    if not results:
        return []
    typed = [as_result(r) for r in results]
    table = CheckResultRow.__table__
    now = utcnow()
    rows = [r.to_row(now) for r in typed]
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    if only_new:
        keep = insert(table).on_conflict_do_nothing(index_elements=_KEY).returning(table.c.id)
        written = []
        with engine.begin() as conn:
            for r, row in zip(typed, rows, strict=True):
                if conn.execute(keep, row).first() is not None:
                    written.append(r)
        return written
    stmt = insert(table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns
              if c.name not in ("id", *_KEY, "needs_review")}
    stmt = stmt.on_conflict_do_update(index_elements=_KEY, set_=update)
    with engine.begin() as conn:
        conn.execute(stmt, rows)
    return typed


def list_results(engine: Engine, *, analyzer: str | None = None, analyte: str | None = None,
                 start: dt.datetime | None = None, end: dt.datetime | None = None,
                 verdict: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored results as JSON objects (``envcal results list --json``), ordered by end time.

    Each object has the fields of :class:`CheckResult` plus ``id`` and ``needs_review``.
    """
    c = CheckResultRow.__table__.c
    q = sa.select(CheckResultRow.__table__)
    if analyzer:
        q = q.where(c.analyzer_id == analyzer)
    if analyte:
        q = q.where(c.analyte == analyte)
    if start:
        q = q.where(c.end >= start)
    if end:
        q = q.where(c.end < end)
    if verdict:
        q = q.where(c.verdict == verdict)
    q = q.order_by(c.end, c.analyzer_id, c.analyte, c.check_id)
    if limit:
        q = q.limit(limit)
    out = []
    with engine.connect() as conn:
        for m in conn.execute(q).mappings():
            j = CheckResult.from_row(m).to_json()
            j["id"] = m["id"]
            j["needs_review"] = m["needs_review"]
            out.append(j)
    return out


def previous_results(engine: Engine, analyzer_id: str, analyte: str, kind: str,
                     starts: Sequence[dt.datetime],
                     exclude: Sequence[str]) -> list[tuple[float, dt.datetime] | None]:
    """For each time in ``starts``: (mean [channel unit], end) of the newest valid stored
    result of this channel and kind ending before it, among checks not in ``exclude``
    (None: none) — the base of a drift (HJ 75-2017 clause 7.3). Two queries per channel."""
    if not starts:
        return []
    c = CheckResultRow.__table__.c
    mine = sa.and_(c.analyzer_id == analyzer_id, c.analyte == analyte, c.kind == kind,
                   c.check_id.not_in(list(exclude)), c.verdict != "invalid",
                   c.mean.is_not(None))
    lo, hi = min(starts), max(starts)
    with engine.connect() as conn:
        before = conn.execute(sa.select(c.end, c.mean).where(mine, c.end < lo)
                              .order_by(c.end.desc()).limit(1)).all()
        inside = conn.execute(sa.select(c.end, c.mean).where(mine, c.end >= lo, c.end < hi)
                              .order_by(c.end)).all()
    rows = [(e, float(m)) for e, m in before + inside]
    ends = [e for e, _ in rows]
    out: list[tuple[float, dt.datetime] | None] = []
    for t in starts:
        i = bisect.bisect_left(ends, t) - 1
        out.append(None if i < 0 else (rows[i][1], rows[i][0]))
    return out
