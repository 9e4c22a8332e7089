"""A minimal HJ 212 platform over real TCP for DAU tests (answers 9014 / 9013, sends commands)."""

from __future__ import annotations

import asyncio
import threading

from envcal.protocols import hj212_commands as cmds
from envcal.protocols.hj212 import Frame, decode_frame
from envcal.protocols.hj212_stream import FrameSplitter


class Platform:
    """A minimal platform: answers what it is asked to, records every frame, sends commands."""

    def __init__(self, *, answer: bool = True, key: bytes | None = None) -> None:
        self.answer = answer
        self.key = key
        self.frames: list[Frame] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.new_frame = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Platform:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()

    async def _conn(self, reader, writer) -> None:
        self.writers.append(writer)
        sp = FrameSplitter()
        while data := await reader.read(65536):
            for item in sp.feed(data):
                if not isinstance(item, bytes):
                    continue
                f = decode_frame(item, key=self.key)
                self.frames.append(f)
                self.new_frame.set()
                if not self.answer or not f.ack_requested:
                    continue
                if f.cn in ("9015", "1013"):
                    writer.write(cmds.notify_9013(f))
                elif f.cn not in ("9011", "9012"):
                    writer.write(cmds.data_answer_9014(f))
        writer.close()

    async def send(self, data: bytes) -> None:
        for _ in range(500):  # the DAU connects in the background
            if self.writers:
                break
            await asyncio.sleep(0.01)
        w = self.writers[-1]
        w.write(data)
        await w.drain()

    async def wait(self, pred, timeout: float = 5.0) -> list[Frame]:
        async def loop():
            while not pred(self.frames):
                self.new_frame.clear()
                await self.new_frame.wait()
        await asyncio.wait_for(loop(), timeout)
        return self.frames

    def cns(self) -> list[str]:
        return [f.cn for f in self.frames]


class ThreadedPlatform:
    """:class:`Platform` on its own event loop in a thread (for code that runs asyncio itself)."""

    def __init__(self, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.platform = Platform(**kw)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Platform:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.platform.__aenter__(), self.loop).result(10)
        return self.platform

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.platform.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
