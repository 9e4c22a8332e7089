"""Caps of the gateway: connections, idle time, frame size, allowed peers; each refusal logged."""

from __future__ import annotations

import ipaddress
import logging
import socket
import time

from envcal.gateway.server import Limits
from tests.gateway.support import MN17, GatewayThread, SocketDau, data_frame, minute
from tests.support.mqtt_ingest import count, wait_for


def _closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError, OSError):
        return True


def test_gateway_limits_connections_idle_and_frame_size(mosquitto, ingest, gw_engine, caplog):
    caplog.set_level(logging.INFO, logger="envcal.gateway")
    g = GatewayThread(mosquitto.url, backfill=False,
                      limits=Limits(max_connections=1, idle_timeout=1.0, max_frame=400)).start()
    try:
        first = SocketDau(g.address)
        first.send(data_frame(MN17, minute(0), 1.0))
        first.wait(lambda f: f.cn == "9014")
        second = socket.create_connection(g.address)
        assert _closed(second)
        second.close()
        after = data_frame(MN17, minute(1), 1.0)
        huge = b"##0999" + b"Q" * 999 + b"ABCD\r\n"  # longer than --max-frame
        first.send(huge + after)
        first.wait(lambda f: f.cn == "9014" and len(first.answers()) == 2, what="the frame after")
        wait_for(lambda: count(gw_engine, "dead_letter", "where reason like '%too large%'") >= 1, 10,
                 "oversized frame dead-lettered")
        time.sleep(1.6)  # idle longer than --idle-timeout
        assert first.closed
        text = caplog.text
        assert "refused: 1 connections already" in text and "idle for 1 s" in text
        assert "127.0.0.1:" in text
    finally:
        g.stop()


def test_gateway_allow_list_refuses_other_peers(mosquitto, caplog):
    caplog.set_level(logging.INFO, logger="envcal.gateway")
    g = GatewayThread(mosquitto.url, backfill=False,
                      allow=(ipaddress.ip_network("10.0.0.0/8"),)).start()
    try:
        s = socket.create_connection(g.address)
        assert _closed(s)
        s.close()
        wait_for(lambda: "address not in --allow" in caplog.text, 5, "refusal logged")
    finally:
        g.stop()
