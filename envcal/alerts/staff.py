"""Staff actions on alerts (acknowledge, resolve; audited) and the alert queries of the CLI."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from envcal import audit
from envcal.alerts.common import alert_json, iso
from envcal.alerts.config import AlertError
from envcal.alerts_dispatch import Publisher, alert_topic
from envcal.models import (
    Alert,
    AlertEvent,
    CheckResult,
    OutOfControlPeriod,
    WebhookDelivery,
    utcnow,
)

log = logging.getLogger("envcal.alerts")

# ----------------------------------------------------------------------------- staff actions
def _staff(engine: Engine, alert_id: int, by: str, note: str, action: str,
           publisher: Publisher | None = None) -> dict[str, Any]:
    if not by.strip() or not note.strip():
        raise AlertError(f"{action} needs --by NAME and --note TEXT")
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        a = s.get(Alert, alert_id)
        if a is None:
            raise AlertError(f"no alert {alert_id}")
        if a.state == "resolved":
            raise AlertError(f"alert {alert_id} is already resolved")
        if action == "acknowledge":
            if a.state == "acknowledged":
                raise AlertError(f"alert {alert_id} is already acknowledged")
            a.state, a.acknowledged_at, a.acknowledged_by = "acknowledged", now, by
        else:
            a.state, a.open_key, a.resolved_at, a.resolved_by = "resolved", None, now, by
        a.updated_at = max(now, a.updated_at)
        s.flush()
        ev = AlertEvent(alert_id=a.id, ts=now, action=action, actor=by, state=a.state,
                        severity=a.severity, note=note.strip(), evidence=a.evidence)
        s.add(ev)
        s.flush()
        payload = alert_json(a) | {"event": action, "event_id": ev.id}
        audit.record(s, by, f"alert.{action}", "alert", str(a.id),
                     {"kind": a.kind, "analyzer": a.analyzer_id, "analyte": a.analyte,
                      "state": a.state, "note": note.strip()}, ts=now)
        s.commit()
    if publisher is not None:
        try:
            publisher(alert_topic(a.station_id, a.analyzer_id), json.dumps(payload, ensure_ascii=False).encode())
        except Exception:  # noqa: BLE001
            log.exception("publishing alert %s failed", a.id)
    return payload


def acknowledge(engine: Engine, alert_id: int, by: str, note: str,
                publisher: Publisher | None = None) -> dict[str, Any]:
    """Staff acknowledge an open alert (recorded with the note in the audit trail)."""
    return _staff(engine, alert_id, by, note, "acknowledge", publisher)


def resolve(engine: Engine, alert_id: int, by: str, note: str,
            publisher: Publisher | None = None) -> dict[str, Any]:
    """Staff resolve an alert with a note; the same evidence will not reopen it."""
    return _staff(engine, alert_id, by, note, "resolve", publisher)


# ----------------------------------------------------------------------------- queries
def list_alerts(engine: Engine, *, open_only: bool = False, analyzer: str | None = None,
                kind: str | None = None) -> list[dict[str, Any]]:
    """Alerts as JSON objects (``envcal alerts list --json``), newest first, each with its
    webhook delivery status (``webhook``: counts by state and the last error)."""
    q = sa.select(Alert)
    if open_only:
        q = q.where(Alert.state != "resolved")
    if analyzer:
        q = q.where(Alert.analyzer_id == analyzer)
    if kind:
        q = q.where(Alert.kind == kind)
    q = q.order_by(Alert.updated_at.desc(), Alert.id.desc())
    w = WebhookDelivery.__table__.c
    with Session(engine) as s:
        alerts = s.exec(q).scalars().all()
        hooks: dict[int, dict[str, Any]] = {}
        for aid, state, err in s.execute(sa.select(w.alert_id, w.state, w.last_error).order_by(w.id)):
            h = hooks.setdefault(aid, {"pending": 0, "delivered": 0, "failed": 0, "last_error": None})
            h[state] = h.get(state, 0) + 1
            if err and state != "delivered":
                h["last_error"] = err
        return [alert_json(a) | ({"webhook": hooks[a.id]} if a.id in hooks else {}) for a in alerts]


def list_periods(engine: Engine, analyzer: str | None = None) -> list[dict[str, Any]]:
    """Out-of-control periods as JSON objects, by start."""
    q = sa.select(OutOfControlPeriod.__table__).order_by(OutOfControlPeriod.__table__.c.start)
    if analyzer:
        q = q.where(OutOfControlPeriod.__table__.c.analyzer_id == analyzer)
    with engine.connect() as conn:
        return [{k: (iso(v) if isinstance(v, dt.datetime) else v) for k, v in m.items()}
                for m in conn.execute(q).mappings()]


def staff_actions(engine: Engine, alert_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Acknowledge and resolve transitions of alerts (by staff, or by the engine as
    :data:`~envcal.alerts.config.ACTOR` when the condition cleared), oldest first: alert_id,
    action, actor, ts (aware UTC), note."""
    e = AlertEvent.__table__.c
    q = (sa.select(e.alert_id, e.action, e.actor, e.ts, e.note)
         .where(e.action.in_(("acknowledge", "resolve"))).order_by(e.ts, e.id))
    if alert_ids is not None:
        q = q.where(e.alert_id.in_([int(i) for i in alert_ids]))
    with engine.connect() as conn:
        return [dict(m) for m in conn.execute(q).mappings()]


def alert_counts(engine: Engine) -> dict[str, int]:
    """``{"alerts": all, "alerts_open": unresolved, "results": check results}``."""
    a = Alert.__table__.c
    with engine.connect() as conn:
        return {
            "alerts": int(conn.execute(sa.select(sa.func.count()).select_from(Alert.__table__)).scalar_one()),
            "alerts_open": int(conn.execute(sa.select(sa.func.count()).where(a.state != "resolved")).scalar_one()),
            "results": int(conn.execute(sa.select(sa.func.count()).select_from(CheckResult.__table__)).scalar_one()),
        }
