"""The gateway end to end: real TCP, real Mosquitto, real ingest into SQLite."""

from __future__ import annotations

import time

import sqlalchemy as sa

from envcal.protocols import hj212
from tests.gateway.support import AZ17, MN17, MN25, PW17, SocketDau, data_frame, minute
from tests.support.mqtt_ingest import count, wait_for


def readings(eng) -> int:
    return count(eng, "reading", f"where analyzer_id = '{AZ17}'")


def test_gateway_glued_split_and_garbage_frames_all_stored_and_answered(gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    frames = [data_frame(MN17, minute(i), 10.0 + i) for i in range(6)]
    dau.send(frames[0] + frames[1] + frames[2])  # glued in one write
    for b in range(0, len(frames[3]), 7):  # split over many writes
        dau.send(frames[3][b:b + 7])
        time.sleep(0.002)
    dau.send(b"\x00garbage##xx" + frames[4] + b"noise" + frames[5])  # garbage interleaved
    qns = {hj212.decode_frame(f).qn for f in frames}
    wait_for(lambda: {a.qn for a in dau.answers("9014")} >= qns, 10, "six 9014 answers")
    for a in dau.answers("9014"):
        assert (a.st, a.mn, a.pw, a.flag, a.fields, a.values) == ("91", MN17, PW17, 4, {}, {})
    wait_for(lambda: readings(gw_engine) == 12, 10, "12 readings stored")
    # the garbage reached the dead-letter table with the peer address
    wait_for(lambda: count(gw_engine, "dead_letter") >= 2, 10, "garbage dead-lettered")
    with gw_engine.connect() as c:
        rows = c.execute(sa.text("select payload, reason, peer, topic from dead_letter")).all()
    assert any(r.payload.startswith(b"\x00garbage") for r in rows)
    assert all(r.peer and r.peer.startswith("127.0.0.1:") for r in rows)
    assert all(r.topic == "envcal/gateway/deadletter" and r.reason.startswith("gateway: ") for r in rows)
    dau.close()


def test_gateway_no_answer_when_flag_does_not_ask(gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    dau.send(data_frame(MN17, minute(0), 1.0, flag=4))
    wait_for(lambda: readings(gw_engine) == 2, 10, "readings stored")
    time.sleep(0.3)
    assert dau.answers("9014") == []
    dau.close()


def test_gateway_refusals_dead_lettered_without_data_answer(gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    good = data_frame(MN17, minute(1), 5.0)
    bad_crc = good[:-6] + (b"0000" if good[-6:-2] != b"0000" else b"1111") + b"\r\n"
    unknown = data_frame("FF0000000000000000000000", minute(2), 5.0)
    wrong_pw = data_frame(MN17, minute(3), 5.0, pw="999999")
    dau.send(bad_crc + unknown + wrong_pw)
    # a request (1013) with a wrong PW gets 9011 QnRtn=3 (HJ 212-2017 Table 7)
    req = hj212.encode_frame(cn="1013", mn=MN17, qn="20261201080000001", st="31", pw="999999",
                             flag=5, cp={})
    dau.send(req)
    f = dau.wait(lambda f: f.cn == "9011", what="9011")
    assert (f.qn, f.fields["QnRtn"], f.st) == ("20261201080000001", "3", "91")
    wait_for(lambda: count(gw_engine, "dead_letter") == 4, 10, "four dead letters")
    with gw_engine.connect() as c:
        rows = c.execute(sa.text("select payload, reason, peer, analyzer_id from dead_letter order by id")).all()
    reasons = sorted(r.reason for r in rows)
    assert any("bad CRC" in r for r in reasons)
    assert any("unknown MN" in r for r in reasons)
    assert sum("wrong PW" in r for r in reasons) == 2
    assert {r.payload for r in rows} == {bad_crc, unknown, wrong_pw, req}
    assert all(r.peer.startswith("127.0.0.1:") for r in rows)
    assert dau.answers("9014") == []
    assert readings(gw_engine) == 0
    dau.close()


def test_gateway_answers_only_after_puback(mosquitto, gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    frames = [data_frame(MN17, minute(i), 20.0 + i) for i in range(3)]
    dau.send(frames[0])
    dau.wait(lambda f: f.cn == "9014", what="first answer")
    mosquitto.stop()
    wait_for(lambda: not gateway.gw.link.connected.is_set(), 10, "gateway sees the broker gone")
    dau.send(frames[1])
    unknown = data_frame("FF0000000000000000000000", minute(9), 1.0)
    dau.send(unknown)  # refused while the broker is away: its dead letter waits in the client
    time.sleep(1.0)
    assert len(dau.answers("9014")) == 1, "answered a frame the broker never acknowledged"
    mosquitto.start()
    wait_for(lambda: gateway.gw.link.connected.is_set(), 20, "gateway reconnected")
    assert ingest.ready.wait(20)
    for f in frames[1:]:  # the DAU resends what was not answered
        dau.send(f)
    wait_for(lambda: len({a.qn for a in dau.answers("9014")}) == 3, 15, "all answered")
    wait_for(lambda: readings(gw_engine) == 6, 15, "every value stored")
    wait_for(lambda: count(gw_engine, "dead_letter") == 1, 15, "the refusal stored after the outage")
    time.sleep(0.3)
    assert readings(gw_engine) == 6
    dau.close()


def test_gateway_resent_frame_stored_once(gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    f = data_frame(MN17, minute(0), 3.0)
    dau.send(f + f)
    wait_for(lambda: len(dau.answers("9014")) == 2, 10, "both copies answered")
    wait_for(lambda: count(gw_engine, "hj212_frame") == 1, 10, "frame kept")
    time.sleep(0.3)
    assert readings(gw_engine) == 2
    assert count(gw_engine, "hj212_frame") == 1  # same bytes, same hash
    dau.close()


def test_gateway_time_calibration_request_then_set_clock(gateway, ingest, gw_engine):
    got = []

    def on_command(f):
        got.append(f)
        return [hj212.encode_frame(cn="9011", mn=f.mn, qn=f.qn, st="91", pw=f.pw, flag=4,
                                   cp="QnRtn=1"),
                hj212.encode_frame(cn="9012", mn=f.mn, qn=f.qn, st="91", pw=f.pw, flag=4,
                                   cp="ExeRtn=1")]
    dau = SocketDau(gateway.address, on_command=on_command)
    dau.send(hj212.encode_frame(cn="1013", mn=MN17, qn="20261201080000002", st="31", pw=PW17,
                                flag=5, cp={}))
    a = dau.wait(lambda f: f.cn == "9013", what="9013")
    assert (a.qn, a.st, a.flag) == ("20261201080000002", "91", 4)
    cmd = dau.wait(lambda f: f.cn == "1012", what="1012 set clock")
    assert cmd.flag == 5 and cmd.st == "31" and cmd.pw == PW17
    assert len(cmd.fields["SystemTime"]) == 14
    dau.close()


def test_gateway_2025_heartbeat_and_status(mosquitto, gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    dau.send(hj212.encode_frame(cn="9015", mn=MN25, qn="20261201080000003", st="31", pw="123456",
                                flag=9, cp=""))
    a = dau.wait(lambda f: f.cn == "9013", what="9013 to the heartbeat")
    assert (a.flag, a.qn, a.mn) == (8, "20261201080000003", MN25)
    wait_for(lambda: ingest.status.get("GW-CEMS-25", ("",))[0] == "online", 10, "online status")
    dau.close()
    wait_for(lambda: ingest.status.get("GW-CEMS-25", ("",))[0] == "offline", 10, "offline status")


def test_gateway_split_upload_each_packet_answered(gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    t = minute(0)
    p1 = hj212.encode_frame(cn="2051", mn=MN17, qn="20261201080000020", st="31", pw=PW17, flag=7,
                            data_time=t, cp={"a21026-Avg": 1.5}, pnum=2, pno=1)
    p2 = hj212.encode_frame(cn="2051", mn=MN17, qn="20261201080000020", st="31", pw=PW17, flag=7,
                            data_time=t, cp={"a21002-Avg": 2.5}, pnum=2, pno=2)
    dau.send(p1 + p2)
    wait_for(lambda: len(dau.answers("9014")) == 2, 10, "two answers")
    assert {a.qn for a in dau.answers("9014")} == {"20261201080000020"}
    assert {a.flag for a in dau.answers("9014")} == {4}  # no PNUM/PNO, no answer requested
    wait_for(lambda: readings(gw_engine) == 2, 10, "both packets stored")
    dau.close()


def test_gateway_many_mns_on_one_connection_latest_route_wins(gateway, ingest, gw_engine):
    first = SocketDau(gateway.address)
    first.send(data_frame(MN17, minute(0), 1.0) + data_frame(MN25, minute(0), 1.0, pw="123456"))
    wait_for(lambda: len(first.answers("9014")) == 2, 10, "answers to both MNs")
    gw = gateway.gw
    assert gw.routes[MN17] is gw.routes[MN25]
    second = SocketDau(gateway.address)
    second.send(data_frame(MN17, minute(1), 1.0))
    second.wait(lambda f: f.cn == "9014")
    assert gw.routes[MN17] is not gw.routes[MN25]
    first.close()
    wait_for(lambda: not gw.devices[MN25].online, 10, "MN25 offline with its connection")
    assert gw.devices[MN17].online  # its route had moved to the second connection
    wait_for(lambda: ingest.status.get("GW-CEMS-25", ("",))[0] == "offline", 10, "ingest: MN25 offline")
    assert ingest.status.get("GW-CEMS-17", ("",))[0] == "online"
    second.close()


def test_gateway_mn_assignment_and_key_exchange_left_to_operator(gateway, ingest, gw_engine, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="envcal.gateway")
    dau = SocketDau(gateway.address)
    dau.send(hj212.encode_frame(cn="1001", mn=MN25, qn="20261201080000030", st="31", pw="123456",
                                flag=9, cp="i23005-Info=DAU-1;i23006-Info=CPU-1"))
    a = dau.wait(lambda f: f.cn == "9013", what="9013 to 1001")
    assert (a.qn, a.flag) == ("20261201080000030", 8)
    assert "MN assignment" in caplog.text
    dau.send(hj212.encode_frame(cn="1014", mn=MN25, qn="20261201080000031", st="31", pw="123456",
                                flag=9, cp="SKCreateTime=20261201080000"))
    r = dau.wait(lambda f: f.cn == "9011", what="9011 to 1014")
    assert (r.qn, r.fields["QnRtn"]) == ("20261201080000031", "2")
    wait_for(lambda: count(gw_engine, "dead_letter", "where reason like '%key exchange%'") == 1, 10,
             "1014 dead-lettered")
    dau.close()


def test_gateway_quirky_frame_accepted_and_counted(gateway, ingest, gw_engine):
    dau = SocketDau(gateway.address)
    f = hj212.encode_frame(cn="2051", mn=MN17, qn="20261201080000040", st="31", pw=PW17, flag=5,
                           cp="DataTime=20261201160000123;a21026-Avg=4.0,a21026-Flag=N")
    dau.send(f)
    dau.wait(lambda x: x.cn == "9014", what="answer to a frame with DataTime milliseconds")
    wait_for(lambda: readings(gw_engine) == 1, 10, "stored")
    assert gateway.gw.devices[MN17].counts["quirk:datetime_ms"] == 1
    state = gateway.gw.state()
    assert [d["counts"]["quirk:datetime_ms"] for d in state["devices"] if d["mn"] == MN17] == [1]
    dau.close()
