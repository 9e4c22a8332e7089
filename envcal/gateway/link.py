"""The gateway's MQTT client: QoS 1 publishes awaited as asyncio futures resolved by PUBACK.

One paho client runs its network thread (``loop_start``); :meth:`BrokerLink.publish` returns
True only when the broker acknowledged the message with a success reason code. A message
published while the link is down is not sent at all (the DAU gets no answer and sends
again); one whose PUBACK does not come in time, or whose connection drops first, resolves
False. Its late PUBACK (paho resends in-flight messages after a reconnect) is ignored.

References
----------
OASIS MQTT Version 5.0, §3.3 (PUBLISH), §3.4 (PUBACK and its reason codes), §4.3.2 (QoS 1).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from envcal.broker import parse_broker_url

log = logging.getLogger("envcal.gateway.mqtt")


class BrokerLink:
    """One paho MQTT v5 client shared by every DAU connection.

    Parameters
    ----------
    broker_url : str
        ``mqtt://host:port`` or ``mqtts://host:port``.
    client_id : str
        MQTT client id.
    username, password : str, optional
        Credentials (as ``envcal ingest`` takes them); the password is never logged.
    ca_file : str, optional
        PEM CA bundle for ``mqtts://``.
    keepalive : int
        MQTT keep-alive [s].
    will : (topic, payload), optional
        Last will, published retained by the broker if the gateway dies.

    References
    ----------
    OASIS MQTT Version 5.0, §3.1.2.5 (will), §3.4 (PUBACK), §4.3.2 (QoS 1 delivery).
    """

    def __init__(self, broker_url: str, *, client_id: str = "envcal-gateway",
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, keepalive: int = 30,
                 will: tuple[str, bytes] | None = None) -> None:
        self.host, self.port, tls = parse_broker_url(broker_url)
        self.url = broker_url
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(100_000)
        if tls:
            c.tls_set(ca_certs=ca_file)
        if username is not None:
            c.username_pw_set(username, password)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        self._client = c
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._futures: dict[int, asyncio.Future] = {}
        self._early: dict[int, bool] = {}  # PUBACKs that came before their future was stored
        self._orphans: set[int] = set()  # mids whose PUBACK nobody waits for any more
        self._subs: dict[str, Callable[[str, bytes], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = threading.Event()
        self.refused: str | None = None  # the broker's reason when it refused the connection

    # ------------------------------------------------------------------ lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connect in the background (paho retries with back-off) and start the network thread."""
        self._loop = loop
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect (the will is not sent) and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the link is up within ``timeout`` [s]."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.connected.wait, timeout)

    def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Call ``handler(topic, payload)`` on the event loop for every message on ``topic``
        (re-subscribed after every reconnect)."""
        self._subs[topic] = handler
        if self.connected.is_set():
            self._client.subscribe(topic, qos=1)

    # ------------------------------------------------------------------ publishing
    async def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                      timeout: float = 10.0) -> bool:
        """Publish at QoS 1 and wait for the broker's PUBACK.

        Returns
        -------
        bool
            True when the broker acknowledged with a success reason code within ``timeout``
            [s]; False when the link is down, the broker refused, or no PUBACK came.
        """
        if not self.connected.is_set():
            return False
        fut = asyncio.get_running_loop().create_future()
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        mid = info.mid
        with self._lock:
            early = self._early.pop(mid, None)
            if early is None:
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._orphans.add(mid)  # queued by paho for a reconnect: nobody waits
                    return False
                self._futures[mid] = fut
        if early is not None:
            return early
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            with self._lock:
                if self._futures.pop(mid, None) is fut:
                    self._orphans.add(mid)
            log.warning("no PUBACK for %s within %.1f s", topic, timeout)
            return False

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 without waiting (paho queues it while the link is down)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            if self._early.pop(info.mid, None) is None:
                self._orphans.add(info.mid)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            log.error("broker %s refused the connection: %s", self.url, reason_code)
            return
        self.refused = None
        with self._lock:
            self._early.clear()
        for topic in self._subs:
            client.subscribe(topic, qos=1)
        self.connected.set()
        log.info("connected to %s", self.url)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        with self._lock:
            pending, self._futures = self._futures, {}
            self._orphans.update(pending)
            self._early.clear()
        for fut in pending.values():
            self._resolve(fut, False)
        log.warning("disconnected from %s (%s); %d hand-offs unconfirmed", self.url,
                    reason_code, len(pending))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        ok = not reason_code.is_failure
        if not ok:
            log.error("broker refused a publish (mid %d): %s", mid, reason_code)
        with self._lock:
            fut = self._futures.pop(mid, None)
            if fut is None:
                if mid in self._orphans:
                    self._orphans.discard(mid)
                else:
                    self._early[mid] = ok
                return
        self._resolve(fut, ok)

    def _on_message(self, client, userdata, m) -> None:
        handler = self._subs.get(m.topic)
        if handler is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(handler, m.topic, bytes(m.payload))

    def _resolve(self, fut: asyncio.Future, ok: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def done() -> None:
            if not fut.done():
                fut.set_result(ok)
        loop.call_soon_threadsafe(done)
