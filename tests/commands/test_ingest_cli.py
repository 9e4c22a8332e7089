"""``envcal ingest``: the worker-group options ``--settle`` and ``--lease`` are offered,
checked before anything starts, and reach the pipeline."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from typer.testing import CliRunner

from envcal.cli import app
from envcal.commands.ingest import _attach_pipeline, _judging
from envcal.ingest import IngestService
from envcal.registry import sync_registry


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_ingest_help_lists_settle_and_lease():
    res = CliRunner().invoke(app, ["ingest", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    out = _plain(res.output)
    assert "--settle" in out and "--lease" in out
    assert "checks evaluated when they end" not in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--settle", "5"], "add --group"),
        (["--lease", "60"], "add --group"),
        (["--group", "g", "--settle", "0"], "must exceed --batch-seconds"),
        (["--group", "g", "--settle", "-3"], "must exceed --batch-seconds"),
        (["--group", "g", "--settle", "0.1", "--batch-seconds", "0.2"], "must exceed --batch-seconds"),
        (["--group", "g", "--lease", "10", "--tick-seconds", "5"], "shorter than 3 timer ticks"),
        (["--group", "g", "--lease", "0"], "shorter than 3 timer ticks"),
        (["--group", "g", "--settle", "soon"], "Invalid value for '--settle'"),
    ],
)
def test_ingest_invalid_group_options_refused(tmp_path, args, message):
    # refused before the registry, database or broker are touched: nothing is created
    db = tmp_path / "never.db"
    res = CliRunner().invoke(app, ["ingest", "--db", f"sqlite:///{db}", "--broker", "mqtt://127.0.0.1:1",
                                   *args], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 2, res.output
    assert message in " ".join(_plain(res.output).split())
    assert not db.exists()


def test_ingest_group_options_reach_the_pipeline(engine, registry):
    sync_registry(engine, registry)
    svc = IngestService("mqtt://127.0.0.1:1", engine, registry, client_id="cli-w1", group="g")
    pipe = _attach_pipeline(svc, None, 2.0, settle=7.5, lease=45.0)
    try:
        assert pipe.settle == dt.timedelta(seconds=7.5)
        assert pipe.ownership.lease == dt.timedelta(seconds=45)
        assert pipe.ownership.group == "g"
        line = _judging(pipe)
        assert "owner once complete" in line and "7.5 s" in line and "lease 45 s" in line
    finally:
        pipe.stop()
    alone = IngestService("mqtt://127.0.0.1:1", engine, registry, client_id="cli-w2")
    pipe = _attach_pipeline(alone, None, 2.0)
    try:
        assert pipe.ownership is None
        assert _judging(pipe) == "checks evaluated when their end reading is stored"
    finally:
        pipe.stop()
