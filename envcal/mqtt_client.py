"""The MQTT client of envcal's services: paho-mqtt 2.x, reading the socket in large chunks.

paho reads every incoming packet with at least three ``recv`` calls (the command byte, the
remaining-length bytes one at a time, then the rest), each a system call that releases and
re-takes the GIL. At thousands of small messages per second that is most of the network
thread's work, and every GIL hand-over competes with the ingest worker. :class:`BufferedClient`
serves those small reads from one ``recv`` of up to :data:`READ_CHUNK` bytes; paho's own packet
parsing, acknowledgement, keep-alive, TLS and reconnect logic are unchanged.

Likewise each ``ack()`` queues one 4-byte PUBACK, wakes the network thread through its socket
pair and is written by its own ``send``: :meth:`BufferedClient.ack_many` queues a whole batch's
PUBACKs as one write.

paho internals used, all present since paho-mqtt 2.0 (the dependency is pinned to
``>=2.1,<3`` and ``tests/test_mqtt_client.py`` exercises them against a real broker):

- ``_sock_recv(bufsize)``: the single place where paho reads its socket;
- ``loop_read()``: paho handles one packet per ``select``; bytes already buffered would not wake
  ``select`` again, so every complete packet in the buffer is handled before returning;
- ``_packet_queue(command, packet, mid, qos)``: the queue of bytes for the network thread, as
  paho's own ``_send_command_with_mid`` uses it for a PUBACK.

The buffer belongs to one socket: a new connection (reconnect) starts with an empty buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import paho.mqtt.client as mqtt

_PUBACK = struct.Struct("!BBH")

#: Bytes asked of the socket per read [bytes].
READ_CHUNK = 256 * 1024


class BufferedClient(mqtt.Client):
    """A :class:`paho.mqtt.client.Client` that reads its socket in chunks of :data:`READ_CHUNK`.

    Parameters
    ----------
    *args, **kwargs
        As :class:`paho.mqtt.client.Client`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._rsock:  # a new connection: nothing buffered belongs to it
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            # BlockingIOError (nothing to read), OSError and EOF (b"") reach paho as before
            buf = super()._sock_recv(max(bufsize, READ_CHUNK))
            if not buf:
                return buf
            pos = 0
        end = min(pos + bufsize, len(buf))
        self._rbuf, self._rpos = buf, end
        return buf[pos:end]

    def buffered(self) -> int:
        """Bytes received from the socket and not yet handed to paho's packet parser."""
        if self._sock is not self._rsock:
            return 0
        return len(self._rbuf) - self._rpos

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self.buffered():
            rc = super().loop_read(1)
        return rc

    def ack_many(self, messages: Iterable[tuple[int, int]]) -> None:
        """Acknowledge many received messages with one write (``manual_ack=True``).

        Parameters
        ----------
        messages : iterable of (mid, qos)
            Packet ids with their QoS, in the order to acknowledge. QoS 0 needs nothing; QoS 2
            goes through paho's own ``ack``.

        References
        ----------
        OASIS MQTT Version 5.0, §3.4 (PUBACK: with reason code 0 and no properties the
        remaining length is 2, §3.4.2.1).
        """
        pack = _PUBACK.pack
        puback = mqtt.PUBACK
        out = []
        for mid, qos in messages:
            if qos == 1:
                out.append(pack(puback, 2, mid))
            elif qos == 2:
                self.ack(mid, qos)
        if out:
            self._packet_queue(puback, b"".join(out), 0, 1)
