"""Records produced by the wire-format decoders (the contract between protocols and ingest)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from envcal import codes

#: China Standard Time (UTC+08:00): the default local time of HJ 212 frames and of the
#: timestamps envcal writes for Chinese devices.
UTC8 = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")

#: (defined in :mod:`envcal.codes`, re-exported for the decoders)
CHECK_KINDS = codes.CHECK_KINDS
CHECK_PHASES = codes.CHECK_PHASES
#: HJ 212-2017 Table 8 data flags.
DATA_FLAGS = {
    "N": "normal",
    "F": "stopped",
    "M": "maintenance",
    "S": "manual",
    "D": "fault",
    "C": "calibration",
    "T": "over range",
    "B": "communication fault",
}


class ProtocolError(ValueError):
    """A payload or frame that cannot be decoded; the message says exactly why."""


@dataclass(frozen=True, slots=True)
class CheckBlock:
    """The ``check`` block of a reading taken during a QC check."""

    id: str
    kind: str  # one of CHECK_KINDS
    phase: str  # one of CHECK_PHASES
    material: str | None = None  # CRM lot id; None/empty for zero air / zero water


@dataclass(slots=True)
class ReadingRecord:
    """One timestamped set of values from one analyzer (treat as read-only).

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    doubled the cost of building the one record per message on the ingest hot path.

    ``values`` maps analyte names (JSON) or HJ 212 pollutant codes (before mapping through
    the registry) to a float, or None when the device sent no number.
    """

    ts: dt.datetime  # timezone-aware, UTC
    values: dict[str, float | None]
    flags: dict[str, str] = field(default_factory=dict)
    seq: int | None = None
    check: CheckBlock | None = None


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """A device-computed QC check result (``.../check`` topic, HJ 212-2025 CN 2062)."""

    id: str
    kind: str
    analyte: str
    start: dt.datetime
    end: dt.datetime
    material: str | None
    measured: float | None
    readings: tuple[float, ...] = ()
    standard_value: float | None = None  # the device's idea of the reference value
    device_verdict: str | None = None  # what the device said (kept, never trusted)
    extra: dict = field(default_factory=dict)
