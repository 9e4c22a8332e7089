"""An HJ 212 data acquisition unit (DAU, 数采仪) emulator over TCP, for tests and the simulator.

It behaves as a field DAU does towards a platform: connects to HOST:PORT, uploads data frames
(2011 real-time, 2051 minute, 2061 hour, 2031 day, 2062 standard-sample checks) in HJ 212-2017
or HJ 212-2025 (optionally SM4-encrypted), asks for a data answer (Flag bit 0) and **resends a
frame that is not answered** after the timeout, as often as Table 1 says (2025: marked
``RF=1``); when the retries are used up the link counts as unusable, the DAU drops it,
reconnects and sends the unanswered frames again. It sends 9015 heartbeats (2025) and 1013
time-calibration requests, and answers the platform's commands in the standard's order
(9011 request answer, the uploads, each waiting for its 9014, then 9012 execution result):
1011/1012 clock, 1000 timeout/retries, 2031/2051/2061/2062 history from its own buffer, 3020
device information, 3011 zero/span calibration and 3024 standard-sample check (what a check
sends is up to ``check_handler``, e.g. the simulator's check readings).

Everything a test needs to look at is kept: :attr:`Dau.received` (every frame from the
platform), :attr:`Dau.stats`, the history buffer, and :meth:`Dau.wait_answer` for frames
written with :meth:`Dau.send_raw` (glued, split or garbage-interleaved on purpose).

References
----------
HJ 212-2017, clause 6.1 (request / answer / result), 6.2 and Table 1 (timeouts, resends),
6.5 (command flows), Appendix C Tables C.1-C.4, C.14, C.20-C.22, C.30, C.41, C.48.
HJ 212-2025, Table 3 (Flag version 2, RF), Table 12 (9015, 1013, 1014, 2062, 3024), clause
6.4 (SM4), clause 8.1.2 (an unanswered upload is sent again).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from envcal.protocols import hj212_commands as cmds
from envcal.protocols.hj212 import Frame, decode_frame, encode_frame, peek_header
from envcal.protocols.hj212_codes import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    VERSION_2017,
    VERSION_2025,
    ExeRtn,
    QnRtn,
    flag_for,
    flag_version,
    must_encrypt,
)
from envcal.protocols.hj212_stream import FrameSplitter, Skipped
from envcal.protocols.records import UTC8, ProtocolError

__all__ = ["CheckUpload", "Dau", "DauError"]

log = logging.getLogger("envcal.dau")

#: Commands the emulator executes (others get QnRtn 8, CN error).
COMMANDS = ("1000", "1011", "1012", "1014", "2031", "2051", "2061", "2062", "3011", "3020", "3024")
_ANSWERS = ("9011", "9012", "9013", "9014")

#: One upload a check sends: (CN, data time, CP text without DataTime).
CheckUpload = tuple[str, dt.datetime, str]
CheckHandler = Callable[[str, str | None], Iterable[CheckUpload] | Awaitable[Iterable[CheckUpload]]]


class DauError(RuntimeError):
    """The emulator was used wrongly (e.g. sending before :meth:`Dau.start`)."""


@dataclass
class _Out:
    """A frame on its way to the platform, until its answer arrives."""

    cn: str
    qn: str
    data: bytes
    resend: bytes  # the same frame as a resend (2025: with RF=1)
    ack: bool
    answered: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]


class Dau:
    """One emulated DAU with one MN on one TCP connection.

    Parameters
    ----------
    host, port : str, int
        The platform's address.
    mn : str
        The DAU's MN.
    pw : str, optional
        Access password (``PW``), also checked on the platform's commands.
    st : str, optional
        System code of the uploads (22 air quality, 31 flue gas, 32 wastewater...).
    version : int, optional
        1 (HJ 212-2017, Flag 4-7) or 2 (HJ 212-2025, Flag 8-11).
    key : bytes, optional
        16-byte SM4 key (2025): the CP of the commands clause 6.4.4 names is encrypted.
    length : {"transmitted", "plaintext"}, optional
        Length field convention of encrypted frames.
    timeout_s, retries : float, int, optional
        Answer timeout [s] and resends (HJ 212-2017 Table 1: 10 s, 3).
    ack : bool, optional
        Ask for a data answer on uploads (Flag bit 0).
    heartbeat_s : float, optional
        9015 heartbeat period [s] (2025 only); None sends none.
    window : int, optional
        Uploads in flight without an answer (1: each waits for its 9014).
    reconnect_s : float, optional
        Pause before reconnecting [s].
    clock : callable, optional
        ``clock() -> aware datetime``, the DAU's time base (default: the system clock);
        1012 shifts it.
    tz : datetime.tzinfo, optional
        Local time of the frames (UTC+08:00).
    check_handler : callable, optional
        ``check_handler(cn, polid)`` for 3011/3024, returning (or awaiting) the uploads of the
        check, e.g. readings flagged ``C`` (2011) or a 2062 result.
    info : dict, optional
        ``{InfoId: text}`` sent on 3020 (e.g. ``{"i11001": "//清洗管路//"}``).
    keep : int, optional
        How many received frames and answers are kept for inspection.

    References
    ----------
    HJ 212-2017, clauses 6.1, 6.2 and Table 1; HJ 212-2025, Tables 3 and 12.
    """

    def __init__(self, host: str, port: int, mn: str, *, pw: str = "123456", st: str = "22",
                 version: int = VERSION_2017, key: bytes | None = None,
                 length: str = "transmitted", timeout_s: float = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, ack: bool = True,
                 heartbeat_s: float | None = None, window: int = 1, reconnect_s: float = 1.0,
                 clock: Callable[[], dt.datetime] | None = None, tz: dt.tzinfo = UTC8,
                 check_handler: CheckHandler | None = None,
                 info: dict[str, str] | None = None, keep: int = 10_000) -> None:
        if version not in (VERSION_2017, VERSION_2025):
            raise ValueError(f"version must be 1 (HJ 212-2017) or 2 (HJ 212-2025), not {version!r}")
        self.host, self.port, self.mn, self.pw, self.st = host, port, mn, pw, st
        self.version, self.key, self.length, self.tz = version, key, length, tz
        self.timeout_s, self.retries, self.ack = timeout_s, retries, ack
        self.heartbeat_s = heartbeat_s if version == VERSION_2025 else None
        self.reconnect_s = reconnect_s
        self.check_handler = check_handler
        self.info = dict(info or {})
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.clock_offset = dt.timedelta(0)
        #: uploads kept for history requests: CN -> {data time: CP without DataTime}
        self.history: dict[str, dict[dt.datetime, str]] = {}
        #: every frame received from the platform, decoded, in order
        self.received: deque[Frame] = deque(maxlen=keep)
        #: frames from the platform that did not decode, with the reason
        self.refused: deque[tuple[bytes, str]] = deque(maxlen=keep)
        self._keep = keep
        self.stats = {"connects": 0, "sent": 0, "resent": 0, "answered": 0, "link_failures": 0,
                      "heartbeats": 0, "heartbeats_answered": 0, "commands": 0}
        self.connected = asyncio.Event()
        self._window = asyncio.Semaphore(max(1, window))
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._waiting: dict[tuple[str, str], asyncio.Future] = {}
        self._answers: OrderedDict[tuple[str, str], Frame] = OrderedDict()
        self._answer_event = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self._qn_last = ""

    # ------------------------------------------------------------------ time and frames
    def now(self) -> dt.datetime:
        """The DAU's clock (aware)."""
        return self._clock() + self.clock_offset

    def new_qn(self) -> str:
        """A fresh QN from the DAU's clock (unique per DAU: bumped by 1 ms on a repeat)."""
        t = self.now()
        qn = cmds.new_qn(t, self.tz)
        while qn <= self._qn_last:
            t += dt.timedelta(milliseconds=1)
            qn = cmds.new_qn(t, self.tz)
        self._qn_last = qn
        return qn

    def _key_for(self, cn: str) -> bytes | None:
        return self.key if self.version == VERSION_2025 and must_encrypt(cn) else None

    def data_frame(self, cn: str, data_time: dt.datetime | None, cp: str, *, qn: str | None = None,
                   rf: bool = False, ack: bool | None = None) -> tuple[str, bytes]:
        """Build one upload frame as this DAU sends it.

        Parameters
        ----------
        cn : str
            2011, 2051, 2061, 2031, 2062, 3020, 1011...
        data_time : datetime.datetime or None
            ``DataTime`` (aware); None writes none.
        cp : str
            CP items without ``DataTime``.
        qn : str, optional
            Default: a fresh one.
        rf : bool, optional
            Mark as a resend (2025 only).
        ack : bool, optional
            Ask for an answer (default: the DAU's ``ack``).

        Returns
        -------
        (str, bytes)
            The QN and the frame.
        """
        qn = qn or self.new_qn()
        want = self.ack if ack is None else ack
        data = encode_frame(cn=cn, mn=self.mn, cp=cp, qn=qn, st=self.st, pw=self.pw,
                            flag=flag_for(self.version, ack=want), data_time=data_time, tz=self.tz,
                            rf=rf and self.version == VERSION_2025, key=self._key_for(cn),
                            length=self.length)
        return qn, data

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"dau-{self.mn}")

    async def stop(self) -> None:
        """Close the connection and stop every task of this DAU."""
        self._stopping = True
        for t in list(self._tasks) + ([self._task] if self._task else []):
            t.cancel()
        await self._close()
        for t in list(self._tasks) + ([self._task] if self._task else []):
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping: nothing to report
                pass
        self._task = None

    async def drop(self) -> None:
        """Close the current connection (the DAU reconnects after ``reconnect_s``)."""
        await self._close()

    async def _close(self) -> None:
        w, self._writer = self._writer, None
        self.connected.clear()
        if w is not None:
            w.close()
            try:
                await w.wait_closed()
            except OSError:
                pass
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    async def _run(self) -> None:
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.info("DAU %s: cannot connect to %s:%s: %s", self.mn, self.host, self.port, exc)
                await asyncio.sleep(self.reconnect_s)
                continue
            self._writer = writer
            self.stats["connects"] += 1
            self.connected.set()
            hb = asyncio.create_task(self._heartbeats()) if self.heartbeat_s else None
            try:
                await self._read(reader)
            finally:
                if hb is not None:
                    hb.cancel()
                if self._writer is writer:
                    await self._close()
            if not self._stopping:
                await asyncio.sleep(self.reconnect_s)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # ------------------------------------------------------------------ writing
    async def send_raw(self, data: bytes, *, chunks: Iterable[int] | None = None,
                       pause_s: float = 0.0) -> None:
        """Write bytes as they are (frames glued, split, garbage between, on purpose).

        Parameters
        ----------
        data : bytes
        chunks : iterable of int, optional
            Sizes of the successive writes (the rest goes in one last write).
        pause_s : float, optional
            Pause between the writes [s].
        """
        await self._write(data, chunks=chunks, pause_s=pause_s)

    async def _write(self, data: bytes, *, chunks: Iterable[int] | None = None,
                     pause_s: float = 0.0) -> None:
        w = self._writer
        if w is None:
            raise ConnectionError("not connected")
        async with self._write_lock:
            pos = 0
            for n in chunks or ():
                w.write(data[pos:pos + n])
                pos += n
                await w.drain()
                if pause_s:
                    await asyncio.sleep(pause_s)
            w.write(data[pos:])
            await w.drain()

    async def wait_answer(self, qn: str, cn: str = "9014", timeout_s: float | None = None) -> Frame:
        """The platform's answer ``cn`` with this QN (waits up to ``timeout_s``, default timeout_s).

        Raises
        ------
        TimeoutError
        """
        deadline = asyncio.get_running_loop().time() + (timeout_s or self.timeout_s)
        while (cn, qn) not in self._answers:
            self._answer_event.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no {cn} for QN {qn}")
            try:
                await asyncio.wait_for(self._answer_event.wait(), left)
            except TimeoutError:
                continue
        return self._answers[(cn, qn)]

    async def _deliver(self, out: _Out) -> Frame | None:
        """Send until answered: resend after each timeout, reconnect after ``retries``."""
        loop = asyncio.get_running_loop()
        first, tries = True, 0
        async with self._window:
            while True:
                if not self.connected.is_set():
                    await self.connected.wait()
                key = ("9013" if out.cn in ("9015", "1013") else "9014", out.qn)
                fut = loop.create_future()
                self._waiting[key] = fut
                try:
                    await self._write(out.data if first else out.resend)
                    self.stats["sent" if first else "resent"] += 1
                    first = False
                    if not out.ack:
                        return None
                    frame = await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
                    self.stats["answered"] += 1
                    return frame
                except TimeoutError:
                    tries += 1
                    if tries > self.retries:  # Table 1 used up: the link is unusable
                        tries = 0
                        self.stats["link_failures"] += 1
                        log.info("DAU %s: QN %s unanswered after %d resends, reconnecting",
                                 self.mn, out.qn, self.retries)
                        await self._close()
                except ConnectionError:
                    await asyncio.sleep(0)
                finally:
                    if self._waiting.get(key) is fut:
                        del self._waiting[key]
                    if fut.done() and not fut.cancelled():
                        fut.exception()  # retrieved: a closed link is handled above

    async def upload(self, cn: str, data_time: dt.datetime | None, cp: str, *,
                     store: bool = True, ack: bool | None = None) -> Frame | None:
        """Upload one data frame and wait until the platform answered it.

        Parameters
        ----------
        cn : str
            2011, 2051, 2061, 2031, 2062...
        data_time : datetime.datetime or None
        cp : str
            CP items without ``DataTime``.
        store : bool, optional
            Keep it in the history buffer (for 2031/2051/2061/2062 requests).
        ack : bool, optional
            Ask for an answer (default: the DAU's ``ack``).

        Returns
        -------
        Frame or None
            The 9014 answer; None when no answer was asked for.
        """
        if self._task is None:
            raise DauError("call start() first")
        if store and data_time is not None:
            self.history.setdefault(cn, {})[data_time] = cp
        want = self.ack if ack is None else ack
        qn, data = self.data_frame(cn, data_time, cp, ack=want)
        _, again = self.data_frame(cn, data_time, cp, qn=qn, rf=True, ack=want)
        return await self._deliver(_Out(cn, qn, data, again, want))

    def submit(self, cn: str, data_time: dt.datetime | None, cp: str, **kw) -> asyncio.Task:
        """:meth:`upload` in a task (fire and forget; the task ends when answered)."""
        return self._spawn(self.upload(cn, data_time, cp, **kw))

    async def request_time_calibration(self, polid: str | None = None) -> Frame:
        """Send 1013 (time calibration request), wait for the 9013; the platform then sends 1012."""
        qn, data = self.data_frame("1013", None, f"PolId={polid}" if polid else "", ack=True)
        frame = await self._deliver(_Out("1013", qn, data, data, True))
        if frame is None:
            raise ConnectionError("1013 time-calibration request: no 9013 answer from the platform")
        return frame

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            qn = self.new_qn()
            self.stats["heartbeats"] += 1
            try:
                await self._write(cmds.heartbeat_9015(self.mn, self.pw, self.st, qn))
                await self.wait_answer(qn, "9013", self.timeout_s)
                self.stats["heartbeats_answered"] += 1
            except (TimeoutError, ConnectionError):
                log.info("DAU %s: heartbeat %s not answered", self.mn, qn)

    # ------------------------------------------------------------------ reading
    async def _read(self, reader: asyncio.StreamReader) -> None:
        splitter = FrameSplitter()
        while True:
            try:
                data = await reader.read(65536)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            for item in splitter.feed(data):
                if isinstance(item, Skipped):
                    self.refused.append((item.raw, item.reason))
                else:
                    self._on_frame(item)

    def _on_frame(self, data: bytes) -> None:
        try:
            frame = decode_frame(data, key=self.key, tz=self.tz)
        except ProtocolError as exc:
            self.refused.append((data, str(exc)))
            h = peek_header(data)
            if h.get("CN") not in _ANSWERS and {"QN", "PW", "MN"} <= set(h):
                code = QnRtn.CRC_ERROR if "CRC" in str(exc) else QnRtn.UNKNOWN
                v = flag_version(int(h["Flag"])) if h.get("Flag", "").isdigit() else self.version
                self._spawn(self._write(cmds.encode_answer_to(h["QN"], h["PW"], h["MN"], v, "9011",
                                                              f"QnRtn={int(code)}")))
            return
        self.received.append(frame)
        if frame.cn in _ANSWERS:
            key = (frame.cn, frame.qn or "")
            self._answers[key] = frame
            if len(self._answers) > self._keep:
                self._answers.popitem(last=False)
            self._answer_event.set()
            fut = self._waiting.get(key)
            if fut is not None and not fut.done():
                fut.set_result(frame)
            return
        self.stats["commands"] += 1
        self._spawn(self._command(frame))

    # ------------------------------------------------------------------ commands
    async def _command(self, f: Frame) -> None:
        """Execute one command from the platform (9011, uploads, 9012)."""
        if f.mn != self.mn:
            code = QnRtn.MN_ERROR
        elif f.pw != self.pw:
            code = QnRtn.PW_ERROR
        elif f.cn not in COMMANDS:
            code = QnRtn.CN_ERROR
        else:
            code = QnRtn.READY
        v = f.version if f.version in (VERSION_2017, VERSION_2025) else self.version
        if f.ack_requested or code != QnRtn.READY:
            await self._write(cmds.answer_9011(f, code, version=v))
        if code != QnRtn.READY:
            return
        result = await self._execute(f)
        await self._write(cmds.result_9012(f, result, version=v))

    async def _execute(self, f: Frame) -> ExeRtn:
        cn = f.cn
        if cn == "1012":
            t = f.fields.get("SystemTime", "")
            try:
                local = dt.datetime.strptime(t, "%Y%m%d%H%M%S").replace(tzinfo=self.tz)
            except ValueError:
                return ExeRtn.BAD_CONDITION
            self.clock_offset += local - self.now().replace(microsecond=0)
            return ExeRtn.SUCCESS
        if cn == "1011":
            polid = f.fields.get("PolId")
            cp = (f"PolId={polid};" if polid else "") + f"SystemTime={cmds.local14(self.now(), self.tz)}"
            await self._reply_upload(f, "1011", None, cp)
            return ExeRtn.SUCCESS
        if cn == "1000":
            try:
                self.timeout_s = float(int(f.fields["OverTime"]))
                self.retries = int(f.fields["ReCount"])
            except (KeyError, ValueError):
                return ExeRtn.BAD_CONDITION
            return ExeRtn.SUCCESS
        if cn == "1014":
            new = f.fields.get("NewSK", "")
            if len(new) == 32:
                try:
                    self.key = bytes.fromhex(new)
                except ValueError:
                    return ExeRtn.BAD_CONDITION
                return ExeRtn.SUCCESS
            return ExeRtn.BAD_CONDITION
        if cn in ("2031", "2051", "2061", "2062"):
            try:
                begin = self._local(f.fields["BeginTime"])
                end = self._local(f.fields["EndTime"])
            except (KeyError, ValueError):
                return ExeRtn.BAD_CONDITION
            rows = sorted((t, cp) for t, cp in self.history.get(cn, {}).items() if begin <= t <= end)
            for t, cp in rows:
                await self._reply_upload(f, cn, t, cp)
            return ExeRtn.SUCCESS if rows else ExeRtn.NO_DATA
        if cn == "3020":
            polid = f.fields.get("PolId")
            infos = [(k, v) for k, v in self.info.items()
                     if f.fields.get("InfoId") in (None, k)]
            for k, v in infos:
                cp = (f"PolId={polid};" if polid else "") + f"{k}-Info={v}"
                await self._reply_upload(f, "3020", self.now(), cp)
            return ExeRtn.SUCCESS if infos else ExeRtn.NO_DATA
        # 3011 zero/span calibration, 3024 standard-sample check
        if self.check_handler is None:
            return ExeRtn.SUCCESS
        got = self.check_handler(cn, f.fields.get("PolId"))
        if inspect.isawaitable(got):
            got = await got
        for up_cn, t, cp in got:
            if t is not None:
                self.history.setdefault(up_cn, {})[t] = cp
            await self._reply_upload(f, up_cn, t, cp)
        return ExeRtn.SUCCESS

    def _local(self, text: str) -> dt.datetime:
        return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=self.tz)

    async def _reply_upload(self, f: Frame, cn: str, t: dt.datetime | None, cp: str) -> None:
        """One upload inside a command's execution: data uploads ask for a 9014 (Appendix C
        Table C.48), the 1011 and 3020 replies do not (Tables C.2, C.41)."""
        ack = self.ack and cn not in ("1011", "3020")
        qn, data = self.data_frame(cn, t, cp, ack=ack)
        _, again = self.data_frame(cn, t, cp, qn=qn, rf=True, ack=ack)
        await self._deliver(_Out(cn, qn, data, again, ack))
