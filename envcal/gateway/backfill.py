"""Backfill: ask a DAU for the history it holds when its data have a hole.

The gateway sees every minute (2051), hourly (2061) and daily (2031) record it hands off.
When a record arrives more than one interval after the previous one of that MN and CN, the
records between are missing from envcal (the DAU was offline, or frames were lost), and
the DAU keeps them: once it is online, the gateway sends the same CN as a history request
with ``BeginTime``/``EndTime`` spanning the hole. The uploads go through the normal
hand-off (published, answered 9014) and ingest stores each reading once (unique keys), so
a hole is filled exactly once even if it is asked for twice. Requests are rate-limited and
logged; each hole is asked for at most once per gateway run.

References
----------
HJ 212-2017, Table 9 (CN 2031/2051/2061 history requests), Appendix C Tables C.19-C.24;
HJ 212-2025 notes 2.2.1 (``RF=1`` resent frames) and F3.6 (DAUs resend failed uploads).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from dataclasses import dataclass

from envcal.gateway.commands import build_cp

log = logging.getLogger("envcal.gateway.backfill")

#: Record interval by history CN (2051 minute data: learned from the stream, at least 1 min).
FIXED_INTERVAL = {"2061": dt.timedelta(hours=1), "2031": dt.timedelta(days=1)}
MIN_MINUTE_INTERVAL = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Hole:
    """Records missing between two received ones of one MN and CN."""

    mn: str
    cn: str
    after: dt.datetime  # last record before the hole
    before: dt.datetime  # first record after it

    @property
    def begin(self) -> dt.datetime:
        return self.after + dt.timedelta(seconds=1)

    @property
    def end(self) -> dt.datetime:
        return self.before - dt.timedelta(seconds=1)


class HoleFinder:
    """Finds holes in the record times of each (MN, CN) stream (pure bookkeeping)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], dt.datetime] = {}
        self.step: dict[tuple[str, str], dt.timedelta] = {}

    def interval(self, cn: str, key: tuple[str, str]) -> dt.timedelta | None:
        """The record interval of a stream (None: not known yet)."""
        return FIXED_INTERVAL.get(cn) or self.step.get(key)

    def see(self, mn: str, cn: str, t: dt.datetime) -> Hole | None:
        """Record one received record time; the hole it closes, if any."""
        key = (mn, cn)
        prev = self.last.get(key)
        if prev is None or t <= prev:
            if prev is None:
                self.last[key] = t
            return None
        delta = t - prev
        self.last[key] = t
        if cn not in FIXED_INTERVAL:
            old = self.step.get(key)
            if delta >= MIN_MINUTE_INTERVAL and (old is None or delta < old):
                self.step[key] = delta
        step = self.interval(cn, key)
        if step is not None and delta > step * 1.5:
            return Hole(mn, cn, prev, t)
        return None


class Backfill:
    """Schedules history requests for holes, rate-limited (one request per ``min_gap`` s).

    Parameters
    ----------
    gateway : envcal.gateway.server.Gateway
    min_gap : float
        Least time between two automatic requests of the whole gateway [s].
    max_span : datetime.timedelta
        Longest period asked for at once (a longer hole is asked for its newest part).

    References
    ----------
    HJ 212-2017, Table 9 and Appendix C Tables C.20-C.22 (history requests).
    """

    CNS = frozenset({"2031", "2051", "2061"})

    def __init__(self, gateway, *, min_gap: float = 30.0,
                 max_span: dt.timedelta = dt.timedelta(days=2)) -> None:
        self.gw = gateway
        self.min_gap = min_gap
        self.max_span = max_span
        self.finder = HoleFinder()
        self.asked: set[Hole] = set()
        self.queue: collections.deque[Hole] = collections.deque()
        self.results: list[dict] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the request loop on the running event loop."""
        self._task = self.gw.spawn(self._loop())

    def on_online(self, dev) -> None:
        """A DAU came (back) online: queued holes of it may be asked for now."""
        if any(h.mn == dev.mn for h in self.queue):
            self._wake.set()

    def on_data(self, dev, frame, *, command: bool = False) -> None:
        """A handed-off frame: look for a hole in its stream (``command``: an upload answering
        a command, which fills holes rather than revealing them)."""
        if command or frame.cn not in self.CNS or frame.data_time is None:
            return
        hole = self.finder.see(dev.mn, frame.cn, frame.data_time)
        if hole is None or hole in self.asked:
            return
        log.info("MN %s: CN %s records missing between %s and %s: history request queued",
                 hole.mn, hole.cn, hole.after.isoformat(), hole.before.isoformat())
        self.asked.add(hole)
        self.queue.append(hole)
        self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = -1e9
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                hole = self.queue[0]
                dev = self.gw.devices.get(hole.mn)
                if dev is None or not dev.online:
                    self.queue.rotate(-1)
                    if all(not (self.gw.devices.get(h.mn) and self.gw.devices[h.mn].online)
                           for h in self.queue):
                        break
                    continue
                self.queue.popleft()
                wait = last + self.min_gap - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                last = loop.time()
                begin = max(hole.begin, hole.end - self.max_span)
                cp = build_cp(hole.cn, now=dt.datetime.now(dt.UTC), begin=begin, end=hole.end)
                res = await self.gw.commands.run(hole.mn, hole.cn, cp)
                log.info("MN %s: backfill CN %s %s..%s: %s, %d uploads", hole.mn, hole.cn,
                         begin.isoformat(), hole.end.isoformat(),
                         "done" if res.ok else res.error, len(res.uploads))
                self.results.append({"hole": hole, **res.as_dict()})
