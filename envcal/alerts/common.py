"""What the alert modules share: the alert's JSON, its dedup key, the desired state of a
channel and small conversions."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envcal.alerts.config import EPOCH
from envcal.models import Alert


# ----------------------------------------------------------------------------- helpers
def iso(t: dt.datetime | None) -> str | None:
    """A time as ISO 8601 UTC with ``Z`` (None stays None)."""
    if t is None:
        return None
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def days(t: dt.datetime) -> float:
    """Days since 1970-01-01 UTC [d] (the time axis of trends and periods)."""
    return (t - EPOCH).total_seconds() / 86400.0


def jsonable(obj: Any) -> Any:
    """A structure as plain JSON (times as ISO UTC, numpy scalars as numbers)."""
    return json.loads(json.dumps(obj, default=lambda o: iso(o) if isinstance(o, dt.datetime)
                                 else (o.item() if isinstance(o, np.generic) else str(o))))


def finite(v: Any) -> float | None:
    """``float(v)`` when finite, else None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def open_key(analyzer: str, analyte: str | None, kind: str) -> str:
    """The dedup key of an unresolved alert."""
    return f"{analyzer}|{analyte or '*'}|{kind}"


def alert_json(a: Alert) -> dict[str, Any]:
    """An alert as the JSON of ``envcal alerts list --json`` and the alert topic."""
    return {
        "id": a.id, "analyzer": a.analyzer_id, "station": a.station_id, "analyte": a.analyte,
        "kind": a.kind, "severity": a.severity, "state": a.state,
        "opened_at": iso(a.opened_at), "updated_at": iso(a.updated_at),
        "resolved_at": iso(a.resolved_at), "resolved_by": a.resolved_by,
        "acknowledged_at": iso(a.acknowledged_at), "acknowledged_by": a.acknowledged_by,
        "escalated_at": iso(a.escalated_at), "title_en": a.title_en, "title_zh": a.title_zh,
        "evidence": a.evidence or {}, "results": list(a.result_ids or []),
    }


@dataclass
class Desired:
    """What the data say about one (analyzer, analyte, kind): open with evidence, or clear."""

    analyzer: str
    analyte: str | None
    kind: str
    open: bool
    severity: str = "warning"
    title_en: str = ""
    title_zh: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    result_ids: list[int] = field(default_factory=list)
    trigger: str | None = None
    data_ts: dt.datetime | None = None
    note: str = "condition cleared"
