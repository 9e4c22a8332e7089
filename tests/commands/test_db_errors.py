"""A database the user named that cannot be used: one line, exit 2, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from envcal.db import DatabaseError, init_db, make_engine

ROOT = Path(__file__).resolve().parents[2]


def _envcal(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "envcal.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["stats"], "no database at envcal.db"),
    (["stats", "--db", "not-a-url"], "is not a database URL"),
    (["stats", "--db", "sqlite:////nonexistent-envcal/x.db"], "does not exist"),
    (["db", "upgrade", "--db", "sqlite:////nonexistent-envcal/x.db"], "does not exist"),
    (["db", "upgrade", "--db", "postgresql://postgres@127.0.0.1:1/x"], "Connection refused"),
    (["stats", "--db", "postgresql://postgres@127.0.0.1:1/x"], "Connection refused"),
])
def test_db_errors_one_line_exit_2_nothing_created(tmp_path, args, words):
    r = _envcal(tmp_path, *args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []


def test_db_missing_sqlite_file_created_only_by_init_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    eng = make_engine(url)
    with pytest.raises(DatabaseError, match="no database at"):
        eng.connect()
    assert not (tmp_path / "new.db").exists()
    init_db(eng)
    assert (tmp_path / "new.db").exists()
    with eng.connect() as c:
        assert c.exec_driver_sql("select 1").scalar() == 1
    eng.dispose()


def test_ingest_without_broker_says_so_and_creates_nothing(tmp_path):
    r = _envcal(tmp_path, "ingest", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--broker",
                "mqtt://127.0.0.1:1", "--stations", str(ROOT / "stations"), "--archive",
                str(tmp_path / "archive"))
    assert r.returncode == 2
    assert "nothing listens on 127.0.0.1:1" in " ".join(r.stdout.split())
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "archive").exists()
