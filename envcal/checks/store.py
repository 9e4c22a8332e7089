"""Storage of check results: one ``check_result`` row per (analyzer, analyte, check id).

Rows are written from :meth:`envcal.checks.result.CheckResult.to_row` and read back into
:class:`~envcal.checks.result.CheckResult`, so the table, the MQTT payload and the JSON of
``envcal results list`` share one schema. Evaluating the same check again (a redelivery,
``envcal verify replay``) rewrites the same numbers.
"""

from __future__ import annotations

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


def previous_mean(engine: Engine, analyzer_id: str, analyte: str, kind: str,
                  before: dt.datetime, check_id: str) -> float | None:
    """Mean of the newest valid result of this channel and kind ending before ``before``
    [channel unit] (None: none), the base of a drift (HJ 75-2017 clause 7.3)."""
    c = CheckResultRow.__table__.c
    q = (sa.select(c.mean).where(c.analyzer_id == analyzer_id, c.analyte == analyte,
                                 c.kind == kind, c.end < before, c.check_id != check_id,
                                 c.verdict != "invalid", c.mean.is_not(None))
         .order_by(c.end.desc()).limit(1))
    with engine.connect() as conn:
        v = conn.execute(q).scalar()
    return None if v is None else float(v)
