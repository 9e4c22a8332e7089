"""``envcal stats --json``: counts for scripts, archived values included."""

from __future__ import annotations

import datetime as dt
import json

from typer.testing import CliRunner

from envcal.cli import app
from envcal.ingest import IngestCore
from envcal.registry import sync_registry


def test_stats_json_counts_hot_and_archived(engine, db_url, registry):
    from envcal import models

    sync_registry(engine, registry)
    ts = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    body = json.dumps({"ts": ts.isoformat(), "seq": 1, "values": {"SO2": 1.0, "NOx": 2.0}}).encode()
    IngestCore(engine, registry).ingest([("envcal/ZJ-NB-PP02/NB-PP02-CEMS/data", body),
                                         ("envcal/ZJ-NB-PP02/NB-PP02-CEMS/data", b"nope")])
    with engine.begin() as conn:
        conn.execute(models.ArchiveFile.__table__.insert(), [{
            "station_id": "ZJ-NB-PP02", "day": dt.date(2026, 1, 1), "path": "x.nc", "sha256": "0" * 64,
            "n_values": 40, "n_times": 20, "created_at": ts}])
    res = CliRunner().invoke(app, ["stats", "--db", db_url, "--json"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.output)
    assert counts["readings"] == 2 + 40
    assert counts["dead_letters"] == 1
    assert counts["data_gaps"] == 0


def test_stats_one_explicit_list_every_documented_count(sqlite_engine):
    # DESIGN.md §4: readings, dead_letters, data_gaps, results, alerts - always present,
    # whatever was imported before (no registration on import)
    from envcal.stats import NAMES, stats

    assert {"readings", "dead_letters", "data_gaps", "results", "alerts"} <= set(NAMES)
    assert list(stats(sqlite_engine)) == list(NAMES)
    assert stats(sqlite_engine, ["alerts"]) == {"alerts": 0}
    import pytest

    with pytest.raises(KeyError, match="unknown count"):
        stats(sqlite_engine, ["alarms"])
