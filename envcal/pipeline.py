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
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("envcal.pipeline")


@dataclass
class Pipeline:
    """What :func:`attach` wired; ``stop()`` ends the timer and the webhook thread."""

    verifier: Any
    alerts: Any
    tick_seconds: float
    stale_after: dt.timedelta
    lock: threading.Lock = field(default_factory=threading.Lock)
    published: dict[str, int] = field(default_factory=lambda: {"results": 0, "alerts": 0})
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def on_commit(self, ended_checks, summary_ids) -> None:
        with self.lock:
            self.verifier.on_commit(ended_checks, summary_ids)

    def tick(self, now: dt.datetime | None = None) -> None:
        """Close stale checks, then run the alert engine's timer rules (data time)."""
        with self.lock:
            self.verifier.verify_pending(stale_after=self.stale_after)
            if self.alerts is not None:
                self.alerts.tick(now)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the timer must survive a bad tick
                log.exception("pipeline tick failed")

    def start(self) -> Pipeline:
        self._thread = threading.Thread(target=self._run, name="envcal-pipeline-timer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.alerts is not None:
            self.alerts.close()


def attach(service, *, alert_config=None, webhook_url: str | None = None,
           tick_seconds: float = 5.0, stale_after: dt.timedelta = dt.timedelta(minutes=30),
           alerts: bool = True) -> Pipeline:
    """Wire verification and alerts to an ingest service (before ``service.start()``).

    Parameters
    ----------
    service : envcal.ingest.IngestService
        Its engine, registry and MQTT client are used; its ``on_commit`` hooks get ours.
    alert_config : envcal.alerts.AlertConfig, optional
    webhook_url : str, optional
        POST every alert event there too (retried in the background).
    tick_seconds : float, default 5
        Timer period [s] (wall time).
    stale_after : timedelta, default 30 min
        A check without an ``end`` reading is complete after this much newer data.
    alerts : bool, default True
        Run the alert engine.

    Returns
    -------
    Pipeline
        Started; call ``stop()`` after the service stopped.
    """
    from envcal.verify import Verifier

    def publish(topic: str, payload: bytes) -> None:
        client = service._client
        if client is None:
            log.warning("not connected; %s not published (it is stored)", topic)
            return
        client.publish(topic, payload, qos=1)

    engine, registry = service.engine, service.registry
    alert_engine = None
    if alerts:
        from envcal.alerts import AlertEngine

        alert_engine = AlertEngine(engine, registry, publisher=publish, webhook_url=webhook_url,
                                   config=alert_config)

    pipe: Pipeline  # defined below; the listener closes over it

    def publish_results(results: list[dict[str, Any]]) -> None:
        for r in results:
            publish(f"envcal/results/{r['station']}/{r['analyzer']}",
                    json.dumps(r, ensure_ascii=False).encode())
            pipe.published["results"] += 1

    listeners = [publish_results]
    if alert_engine is not None:
        listeners.append(alert_engine.on_results)
    verifier = Verifier(engine, registry, listeners=listeners)
    pipe = Pipeline(verifier, alert_engine, tick_seconds, stale_after)
    service.on_commit.append(pipe.on_commit)
    return pipe.start()
