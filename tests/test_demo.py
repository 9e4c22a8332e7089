"""``envcal demo --headless`` end to end: its own Mosquitto, SQLite, ingest, verification,
alerts and the simulator with the default fault scenario, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envcal.alerts import list_alerts
from envcal.broker import pid_alive
from envcal.db import make_engine
from envcal.registry import load_registry
from envcal.simulate import Simulator, expected_alerts, load_faults

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "stations" / "faults" / "default.toml"
#: Simulated days: long enough for every default fault to show (the last one, a 6 h stuck
#: value, starts on day 12.25; the SO2 span drift crosses ±2.5 % F.S. around day 11).
DAYS = 14


def _envcal(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "envcal.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _pids(workdir: Path) -> dict[str, int]:
    return json.loads((workdir / "pids.json").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    proc = _envcal("demo", "--headless", "--json", "--seed", "1", "--days", str(DAYS),
                   "--faults", str(FAULTS), "--workdir", str(workdir))
    try:
        out, err = proc.communicate(timeout=800)
    finally:
        if proc.poll() is None:  # SIGTERM lets the demo stop its children (no orphans)
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return json.loads(out), err.decode(errors="replace"), workdir


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_headless_summary_counts(demo_run):
    summary, err, _ = demo_run
    assert summary["complete"] is True and summary["interrupted"] is False
    assert summary["simulated_days"] >= DAYS - 0.1
    assert summary["readings"] > 100_000
    assert summary["checks"] > 300 and summary["results"].get("pass", 0) > 300
    assert summary["archive_files"] > 0
    assert set(summary["alerts"]) <= {"out_of_tolerance", "out_of_control", "drift_trend",
                                      "check_overdue", "material_invalid", "data_quality",
                                      "peer_drift", "verification_due"}
    for component in ("database", "broker", "ingest", "verify", "simulator", "ui", "archive"):
        assert f" {component}" in err


def _no_material_channels() -> set[tuple[str, str]]:
    """(analyzer, analyte) whose required span check has no sample CRM: the simulator says
    so in its notes and cannot run that check, so ``check_overdue`` is right there."""
    registry = load_registry(ROOT / "stations")
    sim = Simulator(registry, faults=FAULTS, seed=1, days=1)
    sim.status_topics()  # builds the schedule, filling sim.notes
    out = set()
    for note in sim.notes:
        head = note.split(":", 1)[0].split()
        out.add((head[0], head[1]))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_each_fault_raises_its_alert_and_clean_analyzers_none(demo_run):
    summary, _, workdir = demo_run
    by_analyzer = summary["alerts_by_analyzer"]
    expected = expected_alerts(load_faults(FAULTS))
    missing = {aid: sorted(kinds - set(by_analyzer.get(aid, {}))) for aid, kinds in expected.items()}
    assert not any(missing.values()), f"expected alerts missing: {missing}; got {by_analyzer}"
    registry = load_registry(ROOT / "stations")
    faulted = {f.analyzer for f in load_faults(FAULTS)}
    clean = sorted(set(registry.analyzers) - faulted)
    assert clean  # HZ-AQ01-PM and HZ-AQ01-GAS
    engine = make_engine(summary["db"])
    try:
        alerts = [a for a in list_alerts(engine) if a["analyzer"] in clean]
    finally:
        engine.dispose()
    no_material = _no_material_channels()
    unexpected = [(a["analyzer"], a["analyte"], a["kind"]) for a in alerts
                  if not (a["kind"] == "check_overdue" and (a["analyzer"], a["analyte"]) in no_material)]
    assert unexpected == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_falsification_raises_data_quality(demo_run):
    summary, _, _ = demo_run
    falsify = [f for f in load_faults(FAULTS) if f.type == "falsify"]
    assert falsify
    for f in falsify:
        assert "data_quality" in summary["alerts_by_analyzer"].get(f.analyzer, {})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_headless_leaves_no_process_running(demo_run):
    summary, _, workdir = demo_run
    pids = _pids(workdir)
    assert pids == summary["pids"]
    assert {"demo", "broker", "gateway", "simulator"} <= set(pids)  # HJ 212 analyzers over TCP
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_sigint_stops_every_child(tmp_path):
    proc = _envcal("demo", "--headless", "--json", "--days", "30", "--workdir", str(tmp_path),
                   start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = _pids(tmp_path) if (tmp_path / "pids.json").exists() else {}
            if "simulator" in pids:
                break
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
            time.sleep(0.2)
        assert "simulator" in pids and "broker" in pids
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode(errors="replace")[-2000:]
    assert b"interrupted" in err
    assert [name for name, pid in _pids(tmp_path).items() if pid_alive(pid)] == []
