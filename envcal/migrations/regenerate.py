"""Regenerate migrations from the SQLModel tables (developer tool).

``python -m envcal.migrations.regenerate MESSAGE`` autogenerates a new revision against a
scratch SQLite database that is at the current head. Until the first release the project
keeps one initial revision: ``--initial`` rewrites ``0001_initial`` from scratch.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from envcal.db import MIGRATIONS_DIR, _alembic_config, init_db, make_engine


def main(argv: list[str]) -> None:
    initial = "--initial" in argv
    msg = " ".join(a for a in argv if not a.startswith("--")) or "schema change"
    versions = MIGRATIONS_DIR / "versions"
    if initial:
        for f in versions.glob("0001_*.py"):
            f.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        if not initial:
            init_db(engine)
        cfg = _alembic_config(engine)
        existing = sorted(p.name for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
        rev = "0001" if initial else f"{len(existing) + 1:04d}"
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message="initial" if initial else msg, autogenerate=True,
                             rev_id=rev)
    for f in versions.glob(f"{rev}_*.py"):
        print(f"wrote {f}")


if __name__ == "__main__":
    main(sys.argv[1:])
