"""Named counts for ``envcal stats`` (and scripts): one cheap ``count(*)`` per table.

This module imports only SQLAlchemy Core, so ``envcal stats`` starts without the models,
the registry or the verifier. Areas add counts with :func:`register_stat`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

#: Named counts: name -> function(connection) -> int, in output order.
STATS: dict[str, Callable[[sa.Connection], int]] = {}


def register_stat(name: str, query: Callable[[sa.Connection], int]) -> None:
    """Add a named count to ``envcal stats``.

    Parameters
    ----------
    name : str
        Key in the JSON output.
    query : callable
        ``f(connection) -> int``.
    """
    STATS[name] = query


def count_table(table: str) -> Callable[[sa.Connection], int]:
    """A stats query counting the rows of the table named ``table``.

    Parameters
    ----------
    table : str
        Table name (the model's ``__tablename__``).

    Returns
    -------
    callable
        ``f(connection) -> int``.
    """
    def q(conn: sa.Connection) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one())
    return q


def _count_readings(conn: sa.Connection) -> int:
    """Hot readings plus the values already archived to NetCDF (``archive_file.n_values``)."""
    archived = sa.table("archive_file", sa.column("n_values"))
    n = count_table("reading")(conn)
    return n + int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(archived.c.n_values), 0)))
                   .scalar_one())


register_stat("readings", _count_readings)
register_stat("dead_letters", count_table("dead_letter"))
register_stat("data_gaps", count_table("data_gap"))
register_stat("check_summaries", count_table("check_summary"))
register_stat("hj212_frames", count_table("hj212_frame"))
register_stat("ingest_batches", count_table("ingest_log"))
register_stat("alerts", count_table("alert"))
register_stat("results", count_table("check_result"))


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
        return {n: STATS[n](conn) for n in wanted}
