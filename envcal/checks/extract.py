"""Extraction: the readings of a QC check, gathered from the hot store, the archive and
device summaries (the inputs of :func:`envcal.checks.core.evaluate`).

Readings that carry a ``check`` block are grouped by check id. A check is complete when a
reading with ``phase == "end"`` arrived, or when the analyzer has sent newer readings for
longer than ``stale_after`` (data time, not wall time, so a fast-forwarded simulation
behaves like the real thing). Each analyte in the check is a channel result; a linearity
check is split into levels by material (:func:`material_segments`).

**Completeness in a worker group.** When several ingest workers share an analyzer's
messages (``envcal ingest --group``), the worker that stored the ``end`` reading cannot
know that the other workers have stored the earlier ones. There the owner of the analyzer
(:mod:`envcal.ownership`) judges a check from its timer only when :func:`completeness`
says all its readings are in: the check has ``start`` and ``end`` readings and the
analyzer's ``seq`` numbers from the first to the last reading of the check are contiguous
in the hot store; or, for readings without ``seq`` (or with a gap that never fills), once
``settle`` seconds (wall time, longer than any worker's batch window) have passed since the
check's last reading was received. The result records which (``details.completeness``).

References
----------
HJ 75-2017 clause 7 (a check: zero/span gas until the response is stable); HJ 212-2017
(data flags of readings during a check).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal.archive import readings_frame
from envcal.checks.core import aware
from envcal.models import CheckResult as CheckResultRow
from envcal.models import CheckSummaryRecord, Reading
from envcal.registry import Registry


@dataclass
class CheckReadings:
    """The readings of one check of one analyzer (one or several analytes)."""

    analyzer_id: str
    check_id: str
    kind: str
    ts: np.ndarray  # datetime64[us] (UTC), per row
    analyte: np.ndarray  # object, per row
    value: np.ndarray  # float64, per row (NaN: no number)
    material: np.ndarray  # object, per row ('' for none)
    phase: np.ndarray  # object, per row
    source: str = "readings"
    device_verdict: dict[str, str] = field(default_factory=dict)  # analyte -> device verdict
    device_measured: dict[str, float] = field(default_factory=dict)
    completeness: dict[str, Any] | None = None  # how a group worker knew it was complete

    @property
    def ended(self) -> bool:
        return bool(np.any(self.phase == "end"))


def group_check_rows(analyzer_id: str, rows: Sequence[Sequence[Any]]) -> list[CheckReadings]:
    """Group rows ``(check_id, ts, analyte, value, kind, phase, material)`` by check id.

    A check whose rows name no kind is a span check; several kinds: the first by name.
    """
    groups: dict[str, list[Sequence[Any]]] = {}
    for r in rows:
        groups.setdefault(r[0], []).append(r)
    out = []
    for check_id, rs in groups.items():
        rs.sort(key=lambda r: (r[1], r[2]))
        kinds = {r[4] for r in rs if r[4]}
        out.append(CheckReadings(
            analyzer_id=analyzer_id, check_id=check_id,
            kind=sorted(kinds)[0] if kinds else "span",
            ts=np.array([naive_utc(r[1]) for r in rs], dtype="datetime64[us]"),
            analyte=np.array([r[2] for r in rs], dtype=object),
            value=np.array([np.nan if r[3] is None else float(r[3]) for r in rs], dtype=np.float64),
            phase=np.array([r[5] or "run" for r in rs], dtype=object),
            material=np.array([r[6] or "" for r in rs], dtype=object),
        ))
    return out


def naive_utc(t: dt.datetime) -> dt.datetime:
    """A datetime as naive UTC (``datetime64`` arrays hold naive UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t


def load_check(engine: Engine, analyzer_id: str, check_id: str) -> CheckReadings | None:
    """The readings of one check from the hot store (None when it has none)."""
    r = Reading.__table__.c
    q = (sa.select(r.check_id, r.ts, r.analyte, r.value, r.check_kind, r.check_phase, r.material)
         .where(r.analyzer_id == analyzer_id, r.check_id == check_id))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    checks = group_check_rows(analyzer_id, rows)
    return checks[0] if checks else None


def pending_checks(engine: Engine, *, stale_after: dt.timedelta = dt.timedelta(minutes=30),
                   analyzer_ids: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Checks in the hot store that are complete and have no result yet.

    A check is complete when it has an ``end`` reading, or when its analyzer has readings
    newer than ``stale_after`` past the check's last reading (data time).

    Returns
    -------
    list of (analyzer_id, check_id), ordered by the check's last reading time.
    """
    r = Reading.__table__.c
    c = CheckResultRow.__table__.c
    last = (sa.select(r.analyzer_id, r.check_id, sa.func.max(r.ts).label("last_ts"),
                      sa.func.max(sa.case((r.check_phase == "end", 1), else_=0)).label("ended"))
            .where(r.check_id.is_not(None))
            .group_by(r.analyzer_id, r.check_id))
    if analyzer_ids is not None:
        last = last.where(r.analyzer_id.in_(list(analyzer_ids)))
    last = last.subquery()
    newest = (sa.select(r.analyzer_id, sa.func.max(r.ts).label("newest"))
              .group_by(r.analyzer_id).subquery())
    done = sa.select(c.analyzer_id, c.check_id).distinct().subquery()
    q = (sa.select(last.c.analyzer_id, last.c.check_id, last.c.last_ts, last.c.ended, newest.c.newest)
         .join(newest, newest.c.analyzer_id == last.c.analyzer_id)
         .outerjoin(done, sa.and_(done.c.analyzer_id == last.c.analyzer_id,
                                  done.c.check_id == last.c.check_id))
         .where(done.c.check_id.is_(None))
         .order_by(last.c.last_ts))
    out = []
    with engine.connect() as conn:
        for a, ck, last_ts, ended, newest_ts in conn.execute(q):
            if ended or (newest_ts - last_ts) > stale_after:
                out.append((a, ck))
    return out


def completeness(engine: Engine, analyzer_id: str, check_id: str, *, settle: dt.timedelta,
                 now: dt.datetime) -> dict[str, Any] | None:
    """Whether all readings of a check are stored (worker groups; see the module docstring).

    Parameters
    ----------
    engine : Engine
    analyzer_id, check_id : str
    settle : timedelta
        Wait [s] after the check's last reading was received before judging a check whose
        completeness the ``seq`` numbers cannot prove.
    now : datetime
        Wall time (UTC), compared with ``Reading.received_at``.

    Returns
    -------
    dict or None
        None: wait. Else a note for ``details.completeness``: ``{"basis": "seq",
        "seq_first", "seq_last"}`` (start and end present, seq contiguous), or ``{"basis":
        "settle", "settle_s", "seq_missing"}`` (``seq_missing``: seq numbers absent between
        the check's first and last, None without seq).
    """
    r = Reading.__table__.c
    q = (sa.select(sa.func.max(r.received_at), sa.func.min(r.seq), sa.func.max(r.seq),
                   sa.func.count(), sa.func.count(r.seq),
                   sa.func.max(sa.case((r.check_phase == "start", 1), else_=0)),
                   sa.func.max(sa.case((r.check_phase == "end", 1), else_=0)),
                   sa.func.min(r.ts), sa.func.max(r.ts))
         .where(r.analyzer_id == analyzer_id, r.check_id == check_id))
    with engine.connect() as conn:
        last_rx, s0, s1, n, n_seq, started, ended, t0, t1 = conn.execute(q).one()
        if not n:
            return None
        missing = None
        if n_seq == n and s0 is not None:
            # every reading of the analyzer between the check's first and last seq (other
            # channels' readings interleaved with the check count too); seq grows with time
            have = conn.execute(sa.select(sa.func.count(sa.distinct(r.seq))).where(
                r.analyzer_id == analyzer_id, r.ts >= t0, r.ts <= t1, r.seq >= s0,
                r.seq <= s1)).scalar_one()
            missing = int(s1 - s0 + 1 - have)
    if missing == 0 and started and ended:
        return {"basis": "seq", "seq_first": int(s0), "seq_last": int(s1)}
    if last_rx.tzinfo is None:
        last_rx = last_rx.replace(tzinfo=dt.UTC)
    if now - last_rx >= settle:
        return {"basis": "settle", "settle_s": settle.total_seconds(), "seq_missing": missing}
    return None


def summary_to_check(rec: CheckSummaryRecord) -> CheckReadings:
    """A device-computed check summary as check readings.

    With raw readings, they are spread evenly from ``start`` to ``end``; with only a
    measured value, that value stands as one reading (and is judged as such: a one-reading
    check cannot show a plateau and is evaluated with n = 1 only if the pack's ``min_n``
    allows it).
    """
    readings = list(rec.readings or [])
    if not readings and rec.measured is not None:
        readings = [rec.measured]
    n = len(readings)
    start, end = naive_utc(rec.start), naive_utc(rec.end)
    if n > 1:
        step = (end - start) / (n - 1)
        ts = [start + i * step for i in range(n)]
    else:
        ts = [end] * n
    return CheckReadings(
        analyzer_id=rec.analyzer_id, check_id=rec.check_id, kind=rec.kind,
        ts=np.array(ts, dtype="datetime64[us]"),
        analyte=np.array([rec.analyte] * n, dtype=object),
        value=np.array([np.nan if v is None else float(v) for v in readings], dtype=np.float64),
        material=np.array([rec.material or ""] * n, dtype=object),
        phase=np.array(["run"] * (n - 1) + ["end"] if n else [], dtype=object),
        source="summary",
        device_verdict={rec.analyte: rec.device_verdict} if rec.device_verdict else {},
        device_measured={rec.analyte: rec.measured} if rec.measured is not None else {},
    )


def pending_summaries(engine: Engine, analyzer_ids: Iterable[str] | None = None) -> list[CheckReadings]:
    """Device check summaries without a result of their own (of these analyzers only)."""
    s_t = CheckSummaryRecord.__table__.c
    c = CheckResultRow.__table__.c
    done = (sa.select(c.analyzer_id, c.check_id, c.analyte).where(c.source == "summary").subquery())
    q = (sa.select(s_t.id).outerjoin(done, sa.and_(done.c.analyzer_id == s_t.analyzer_id,
                                                   done.c.check_id == s_t.check_id,
                                                   done.c.analyte == s_t.analyte))
         .where(done.c.check_id.is_(None)))
    if analyzer_ids is not None:
        q = q.where(s_t.analyzer_id.in_(list(analyzer_ids)))
    with Session(engine) as s:
        ids = [i for (i,) in s.execute(q)]
        if not ids:
            return []
        recs = s.exec(select(CheckSummaryRecord).where(CheckSummaryRecord.id.in_(ids))).all()
    return [summary_to_check(r) for r in recs]


def archived_checks(engine: Engine, archive_dir, registry: Registry, start: dt.datetime,
                    end: dt.datetime, *, margin: dt.timedelta = dt.timedelta(hours=6),
                    analyzer_ids: Iterable[str] | None = None) -> list[CheckReadings]:
    """Checks that END in [start, end), read from the hot store and the NetCDF archive.

    Readings up to ``margin`` before ``start`` are read too, so that a check that began
    before the period (e.g. across midnight) is complete.
    """
    wanted = set(analyzer_ids) if analyzer_ids is not None else None
    out: list[CheckReadings] = []
    for analyzer in registry.analyzers.values():
        if wanted is not None and analyzer.id not in wanted:
            continue
        rows: list[tuple] = []
        for ch in analyzer.channels:
            df = readings_frame(engine, archive_dir, analyzer.id, ch.analyte, start - margin,
                                end + margin)
            df = df[df["check_id"].notna()]
            for ts, value, ck, kind, phase, material in zip(
                    df["ts"], df["value"], df["check_id"], df["check_kind"], df["check_phase"],
                    df["material"], strict=True):
                rows.append((ck, ts.to_pydatetime(), ch.analyte,
                             None if value != value else float(value), kind, phase, material))
        for check in group_check_rows(analyzer.id, rows):
            last = aware(check.ts[-1])
            if start <= last < end:
                out.append(check)
    return out


def summaries_in(engine: Engine, start: dt.datetime, end: dt.datetime) -> list[CheckReadings]:
    """Device check summaries whose check ended in [start, end)."""
    with Session(engine) as s:
        recs = s.exec(select(CheckSummaryRecord).where(CheckSummaryRecord.end >= start,
                                                       CheckSummaryRecord.end < end)).all()
    return [summary_to_check(r) for r in recs]


def material_segments(materials: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive equal materials (the levels of a
    linearity check)."""
    segs, start = [], 0
    for i in range(1, len(materials) + 1):
        if i == len(materials) or materials[i] != materials[start]:
            segs.append((start, i))
            start = i
    return segs


def first_material(materials: np.ndarray) -> str:
    """The first non-empty material of a level ('' for none)."""
    for m in materials:
        if m:
            return str(m)
    return ""
