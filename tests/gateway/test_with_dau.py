"""The gateway with the project's DAU emulator (envcal.dau): a 2025 DAU with heartbeats,
SM4-encrypted CP and RF=1 resends across a broker outage; a remote 3011 with the emulator's
check readings; a backfill from the emulator's history."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from envcal.dau import Dau
from envcal.gateway.control import request
from tests.gateway.support import MN17, MN25, PW17, GatewayThread
from tests.support.mqtt_ingest import count, wait_for

KEY = bytes([0x30] * 16)
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def _cp(v: float) -> str:
    return f"a21026-Avg={v},a21026-Flag=N;a21002-Avg={v * 2},a21002-Flag=N"


async def _poll(fn, timeout: float, what: str):
    return await asyncio.to_thread(wait_for, fn, timeout, what)


@pytest.fixture
def gw25(mosquitto):
    g = GatewayThread(mosquitto.url, backfill=True, backfill_gap=0.0,
                      keys={"GW-CEMS-25": KEY}).start()
    yield g
    g.stop()


def test_gateway_dau_2025_sm4_heartbeats_rf_resends_across_outage(mosquitto, gw25, ingest, gw_engine):
    async def main():
        d = Dau(*gw25.address, MN25, st="31", version=2, key=KEY, timeout_s=0.5, retries=3,
                heartbeat_s=0.2, reconnect_s=0.2)
        await d.start()
        await asyncio.wait_for(d.connected.wait(), 5)
        for i in range(3):
            await d.upload("2051", T0 + dt.timedelta(minutes=i), _cp(1.0 + i))
        mosquitto.stop()
        later = [d.submit("2051", T0 + dt.timedelta(minutes=i), _cp(1.0 + i)) for i in range(3, 6)]
        await asyncio.sleep(1.2)  # resends (RF=1) go unanswered while the broker is away
        assert d.stats["resent"] >= 1 and d.stats["answered"] == 3
        mosquitto.start()
        await asyncio.wait_for(asyncio.gather(*later), 40)
        await asyncio.sleep(0.5)
        await d.stop()
        return d
    d = asyncio.run(main())
    assert d.stats["heartbeats_answered"] >= 1
    assert all(f.flag == 8 for f in d.received if f.cn in ("9013", "9014"))
    wait_for(lambda: count(gw_engine, "reading", "where analyzer_id = 'GW-CEMS-25'") == 12, 20,
             "every value stored")
    assert count(gw_engine, "hj212_frame") == 6  # a resend has its original's digest
    assert count(gw_engine, "dead_letter") == 0
    dev = gw25.gw.devices[MN25]
    assert dev.counts["heartbeats"] >= 1 and dev.counts["resent"] >= 1


def test_gateway_dau_backfill_and_calibration(mosquitto, gw25, ingest, gw_engine):
    def check(cn, polid):
        return [("2011", T0 + dt.timedelta(hours=1), f"{polid}-Rtd=99.5,{polid}-Flag=C")]

    async def main():
        d = Dau(*gw25.address, MN17, pw=PW17, st="31", timeout_s=5, check_handler=check)
        for i in range(8):  # the DAU holds eight minutes of data ...
            d.history.setdefault("2051", {})[T0 + dt.timedelta(minutes=i)] = _cp(10.0 + i)
        await d.start()
        await asyncio.wait_for(d.connected.wait(), 5)
        for i in (0, 1, 2, 7):  # ... but only four reach envcal live
            await d.upload("2051", T0 + dt.timedelta(minutes=i), _cp(10.0 + i))
        await _poll(lambda: count(gw_engine, "reading", "where analyzer_id = 'GW-CEMS-17'") == 16, 20,
                    "the hole backfilled")
        reply = await asyncio.to_thread(
            request, mosquitto.url, {"user": "t", "action": "command", "mn": MN17, "cn": "3011",
                                     "params": {"PolId": "a21026"}}, timeout=30)
        await d.stop()
        return d, reply
    d, reply = asyncio.run(main())
    assert reply["ok"] and reply["qn_rtn"] == 1 and reply["exe_rtn"] == 1, reply
    wait_for(lambda: count(gw_engine, "reading", "where flag = 'C'") == 1, 10, "check reading stored")
    res = gw25.gw.backfill.results
    assert len(res) == 1 and res[0]["ok"]
    assert len(res[0]["uploads"]) == 4  # minutes 3..6, each with a QN of its own (Table C.21)
    assert count(gw_engine, "reading", "where analyzer_id = 'GW-CEMS-17' and analyte = 'SO2'") == 9
