"""MQTT outbox: check results and alert events are published at least once.

A result (:class:`envcal.models.CheckResult`) or an alert transition
(:class:`envcal.models.AlertEvent`) is first committed, then published (QoS 1). A worker
that dies in between, a broker that is away, or a PUBACK that never comes would lose the
message; so the row itself is the outbox:

1. **Publish** right after the commit (:meth:`Outbox.publish`, non-blocking). The payload
   carries the row's stable id: ``id`` for a result, ``event_id`` for an alert event.
2. **Mark** ``published_at`` only after the broker's PUBACK: a marker thread waits on
   paho's ``MQTTMessageInfo.wait_for_publish`` (up to ``ack_timeout``) and updates the
   acknowledged rows in batches.
3. **Publish again** (:meth:`Outbox.republish`, called by the pipeline timer for the
   analyzers this worker owns): rows still unpublished ``republish_after`` after they were
   stored and not awaiting a PUBACK here, only while the client is connected (what was
   published during an outage waits in paho's session and goes out after the reconnect). Rows older than ``horizon`` are left alone (a
   database filled by batch commands long ago is not flooded onto the broker).

Delivery is therefore **at least once**: a subscriber may receive the same result or event
twice (a PUBACK lost with the worker, a lease moving between workers, paho re-sending its
session after a reconnect) and must **de-duplicate by id** (``id`` of a result, ``event_id``
of an alert event). Republished alert events carry the alert as it is stored now with the
event's own ``state``, ``severity`` and ``evidence``, and ``"republished": true``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.alerts_dispatch import alert_topic
from envcal.models import Alert, AlertEvent, CheckResult

log = logging.getLogger(__name__)

#: (table, row id) of one published row: ``("check_result", 12)``, ``("alert_event", 7)``
Ref = tuple[str, int]

_TABLES = {"check_result": CheckResult.__table__, "alert_event": AlertEvent.__table__}


def result_topic(station: str, analyzer: str) -> str:
    """MQTT topic of an analyzer's check results (DESIGN.md §4)."""
    return f"envcal/results/{station}/{analyzer}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Outbox:
    """Publishes results and alert events at least once (see the module docstring).

    Parameters
    ----------
    engine : Engine
    client : callable
        ``client() -> paho Client or None`` (None while there is none: the row stays
        unpublished and is published again later).
    republish_after : timedelta, default 10 s
        A row unpublished this long after it was stored is published again [s]; longer
        than a PUBACK normally takes, shorter than anyone waits for a result.
    horizon : timedelta, default 1 day
        Rows stored longer ago are never published again [s].
    ack_timeout : float, default 10
        How long the marker waits for one PUBACK [s]; afterwards the row counts as not
        published (and is published again by the timer).
    clock : callable, optional
        Wall time (UTC), for tests.
    """

    def __init__(self, engine: Engine, client: Callable[[], Any], *,
                 republish_after: dt.timedelta = dt.timedelta(seconds=10),
                 horizon: dt.timedelta = dt.timedelta(days=1), ack_timeout: float = 10.0,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.engine = engine
        self.client = client
        self.republish_after = republish_after
        self.horizon = horizon
        self.ack_timeout = ack_timeout
        self.clock = clock
        self.counts = {"published": 0, "acknowledged": 0, "republished": 0, "unacknowledged": 0}
        self._inflight: set[Ref] = set()
        self._lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._mark_loop, name="envcal-outbox", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ publishing
    def publish(self, topic: str, payload: bytes, ref: Ref | None) -> bool:
        """Publish one payload (QoS 1); ``ref`` is marked published after its PUBACK.

        Returns
        -------
        bool
            True when handed to the client (not yet acknowledged); False without a client.
        """
        c = self.client()
        if c is None:
            log.warning("not connected; %s not published yet (stored; the timer publishes it)", topic)
            return False
        info = c.publish(topic, payload, qos=1)
        with self._lock:
            self.counts["published"] += 1
            if ref is not None:
                self._inflight.add(ref)
                self._idle.clear()
        if ref is not None:
            self._q.put((info, ref, time.monotonic() + self.ack_timeout))
        return True

    def publish_results(self, results: Sequence[dict[str, Any]]) -> int:
        """Verifier listener: publish stored results (JSON of :func:`envcal.verify.result_json`)
        with their row ``id``; returns how many were handed to the client."""
        if not results:
            return 0
        c = CheckResult.__table__.c
        keys = [(r["analyzer"], r["analyte"], r["check_id"]) for r in results]
        with self.engine.connect() as conn:
            ids = {(a, x, k): i for i, a, x, k in conn.execute(
                sa.select(c.id, c.analyzer_id, c.analyte, c.check_id)
                .where(sa.tuple_(c.analyzer_id, c.analyte, c.check_id).in_(keys)))}
        n = 0
        for r, key in zip(results, keys, strict=True):
            rid = ids.get(key)
            body = json.dumps({**r, "id": rid}, ensure_ascii=False).encode()
            n += self.publish(result_topic(r["station"], r["analyzer"]), body,
                              ("check_result", rid) if rid is not None else None)
        return n

    def republish(self, analyzers: Iterable[str] | None = None,
                  now: dt.datetime | None = None, limit: int = 500) -> dict[str, int]:
        """Publish again the rows still unpublished ``republish_after`` after being stored.

        Parameters
        ----------
        analyzers : iterable of str, optional
            Only rows of these analyzers (a group worker: the ones it owns); default all.
        now : datetime, optional
            Wall time (UTC); default ``clock()``.
        limit : int
            At most this many rows of each table per call.

        Returns
        -------
        dict
            ``{"results": n, "alert_events": m}`` handed to the client.
        """
        c = self.client()
        if c is None or not c.is_connected():
            # paho keeps what was published while disconnected in its session and sends it
            # after the reconnect: publishing the same rows again every tick would queue one
            # more copy of each per tick (unbounded memory, a flood on reconnect)
            return {"results": 0, "alert_events": 0}
        now = now or self.clock()
        old, young = now - self.horizon, now - self.republish_after
        only = None if analyzers is None else sorted(set(analyzers))
        if only == []:
            return {"results": 0, "alert_events": 0}
        with self._lock:
            busy = set(self._inflight)
        from envcal.alerts import alert_json
        from envcal.verify import result_json

        r = CheckResult.__table__
        q = (sa.select(r).where(r.c.published_at.is_(None), r.c.evaluated_at >= old,
                                r.c.evaluated_at <= young).order_by(r.c.id).limit(limit))
        if only is not None:
            q = q.where(r.c.analyzer_id.in_(only))
        e, a = AlertEvent.__table__, Alert.__table__
        qe = (sa.select(e.c.id, e.c.action, e.c.state, e.c.severity, e.c.evidence, e.c.alert_id)
              .join(a, a.c.id == e.c.alert_id)
              .where(e.c.published_at.is_(None), e.c.ts >= old, e.c.ts <= young)
              .order_by(e.c.id).limit(limit))
        if only is not None:
            qe = qe.where(a.c.analyzer_id.in_(only))
        from sqlmodel import Session

        with self.engine.connect() as conn:
            rows = [dict(m) for m in conn.execute(q).mappings() if ("check_result", m["id"]) not in busy]
            evs = [dict(m) for m in conn.execute(qe).mappings() if ("alert_event", m["id"]) not in busy]
            alerts = {}
            if evs:
                with Session(bind=conn) as s:
                    alerts = {x.id: x for x in s.exec(sa.select(Alert).where(
                        Alert.id.in_(sorted({v["alert_id"] for v in evs})))).scalars()}
        n_r = n_e = 0
        for d in rows:
            d["analyzer"] = d.pop("analyzer_id")
            d["station"] = d.pop("station_id")
            body = json.dumps(result_json(d) | {"id": d["id"]}, ensure_ascii=False).encode()
            n_r += self.publish(result_topic(d["station"], d["analyzer"]), body, ("check_result", d["id"]))
        for v in evs:
            al = alerts[v["alert_id"]]
            payload = alert_json(al) | {"event": v["action"], "event_id": v["id"], "state": v["state"],
                                        "severity": v["severity"], "evidence": v["evidence"] or {},
                                        "republished": True}
            n_e += self.publish(alert_topic(al.station_id, al.analyzer_id),
                                json.dumps(payload, ensure_ascii=False).encode(), ("alert_event", v["id"]))
        if n_r or n_e:
            log.info("published again: %d results, %d alert events (no PUBACK recorded)", n_r, n_e)
        with self._lock:
            self.counts["republished"] += n_r + n_e
        return {"results": n_r, "alert_events": n_e}

    # ------------------------------------------------------------------ PUBACK marking
    def _mark_loop(self) -> None:
        batch: list[Ref] = []
        while True:
            try:
                info, ref, deadline = self._q.get(timeout=0.05 if batch else 0.5)
            except queue.Empty:
                if batch:
                    self._flush(batch)
                    batch = []
                if self._q.empty():
                    with self._lock:
                        if not self._inflight:
                            self._idle.set()
                if self._stop.is_set():
                    return
                continue
            ok = False
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                ok = info.is_published()
            except (RuntimeError, ValueError):  # not queued / not connected: publish again later
                ok = False
            if ok:
                batch.append(ref)
                if len(batch) >= 200:
                    self._flush(batch)
                    batch = []
            else:
                with self._lock:
                    self._inflight.discard(ref)
                    self.counts["unacknowledged"] += 1

    def _flush(self, refs: list[Ref]) -> None:
        now = self.clock()
        by_table: dict[str, list[int]] = {}
        for t, i in refs:
            by_table.setdefault(t, []).append(i)
        try:
            with self.engine.begin() as conn:
                for t, ids in by_table.items():
                    tab = _TABLES[t]
                    conn.execute(tab.update().where(tab.c.id.in_(ids), tab.c.published_at.is_(None))
                                 .values(published_at=now))
        except Exception:  # noqa: BLE001 - unmarked rows are published again: at least once
            log.exception("marking %d published rows failed; they will be published again", len(refs))
        with self._lock:
            self._inflight.difference_update(refs)
            self.counts["acknowledged"] += len(refs)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every publication so far is marked or given up (tests, shutdown)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Mark what is acknowledged within ``timeout`` [s], then stop the marker thread."""
        self.wait_idle(timeout)
        self._stop.set()
        self._thread.join(timeout)
