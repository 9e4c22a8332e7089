"""Commands down to a DAU: request -> 9011 -> uploads (each answered 9014) -> 9012.

A command is sent with a fresh QN; without a request answer (9011) within the timeout it is
sent again, up to the retry count (HJ 212-2017 clause 6.2.1, Table 1: 10 s and 3 retries on
GPRS/CDMA/4G, 5 s on ADSL). After ``QnRtn=1`` the gateway waits for the uploads carrying the
same QN and the execution result (9012); each upload restarts the execution timeout
(clause 6.2.2). One command at a time per DAU.

References
----------
HJ 212-2017, clauses 6.1 (request/answer steps), 6.2 (timeouts and retries, Table 1),
Table 9 (CNs), Appendix C Tables C.2/C.3 (1011/1012), C.19-C.24 (history), C.31 (3011),
C.38 (3020). HJ 212-2025 notes, CN 3024 (start a standard-sample check).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from envcal.gateway import wire
from envcal.protocols import hj212_commands
from envcal.protocols.hj212_codes import DEFAULT_RETRIES, DEFAULT_TIMEOUT_S
from envcal.protocols.records import UTC8

log = logging.getLogger("envcal.gateway.commands")

#: Commands the gateway sends down, with what they do.
COMMANDS: dict[str, str] = {
    "1011": "read the DAU's clock", "1012": "set the DAU's clock",
    "2031": "daily history", "2051": "minute history", "2061": "hourly history",
    "2062": "standard-sample check history", "3020": "device information",
    "3011": "zero/span calibration", "3024": "start a standard-sample check",
}
HISTORY_CNS = frozenset(hj212_commands.HISTORY_CNS)
#: Default timeout [s] and retries (HJ 212-2017 Table 1, GPRS/CDMA/TD-LTE rows).
DEFAULT_TIMEOUT = DEFAULT_TIMEOUT_S
#: Parameters each command takes (besides BeginTime/EndTime of history requests).
PARAMS: dict[str, tuple[str, ...]] = {"1011": ("PolId",), "1012": ("PolId",),
                                      "3020": ("InfoId", "PolId"), "3011": ("PolId",),
                                      "3024": ("PolId",)}


#: The uploads that answer each command. HJ 212-2017 gives a history upload a QN of its own
#: (Appendix C Table C.21: request QN ...223, upload QN ...534), so an upload belongs to the
#: command running on its MN by its CN; one with the command's QN belongs to it anyway.
UPLOAD_CNS: dict[str, frozenset[str]] = {
    "1011": frozenset({"1011"}), "2031": frozenset({"2031"}), "2051": frozenset({"2051"}),
    "2061": frozenset({"2061"}), "2062": frozenset({"2062"}), "3020": frozenset({"3020"}),
    "3011": frozenset({"2062"}), "3024": frozenset({"2062"}),
}


class CommandError(ValueError):
    """A command that cannot be built (unknown CN, missing times, bad parameter)."""


@dataclass
class CommandResult:
    """What came of one command."""

    ok: bool
    mn: str
    cn: str
    qn: str | None = None
    attempts: int = 0
    qn_rtn: int | None = None
    exe_rtn: int | None = None
    uploads: list[dict] = field(default_factory=list)  # {"cn", "cp"} of each upload
    error: str | None = None

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return {"ok": self.ok, "mn": self.mn, "cn": self.cn, "qn": self.qn,
                "attempts": self.attempts, "qn_rtn": self.qn_rtn, "exe_rtn": self.exe_rtn,
                "uploads": self.uploads, "error": self.error}


def build_cp(cn: str, *, now: dt.datetime, begin: dt.datetime | None = None,
             end: dt.datetime | None = None, params: Mapping[str, str] | None = None,
             tz: dt.tzinfo = UTC8) -> str:
    """The data area of a command (built by :mod:`envcal.protocols.hj212_commands`).

    Parameters
    ----------
    cn : str
        One of :data:`COMMANDS`.
    now : datetime
        Platform time, written as ``SystemTime`` for 1012 [aware].
    begin, end : datetime, optional
        ``BeginTime`` / ``EndTime`` of a history request (required for history CNs; optional
        for 3020).
    params : mapping, optional
        ``PolId`` (required for 3011/3024) and ``InfoId`` (required for 3020), see
        :data:`PARAMS`.
    tz : tzinfo
        Local zone of the frames.

    Returns
    -------
    str

    Raises
    ------
    CommandError
        Unknown CN, missing or reversed times, a missing or unknown parameter.

    References
    ----------
    HJ 212-2017, Table 4 (SystemTime, BeginTime, EndTime, PolId, InfoId), Appendix C.
    """
    if cn not in COMMANDS:
        raise CommandError(f"CN {cn!r} is not a command the gateway sends (one of "
                           f"{', '.join(sorted(COMMANDS))})")
    p = dict(params or {})
    unknown = set(p) - set(PARAMS.get(cn, ()))
    if unknown:
        allowed = ", ".join(PARAMS.get(cn, ())) or "none"
        raise CommandError(f"CN {cn} takes no parameter {', '.join(sorted(unknown))} "
                           f"(allowed: {allowed})")
    for k, v in p.items():
        if not v or any(c in v for c in ";,&=") or len(v) > 32:
            raise CommandError(f"bad value of {k}: {v!r}")
    polid = p.get("PolId")
    try:
        if cn == "1011":
            return hj212_commands.cmd_get_time(polid)[1]
        if cn == "1012":
            return hj212_commands.cmd_set_time(now, polid, tz)[1]
        if cn in HISTORY_CNS:
            if begin is None or end is None:
                raise CommandError(f"CN {cn} ({COMMANDS[cn]}) needs --begin and --end")
            return hj212_commands.cmd_history(cn, begin, end, tz)[1]
        if cn == "3020":
            if "InfoId" not in p:
                raise CommandError("CN 3020 needs the information id: InfoId=CODE (e.g. i12001)")
            return hj212_commands.cmd_device_info(p["InfoId"], polid, begin, end, tz)[1]
        if not polid:
            raise CommandError(f"CN {cn} needs the pollutant: PolId=CODE (e.g. a21026)")
        if cn == "3011":
            return hj212_commands.cmd_calibrate(polid)[1]
        return hj212_commands.cmd_std_check(polid)[1]
    except wire.Hj212Error as exc:
        raise CommandError(str(exc)) from None


@dataclass
class _Pending:
    mn: str
    cn: str
    qn: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    executing: bool = False  # QnRtn=1 came: uploads of its CNs belong to it
    seen: set[str] = field(default_factory=set)  # digests of the uploads received


@dataclass(frozen=True, slots=True)
class Target:
    """How to address a DAU: its last ST, PW and protocol version."""

    st: str
    pw: str
    ver: int
    key: bytes | None = None  # SM4 key (HJ 212-2025 encrypts 3020 and 1014 requests)


class Sequencer:
    """Runs commands against DAUs, one at a time per MN.

    Parameters
    ----------
    send : async callable
        ``send(mn, frame_bytes) -> bool``: write to the DAU's current connection (False when
        it has none).
    target : callable
        ``target(mn) -> Target | None`` (None: the DAU was never seen).
    timeout : float
        Request-answer and execution timeout [s].
    retries : int
        Resends without a request answer.

    References
    ----------
    HJ 212-2017, clauses 6.1 and 6.2 (Table 1), Appendix C.
    """

    def __init__(self, send: Callable[[str, bytes], Awaitable[bool]],
                 target: Callable[[str], Target | None], *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, tz: dt.tzinfo = UTC8) -> None:
        self.send = send
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.tz = tz
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._running: dict[str, _Pending] = {}  # by MN
        self._locks: dict[str, asyncio.Lock] = {}
        self._last_qn: dict[str, str] = {}

    def _qn(self, mn: str) -> str:
        t = dt.datetime.now(dt.UTC)
        qn = hj212_commands.new_qn(t, self.tz)
        while qn <= self._last_qn.get(mn, ""):
            t += dt.timedelta(milliseconds=1)
            qn = hj212_commands.new_qn(t, self.tz)
        self._last_qn[mn] = qn
        return qn

    def busy(self, mn: str) -> bool:
        """Whether a command to ``mn`` is running or waiting."""
        lock = self._locks.get(mn)
        return lock is not None and lock.locked()

    def on_frame(self, frame: wire.Frame) -> bool:
        """Offer a DAU frame (9011, 9012 or an upload) to the command with its QN.

        Returns
        -------
        bool
            True when it belongs to a running command.
        """
        p = self._pending.get((frame.mn or "", frame.qn or ""))
        if p is None:
            run = self._running.get(frame.mn or "")
            if (run is None or not run.executing or frame.cn in ("9011", "9012")
                    or frame.cn not in UPLOAD_CNS.get(run.cn, ())):
                return False
            p = run
        p.events.put_nowait(frame)
        return True

    async def run(self, mn: str, cn: str, cp: str, *, timeout: float | None = None,
                  retries: int | None = None) -> CommandResult:
        """Send one command and follow it to its execution result.

        Returns
        -------
        CommandResult
            ``ok`` when QnRtn=1 and ExeRtn=1 arrived; otherwise ``error`` says what failed
            (no request answer after the retries, a refusal with its QnRtn, an execution
            timeout, an ExeRtn other than 1).

        References
        ----------
        HJ 212-2017, clause 6.2.1 (request-answer timeout and resends), 6.2.2 (execution
        timeout), Tables 6 and 7 (ExeRtn, QnRtn).
        """
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        lock = self._locks.setdefault(mn, asyncio.Lock())
        async with lock:
            return await self._run(mn, cn, cp, timeout, retries)

    async def _run(self, mn: str, cn: str, cp: str, timeout: float, retries: int) -> CommandResult:
        res = CommandResult(ok=False, mn=mn, cn=cn)
        tgt = self.target(mn)
        if tgt is None:
            res.error = f"MN {mn} has not connected since the gateway started"
            return res
        qn = res.qn = self._qn(mn)
        frame = wire.request(cn, qn=qn, st=tgt.st, pw=tgt.pw, mn=mn, ver=tgt.ver, cp=cp,
                             key=tgt.key)
        p = self._pending[(mn, qn)] = self._running[mn] = _Pending(mn, cn, qn)
        try:
            answered = None
            while res.attempts <= retries and answered is None:
                res.attempts += 1
                if not await self.send(mn, frame):
                    res.error = f"MN {mn} is not connected"
                    return res
                log.info("command %s to %s (QN %s), attempt %d", cn, mn, qn, res.attempts)
                answered = await self._next(p, timeout, want_answer=True, res=res)
            if answered is None:
                res.error = (f"no request answer (9011) after {res.attempts} tries of "
                             f"{timeout:g} s")
                return res
            if res.qn_rtn != wire.QnRtn.READY:
                res.error = f"request refused: QnRtn={res.qn_rtn} ({_name(wire.QnRtn, res.qn_rtn)})"
                return res
            p.executing = True
            while True:
                ev = await self._next(p, timeout, want_answer=False, res=res)
                if ev is None:
                    res.error = (f"execution timeout: no upload or result (9012) within "
                                 f"{timeout:g} s")
                    return res
                if ev.cn == "9012":
                    res.ok = res.exe_rtn == 1
                    if not res.ok:
                        res.error = (f"execution failed: ExeRtn={res.exe_rtn} "
                                     f"({_name(wire.ExeRtn, res.exe_rtn)})")
                    return res
        finally:
            self._pending.pop((mn, qn), None)
            self._running.pop(mn, None)
            log.info("command %s to %s (QN %s): %s", cn, mn, qn,
                     "done" if res.ok else res.error)

    async def _next(self, p: _Pending, timeout: float, *, want_answer: bool,
                    res: CommandResult) -> wire.Frame | None:
        """The next frame of this command within ``timeout``; records what it carries."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                f = await asyncio.wait_for(p.events.get(), left)
            except TimeoutError:
                return None
            if f.cn == "9011":
                res.qn_rtn = _code(f, "QnRtn")
                if want_answer:
                    return f
                continue  # an answer to a resend: nothing new
            if want_answer:
                # an upload or result before the request answer: the answer was lost
                res.qn_rtn = int(wire.QnRtn.READY)
                p.events.put_nowait(f)
                return f
            if f.cn == "9012":
                res.exe_rtn = _code(f, "ExeRtn")
                return f
            if f.digest and f.digest in p.seen:
                return f  # the DAU resent an upload (its 9014 was late): counted once
            p.seen.add(f.digest)
            res.uploads.append({"cn": f.cn, "cp": _cp(f)})
            return f


def _name(enum, code: int | None) -> str:
    try:
        return enum(code).name.lower().replace("_", " ")
    except ValueError:
        return "unknown code"


def _code(f: wire.Frame, key: str) -> int | None:
    v = f.values.get(key)
    if v is None:
        text = f.fields.get(key)
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None
    return int(v)


def _cp(f: wire.Frame) -> dict:
    out: dict[str, object] = {k: v for k, v in f.values.items()}
    out.update(f.fields)
    out.update({f"{k}-Flag": v for k, v in f.flags.items()})
    if f.data_time is not None:
        out["DataTime"] = f.data_time.isoformat()
    return out
