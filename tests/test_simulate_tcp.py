"""The simulator's TCP transport: the HJ 212 analyzers as DAUs on a real TCP platform."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from support.hj212_platform import ThreadedPlatform

from envcal.protocols.hj212 import decode_frame
from envcal.simulate import Simulator, SimulatorError

START = dt.datetime(2026, 1, 10, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def test_simulate_tcp_daus_upload_every_hj212_frame(registry):
    sim = Simulator(registry, seed=3, start=START, days=0.05)
    assert sim.dau_analyzers() == ["JX-PP01-CEMS", "SX-WW01-WQ"]
    expected = [decode_frame(p) for _, topic, p in sim.messages() if topic.endswith("/hj212")]
    with ThreadedPlatform() as p:
        stats = sim.publish_tcp(f"127.0.0.1:{p.port}", timeout_s=5.0)
        got = list(p.frames)
    assert stats["uploaded"] == len(expected) > 50 and stats["resent"] == 0
    assert stats["not_sent"] == stats["messages"] - len(expected)  # no broker: the JSON rest
    assert sorted((f.mn, f.data_time, tuple(sorted(f.values.items()))) for f in got) == sorted(
        (f.mn, f.data_time, tuple(sorted(f.values.items()))) for f in expected)
    assert {(f.mn, f.pw, f.st, f.flag) for f in got} == {("33040000000001", "123456", "31", 5),
                                                          ("33060000000003", "123456", "32", 5)}


def test_simulate_tcp_2025_encrypted_with_heartbeats(registry):
    key = b"0" * 16
    sim = Simulator(registry, seed=3, start=START, days=0.01)
    with ThreadedPlatform(key=key) as p:
        t0 = time.monotonic()
        stats = sim.publish_tcp(f"127.0.0.1:{p.port}", version=2, keys={"JX-PP01-CEMS": key},
                                speed=600.0, heartbeat_s=0.2, timeout_s=5.0)
        assert time.monotonic() - t0 > 0.5  # paced
        got = list(p.frames)
    data = [f for f in got if f.cn in ("2011", "2061")]
    assert len(data) == stats["uploaded"] > 5 and all(f.version == 2 for f in data)
    # the CEMS has a key and its data commands are encrypted; the water analyzer has none
    assert {(f.mn, f.encrypted) for f in data} == {("33040000000001", True), ("33060000000003", False)}
    assert any(f.cn == "9015" for f in got)


def test_simulate_tcp_bad_gateway_address(registry):
    with pytest.raises(SimulatorError, match="HOST:PORT"):
        Simulator(registry, days=0.01).publish_tcp("nowhere")


def test_simulate_tcp_remote_calibration_replays_check_readings(registry):
    import asyncio
    import threading

    from envcal.protocols import hj212_commands as cmds

    sim = Simulator(registry, seed=3, start=START, days=0.07)
    tp = ThreadedPlatform()
    with tp as p:
        cn, cp = cmds.cmd_calibrate("a21026")
        data = cmds.encode_request(cn, "33040000000001", "123456", "31", "20260110010000000", cp)

        async def to_all():  # the platform does not know which link is the CEMS
            for w in list(p.writers):
                w.write(data)

        timer = threading.Timer(0.8, lambda: asyncio.run_coroutine_threadsafe(to_all(), tp.loop))
        timer.start()
        sim.publish_tcp(f"127.0.0.1:{p.port}", speed=2400.0, timeout_s=5.0)
        timer.join()
        got = list(p.frames)
    cems = [f for f in got if f.mn == "33040000000001"]
    cns = [f.cn for f in cems]
    assert "9011" in cns and "9012" in cns
    i11, i12 = cns.index("9011"), cns.index("9012")
    assert cems[i11].fields == {"QnRtn": "1"} and cems[i12].fields == {"ExeRtn": "1"}
    checks = [f for f in cems if f.flags.get("a21026") == "C" and set(f.values) == {"a21026-Rtd"}]
    assert len(checks) >= 20  # transition and plateau of the CEMS's first SO2 zero check
    assert all(i11 < cems.index(f) < i12 for f in checks)


def test_cli_simulate_tcp(tmp_path):
    import json

    from typer.testing import CliRunner

    from envcal.cli import app

    secrets = tmp_path / "s.toml"
    secrets.write_text('[sm4]\n"JX-PP01-CEMS" = "30303030303030303030303030303030"\n', encoding="utf-8")
    with ThreadedPlatform(key=b"0" * 16) as p:
        res = CliRunner().invoke(app, ["simulate", "--transport", "tcp", "--gateway", f"127.0.0.1:{p.port}",
                                       "--days", "0.01", "--start", "2026-01-10T00:00:00",
                                       "--hj212-version", "2025", "--secrets", str(secrets), "--json"])
        got = list(p.frames)
    assert res.exit_code == 0, res.output
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["uploaded"] == len([f for f in got if f.cn in ("2011", "2061")]) > 5
    assert any(f.encrypted for f in got)


@pytest.mark.parametrize("args, message", [
    (["--transport", "tcp"], "needs --gateway"),
    (["--transport", "udp"], "mqtt or tcp"),
    (["--transport", "tcp", "--gateway", "x:1", "--hj212-version", "2019"], "2017 or 2025"),
])
def test_cli_simulate_tcp_usage_errors(args, message):
    from typer.testing import CliRunner

    from envcal.cli import app

    res = CliRunner().invoke(app, ["simulate", *args])
    assert res.exit_code == 2 and message in res.stderr


def test_simulate_tcp_unanswered_uploads_end_the_run(registry):
    sim = Simulator(registry, seed=3, start=START, days=0.003)
    with ThreadedPlatform(answer=False) as p:
        t0 = time.monotonic()
        stats = sim.publish_tcp(f"127.0.0.1:{p.port}", timeout_s=0.2)
        assert time.monotonic() - t0 < 30
        got = list(p.frames)
    assert stats["uploaded"] == 0 and stats["unanswered"] > 0
    assert stats["resent"] >= 3 * stats["unanswered"]  # Table 1: three resends each, then again
    assert len({(f.mn, f.qn) for f in got}) == stats["unanswered"]
