"""The result of one check of one channel: one typed record for storage, MQTT and JSON.

:class:`CheckResult` is the only schema of a result. The ``check_result`` table has one
column per field (``analyzer`` and ``station`` are stored as ``analyzer_id`` and
``station_id``; the table adds ``id``, ``evaluated_at``, ``published_at`` and
``needs_review``), the JSON of ``envcal results list`` and of the results topic
(``envcal/results/{station}/{analyzer}``, DESIGN.md §4) has one key per field. A
misspelt field is an error (``TypeError`` when built, ``AttributeError`` when set,
``KeyError`` when read by name), never a silent ``None``.

References
----------
HJ 75-2017 clause 7 (what a zero/span check records); ISO/IEC 17025:2017 §7.8 (a result
states what it rests on: reference, uncertainty, rule).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from envcal.codes import CHECK_KINDS, VERDICTS


@dataclasses.dataclass(slots=True, kw_only=True)
class CheckResult:
    """The evaluation of one QC check of one channel (see the module docstring).

    Times are timezone-aware UTC; numbers are in the channel ``unit`` unless the name says
    otherwise (``*_pct``: [% of reference], ``*_fs_pct``: [% of span], ``t90_s`` [s],
    ``en`` [1], ``molar_volume`` [L/mol]).
    """

    analyzer: str
    station: str
    analyte: str
    kind: str
    check_id: str
    source: str = "readings"
    start: dt.datetime
    end: dt.datetime
    unit: str
    span: float
    n: int = 0
    mean: float | None = None
    sd: float | None = None
    u_mean: float | None = None
    t90_s: float | None = None
    plateau_start: dt.datetime | None = None
    plateau_end: dt.datetime | None = None
    reference: float | None = None
    u_reference: float | None = None
    error_abs: float | None = None
    error_rel_pct: float | None = None
    error_fs_pct: float | None = None
    drift_fs_pct: float | None = None
    en: float | None = None
    bias_ok: bool | None = None
    verdict: str
    rule: str | None = None
    rule_status: str | None = None
    pack: str
    pack_version: str
    material: str | None = None
    certificate_pk: int | None = None
    molar_volume: float | None = None
    reason_en: str = ""
    reason_zh: str = ""
    device_verdict: str | None = None
    device_measured: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"check kind {self.kind!r} is not one of {', '.join(CHECK_KINDS)}")
        for name in ("start", "end", "plateau_start", "plateau_end"):
            t = getattr(self, name)
            if t is not None and t.tzinfo is None:
                raise ValueError(f"{name} {t!r} is a naive datetime: results carry UTC times")
        if self.details is None:
            self.details = {}

    def __getitem__(self, name: str) -> Any:
        """Read a field by name (``r["verdict"]``); an unknown name is a ``KeyError``."""
        if name not in RESULT_FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def replace(self, **changes: Any) -> CheckResult:
        """A copy with some fields changed (unknown names are a ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CheckResult:
        """Build from a mapping with exactly the field names (unknown key: ``TypeError``)."""
        return cls(**dict(data))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CheckResult:
        """Build from a ``check_result`` row (its storage-only columns are dropped)."""
        d = {k: v for k, v in row.items() if k not in STORAGE_ONLY}
        d["analyzer"] = d.pop("analyzer_id")
        d["station"] = d.pop("station_id")
        return cls(**d)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the results topic and ``envcal results list`` (every field)."""
        out = {k: jsonable(getattr(self, k)) for k in RESULT_FIELDS if k != "details"}
        out["details"] = json.loads(json.dumps(self.details or {}, default=jsonable))
        return out

    def to_row(self, evaluated_at: dt.datetime) -> dict[str, Any]:
        """The ``check_result`` row (without ``id``)."""
        row = {k: getattr(self, k) for k in RESULT_FIELDS if k not in ("analyzer", "station")}
        row["analyzer_id"] = self.analyzer
        row["station_id"] = self.station
        for k in ("mean", "sd", "u_mean", "t90_s", "reference", "u_reference", "error_abs",
                  "error_rel_pct", "error_fs_pct", "drift_fs_pct", "en", "molar_volume",
                  "device_measured"):
            row[k] = finite_or_none(row[k])
        row["details"] = json.loads(json.dumps(self.details or {}, default=jsonable))
        row["evaluated_at"] = evaluated_at
        return row


#: the fields of a result, in the order of the JSON object
RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CheckResult))
#: columns of the ``check_result`` table that are not part of the result itself
STORAGE_ONLY: frozenset[str] = frozenset({"id", "evaluated_at", "published_at", "needs_review"})


def finite_or_none(v: Any) -> float | None:
    """``float(v)`` when finite, else None (NaN and ±inf are "no number" in a result)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def jsonable(v: Any) -> Any:
    """A value as JSON: times as ISO 8601 UTC with ``Z``, NaN/inf as null, numpy scalars as
    Python ones."""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
