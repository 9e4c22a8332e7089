"""Database engine, sessions and migrations.

SQLite is the default (WAL journal, ``busy_timeout``, foreign keys on, set in a connect
hook); PostgreSQL is used when the URL says so. The schema is owned by Alembic
(``envcal db upgrade``); :func:`init_db` brings any database to the head revision.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

import envcal.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from envcal.sqltypes import UTCDateTime

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

__all__ = ["MIGRATIONS_DIR", "DatabaseError", "UTCDateTime", "cached_engine", "init_db",
           "make_engine", "normalize_url", "schema_diff", "session_scope"]

#: PostgreSQL connection timeout [s]: an unreachable server is reported, not waited for
PG_CONNECT_TIMEOUT_S = 5
#: set while :func:`init_db` runs: only then may a missing SQLite file be created
_CREATING: contextvars.ContextVar[bool] = contextvars.ContextVar("envcal_db_creating", default=False)


class DatabaseError(RuntimeError):
    """The database named by ``--db`` cannot be used: a bad URL, a missing folder or file,
    an unreachable server. The message is one line for the user (commands exit 2)."""


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` URLs to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine for ``url`` with envcal's connection settings.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:///file.db``, ``postgresql://user@host/db``).
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    sqlalchemy.engine.Engine
    """
    url = normalize_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"--db: {url!r} is not a database URL (use sqlite:///FILE.db or "
                            "postgresql://USER@HOST/DB)") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:"):
            folder = Path(path).expanduser().resolve().parent
            if not folder.is_dir():
                raise DatabaseError(f"--db: folder {folder} does not exist (create it first)")
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = _create(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if path and path != ":memory:" and not path.startswith("file:"):
            event.listen(engine, "do_connect", _sqlite_refuse_missing(Path(path).expanduser()))
    else:
        kwargs.setdefault("pool_pre_ping", True)
        if parsed.get_backend_name() == "postgresql":
            kwargs.setdefault("connect_args", {"connect_timeout": PG_CONNECT_TIMEOUT_S})
        engine = _create(url, **kwargs)
    return engine


def _create(url: str, **kwargs) -> Engine:
    try:
        return sa.create_engine(url, **kwargs)
    except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError, ImportError) as exc:
        raise DatabaseError(f"--db: cannot use {url!r}: {exc}") from None


def _sqlite_refuse_missing(path: Path):
    """A ``do_connect`` hook: a missing SQLite file is created only by :func:`init_db`
    (``envcal db upgrade`` and the commands that migrate), never by a read-only command."""

    def hook(_dialect, _rec, _cargs, _cparams):
        if not _CREATING.get() and not path.exists():
            raise DatabaseError(f"--db: no database at {path} (create it with: envcal db upgrade "
                                f"--db sqlite:///{path})")
        return None

    return hook


def user_error(exc: BaseException) -> str | None:
    """The one-line message of a database failure the user must fix (:class:`DatabaseError`,
    or a connection the server refused or could not make), else None (a bug: re-raise)."""
    if isinstance(exc, DatabaseError):
        return str(exc)
    if isinstance(exc, sa.exc.OperationalError) and exc.connection_invalidated is False \
            and "connect" in str(exc).lower():
        return describe_error(exc)
    return None


def describe_error(exc: BaseException, url: str | None = None) -> str:
    """One line for a database failure (connection refused, authentication, ...)."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    where = f" at {sa.engine.make_url(url).render_as_string(hide_password=True)}" if url else ""
    return f"cannot use the database{where}: {first}"


@lru_cache(maxsize=16)
def cached_engine(url: str) -> Engine:
    """One engine per URL per process (used by the CLI and the UI)."""
    return make_engine(url)


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def init_db(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest schema (Alembic ``head``),
    creating a missing SQLite file.

    Raises
    ------
    DatabaseError
        The server cannot be reached or refuses the connection (one line, no traceback).
    """
    from alembic import command

    token = _CREATING.set(True)
    try:
        with engine.begin() as conn:
            cfg = _alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(describe_error(exc, str(engine.url))) from None
    finally:
        _CREATING.reset(token)


def schema_diff(engine: Engine) -> list:
    """Differences between the migrated database and the SQLModel tables (empty when in sync)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, SQLModel.metadata)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
