"""The live pipeline: ingest -> verify -> store/alert -> MQTT, wired around one ingest service.

:func:`attach` gives an :class:`envcal.ingest.IngestService` its downstream:

- after each committed batch, the checks whose ``end`` reading (or device summary) just
  arrived are evaluated by a :class:`envcal.verify.Verifier`;
- each result is published on ``envcal/results/{station}/{analyzer}`` (QoS 1) and handed
  to the :class:`envcal.alerts.AlertEngine`, which opens, updates or resolves alerts and
  publishes them on ``envcal/alerts/{station}/{analyzer}``;
- a timer (``tick_seconds``) closes checks that never sent ``end`` (stale by data time),
  and runs the alert engine's time-based rules (overdue checks, data quality, escalation,
  webhook retries).

Verification and alert evaluation run under one lock, so the ingest worker's hook and the
timer never judge the same check at once.

Worker groups (``envcal ingest --group NAME``, issue 8)
-------------------------------------------------------
Several workers then share every analyzer's messages, but verification and alert state
keep one writer per analyzer. The direction stays one way — ingest stores, the owner
decides, the database keeps it single:

1. **Ownership.** The timer renews this worker's heartbeat and leases
   (:class:`envcal.ownership.Ownership`); analyzers are spread over the live workers by
   rendezvous hashing, a dead worker's leases expire and move.
2. **Judged by the owner's timer, when complete.** The ingest hook no longer evaluates
   (the worker that stored the ``end`` reading may not own the analyzer, and another
   worker may still hold earlier readings in its batch); it only wakes the timer early when
   this worker owns one of the ended checks. The timer evaluates the owned analyzers'
   pending checks that :func:`envcal.verify.completeness` finds complete: contiguous
   ``seq`` from ``start`` to ``end``, else ``settle`` seconds after the check's last
   reading was received.
3. **Once.** Results are inserted only if none exists for (analyzer, analyte, check id)
   and only inserted ones are published; alerts keep their unique open key; the alert
   engine's timer rules run only for owned analyzers.

MQTT publication is at least once, de-duplicate by id
-----------------------------------------------------
Results and alert events go out through an outbox (:mod:`envcal.outbox`): each stored row
is published after its commit and marked ``published_at`` after the broker's PUBACK; the
timer publishes again, for the analyzers this worker owns, the rows still unmarked
``republish_after`` after they were stored (a worker that died between storing and
publishing, a broker that was away). A subscriber may therefore see a message twice and
must de-duplicate by its id: ``id`` of a result (``envcal/results/...``), ``event_id`` of an
alert event (``envcal/alerts/...``).

Without a group the worker owns everything and behaves as before: checks are evaluated
in the ingest hook as soon as their ``end`` reading is committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("envcal.pipeline")

#: Default wait after a check's last reading before it is judged without seq proof [s].
DEFAULT_SETTLE = dt.timedelta(seconds=15)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Pipeline:
    """What :func:`attach` wired; ``stop()`` ends the timer and the webhook thread.

    ``ownership`` is None outside a worker group (this worker owns every analyzer).
    """

    verifier: Any
    alerts: Any
    tick_seconds: float
    stale_after: dt.timedelta
    ownership: Any = None
    settle: dt.timedelta = DEFAULT_SETTLE
    outbox: Any = None
    clock: Callable[[], dt.datetime] = _utcnow
    lock: threading.Lock = field(default_factory=threading.Lock)
    published: dict[str, int] = field(default_factory=lambda: {"results": 0, "alerts": 0})
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def on_commit(self, ended_checks, summary_ids) -> None:
        if not ended_checks and not summary_ids:
            return  # nothing to judge: never wait for the lock a timer tick may hold
        if self.ownership is None:
            with self.lock:
                self.verifier.on_commit(ended_checks, summary_ids)
            return
        # a group: the owner's timer judges the check once all its readings are stored
        owned = self.ownership.current()
        if summary_ids or any(a in owned for a, _ in ended_checks):
            self._wake.set()

    def tick(self, now: dt.datetime | None = None, *, wall: dt.datetime | None = None,
             alerts: bool = True) -> None:
        """Close stale checks, then run the alert engine's timer rules.

        Parameters
        ----------
        now : datetime, optional
            Data time for the alert rules (default: the newest reading).
        wall : datetime, optional
            Wall time (UTC) for leases and ``settle`` in a group (default: ``clock()``).
        alerts : bool, default True
            Also run the alert engine's timer rules and publish again what the broker has
            not acknowledged (a tick woken by a commit only verifies).
        """
        wall = wall or self.clock()
        with self.lock:
            owned = None  # alone: every analyzer, judged without waiting for completeness
            group: dict[str, Any] = {}
            if self.ownership is not None:
                self.ownership.refresh(wall)
                owned = self.ownership.current(wall)
                group = {"analyzer_ids": owned, "settle": self.settle, "now": wall, "only_new": True}
            self.verifier.verify_pending(stale_after=self.stale_after, **group)
            if not alerts:
                return
            if self.alerts is not None:
                self.alerts.tick(now, analyzers=owned)
            if self.outbox is not None:
                self.outbox.republish(owned, wall)

    def _run(self) -> None:
        # in a group, join at once (heartbeat, leases); alone, first tick after one period
        next_full = time.monotonic() + (0.0 if self.ownership is not None else self.tick_seconds)
        while True:
            self._wake.wait(max(0.0, next_full - time.monotonic()))
            if self._stop.is_set():
                return
            self._wake.clear()
            full = time.monotonic() >= next_full
            try:
                self.tick(alerts=full)
            except Exception:  # noqa: BLE001 - the timer must survive a bad tick
                log.exception("pipeline tick failed")
            if full:
                next_full = time.monotonic() + self.tick_seconds

    def start(self) -> Pipeline:
        self._thread = threading.Thread(target=self._run, name="envcal-pipeline-timer", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, release: bool = True) -> None:
        """End the timer; in a group, leave it (``release=False`` leaves the leases to
        expire, as a crashed worker would)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.ownership is not None and release:
            try:
                self.ownership.release()
            except Exception:  # noqa: BLE001 - the leases expire anyway
                log.exception("releasing the analyzer leases failed; they expire in %s",
                              self.ownership.lease)
        if self.alerts is not None:
            self.alerts.close()
        if self.outbox is not None:
            self.outbox.close()


def attach(service, *, alert_config=None, webhook_url: str | None = None,
           tick_seconds: float = 5.0, stale_after: dt.timedelta = dt.timedelta(minutes=30),
           alerts: bool = True, settle: dt.timedelta = DEFAULT_SETTLE,
           lease: dt.timedelta | None = None,
           republish_after: dt.timedelta = dt.timedelta(seconds=10)) -> Pipeline:
    """Wire verification and alerts to an ingest service (before ``service.start()``).

    Parameters
    ----------
    service : envcal.ingest.IngestService
        Its engine, registry and MQTT client are used; its ``on_commit`` hooks get ours.
        With ``service.group`` set the worker shares analyzers with its group (see the
        module docstring).
    alert_config : envcal.alerts.AlertConfig, optional
    webhook_url : str, optional
        POST every alert event there too (retried in the background).
    tick_seconds : float, default 5
        Timer period [s] (wall time).
    stale_after : timedelta, default 30 min
        A check without an ``end`` reading is complete after this much newer data.
    alerts : bool, default True
        Run the alert engine.
    settle : timedelta, default 15 s
        Group only: judge a check whose completeness ``seq`` cannot prove this long [s]
        after its last reading was received. Must exceed every worker's batch window.
    lease : timedelta, optional
        Group only: analyzer lease and heartbeat lifetime [s] (default ``max(30 s,
        6 × tick_seconds)``); a dead worker's analyzers move after at most this long.
    republish_after : timedelta, default 10 s
        A stored result or alert event without the broker's PUBACK this long after it was
        stored is published again by the owner's timer [s] (at least once; see
        :mod:`envcal.outbox`).

    Returns
    -------
    Pipeline
        Started; call ``stop()`` after the service stopped.
    """
    from envcal.outbox import Outbox
    from envcal.verify import Verifier

    engine, registry = service.engine, service.registry
    outbox = Outbox(engine, lambda: service._client, republish_after=republish_after)
    alert_engine = None
    if alerts:
        from envcal.alerts import AlertEngine

        alert_engine = AlertEngine(engine, registry, webhook_url=webhook_url, config=alert_config,
                                   outbox=outbox)

    pipe: Pipeline  # defined below; the listener closes over it

    def publish_results(results: list[dict[str, Any]]) -> None:
        pipe.published["results"] += outbox.publish_results(results)

    listeners = [publish_results]
    if alert_engine is not None:
        listeners.append(alert_engine.on_results)
    verifier = Verifier(engine, registry, listeners=listeners)
    ownership = None
    group = getattr(service, "group", None)
    if group:
        from envcal.ownership import Ownership

        lease = lease or max(dt.timedelta(seconds=30), dt.timedelta(seconds=6 * tick_seconds))
        ownership = Ownership(engine, service.core.worker, group, registry.analyzers, lease=lease)
    pipe = Pipeline(verifier, alert_engine, tick_seconds, stale_after, ownership=ownership,
                    settle=settle, outbox=outbox)
    service.on_commit.append(pipe.on_commit)
    return pipe.start()
