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


#: name -> count, in the order of ``envcal stats`` output
STATS: tuple[tuple[str, Count], ...] = (
    ("readings", count_readings),
    ("dead_letters", count_rows(DeadLetter)),
    ("data_gaps", count_rows(DataGap)),
    ("check_summaries", count_rows(CheckSummaryRecord)),
    ("hj212_frames", count_rows(Hj212Frame)),
    ("ingest_batches", count_rows(IngestLog)),
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
