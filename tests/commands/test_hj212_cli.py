"""``envcal hj212 decode`` / ``encode``: JSON out, exit 2 with the reason on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from envcal.cli import app

FRAME = (b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
         b"Flag=5;CP=&&RtdInterval=30&&1C80\r\n")
runner = CliRunner()


def test_hj212_decode_prints_json():
    res = runner.invoke(app, ["hj212", "decode"], input=FRAME)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out == {"qn": "20160801085857223", "st": "32", "cn": "1062", "pw": "100000",
                   "mn": "010000A8900016F000169DC0", "flag": 5, "data_time": None,
                   "values": {}, "flags": {}}


def test_hj212_decode_bad_crc_exit_2_with_reason():
    res = runner.invoke(app, ["hj212", "decode"], input=FRAME.replace(b"1C80", b"1C81"))
    assert res.exit_code == 2
    assert "bad CRC" in res.stderr and "1C80" in res.stderr
    assert res.stdout == ""


def test_hj212_encode_then_decode_data_time_utc():
    res = runner.invoke(app, ["hj212", "encode", "--cn", "2011", "--mn", "33040000000001",
                              "--cp", "a21026-Rtd=22.25,a21026-Flag=N",
                              "--data-time", "2026-11-27T08:00:00+08:00"])
    assert res.exit_code == 0, res.output
    frame = res.stdout_bytes
    assert frame.startswith(b"##") and frame.endswith(b"\r\n")
    res = runner.invoke(app, ["hj212", "decode"], input=frame)
    out = json.loads(res.stdout)
    assert out["data_time"] == "2026-11-27T00:00:00+00:00"
    assert out["values"] == {"a21026-Rtd": 22.25} and out["flags"] == {"a21026": "N"}


def test_hj212_encode_rejects_naive_time():
    res = runner.invoke(app, ["hj212", "encode", "--cn", "2011", "--mn", "1",
                              "--data-time", "2026-11-27T08:00:00"])
    assert res.exit_code == 2 and "UTC offset" in res.stderr


def test_hj212_decode_subprocess_truncated_frame():
    proc = subprocess.run([sys.executable, "-m", "envcal.cli", "hj212", "decode"],
                          input=FRAME[:40], capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert b"truncated" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "envcal.cli", "hj212", "decode"],
                          input=FRAME.rstrip(b"\r\n") + b"\n", capture_output=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["cn"] == "1062"
