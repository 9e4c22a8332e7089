"""``envcal hj212 decode`` / ``encode``: JSON out, exit 2 with the reason on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


# ----------------------------------------------------------------------------- several frames
FIELD_FRAMES = Path("/work/shared/hj212/field_frames.json")


@pytest.mark.skipif(not FIELD_FRAMES.exists(), reason="shared field frames not available")
def test_hj212_decode_field_frames_one_per_line():
    frames = [x["frame"] for x in json.loads(FIELD_FRAMES.read_text(encoding="utf-8"))]
    res = runner.invoke(app, ["hj212", "decode"], input="\r\n".join(frames).encode() + b"\r\n")
    assert res.exit_code == 0, res.output
    outs = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(outs) == 400 and all("error" not in o for o in outs)
    assert [o["qn"] for o in outs] == [f.split("QN=")[1].split(";")[0] for f in frames]


def test_hj212_decode_several_frames_error_in_place_exit_2():
    bad = FRAME.replace(b"1C80", b"1C81")
    res = runner.invoke(app, ["hj212", "decode"], input=FRAME + bad + b"\n" + FRAME.rstrip(b"\r\n") + b"\n")
    assert res.exit_code == 2
    outs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [o.get("cn") for o in outs] == ["1062", None, "1062"]
    assert "bad CRC" in outs[1]["error"] and "1 of 3 frames refused" in res.stderr


def test_hj212_decode_sm4_with_secrets(tmp_path, monkeypatch):
    from envcal.protocols.hj212 import encode_frame

    enc = encode_frame(cn="2011", mn="1", flag=9, cp="DataTime=20260101000000;a21026-Rtd=12.5,a21026-Flag=N",
                       key=b"0" * 16)
    secrets = tmp_path / "s.toml"
    secrets.write_text('[sm4]\nA1 = "30303030303030303030303030303030"\n', encoding="utf-8")
    res = runner.invoke(app, ["hj212", "decode"], input=enc)
    assert res.exit_code == 2 and "no key" in res.stderr
    res = runner.invoke(app, ["hj212", "decode", "--secrets", str(secrets), "--analyzer", "A1"], input=enc)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["encrypted"] is True and out["values"] == {"a21026-Rtd": 12.5}
    monkeypatch.setenv("ENVCAL_HJ212_SECRETS", str(secrets))
    res = runner.invoke(app, ["hj212", "decode", "--analyzer", "A2"], input=enc)
    assert res.exit_code == 2 and "no SM4 key for analyzer 'A2'" in res.stderr


def test_hj212_decode_opt_in_options_and_quirks():
    seg = b"QN=1;ST=22;CN=2011;PW=1;MN=1;Flag=7;CP=&&DataTime=20260101000000123;a21026-Rtd=1&&"
    from envcal.protocols.hj212 import crc16_hj212, crc16_modbus

    modbus = b"##%04d" % len(seg) + seg + b"%04X" % crc16_modbus(seg) + b"\r\n"
    assert runner.invoke(app, ["hj212", "decode"], input=modbus).exit_code == 2
    res = runner.invoke(app, ["hj212", "decode", "--crc", "modbus"], input=modbus)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["quirks"] == ["split_flag_without_pnum", "datetime_ms"]
    std = b"##%04d" % len(seg) + seg + b"%04X" % crc16_hj212(seg) + b"\r\n"
    assert runner.invoke(app, ["hj212", "decode", "--crc", "x"], input=std).exit_code == 2
