"""``envcal stats``: the named counts of DESIGN.md §4, from one explicit list.

Every count is one SQL query in :data:`STATS`, in output order, so ``envcal stats`` on a
SQLite file runs them through the standard library's :mod:`sqlite3` (read-only) and starts
without SQLAlchemy, the models, the registry or the verifier; other databases go through
SQLAlchemy Core. A table or column that does not exist is an error of the command (the
tests run every count on a migrated database), never a silently missing key.

``readings`` counts hot-store readings plus the values archived in NetCDF files
(``archive_file.n_values``), so compacting a day does not change it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: name -> SQL returning one integer, in the order of ``envcal stats`` output
STATS: tuple[tuple[str, str], ...] = (
    ("readings", "SELECT (SELECT count(*) FROM reading) + "
                 "(SELECT coalesce(sum(n_values), 0) FROM archive_file)"),
    ("dead_letters", "SELECT count(*) FROM dead_letter"),
    ("data_gaps", "SELECT count(*) FROM data_gap"),
    ("check_summaries", "SELECT count(*) FROM check_summary"),
    ("hj212_frames", "SELECT count(*) FROM hj212_frame"),
    ("hj212_quirks", "SELECT count(*) FROM hj212_frame WHERE quirks IS NOT NULL"),
    ("hj212_backfill", "SELECT count(*) FROM hj212_frame WHERE resend IS TRUE"),
    ("ingest_batches", "SELECT count(*) FROM ingest_log"),
    ("conflicts", "SELECT count(*) FROM ingest_conflict"),
    ("alerts", "SELECT count(*) FROM alert"),
    ("results", "SELECT count(*) FROM check_result"),
)
NAMES: tuple[str, ...] = tuple(n for n, _ in STATS)


def _queries(names: Iterable[str] | None) -> list[tuple[str, str]]:
    table = dict(STATS)
    wanted = list(names) if names is not None else list(NAMES)
    for n in wanted:
        if n not in table:
            raise KeyError(f"unknown count {n!r} (known: {', '.join(NAMES)})")
    return [(n, table[n]) for n in wanted]


def stats(engine: Engine, names: Iterable[str] | None = None) -> dict[str, int]:
    """The counts of :data:`STATS` (or only ``names``, in that order).

    Parameters
    ----------
    engine : Engine
    names : iterable of str, optional
        Only these counts (default: all of :data:`STATS`).

    Returns
    -------
    dict of str to int

    Raises
    ------
    KeyError
        An unknown name.
    """
    import sqlalchemy as sa

    qs = _queries(names)
    with engine.connect() as conn:
        return {n: int(conn.execute(sa.text(q)).scalar_one()) for n, q in qs}


def stats_at(url: str, names: Iterable[str] | None = None) -> dict[str, int]:
    """:func:`stats` of the database at ``url``; a SQLite file is read with :mod:`sqlite3`.

    Parameters
    ----------
    url : str
        Database URL (``sqlite:///path`` or anything :func:`envcal.db.make_engine` takes).
    names : iterable of str, optional
        Only these counts.

    Returns
    -------
    dict of str to int

    Raises
    ------
    sqlite3.Error
        A SQLite file that cannot be read or lacks the schema (``envcal db upgrade``).
    envcal.db.DatabaseError or sqlalchemy.exc.SQLAlchemyError
        Any other database that cannot be used (a missing SQLite file is not created).
    """
    qs = _queries(names)
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if path and path != ":memory:" and "?" not in path and Path(path).expanduser().is_file():
        con = sqlite3.connect(Path(path).expanduser().resolve().as_uri() + "?mode=ro", uri=True,
                              timeout=30)
        try:
            return {n: int(con.execute(q).fetchone()[0]) for n, q in qs}
        finally:
            con.close()
    from envcal.db import make_engine

    engine = make_engine(url)
    try:
        return stats(engine, [n for n, _ in qs])
    finally:
        engine.dispose()


QUIRKS_ALL = ("SELECT analyzer_id, quirks, count(*) FROM hj212_frame WHERE quirks IS NOT NULL"
              " GROUP BY analyzer_id, quirks")
QUIRKS_ONE = ("SELECT analyzer_id, quirks, count(*) FROM hj212_frame WHERE quirks IS NOT NULL"
              " AND analyzer_id = :a GROUP BY analyzer_id, quirks")


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
    import sqlalchemy as sa

    sql = QUIRKS_ONE if analyzer_id is not None else QUIRKS_ALL
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for aid, quirks, n in conn.execute(sa.text(sql), {"a": analyzer_id}):
            per = out.setdefault(aid, {})
            for name in quirks.split(","):
                per[name] = per.get(name, 0) + int(n)
    return out
