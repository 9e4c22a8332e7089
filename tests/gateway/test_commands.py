"""Commands down to a DAU through the control channel: 9011 -> uploads -> 9012, audit rows."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from envcal.gateway.commands import CommandError, build_cp
from envcal.gateway.control import request, send_command
from envcal.users import Actor, PermissionDenied, add_user
from tests.gateway.support import AZ17, MN17, SocketDau, answering, data_frame, minute
from tests.support.mqtt_ingest import count, wait_for


def _connect(gateway, on_command):
    dau = SocketDau(gateway.address, on_command=on_command)
    dau.send(data_frame(MN17, minute(0), 1.0))  # the gateway learns the MN's connection
    dau.wait(lambda f: f.cn == "9014", what="first answer")
    return dau


def test_gateway_calibration_3011_full_sequence_and_audit(mosquitto, gateway, ingest, gw_engine):
    add_user(gw_engine, "li", "staff", "password-li")
    on_command = answering()
    dau = _connect(gateway, on_command)
    reply = send_command(gw_engine, Actor("li", "staff"), mosquitto.url, AZ17, MN17, "3011",
                         params={"PolId": "a21026"}, timeout=30)
    assert reply["ok"], reply
    assert (reply["qn_rtn"], reply["exe_rtn"], reply["attempts"]) == (1, 1, 1)
    cmd = dau.wait(lambda f: f.cn == "3011", what="the 3011 request")
    assert (cmd.fields["PolId"], cmd.flag, cmd.st, cmd.qn) == ("a21026", 5, "31", reply["qn"])
    with gw_engine.connect() as c:
        rows = c.execute(sa.text("select actor, action, object_id, details from audit_log "
                                 "where action like 'device.command%' order by id")).all()
    assert [r.action for r in rows] == ["device.command", "device.command.result"]
    assert all(r.actor == "li" and r.object_id == AZ17 for r in rows)
    assert '"exe_rtn": 1' in rows[1].details or '"exe_rtn":1' in rows[1].details
    dau.close()


def test_gateway_command_refused_for_viewer(mosquitto, gateway, gw_engine):
    with pytest.raises(PermissionDenied):
        send_command(gw_engine, Actor("v", "viewer"), mosquitto.url, AZ17, MN17, "3011",
                     params={"PolId": "a21026"}, timeout=5)
    assert count(gw_engine, "audit_log", "where action like 'device.command%'") == 0


def test_gateway_history_request_uploads_answered_and_stored(mosquitto, gateway, ingest, gw_engine):
    history = {minute(i): 40.0 + i for i in range(1, 4)}
    dau = _connect(gateway, answering(history))
    reply = request(mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "2051",
                                    "begin": minute(1).isoformat(), "end": minute(3).isoformat()},
                    timeout=30)
    assert reply["ok"], reply
    assert [u["cn"] for u in reply["uploads"]] == ["2051"] * 3
    wait_for(lambda: len([a for a in dau.answers("9014") if a.qn == reply["qn"]]) == 3, 10,
             "each upload answered 9014")
    wait_for(lambda: count(gw_engine, "reading") == 8, 10, "history stored")
    dau.close()


def test_gateway_command_resent_without_request_answer(mosquitto, gateway, gw_engine):
    on_command = answering(skip_first=1)
    dau = _connect(gateway, on_command)
    reply = request(mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "1011",
                                    "timeout": 0.5, "retries": 3}, timeout=30)
    assert reply["ok"], reply
    assert reply["attempts"] == 2
    assert reply["uploads"][0]["cp"]["SystemTime"] == "20261201080000"
    assert len(dau.answers("1011")) == 2  # the same request (same QN) sent twice
    assert len({f.qn for f in dau.answers("1011")}) == 1
    dau.close()


def test_gateway_command_gives_up_after_retries(mosquitto, gateway, gw_engine):
    dau = _connect(gateway, answering(skip_first=99))
    reply = request(mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "1011",
                                    "timeout": 0.3, "retries": 2}, timeout=30)
    assert not reply["ok"]
    assert reply["attempts"] == 3 and "no request answer" in reply["error"]
    dau.close()


def test_gateway_command_refusal_code_reported(mosquitto, gateway, gw_engine):
    dau = _connect(gateway, answering(qn_rtn=2))
    reply = request(mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "3011",
                                    "params": {"PolId": "a21026"}}, timeout=30)
    assert not reply["ok"] and reply["qn_rtn"] == 2 and "rejected" in reply["error"]
    dau.close()


def test_gateway_command_to_offline_mn(mosquitto, gateway):
    reply = request(mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "1011"},
                    timeout=10)
    assert not reply["ok"] and "has not connected" in reply["error"]


def test_gateway_build_cp_checks():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert build_cp("3011", now=now, params={"PolId": "a21026"}) == "PolId=a21026"
    assert build_cp("1012", now=now) == "SystemTime=20261201080000"
    with pytest.raises(CommandError, match="needs the pollutant"):
        build_cp("3011", now=now)
    with pytest.raises(CommandError, match="needs --begin"):
        build_cp("2051", now=now)
    with pytest.raises(CommandError, match="takes no parameter"):
        build_cp("3011", now=now, params={"PolId": "a21026", "X": "1"})
    with pytest.raises(CommandError, match="not a command"):
        build_cp("9999", now=now)


def test_gateway_resent_upload_counted_once(mosquitto, gateway, ingest, gw_engine):
    history = {minute(1): 41.0}
    base = answering(history)

    def twice(f):  # the DAU resends its upload, as one does when a 9014 is late
        out = base(f)
        return out[:2] + out[1:] if len(out) == 3 else out
    dau = _connect(gateway, twice)
    reply = request(mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "2051",
                                    "begin": minute(1).isoformat(), "end": minute(1).isoformat()},
                    timeout=30)
    assert reply["ok"] and len(reply["uploads"]) == 1, reply
    wait_for(lambda: len([a for a in dau.answers("9014") if a.qn == reply["qn"]]) == 2, 10,
             "both copies answered")
    dau.close()
