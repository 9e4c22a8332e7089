"""The HJ 212 TCP gateway: DAU connections -> MQTT hand-off -> answers after PUBACK.

Per connection a splitter cuts the byte stream into frames. A frame from a registered MN
with the right PW is published raw to ``envcal/{station}/{analyzer}/hj212`` at QoS 1; only
after the broker's PUBACK, and only when its Flag asks for an answer, the DAU gets CN 9014
(ST=91, the frame's QN/PW/MN, Flag in the peer's version, ``CP=&&&&``). A frame that cannot
be accepted (bad CRC, unknown MN, wrong PW, garbage) gets no data answer, a request gets
9011 with the QnRtn of Table 7, and the raw bytes go to ingest's dead-letter table through
:data:`envcal.dead_letters.GATEWAY_TOPIC` with the peer and the reason.

References
----------
HJ 212-2017, clauses 6.1-6.3, 6.6.3 (Table 7), Table 9 (CN 1013, 9011-9014),
Appendix C Table C.4 (1013 -> 9013, then 1012). HJ 212-2025 notes: CN 9015 heartbeat -> 9013,
``RF=1`` resent frames, Flag version 2.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from envcal.dead_letters import GATEWAY_TOPIC, GatewayDeadLetter, encode_gateway_dead_letter
from envcal.gateway import wire
from envcal.gateway.commands import Sequencer, Target, build_cp
from envcal.gateway.link import BrokerLink
from envcal.protocols.hj212_codes import ST_BY_STATION_KIND
from envcal.registry import AnalyzerSpec, Registry, hj212_options

log = logging.getLogger("envcal.gateway")

#: CNs a DAU sends that ask the platform for something (answered 9013, or 9011 when refused).
DAU_REQUESTS = frozenset({"1013", "1014", "1001", "9015"})
#: Answers from a DAU to the platform's commands.
DAU_ANSWERS = frozenset({"9011", "9012", "9013", "9014"})


@dataclass(frozen=True)
class Limits:
    """Caps per gateway and per connection; each refusal is logged with the peer.

    References
    ----------
    HJ 212-2017, clause 6.3.1 Table 2 (frame and segment lengths).
    """

    max_connections: int = 10_000
    max_buffer: int = 64 * 1024  # bytes read from a connection at once
    max_frame: int = 8 * 1024  # whole frame [bytes] (segments over 1024 bytes are a quirk);
    # the splitter holds at most this much of a connection between reads
    idle_timeout: float = 600.0  # [s] without a byte from the peer
    publish_timeout: float = 10.0  # [s] to wait for a PUBACK


@dataclass
class Device:
    """What the gateway knows of one DAU (one registered MN)."""

    mn: str
    analyzer_id: str
    station: str
    st: str
    pw: str
    ver: int = 1
    online: bool = False
    peer: str | None = None
    last_seen: dt.datetime | None = None
    counts: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict:
        """JSON-ready state (no password)."""
        return {"mn": self.mn, "analyzer_id": self.analyzer_id, "station": self.station,
                "version": {0: "2005", 1: "2017", 2: "2025"}.get(self.ver, str(self.ver)),
                "online": self.online, "peer": self.peer,
                "last_seen": self.last_seen.isoformat() if self.last_seen else None,
                "counts": dict(self.counts)}


class Connection:
    """One DAU TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limits: Limits) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
        self.ip = str(peer[0])
        self.splitter = wire.FrameSplitter(limits.max_frame)
        self.mns: set[str] = set()
        self._wlock = asyncio.Lock()

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False when the connection is gone."""
        if self.writer.is_closing():
            return False
        async with self._wlock:
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                log.info("%s: write failed: %s", self.peer, exc)
                return False
        return True


class Gateway:
    """The gateway's state and frame handling (the asyncio TCP server is :meth:`serve`).

    Parameters
    ----------
    registry : Registry
        Analyzers with ``mn``; their ``pw`` is checked when set.
    link : BrokerLink
        The MQTT client (started by :meth:`serve`).
    limits : Limits
    allow : iterable of networks, optional
        Peers allowed to connect (default: any).
    keys : mapping of analyzer id to bytes, optional
        SM4 keys of analyzers that encrypt CP (from the secrets file, never the registry).
    command_timeout, command_retries
        HJ 212-2017 Table 1 (default 10 s, 3 retries).

    References
    ----------
    HJ 212-2017, clauses 6.1-6.3, Table 7 (QnRtn), Table 9 (CN 1013, 9011-9014), Appendix C
    Table C.4; HJ 212-2025 notes 2.1 (9015 heartbeat), 2.2.1 (RF), F3.12-F3.15 (SM4).
    """

    def __init__(self, registry: Registry, link: BrokerLink, *, limits: Limits = Limits(),
                 allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
                 keys: dict[str, bytes] | None = None, command_timeout: float = 10.0,
                 command_retries: int = 3) -> None:
        self.registry = registry
        self.link = link
        self.limits = limits
        self.allow = tuple(allow)
        self.keys = dict(keys or {})
        self.by_mn: dict[str, AnalyzerSpec] = {a.mn: a for a in registry.analyzers.values() if a.mn}
        self.devices: dict[str, Device] = {}
        self.routes: dict[str, Connection] = {}
        self.connections: set[Connection] = set()
        self.counts: collections.Counter = collections.Counter()
        self.commands = Sequencer(self._send_to, self._target, timeout=command_timeout,
                                  retries=command_retries)
        self.backfill = None  # an envcal.gateway.backfill.Backfill, when enabled
        self._server: asyncio.base_events.Server | None = None
        self.address: tuple[str, int] | None = None
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ server
    async def serve(self, host: str, port: int) -> tuple[str, int]:
        """Start listening (start the broker link first); returns the bound address.

        Raises
        ------
        OSError
            The address cannot be bound (in use, not local, no permission).
        """
        self._server = await asyncio.start_server(self._client, host, port, limit=2 ** 16)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        for a in self.by_mn.values():  # nothing is connected yet
            if a.protocol == "hj212":  # an MN'd JSON analyzer keeps its own status
                self.link.publish_nowait(_topic(a, "status"), b"offline", retain=True)
        return sock[0], sock[1]

    async def close(self) -> None:
        """Stop accepting, close every connection, mark their DAUs offline, stop the link."""
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.writer.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.sleep(0)
        for d in self.devices.values():
            if d.online:
                d.online = False
                self.link.publish_nowait(_topic(self.by_mn[d.mn], "status"), b"offline", retain=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0.2)  # let paho write the last status messages

    def spawn(self, coro) -> asyncio.Task:
        """A background task kept until done (cancelled by :meth:`close`)."""
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _allowed(self, ip: str) -> bool:
        if not self.allow:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        return any(addr in net for net in self.allow)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, self.limits)
        if not self._allowed(conn.ip):
            log.warning("%s: refused: address not in --allow", conn.peer)
            self.counts["refused_not_allowed"] += 1
            writer.close()
            return
        if len(self.connections) >= self.limits.max_connections:
            log.warning("%s: refused: %d connections already (--max-connections)", conn.peer,
                        len(self.connections))
            self.counts["refused_max_connections"] += 1
            writer.close()
            return
        self.connections.add(conn)
        self.counts["connections"] += 1
        log.info("%s: connected", conn.peer)
        try:
            await self._read_loop(conn)
        finally:
            self.connections.discard(conn)
            self._gone(conn)
            writer.close()

    async def _read_loop(self, conn: Connection) -> None:
        lim = self.limits
        while True:
            try:
                data = await asyncio.wait_for(conn.reader.read(lim.max_buffer), lim.idle_timeout)
            except TimeoutError:
                log.warning("%s: closed: idle for %g s (--idle-timeout)", conn.peer, lim.idle_timeout)
                self.counts["closed_idle"] += 1
                return
            except (ConnectionError, OSError) as exc:
                log.info("%s: read failed: %s", conn.peer, exc)
                return
            if not data:
                log.info("%s: disconnected", conn.peer)
                for item in conn.splitter.flush():
                    self._dead(conn, item.raw, item.reason)
                return
            items = conn.splitter.feed(data)
            handled = []
            for item in items:
                if isinstance(item, wire.Skipped):
                    log.warning("%s: skipped %d bytes: %s", conn.peer, len(item.raw), item.reason)
                    self._dead(conn, item.raw, item.reason)
                    continue
                handled.append(self.spawn(self._frame(conn, item)))
            if handled:  # back-pressure: this connection's frames are handed off first
                await asyncio.gather(*handled, return_exceptions=True)

    # ------------------------------------------------------------------ frames
    async def _frame(self, conn: Connection, raw: bytes) -> None:
        try:
            await self._handle(conn, raw)
        except Exception:  # noqa: BLE001 - one bad frame must not end the connection
            log.exception("%s: internal error on a frame; dead-lettered", conn.peer)
            self._dead(conn, raw, "internal error in the gateway")

    async def _handle(self, conn: Connection, raw: bytes) -> None:
        self.counts["frames"] += 1
        head = wire.peek_header(raw)
        known = self.by_mn.get(head.get("MN", ""))
        try:
            frame = wire.decode(raw, **self._options(known))
        except wire.Hj212Error as exc:
            reason = str(exc)
            code = wire.QnRtn.CRC_ERROR if reason.startswith("bad CRC") else wire.QnRtn.UNKNOWN
            await self._refuse(conn, raw, reason, head, code, analyzer=known)
            return
        a = self.by_mn.get(frame.mn or "")
        if a is None:
            await self._refuse(conn, raw, f"unknown MN {frame.mn!r} (not in the registry)", head,
                               wire.QnRtn.MN_ERROR)
            return
        if a.pw is not None and frame.pw != a.pw:
            await self._refuse(conn, raw, f"wrong PW for MN {frame.mn} (analyzer {a.id})", head,
                               wire.QnRtn.PW_ERROR, analyzer=a)
            return
        dev = self._seen(conn, a, frame)
        cn = frame.cn
        if cn in DAU_ANSWERS:
            if not self.commands.on_frame(frame):
                log.info("%s: %s from %s for no running command (QN %s)", conn.peer, cn, frame.mn,
                         frame.qn)
            return
        if cn == "9015":
            dev.counts["heartbeats"] += 1
            await conn.send(wire.answer(frame, "9013"))
            return
        if cn == "1013":
            await conn.send(wire.answer(frame, "9013"))
            log.info("%s: time calibration request from %s: setting its clock", conn.peer, frame.mn)
            self.spawn(self._set_clock(frame.mn))
            return
        if cn == "1001":
            log.warning("%s: MN %s sent its hardware ids (CN 1001) for MN assignment: left to an "
                        "operator (envcal gateway send ... 1002)", conn.peer, frame.mn)
            await conn.send(wire.answer(frame, "9013"))
            return
        if cn == "1014":
            await self._refuse(conn, raw, "key exchange (CN 1014) is done by an operator", head,
                               wire.QnRtn.REJECTED, analyzer=a)
            return
        command = self.commands.on_frame(frame)
        if command:
            dev.counts["command_uploads"] += 1
        await self._hand_off(conn, dev, a, frame, raw, command=command)

    async def _hand_off(self, conn: Connection, dev: Device, a: AnalyzerSpec, frame: wire.Frame,
                        raw: bytes, *, command: bool = False) -> None:
        payload = frame.plaintext if frame.encrypted and frame.plaintext else raw
        ok = await self.link.publish(_topic(a, "hj212"), payload,
                                     timeout=self.limits.publish_timeout)
        if not ok:
            dev.counts["not_handed_off"] += 1
            log.warning("%s: frame QN %s of %s not confirmed by the broker: no answer (the DAU "
                        "sends it again)", conn.peer, frame.qn, frame.mn)
            return
        dev.counts["handed_off"] += 1
        if frame.rf:
            dev.counts["resent"] += 1
        if self.backfill is not None:
            self.backfill.on_data(dev, frame, command=command)
        if wire.wants_answer(frame.flag):
            if await conn.send(wire.answer(frame, "9014")):
                dev.counts["answered"] += 1

    def _options(self, a: AnalyzerSpec | None) -> dict:
        """Decode options of an analyzer: its opt-ins (CRC variant, encoding) and SM4 key."""
        return hj212_options(a, self.keys) if a is not None else {}

    async def _refuse(self, conn: Connection, raw: bytes, reason: str, head: dict[str, str],
                      code: int, analyzer: AnalyzerSpec | None = None) -> None:
        """Dead-letter a frame; a request gets 9011 with ``code`` (Table 7), data nothing."""
        log.warning("%s: refused frame (MN %s, CN %s): %s", conn.peer, head.get("MN"),
                    head.get("CN"), reason)
        self.counts["refused"] += 1
        self._dead(conn, raw, reason, mn=head.get("MN"), analyzer=analyzer)
        if head.get("CN") in DAU_REQUESTS and head.get("MN"):
            await conn.send(wire.answer_header(head, "9011", f"QnRtn={int(code)}"))

    def _dead(self, conn: Connection, raw: bytes, reason: str, *, mn: str | None = None,
              analyzer: AnalyzerSpec | None = None) -> None:
        self.counts["dead_letters"] += 1
        a = analyzer or (self.by_mn.get(mn) if mn else None)
        d = GatewayDeadLetter(peer=conn.peer, reason=reason, raw=bytes(raw), mn=mn,
                              analyzer_id=a.id if a else None,
                              received_at=dt.datetime.now(dt.UTC).isoformat())
        self.link.publish_nowait(GATEWAY_TOPIC, encode_gateway_dead_letter(d))

    # ------------------------------------------------------------------ devices
    def _seen(self, conn: Connection, a: AnalyzerSpec, frame: wire.Frame) -> Device:
        mn = a.mn or ""
        dev = self.devices.get(mn)
        if dev is None:
            st = ST_BY_STATION_KIND.get(self.registry.stations[a.station].kind, "32")
            dev = self.devices[mn] = Device(mn=mn, analyzer_id=a.id, station=a.station, st=st,
                                            pw=a.pw or frame.pw or "")
        if frame.st and frame.st != "91":
            dev.st = frame.st
        if frame.pw:
            dev.pw = a.pw or frame.pw
        dev.ver = frame.version
        dev.last_seen = dt.datetime.now(dt.UTC)
        dev.counts["frames"] += 1
        for q in frame.quirks:
            dev.counts[f"quirk:{q}"] += 1
        old = self.routes.get(mn)
        if old is not conn:
            if old is not None:
                old.mns.discard(mn)
            self.routes[mn] = conn
            conn.mns.add(mn)
            dev.peer = conn.peer
        if not dev.online:
            dev.online = True
            log.info("%s: MN %s (analyzer %s) online", conn.peer, mn, a.id)
            self.link.publish_nowait(_topic(a, "status"), b"online", retain=True)
            if self.backfill is not None:
                self.backfill.on_online(dev)
        return dev

    def _gone(self, conn: Connection) -> None:
        for mn in list(conn.mns):
            if self.routes.get(mn) is conn:
                del self.routes[mn]
                dev = self.devices.get(mn)
                if dev is not None and dev.online:
                    dev.online = False
                    log.info("%s: MN %s offline", conn.peer, mn)
                    self.link.publish_nowait(_topic(self.by_mn[mn], "status"), b"offline",
                                             retain=True)
        conn.mns.clear()

    def _target(self, mn: str) -> Target | None:
        dev = self.devices.get(mn)
        if dev is None:
            return None
        return Target(st=dev.st, pw=dev.pw, ver=dev.ver, key=self.keys.get(dev.analyzer_id))

    async def _send_to(self, mn: str, data: bytes) -> bool:
        conn = self.routes.get(mn)
        return conn is not None and await conn.send(data)

    async def _set_clock(self, mn: str) -> None:
        cp = build_cp("1012", now=dt.datetime.now(dt.UTC))
        await self.commands.run(mn, "1012", cp)

    def state(self) -> dict:
        """Devices and counters, for the control channel and the app."""
        return {"devices": [d.as_dict() for d in self.devices.values()],
                "registered": sorted(self.by_mn), "connections": len(self.connections),
                "counts": dict(self.counts)}


def _topic(a: AnalyzerSpec, kind: str) -> str:
    return f"envcal/{a.station}/{a.id}/{kind}"
