import datetime as dt

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from envcal.db import init_db, schema_diff
from envcal.models import Reading
from envcal.registry import sync_registry


def test_db_migrations_match_models(engine):
    assert schema_diff(engine) == []


def test_db_upgrade_twice_is_noop(engine):
    init_db(engine)
    assert schema_diff(engine) == []


def test_db_sqlite_pragmas(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(sa.text("PRAGMA busy_timeout")).scalar() == 30000


def test_db_times_roundtrip_as_utc(engine, registry):
    sync_registry(engine, registry)
    cst = dt.timezone(dt.timedelta(hours=8))
    t = dt.datetime(2026, 11, 27, 8, 0, tzinfo=cst)
    with Session(engine) as s:
        s.add(Reading(analyzer_id="HZ-AQ01-PM", analyte="PM2.5", ts=t, value=35.0,
                      received_at=t))
        s.commit()
        got = s.exec(select(Reading)).one()
    assert got.ts == t
    assert got.ts.utcoffset() == dt.timedelta(0)
    assert got.ts.hour == 0


def test_db_naive_time_refused(engine, registry):
    sync_registry(engine, registry)
    with Session(engine) as s:
        s.add(Reading(analyzer_id="HZ-AQ01-PM", analyte="PM2.5", ts=dt.datetime(2026, 1, 1),
                      value=1.0, received_at=dt.datetime.now(dt.UTC)))
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            s.commit()


def test_db_reading_unique_key(engine, registry):
    sync_registry(engine, registry)
    t = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    with Session(engine) as s:
        s.add(Reading(analyzer_id="HZ-AQ01-PM", analyte="PM2.5", ts=t, value=1.0, received_at=t))
        s.commit()
    with Session(engine) as s:
        s.add(Reading(analyzer_id="HZ-AQ01-PM", analyte="PM2.5", ts=t, value=2.0, received_at=t))
        with pytest.raises(sa.exc.IntegrityError):
            s.commit()
