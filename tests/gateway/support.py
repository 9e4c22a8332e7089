"""Harness of the gateway tests: a gateway on its own event loop in a thread (or as an
``envcal gateway`` process), a DAU over a real TCP socket, and the registry of this folder."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from envcal.gateway import wire
from envcal.gateway.run import Options, run
from envcal.protocols import hj212
from envcal.protocols.hj212_commands import new_qn
from envcal.registry import load_registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STATIONS = HERE / "stations.toml"
MN17, PW17, AZ17 = "GW00000000000000000017AA", "123456", "GW-CEMS-17"
MN25, AZ25 = "GW00000000000000000025BB", "GW-CEMS-25"
HJ_TOPIC17 = f"envcal/GW-ST1/{AZ17}/hj212"


def registry():
    return load_registry(STATIONS)


class GatewayThread:
    """:func:`envcal.gateway.run.run` on its own event loop in a daemon thread."""

    def __init__(self, broker_url: str, **opts) -> None:
        opts.setdefault("port", 0)
        opts.setdefault("host", "127.0.0.1")
        opts.setdefault("broker_timeout", 10.0)
        opts.setdefault("client_id", f"gw-{os.getpid()}-{time.monotonic_ns() % 10**8}")
        self.opts = Options(broker_url=broker_url, **opts)
        self.reg = registry()
        self.address: tuple[str, int] | None = None
        self.error: BaseException | None = None
        self.gw = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(gw):
                self.gw, self.address = gw, gw.address
                self._ready.set()
            await run(self.reg, self.opts, stop=self._stop, ready=ready)
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 20.0) -> GatewayThread:
        self._thread.start()
        assert self._ready.wait(timeout), "gateway did not start"
        if self.error is not None:
            raise self.error
        return self

    def call(self, fn, timeout: float = 30.0):
        """Run ``fn()`` (a coroutine function) on the gateway's loop; return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


class GatewayProcess:
    """``python -m envcal.cli gateway`` with its output in ``tmp_path``."""

    def __init__(self, broker_url: str, tmp_path: Path, *extra: str, port: int = 0) -> None:
        self.broker_url, self.tmp_path, self.extra, self.port = broker_url, tmp_path, extra, port
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log: Path | None = None

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        self.starts += 1
        self.log = self.tmp_path / f"gateway-{self.starts}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "envcal.cli", "gateway", "--listen", f"127.0.0.1:{self.port}",
             "--broker", self.broker_url, "--stations", str(STATIONS),
             "--client-id", "gw-proc", *self.extra],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=self.tmp_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on [\d.]+:(\d+)", self.log.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            time.sleep(0.05)
        self.kill()
        raise AssertionError("gateway process did not listen: " + self.log.read_text(errors="replace"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


class SocketDau:
    """A DAU on a real TCP socket: writes bytes as given, collects every frame it receives
    (decoded) in a background thread, and can answer commands through ``on_command``."""

    def __init__(self, address: tuple[str, int], *, on_command=None) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.sock.settimeout(None)  # the reader blocks until data or close, however long
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.frames: list[hj212.Frame] = []
        self.on_command = on_command
        self._cond = threading.Condition()
        self._split = wire.FrameSplitter()
        self.closed = False
        self._t = threading.Thread(target=self._reader, daemon=True)
        self._t.start()

    def _reader(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._cond:
                    self.closed = True
                    self._cond.notify_all()
                return
            for item in self._split.feed(data):
                if isinstance(item, wire.Skipped):
                    continue
                f = hj212.decode_frame(item)
                with self._cond:
                    self.frames.append(f)
                    self._cond.notify_all()
                if self.on_command is not None and f.st != "91":
                    try:
                        for out in self.on_command(f) or ():
                            self.send(out)
                    except OSError:  # the test closed the DAU meanwhile
                        return

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait(self, pred, timeout: float = 10.0, what: str = "a frame"):
        """The first received frame matching ``pred`` (waits up to ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for f in self.frames:
                    if pred(f):
                        return f
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                         f"got {[x.raw for x in self.frames]}")
                self._cond.wait(left)

    def answers(self, cn: str = "9014") -> list[hj212.Frame]:
        with self._cond:
            return [f for f in self.frames if f.cn == cn]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def data_frame(mn: str, t: dt.datetime, so2: float, *, cn: str = "2051", qn: str | None = None,
               pw: str = PW17, flag: int = 5, suffix: str = "Avg") -> bytes:
    """A data upload of SO2 and NOx at ``t``."""
    qn = qn or new_qn(t)
    return hj212.encode_frame(cn=cn, mn=mn, qn=qn, st="31", pw=pw, flag=flag, data_time=t,
                              cp={f"a21026-{suffix}": so2, "a21026-Flag": "N",
                                  f"a21002-{suffix}": so2 * 2, "a21002-Flag": "N"})


def minute(i: int, base: dt.datetime | None = None) -> dt.datetime:
    base = base or dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    return base + dt.timedelta(minutes=i)


def answering(history: dict[dt.datetime, float] | None = None, *, skip_first: int = 0,
              qn_rtn: int = 1, exe_rtn: int = 1):
    """An ``on_command`` for :class:`SocketDau`: 9011, the history asked for (2051 frames
    with the command's QN, from ``history``), then 9012. The first ``skip_first`` requests
    are ignored (a lost request)."""
    seen = {"n": 0}

    def on_command(f: hj212.Frame):
        seen["n"] += 1
        if seen["n"] <= skip_first:
            return []
        out = [hj212.encode_frame(cn="9011", mn=f.mn, qn=f.qn, st="91", pw=f.pw, flag=4,
                                  cp=f"QnRtn={qn_rtn}")]
        if qn_rtn != 1:
            return out
        if f.cn in ("2051", "2061", "2031") and history:
            b = parse_local(f.fields["BeginTime"])
            e = parse_local(f.fields["EndTime"])
            for t, v in sorted(history.items()):
                if b <= t <= e:
                    out.append(data_frame(f.mn, t, v, cn=f.cn, qn=f.qn, pw=f.pw))
        if f.cn == "1011":
            out.append(hj212.encode_frame(cn="1011", mn=f.mn, qn=f.qn, st="31", pw=f.pw, flag=4,
                                          cp="SystemTime=20261201080000"))
        out.append(hj212.encode_frame(cn="9012", mn=f.mn, qn=f.qn, st="91", pw=f.pw, flag=4,
                                      cp=f"ExeRtn={exe_rtn}"))
        return out
    on_command.seen = seen
    return on_command


def parse_local(text: str) -> dt.datetime:
    from envcal.protocols.records import UTC8

    return dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC8).astimezone(dt.UTC)


class ResendingDau:
    """A DAU that sends frames one by one and resends each until its 9014 arrives,
    reconnecting when the connection breaks (as field DAUs do)."""

    def __init__(self, address_fn, *, resend_after: float = 0.5) -> None:
        self.address_fn = address_fn
        self.resend_after = resend_after
        self.dau: SocketDau | None = None
        self.sent = 0
        self.reconnects = 0

    def _connect(self, deadline: float) -> SocketDau:
        while True:
            try:
                return SocketDau(self.address_fn())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def deliver(self, frame: bytes, timeout: float = 60.0) -> None:
        qn = hj212.decode_frame(frame).qn
        deadline = time.monotonic() + timeout
        while True:
            if self.dau is None or self.dau.closed:
                if self.dau is not None:
                    self.reconnects += 1
                self.dau = self._connect(deadline)
            try:
                self.dau.send(frame)
                self.sent += 1
                self.dau.wait(lambda f: f.cn == "9014" and f.qn == qn, self.resend_after)
                return
            except (AssertionError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"frame QN {qn} never answered") from None
                if self.dau is not None and not self.dau.closed:
                    continue
                time.sleep(0.1)

    def close(self) -> None:
        if self.dau is not None:
            self.dau.close()
