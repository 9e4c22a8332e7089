"""envcal.mqtt_client.BufferedClient against a real Mosquitto: every packet parsed from the
chunked reads, batch acknowledgements really acknowledge, reconnects start clean."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from envcal import mqtt_client
from envcal.mqtt_client import BufferedClient

TOPIC = "envcal/test/buffered/data"


def _props() -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 600
    p.ReceiveMaximum = 1000
    return p


def _publish(broker, payloads: list[bytes]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="buffered-pub", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(500)
    c.connect(broker.host, broker.port)
    c.loop_start()
    infos = [c.publish(TOPIC, p, qos=1) for p in payloads]
    for i in infos:
        i.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


class _Receiver:
    """Subscribe with a persistent session; collect (mid, qos, payload, dup)."""

    def __init__(self, broker, cls, client_id: str) -> None:
        self.got: list[tuple[int, int, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                     manual_ack=True)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe([(TOPIC, SubscribeOptions(qos=1))])
        self.c.connect(broker.host, broker.port, clean_start=False, properties=_props())
        self.c.loop_start()
        assert self.subscribed.wait(10), "subscription not confirmed"

    def _on_message(self, c, u, m) -> None:
        with self.lock:
            self.got.append((m.mid, m.qos, bytes(m.payload), bool(m.dup)))

    def wait(self, n: int, timeout: float = 60) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.01)
        raise AssertionError(f"received {len(self.got)} of {n}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_buffered_client_receives_every_packet_and_ack_many_acknowledges(mosquitto):
    payloads = [f'{{"seq": {i}, "pad": "{"x" * (i % 300)}"}}'.encode() for i in range(3000)]
    _Receiver(mosquitto, BufferedClient, "buffered-sub").close()  # the session exists, offline
    _publish(mosquitto, payloads)  # queued for the session: they arrive back to back
    r = _Receiver(mosquitto, BufferedClient, "buffered-sub")
    got = []
    while len(got) < len(payloads):  # ack in batches, as the ingest worker does
        new = r.wait(len(got) + 1)[len(got):]
        r.c.ack_many([(mid, qos) for mid, qos, _p, _d in new])
        got.extend(new)
    assert [p for _m, _q, p, _d in got] == payloads
    time.sleep(0.5)
    r.close()
    # a plain paho client on the same session: nothing left unacknowledged to redeliver
    again = _Receiver(mosquitto, mqtt.Client, "buffered-sub")
    time.sleep(1.5)
    assert again.got == []
    again.close()


def test_buffered_client_unacked_messages_are_redelivered(mosquitto):
    payloads = [f"m{i}".encode() for i in range(50)]
    _Receiver(mosquitto, BufferedClient, "buffered-unacked").close()
    _publish(mosquitto, payloads)
    r = _Receiver(mosquitto, BufferedClient, "buffered-unacked")
    got = r.wait(50)
    r.c.ack_many([(mid, qos) for mid, qos, _p, _d in got[:20]])
    time.sleep(0.5)
    r.close()
    again = _Receiver(mosquitto, BufferedClient, "buffered-unacked")
    rest = again.wait(30)
    again.c.ack_many([(mid, qos) for mid, qos, _p, _d in rest])
    assert [p for _m, _q, p, _d in rest] == payloads[20:]
    assert all(d for _m, _q, _p, d in rest)  # redeliveries carry the DUP flag
    again.close()


def test_buffered_client_message_larger_than_read_chunk(mosquitto, monkeypatch):
    monkeypatch.setattr(mqtt_client, "READ_CHUNK", 4096)  # a packet spans many reads
    payloads = [bytes([65 + i % 26]) * (50_000 + i) for i in range(5)] + [b"tail"]
    _Receiver(mosquitto, BufferedClient, "buffered-big").close()
    _publish(mosquitto, payloads)
    r = _Receiver(mosquitto, BufferedClient, "buffered-big")
    got = r.wait(len(payloads))
    r.c.ack_many([(mid, qos) for mid, qos, _p, _d in got])
    assert [p for _m, _q, p, _d in got] == payloads
    r.close()


def test_buffered_client_reconnect_starts_with_empty_buffer(mosquitto):
    """After a broker restart the client reconnects and parses the new stream from its start."""
    r = _Receiver(mosquitto, BufferedClient, "buffered-restart")
    _publish(mosquitto, [b"before"])
    first = r.wait(1)
    r.c.ack_many([(m, q) for m, q, _p, _d in first])
    time.sleep(0.3)
    r.c._rbuf, r.c._rpos = b"\xff\xff\xff", 0  # stale bytes of the old socket must never be parsed
    r.subscribed.clear()
    mosquitto.stop()
    mosquitto.start()
    assert r.subscribed.wait(30), "did not reconnect and resubscribe"
    _publish(mosquitto, [b"after"])
    got = r.wait(2)
    assert [p for _m, _q, p, _d in got] == [b"before", b"after"]
    r.close()
