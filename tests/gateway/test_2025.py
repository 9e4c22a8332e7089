"""An HJ 212-2025 DAU: heartbeats, SM4-encrypted CP (Appendix A.2 vectors), RF=1 resends."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from envcal.protocols import hj212
from tests.gateway.support import MN25, GatewayThread, SocketDau, minute
from tests.protocols.test_hj212_2025 import A2_AREA, A2_CIPHER, A2_HEAD, KEY, hexform
from tests.support.mqtt_ingest import count, wait_for


@pytest.fixture
def gateway25(mosquitto):
    g = GatewayThread(mosquitto.url, backfill=False, keys={"GW-A2": KEY, "GW-CEMS-25": KEY}).start()
    yield g
    g.stop()


def test_gateway_2025_appendix_a2_encrypted_frame_stored_and_answered(gateway25, ingest, gw_engine):
    seg = (A2_HEAD + hexform(A2_CIPHER) + "&&").encode()
    dau = SocketDau(gateway25.address)
    dau.send(b"##0295" + seg + b"2200\r\n")  # the length of the plaintext, as the standard prints it
    a = dau.wait(lambda f: f.cn == "9014", what="9014")
    assert (a.qn, a.flag, a.st, a.mn) == ("20240520210700000", 8, "91", "010000A8900016F000169DC0")
    wait_for(lambda: count(gw_engine, "reading", "where analyzer_id = 'GW-A2'") == 3, 10, "readings")
    with gw_engine.connect() as c:
        got = dict(c.execute(sa.text("select analyte, value from reading where analyzer_id = 'GW-A2'")).all())
        raw = c.execute(sa.text("select raw from hj212_frame")).scalar_one()
    assert got == {"velocity": 1.35, "flue_temp": 9.3, "flue_humidity": 3.211}
    assert A2_AREA in raw  # ingest got the plaintext: it holds no key
    dau.close()


def test_gateway_2025_heartbeat_rf_resend_and_wrong_key(gateway25, ingest, gw_engine):
    dau = SocketDau(gateway25.address)
    dau.send(hj212.encode_frame(cn="9015", mn=MN25, qn="20261201080000009", st="31", pw="123456",
                                flag=9, cp=""))
    hb = dau.wait(lambda f: f.cn == "9013", what="9013")
    assert hb.flag == 8
    t = minute(0)
    cp = {"a21026-Avg": 7.5, "a21026-Flag": "N", "a21002-Avg": 9.0, "a21002-Flag": "N"}
    first = hj212.encode_frame(cn="2051", mn=MN25, qn="20261201080000010", st="31", flag=9,
                               data_time=t, cp=cp, key=KEY)
    resend = hj212.encode_frame(cn="2051", mn=MN25, qn="20261201080000010", st="31", flag=9,
                                data_time=t, cp=cp, key=KEY, rf=True)
    dau.send(first + resend)
    wait_for(lambda: len(dau.answers("9014")) == 2, 10, "both answered")
    assert {f.flag for f in dau.answers("9014")} == {8}
    wait_for(lambda: count(gw_engine, "reading", "where analyzer_id = 'GW-CEMS-25'") == 2, 10, "stored")
    wait_for(lambda: count(gw_engine, "ingest_log") >= 1, 10, "committed")
    assert count(gw_engine, "hj212_frame") == 1  # the RF=1 resend has the original's digest
    dev = gateway25.gw.devices[MN25]
    assert dev.counts["resent"] == 1 and dev.counts["heartbeats"] == 1 and dev.ver == 2
    # a frame encrypted with another key fails its CRC: dead-lettered, not answered
    wrong = hj212.encode_frame(cn="2051", mn=MN25, qn="20261201080000011", st="31", flag=9,
                               data_time=t + dt.timedelta(minutes=1), cp=cp, key=bytes(16))
    dau.send(wrong)
    wait_for(lambda: count(gw_engine, "dead_letter") == 1, 10, "dead letter")
    with gw_engine.connect() as c:
        reason = c.execute(sa.text("select reason from dead_letter")).scalar_one()
    assert "CRC" in reason
    assert len(dau.answers("9014")) == 2
    assert count(gw_engine, "reading", "where analyzer_id = 'GW-CEMS-25'") == 2
    dau.close()
