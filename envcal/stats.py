"""``envcal stats``: the named counts of DESIGN.md §4, from one explicit list.

Every count is listed in :data:`STATS`, in output order; a model that cannot be imported
is an import error of this module (and of the command), never a silently missing key.

``readings`` counts hot-store readings plus the values archived in NetCDF files
(``ArchiveFile.n_values``), so compacting a day does not change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from envcal.models import (
    Alert,
    ArchiveFile,
    CheckResult,
    CheckSummaryRecord,
    DataGap,
    DeadLetter,
    Hj212Frame,
    IngestConflict,
    IngestLog,
    Reading,
)

Count = Callable[[Connection], int]


def count_rows(model: type[SQLModel]) -> Count:
    """A count of the rows of one table."""
    def q(conn: Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(model.__table__)).scalar_one())
    return q


def count_readings(conn: Connection) -> int:
    """Readings in the hot store plus values in the NetCDF archive."""
    archived = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(ArchiveFile.__table__.c.n_values), 0)))
    return count_rows(Reading)(conn) + int(archived.scalar_one())


def count_frames(where: sa.ColumnElement[bool]) -> Count:
    """A count of the stored HJ 212 frames matching ``where``."""
    def q(conn: Connection) -> int:
        t = Hj212Frame.__table__
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(where)).scalar_one())
    return q


#: name -> count, in the order of ``envcal stats`` output
STATS: tuple[tuple[str, Count], ...] = (
    ("readings", count_readings),
    ("dead_letters", count_rows(DeadLetter)),
    ("data_gaps", count_rows(DataGap)),
    ("check_summaries", count_rows(CheckSummaryRecord)),
    ("hj212_frames", count_rows(Hj212Frame)),
    ("hj212_quirks", count_frames(Hj212Frame.__table__.c.quirks.is_not(None))),
    ("hj212_backfill", count_frames(Hj212Frame.__table__.c.resend.is_(True))),
    ("ingest_batches", count_rows(IngestLog)),
    ("conflicts", count_rows(IngestConflict)),
    ("alerts", count_rows(Alert)),
    ("results", count_rows(CheckResult)),
)
NAMES: tuple[str, ...] = tuple(n for n, _ in STATS)


def stats(engine: Engine, names: Iterable[str] | None = None) -> dict[str, int]:
    """The counts of :data:`STATS` (or only ``names``, in that order).

    Raises
    ------
    KeyError
        An unknown name.
    """
    table = dict(STATS)
    wanted = list(names) if names is not None else list(NAMES)
    for n in wanted:
        if n not in table:
            raise KeyError(f"unknown count {n!r} (known: {', '.join(NAMES)})")
    with engine.connect() as conn:
        return {n: table[n](conn) for n in wanted}


def hj212_quirk_counts(engine: Engine, analyzer_id: str | None = None) -> dict[str, dict[str, int]]:
    """HJ 212 quirks per analyzer: how many stored frames showed each bend of the standard.

    Parameters
    ----------
    engine : Engine
    analyzer_id : str, optional
        Only this analyzer.

    Returns
    -------
    dict
        ``{analyzer_id: {quirk name: frames}}`` (quirk names: ``envcal.protocols.hj212.QUIRKS``);
        analyzers without quirks are absent.

    References
    ----------
    HJ 212-2017, Tables 2 and 3 (the limits the quirks exceed).
    """
    t = Hj212Frame.__table__
    q = (sa.select(t.c.analyzer_id, t.c.quirks, sa.func.count()).where(t.c.quirks.is_not(None))
         .group_by(t.c.analyzer_id, t.c.quirks))
    if analyzer_id is not None:
        q = q.where(t.c.analyzer_id == analyzer_id)
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for aid, quirks, n in conn.execute(q):
            per = out.setdefault(aid, {})
            for name in quirks.split(","):
                per[name] = per.get(name, 0) + int(n)
    return out
