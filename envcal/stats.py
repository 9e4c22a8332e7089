"""Named counts for ``envcal stats`` (and scripts): one cheap ``count(*)`` per table.

Each count is one SQL query, so ``envcal stats`` on a SQLite file runs them through the
standard library's :mod:`sqlite3` (read-only) and starts without SQLAlchemy, the models, the
registry or the verifier; other databases go through SQLAlchemy Core. Areas add counts with
:func:`register_stat` (SQL text, or a function of a SQLAlchemy connection).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

#: A count: SQL text returning one integer, or ``f(sqlalchemy connection) -> int``.
Query = str | Callable[[Any], int]
#: Named counts, in output order.
STATS: dict[str, Query] = {}


def register_stat(name: str, query: Query) -> None:
    """Add a named count to ``envcal stats``.

    Parameters
    ----------
    name : str
        Key in the JSON output.
    query : str or callable
        SQL text returning one integer, or ``f(connection) -> int`` (SQLAlchemy).
    """
    STATS[name] = query


def count_table(table: str) -> str:
    """The count query of the table named ``table`` (the model's ``__tablename__``)."""
    return f"SELECT count(*) FROM {table}"


register_stat("readings", "SELECT (SELECT count(*) FROM reading) + "
                          "(SELECT coalesce(sum(n_values), 0) FROM archive_file)")  # hot + archived
register_stat("dead_letters", count_table("dead_letter"))
register_stat("data_gaps", count_table("data_gap"))
register_stat("check_summaries", count_table("check_summary"))
register_stat("hj212_frames", count_table("hj212_frame"))
register_stat("ingest_batches", count_table("ingest_log"))
register_stat("alerts", count_table("alert"))
register_stat("results", count_table("check_result"))


def _run(conn: sa.Connection, q: Query) -> int:
    import sqlalchemy as sa

    return int(conn.execute(sa.text(q)).scalar_one()) if isinstance(q, str) else int(q(conn))


def stats(engine: Engine, names: Iterable[str] | None = None) -> dict[str, int]:
    """Counts for scripts: readings (hot + archived values), dead letters, data gaps, ...

    Parameters
    ----------
    engine : Engine
    names : iterable of str, optional
        Only these counts (default: every registered one).

    Returns
    -------
    dict of str to int
    """
    wanted = list(names) if names is not None else list(STATS)
    with engine.connect() as conn:
        return {n: _run(conn, STATS[n]) for n in wanted}


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
    sqlite3.Error or sqlalchemy.exc.SQLAlchemyError
        The database cannot be opened or lacks the schema (``envcal db upgrade``).
    """
    wanted = list(names) if names is not None else list(STATS)
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if path and path != ":memory:" and "?" not in path and all(isinstance(STATS[n], str) for n in wanted):
        import sqlite3
        from pathlib import Path

        con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            return {n: int(con.execute(STATS[n]).fetchone()[0]) for n in wanted}
        finally:
            con.close()
    from envcal.db import make_engine

    engine = make_engine(url)
    try:
        return stats(engine, wanted)
    finally:
        engine.dispose()
