"""Shared fixtures: a real Mosquitto on a free loopback port, and databases on SQLite and
PostgreSQL (``ENVCAL_TEST_PG_URL``; skipped with the reason when none is reachable)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from envcal import numba_cache

numba_cache.configure()  # before a test module imports numba (see envcal.numba_cache)

from envcal.broker import Mosquitto, find_mosquitto  # noqa: E402
from envcal.db import init_db, make_engine, normalize_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATIONS = ROOT / "stations"
PG_URL = os.environ.get("ENVCAL_TEST_PG_URL")


def _pg_unreachable_reason() -> str | None:
    if not PG_URL:
        return "ENVCAL_TEST_PG_URL is not set (no PostgreSQL server to test against)"
    try:
        eng = make_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(sa.text("select 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001 - report whatever stopped us
        return f"PostgreSQL at {PG_URL} not reachable: {exc.__class__.__name__}: {exc}"
    return None


_PG_SKIP = _pg_unreachable_reason()


def _create_pg_database() -> str:
    """A fresh database for one test, so tests (and parallel sessions) never collide."""
    name = f"envcal_t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(normalize_url(PG_URL)).set(database=name)
    return url.render_as_string(hide_password=False)


def _drop_pg_database(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = make_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A URL of an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'envcal.db'}"
        return
    if _PG_SKIP:
        pytest.skip(_PG_SKIP)
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """An empty SQLite database URL (for tests that are not about storage parity)."""
    return f"sqlite:///{tmp_path / 'envcal.db'}"


@pytest.fixture
def engine(db_url):
    """An engine on a migrated database (SQLite and PostgreSQL)."""
    eng = make_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url):
    eng = make_engine(sqlite_url)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def registry():
    from envcal.registry import load_registry

    return load_registry(STATIONS)


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker with envcal's config on a free loopback port."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); "
                    "the tests need a real broker")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()
