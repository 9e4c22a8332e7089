"""``envcal gateway`` as a process: kill -9 mid-stream loses and doubles nothing; start-up
mistakes are one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from envcal.broker import free_port
from tests.gateway.support import (
    MN17,
    ROOT,
    STATIONS,
    GatewayProcess,
    ResendingDau,
    data_frame,
    minute,
)
from tests.support.mqtt_ingest import count, wait_for


def test_gateway_kill9_mid_stream_nothing_lost_or_doubled(mosquitto, ingest, gw_engine, tmp_path):
    gp = GatewayProcess(mosquitto.url, tmp_path).start()
    dau = ResendingDau(lambda: ("127.0.0.1", gp.port), resend_after=0.5)
    frames = [data_frame(MN17, minute(i), 60.0 + i) for i in range(30)]
    errors = []

    def stream():
        try:
            for f in frames:  # one frame every 50 ms, as a busy DAU uploads
                dau.deliver(f, timeout=60)
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        wait_for(lambda: dau.sent >= 10, 30, "ten frames sent")
        gp.kill()
        time.sleep(0.5)
        gp.start()
        t.join(90)
        assert not t.is_alive() and not errors, errors
        assert dau.reconnects >= 1
        wait_for(lambda: count(gw_engine, "reading") == 60, 15, "every value stored")
        time.sleep(0.3)
        assert count(gw_engine, "reading") == 60
        assert count(gw_engine, "hj212_frame") == 30
    finally:
        dau.close()
        gp.kill()


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "envcal.cli", "gateway", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_gateway_cli_start_mistakes_exit_2(mosquitto, tmp_path):
    from typer.testing import CliRunner

    from envcal.cli import app

    def gw(*args: str):
        return CliRunner().invoke(app, ["gateway", *args])
    secrets = tmp_path / "keys.toml"
    secrets.write_text('[sm4]\n"NO-SUCH-ANALYZER" = "30303030303030303030303030303030"\n')
    cases = [
        (gw("--listen", "nonsense", "--broker", mosquitto.url, "--stations", str(STATIONS)), "HOST:PORT"),
        (gw("--listen", "127.0.0.1:0", "--broker", mosquitto.url,
            "--stations", str(tmp_path / "nope.toml")), "no such registry"),
        (gw("--listen", "127.0.0.1:0", "--broker", f"mqtt://127.0.0.1:{free_port()}",
            "--stations", str(STATIONS), "--broker-timeout", "1"), "unreachable"),
        (gw("--listen", "203.0.113.7:0", "--broker", mosquitto.url, "--stations", str(STATIONS)),
         "cannot listen"),
        (gw("--listen", "127.0.0.1:0", "--broker", mosquitto.url, "--stations", str(STATIONS),
            "--secrets", str(secrets)), "--secrets"),
    ]
    for r, what in cases:
        assert r.exit_code == 2, (r.output, r.exception)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("✗")]
        assert len(lines) == 1 and what in lines[0], r.stderr
        assert "Traceback" not in r.output


def test_gateway_cli_send_and_devices(mosquitto, gateway, gw_engine, sqlite_url):
    from envcal.users import add_user
    from tests.gateway.support import SocketDau, answering

    add_user(gw_engine, "li", "staff", "password-li")
    dau = SocketDau(gateway.address, on_command=answering())
    dau.send(data_frame(MN17, minute(0), 1.0))
    dau.wait(lambda f: f.cn == "9014")
    common = ("--db", sqlite_url, "--broker", mosquitto.url, "--stations", str(STATIONS))
    ok = _cli("send", "3011", "--mn", MN17, "--param", "PolId=a21026", "--user", "li", *common)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert ok.stdout.startswith("✓ CN 3011 to " + MN17), (ok.stdout, ok.stderr)
    nobody = _cli("send", "3011", "--mn", MN17, "--param", "PolId=a21026", "--user", "nobody", *common)
    assert nobody.returncode == 2 and "no such enabled account" in nobody.stderr, nobody.stderr
    dev = _cli("devices", "--json", "--broker", mosquitto.url)
    assert dev.returncode == 0, (dev.stdout, dev.stderr)
    state = json.loads(dev.stdout)
    d17 = [d for d in state["devices"] if d["mn"] == MN17][0]
    assert d17["online"] and d17["version"] == "2017" and d17["counts"]["frames"] >= 1, state
    dau.close()
