"""Backfill: a hole in a DAU's minute data is asked for once and filled exactly once."""

from __future__ import annotations

import time

from envcal.gateway.backfill import HoleFinder
from tests.gateway.support import MN17, GatewayThread, SocketDau, answering, data_frame, minute
from tests.support.mqtt_ingest import count, wait_for


def test_gateway_hole_finder_learns_minute_interval():
    f = HoleFinder()
    assert f.see("M", "2051", minute(0)) is None
    assert f.see("M", "2051", minute(1)) is None
    assert f.see("M", "2051", minute(2)) is None
    hole = f.see("M", "2051", minute(6))
    assert (hole.after, hole.before) == (minute(2), minute(6))
    assert f.see("M", "2051", minute(4)) is None  # older: a backfilled record, no new hole
    assert f.see("M", "2061", minute(0)) is None
    assert f.see("M", "2061", minute(60)) is None  # hourly data: one hour is no hole
    assert f.see("M", "2061", minute(180)) is not None


def test_gateway_backfill_fills_hole_exactly_once(mosquitto, ingest, gw_engine):
    g = GatewayThread(mosquitto.url, backfill=True, backfill_gap=0.0).start()
    try:
        history = {minute(i): 50.0 + i for i in range(0, 8)}
        on_command = answering(history)
        dau = SocketDau(g.address, on_command=on_command)
        for i in (0, 1, 2, 6, 7):  # minutes 3, 4, 5 never arrived
            dau.send(data_frame(MN17, minute(i), history[minute(i)]))
        req = dau.wait(lambda f: f.cn == "2051" and f.st != "91", 15, "a backfill request")
        assert (req.fields["BeginTime"], req.fields["EndTime"]) == ("20261201160201", "20261201160559")
        wait_for(lambda: count(gw_engine, "reading") == 16, 15, "the hole filled")
        # the DAU sends minute 6 again: no new hole, no second request
        dau.send(data_frame(MN17, minute(6), history[minute(6)]))
        time.sleep(1.0)
        assert on_command.seen["n"] == 1
        assert count(gw_engine, "reading") == 16
        res = g.gw.backfill.results
        assert len(res) == 1 and res[0]["ok"] and len(res[0]["uploads"]) == 3
        dau.close()
    finally:
        g.stop()
