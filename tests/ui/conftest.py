"""Fixtures of the UI tests: a seeded SQLite database built once per session and copied
for each user (read-only tests share a module copy; tests that write get their own)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from envcal.db import init_db, make_engine


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory):
    """(path, seed info) of a seeded demo database file, built once."""
    from envcal.ui.seed import seed_demo

    path = tmp_path_factory.mktemp("ui_template") / "envcal.db"
    eng = make_engine(f"sqlite:///{path}")
    init_db(eng)
    info = seed_demo(eng)
    with eng.connect() as conn:  # fold the WAL into the file so a copy is complete
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path, info


def _copy(template, folder: Path):
    path, info = template
    dst = folder / "envcal.db"
    shutil.copyfile(path, dst)
    url = f"sqlite:///{dst}"
    return url, make_engine(url), info


@pytest.fixture(scope="module")
def seeded(seeded_template, tmp_path_factory):
    """(url, engine, seed info) of a seeded demo database shared by a test module."""
    url, eng, info = _copy(seeded_template, tmp_path_factory.mktemp("ui"))
    yield url, eng, info
    eng.dispose()


@pytest.fixture
def seeded_fresh(seeded_template, tmp_path):
    """A seeded database of its own, for tests that change it."""
    url, eng, info = _copy(seeded_template, tmp_path)
    yield url, eng, info
    eng.dispose()
