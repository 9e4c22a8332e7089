"""Station simulator: virtual analyzers publishing readings, QC checks and injected faults.

One virtual analyzer per registry entry. Each produces, in simulated time:

* routine readings — ambient PM2.5/PM10 and sampler flow (diurnal cycle, multi-day weather
  episodes), ambient gases, a load-following power-plant CEMS (ultra-low emission levels) every
  minute; water quality batch analyzers every 1 h (wastewater) or 4 h (surface water);
* scheduled QC checks per the analyzer's rule pack — daily zero and span for CEMS and ambient
  gas, daily standard-sample checks for water analyzers, PM flow checks every 14 days — with a
  first-order step response (T90 60-120 s; readings 15 s apart until settled), noise and
  a plateau of 12 readings;
* the faults of a fault file (format: ``stations/faults/default.toml``): drift, step bias,
  stuck value, noise growth, dropped and malformed messages, invalid CRM lots, falsification.

Wire formats (DESIGN.md section 4): JSON v1 on ``envcal/{station}/{analyzer}/data``, or
HJ 212-2017 frames on ``.../hj212`` (CN 2011 real-time for CEMS, CN 2061 hourly for water)
when the analyzer's ``protocol`` is ``hj212``. HJ 212-2017 has no way to name a QC check, so
an HJ 212 analyzer's check readings (with their ``check`` block) go out as JSON v1 on
``.../data`` — the DAU's QC channel — while its routine frames carry the ``C`` flag.

The engine is pure: :meth:`Simulator.messages` yields ``(sim_time, topic, payload)`` and is
what tests use; :meth:`Simulator.publish` sends the same bytes over MQTT (QoS 1). The same
seed gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import math
import time
import tomllib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from envcal.certificates import ALIASES, CertificateDoc, _convert_value, certificate_state
from envcal.models import Certificate
from envcal.protocols.records import CheckBlock
from envcal.registry import AnalyzerSpec, Registry
from envcal.rules import load_pack
from envcal.units import UnitError

#: Local time of the simulated network (China Standard Time).
TZ = dt.timezone(dt.timedelta(hours=8))
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MATERIALS = ROOT / "reference_materials"

MINUTE = 60.0
DAY = 86400.0
#: Seconds between check readings; transition readings (at least, at most) and plateau readings.
CHECK_SPACING = 15.0
CHECK_TRANSITION = 8
CHECK_TRANSITION_MAX = 60
CHECK_PLATEAU = 12
#: Set flow of PM samplers [L/min] (HJ 817-2018: 16.67 L/min, 1 m3/h).
PM_SET_FLOW = 16.67
PM_FLOW_EVERY_DAYS = 14

ALERT_KINDS = ("out_of_tolerance", "out_of_control", "drift_trend", "check_overdue",
               "material_invalid", "data_quality", "peer_drift")
FAULT_TYPES = ("drift", "bias", "stuck", "noise", "drop", "malformed", "material", "falsify",
               "maintenance")

#: HJ 212 system codes (ST) by station kind.
_ST = {"ambient_air": "22", "flue_gas": "31", "surface_water": "21", "wastewater": "32"}


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class SimulatorError(ValueError):
    """A fault file, material folder or registry the simulator cannot use."""


# ------------------------------------------------------------------------------ materials
def load_materials(path: str | Path | None = None) -> list[CertificateDoc]:
    """Read CRM certificates (``*.json``, the format of :class:`envcal.certificates.CertificateDoc`).

    Parameters
    ----------
    path : str or Path, optional
        Folder of certificate files, searched recursively; default ``reference_materials/``
        of the project. JSON files that are not certificates (no ``id`` and ``values``, e.g.
        ``schema.json``) are skipped.

    Returns
    -------
    list of CertificateDoc
        Sorted by id.

    Raises
    ------
    SimulatorError
        A certificate file that envcal's certificate model refuses (naming the file).
    """
    folder = Path(path) if path is not None else DEFAULT_MATERIALS
    if not folder.is_dir():
        raise SimulatorError(f"{folder}: no such materials folder")
    out: dict[str, CertificateDoc] = {}
    for f in sorted(folder.rglob("*.json")):
        try:
            text = f.read_text(encoding="utf-8-sig")
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SimulatorError(f"{f}: invalid JSON: {exc}") from None
        if not isinstance(data, dict) or "id" not in data or "values" not in data:
            continue
        try:
            doc = CertificateDoc.model_validate_json(text)
        except ValidationError as exc:
            raise SimulatorError(f"{f}: not a valid certificate: {exc.errors()[0]['msg']} "
                                 f"at {'.'.join(map(str, exc.errors()[0]['loc']))}") from None
        out[doc.id] = doc
    return [out[k] for k in sorted(out)]


def material_reference(doc: CertificateDoc, analyte: str, unit: str, day: dt.date,
                       molar_volume: float) -> tuple[bool, float] | None:
    """(valid on ``day``, certified value in ``unit``) of a lot for a channel, or None when
    the lot certifies no value usable for the analyte.

    The same rules as envcal's reference value (:func:`envcal.certificates.certified_value`):
    validity ``issued <= day <= expires``, the analyte aliases of
    :data:`envcal.certificates.ALIASES` in their order, gas conversions with the rule pack's
    molar volume [L/mol]; a zero material without values is 0.
    """
    valid = certificate_state(Certificate(issued=doc.issued, expires=doc.expires, current=True),
                              day) == "valid"
    by_analyte = {v.analyte: v for v in doc.values}
    for name in ALIASES.get(analyte, (analyte,)):
        v = by_analyte.get(name)
        if v is None:
            continue
        try:
            value, _, _, _ = _convert_value(v.value, v.U, v.analyte, v.unit, analyte, unit,
                                            molar_volume)
        except UnitError:
            return None
        return valid, value
    if doc.kind == "zero_material" and not doc.values:
        return valid, 0.0
    return None


# ------------------------------------------------------------------------------ faults
class Fault(BaseModel):
    """One injected fault (one ``[[faults]]`` table of a fault file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["drift", "bias", "stuck", "noise", "drop", "malformed", "material", "falsify",
                  "maintenance"]
    analyzer: str
    analyte: str = "*"
    start_day: float = 0.0
    end_day: float | None = None
    expect: list[str] = []
    note: str = ""
    # parameters (which ones a type takes: _PARAMS)
    mode: Literal["span", "zero"] | None = None
    per_day: float | None = None
    percent: float | None = None
    offset: float | None = None
    hours: float | None = None
    probability: float | None = None
    max_count: int | None = None
    material: str | None = None
    limit: float | None = None
    flag: Literal["C", "M"] | None = None
    excursions_per_day: float | None = None
    excursion: float | None = None
    excursion_hours: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _expect_list(cls, data):
        if isinstance(data, dict) and isinstance(data.get("expect"), str):
            data = {**data, "expect": [data["expect"]]}
        return data

    @model_validator(mode="after")
    def _params(self) -> Fault:
        required, optional = _PARAMS[self.type]
        given = self.model_fields_set - _COMMON
        missing = required - given
        if missing:
            raise ValueError(f"fault type {self.type!r} needs {', '.join(sorted(missing))}")
        if self.type == "bias" and not {"percent", "offset"} & given:
            raise ValueError("fault type 'bias' needs percent or offset")
        extra = given - required - optional
        if extra:
            raise ValueError(f"fault type {self.type!r} does not take {', '.join(sorted(extra))}")
        for k in self.expect:
            if k not in ALERT_KINDS:
                raise ValueError(f"expect: unknown alert kind {k!r} (known: {', '.join(ALERT_KINDS)})")
        if self.end_day is not None and self.end_day <= self.start_day:
            raise ValueError("end_day must be after start_day")
        if self.probability is not None and not 0 <= self.probability <= 1:
            raise ValueError("probability must be within [0, 1]")
        if self.hours is not None and self.hours <= 0:
            raise ValueError("hours must be positive")
        return self

    def active(self, t_day: np.ndarray | float):
        """Whether the fault acts at ``t_day`` [days since the simulation start]."""
        end = self.end_day if self.end_day is not None else math.inf
        if self.type in ("stuck", "maintenance") and self.hours is not None:
            end = min(end, self.start_day + self.hours / 24.0)
        return (t_day >= self.start_day) & (t_day < end)


_COMMON = {"type", "analyzer", "analyte", "start_day", "end_day", "expect", "note"}
_PARAMS: dict[str, tuple[set[str], set[str]]] = {
    "drift": ({"per_day"}, {"mode"}),
    "bias": (set(), {"percent", "offset"}),
    "stuck": ({"hours"}, set()),
    "noise": ({"per_day"}, set()),
    "drop": ({"probability"}, set()),
    "malformed": ({"probability"}, {"max_count"}),
    "material": ({"material"}, set()),
    "falsify": ({"limit"}, {"flag", "excursions_per_day", "excursion", "excursion_hours"}),
    "maintenance": ({"hours"}, {"flag"}),
}


class _FaultFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str = ""
    faults: list[Fault] = []


def load_faults(path: str | Path | None) -> list[Fault]:
    """Load and validate a fault file strictly (unknown key = error).

    Parameters
    ----------
    path : str or Path or None
        TOML file with ``[[faults]]`` tables (format documented in
        ``stations/faults/default.toml``); None gives no faults.

    Returns
    -------
    list of Fault
    """
    if path is None:
        return []
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimulatorError(f"{p}: no such fault file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SimulatorError(f"{p}: invalid TOML: {exc}") from None
    try:
        return list(_FaultFile.model_validate(data).faults)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{p}: {loc}: {msg}")
        raise SimulatorError("\n".join(lines)) from None


# ------------------------------------------------------------------------------ checks
@dataclass
class CheckEvent:
    """One scheduled QC check of one channel, with the readings the analyzer will send."""

    id: str
    analyzer: str
    analyte: str
    kind: str
    material: str
    reference: float  # the true value of what the analyzer sees [channel unit]
    t0: float  # step start [s since simulation start]
    times: np.ndarray = field(repr=False, default=None)  # [s since start]
    values: np.ndarray = field(repr=False, default=None)  # [channel unit]
    y0: float = 0.0  # process value when the check gas was switched in [channel unit]
    scatter: float = 0.0  # this check's calibration scatter [channel unit]

    @property
    def t_end(self) -> float:
        return float(self.times[-1])


# ------------------------------------------------------------------------------ signals
#: Routine signal profiles: base level, diurnal amplitude (fraction) and peak hour, weather/
#: process episode log-sd and correlation time [h], load coupling, noise sd (fraction of base).
_PROFILES: dict[tuple[str, str], tuple[float, float, float, float, float, float, float]] = {
    ("pm", "PM2.5"): (35.0, 0.25, 21, 0.5, 36, 0, 0.05),
    ("pm", "PM10"): (58.0, 0.25, 20, 0.45, 36, 0, 0.05),
    ("pm", "flow"): (PM_SET_FLOW, 0, 0, 0.0, 1, 0, 0.002),
    ("gas", "SO2"): (0.004, 0.2, 10, 0.4, 48, 0, 0.08),
    ("gas", "NO2"): (0.018, 0.35, 20, 0.35, 36, 0, 0.05),
    ("gas", "NO"): (0.008, 0.5, 8, 0.4, 36, 0, 0.08),
    ("gas", "CO"): (0.6, 0.3, 8, 0.3, 36, 0, 0.04),
    ("gas", "O3"): (0.035, 0.6, 15, 0.3, 48, 0, 0.05),
    ("cems", "SO2"): (22.0, 0, 0, 0.08, 6, 1.2, 0.04),
    ("cems", "NOx"): (37.0, 0, 0, 0.06, 6, 0.8, 0.04),
    ("cems", "O2"): (6.0, 0, 0, 0.02, 6, -0.3, 0.01),
    ("cems", "dust"): (3.0, 0, 0, 0.1, 12, 0.6, 0.06),
    ("cems", "velocity"): (12.0, 0, 0, 0.02, 6, 1.0, 0.02),
    ("cems", "flue_temp"): (50.0, 0, 0, 0.01, 6, 0.15, 0.005),
    ("cems", "flue_pressure"): (-0.3, 0, 0, 0.05, 6, 0.5, 0.02),
    ("cems", "flue_humidity"): (11.0, 0, 0, 0.03, 6, 0.1, 0.02),
    ("sw", "CODcr"): (14.0, 0.05, 14, 0.15, 72, 0, 0.03),
    ("sw", "NH3-N"): (0.35, 0.05, 14, 0.25, 72, 0, 0.04),
    ("sw", "TP"): (0.12, 0.05, 14, 0.2, 72, 0, 0.04),
    ("sw", "TN"): (1.6, 0.05, 14, 0.15, 72, 0, 0.03),
    ("sw", "DO"): (7.5, 0.1, 15, 0.05, 72, 0, 0.02),
    ("sw", "water_temp"): (17.0, 0.05, 15, 0.02, 72, 0, 0.005),
    ("ww", "CODcr"): (55.0, 0.15, 11, 0.12, 24, 0, 0.03),
    ("ww", "NH3-N"): (1.8, 0.15, 11, 0.25, 24, 0, 0.04),
    ("ww", "TP"): (0.25, 0.15, 11, 0.2, 24, 0, 0.04),
    ("ww", "TN"): (9.0, 0.15, 11, 0.12, 24, 0, 0.03),
    ("ww", "water_flow"): (220.0, 0.3, 10, 0.08, 24, 0, 0.03),
    ("ww", "water_temp"): (24.0, 0.05, 15, 0.02, 72, 0, 0.005),
}
_PH = {"sw": 7.6, "ww": 7.2}


def _category(reg: Registry, an: AnalyzerSpec) -> str:
    kind = reg.stations[an.station].kind
    names = {c.analyte for c in an.channels}
    if kind == "flue_gas":
        return "cems"
    if kind == "surface_water":
        return "sw"
    if kind == "wastewater":
        return "ww"
    return "pm" if names & {"PM2.5", "PM10"} else "gas"


def _decimals(span: float) -> int:
    return int(min(6, max(1, 4 - math.ceil(math.log10(span)))))


def _smooth_ar(rng: np.random.Generator, n_hours: int, tau_h: float) -> np.ndarray:
    """Unit-variance AR(1) series on an hourly grid with correlation time ``tau_h`` [h]."""
    phi = math.exp(-1.0 / max(tau_h, 1e-9))
    e = rng.standard_normal(n_hours)
    out = np.empty(n_hours)
    out[0] = e[0]
    s = math.sqrt(1 - phi * phi)
    for i in range(1, n_hours):
        out[i] = phi * out[i - 1] + s * e[i]
    return out


# ------------------------------------------------------------------------------ engine
@dataclass
class _Analyzer:
    spec: AnalyzerSpec
    index: int
    station: str
    station_kind: str
    category: str
    interval_min: int  # minutes between routine readings
    rng: np.random.Generator  # signals
    rng_checks: np.random.Generator
    rng_faults: np.random.Generator
    t90: float
    faults: list[Fault]
    series: dict[str, np.ndarray] = field(default_factory=dict)  # measured, per routine sample
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    noise_sd: dict[str, float] = field(default_factory=dict)
    span_ref: dict[str, float] = field(default_factory=dict)
    stuck_value: dict[int, float] = field(default_factory=dict)
    checks: list[CheckEvent] = field(default_factory=list)
    seq: int = 0
    malformed: int = 0
    names: list[str] = field(default_factory=list)
    out: dict[str, list[float]] = field(default_factory=dict)  # rounded, as sent
    out_flags: dict[str, list[str]] = field(default_factory=dict)

    @property
    def json_data(self) -> bool:
        return self.spec.protocol == "json"


class Simulator:
    """Virtual analyzers for every analyzer of a registry, with fault injection.

    Parameters
    ----------
    registry : Registry
        Stations and analyzers (``envcal.registry.load_registry``).
    materials : list of CertificateDoc or str or Path, optional
        CRM certificates, or a folder of them (default ``reference_materials/``).
    faults : list of Fault or str or Path, optional
        Injected faults, or a fault file; None for none.
    seed : int, default 0
        Seed of the numpy Generators; the same seed gives the same bytes.
    start : datetime, optional
        Simulation start (timezone-aware; naive means +08:00); default ``days`` days before
        today's local midnight (+08:00), so the run ends at or before now.
    days : float, default 30
        Simulated duration [d].

    Notes
    -----
    ``messages()`` is pure and repeatable; ``publish()`` sends it over MQTT. The bytes depend
    on (registry, materials, faults, seed, start, days): the same inputs give the same bytes;
    a different ``days`` gives a different (equally valid) realisation.
    """

    def __init__(self, registry: Registry, materials=None, faults=None, seed: int = 0,
                 start: dt.datetime | None = None, days: float = 30.0) -> None:
        if days <= 0:
            raise SimulatorError("days must be positive")
        self.registry = registry
        self.materials = (load_materials(materials) if materials is None or isinstance(materials, (str, Path))
                          else list(materials))
        self.faults = load_faults(faults) if isinstance(faults, (str, Path)) else list(faults or [])
        self.seed = int(seed)
        if start is None:
            today = dt.datetime.now(TZ).date()
            start = dt.datetime.combine(today, dt.time(0), TZ) - dt.timedelta(days=math.ceil(days))
        elif start.tzinfo is None:
            start = start.replace(tzinfo=TZ)
        self.start = start.astimezone(TZ)
        self.days = float(days)
        self.n_minutes = int(round(self.days * 1440))
        self._validate_faults()
        self.notes: list[str] = []  # what the simulator could not do (e.g. no CRM for a span)
        self.stats: dict[str, int] = {}
        self._built = False

    # -------------------------------------------------------------- setup
    def _validate_faults(self) -> None:
        for i, f in enumerate(self.faults):
            an = self.registry.analyzers.get(f.analyzer)
            if an is None:
                raise SimulatorError(f"faults[{i}]: unknown analyzer {f.analyzer!r}")
            if f.analyte != "*" and an.channel(f.analyte) is None:
                raise SimulatorError(f"faults[{i}]: analyzer {f.analyzer!r} has no channel {f.analyte!r}")
            if f.type in ("drift", "bias", "stuck", "noise", "falsify") and f.analyte == "*":
                raise SimulatorError(f"faults[{i}]: a {f.type} fault must name one analyte")

    def _build(self) -> None:
        """Generate every analyzer's routine series and check schedule (deterministic)."""
        self._an: list[_Analyzer] = []
        for idx, spec in enumerate(sorted(self.registry.analyzers.values(), key=lambda a: a.id)):
            st = self.registry.stations[spec.station]
            cat = _category(self.registry, spec)
            interval = {"sw": 240, "ww": 60}.get(cat, 1)
            a = _Analyzer(spec=spec, index=idx, station=st.id, station_kind=st.kind, category=cat,
                          interval_min=interval,
                          rng=np.random.default_rng([self.seed, idx, 1]),
                          rng_checks=np.random.default_rng([self.seed, idx, 2]),
                          rng_faults=np.random.default_rng([self.seed, idx, 3]),
                          t90=0.0, faults=[f for f in self.faults if f.analyzer == spec.id])
            a.t90 = float(a.rng_checks.uniform(60.0, 120.0))
            self._an.append(a)
            self._span_refs(a)
            self._routine(a)
            self._schedule(a)
            self._apply_check_overlay(a)
        self.checks = [c for a in self._an for c in a.checks]
        self._built = True

    def _times(self, a: _Analyzer) -> np.ndarray:
        """Routine sample times [s since start]."""
        return np.arange(0, self.n_minutes, a.interval_min, dtype=np.float64) * MINUTE

    def _routine(self, a: _Analyzer) -> None:
        t = self._times(a)
        n_hours = int(math.ceil(self.days * 24)) + 2
        hours = np.arange(n_hours) * 3600.0
        local_h = (t / 3600.0 + self.start.hour + self.start.minute / 60.0) % 24.0
        load = None
        if a.category == "cems":
            # load-following unit: high in the day, low at night, plus dispatch noise
            ld = 0.75 + 0.17 * np.sin(2 * np.pi * (local_h - 9.0) / 24.0)
            ld += 0.06 * np.interp(t, hours, _smooth_ar(a.rng, n_hours, 3.0))
            load = np.clip(ld, 0.5, 1.0)
        for ch in a.spec.channels:
            name = ch.analyte
            if name == "pH":
                base = _PH.get(a.category, 7.4)
                ep = np.interp(t, hours, _smooth_ar(a.rng, n_hours, 48.0))
                v = base + 0.15 * ep + 0.08 * np.cos(2 * np.pi * (local_h - 15) / 24)
                sd = 0.03
                v = v + sd * a.rng.standard_normal(t.size)
                lo, hi = 0.0, 14.0
            else:
                prof = _PROFILES.get((a.category, name)) or (0.3 * ch.span, 0.1, 12, 0.2, 24, 0, 0.03)
                base, amp, peak, ep_sd, tau, coupling, noise = prof
                ep = np.interp(t, hours, _smooth_ar(a.rng, n_hours, tau))
                v = base * (1 + amp * np.cos(2 * np.pi * (local_h - peak) / 24)) * np.exp(ep_sd * ep)
                if load is not None and coupling:
                    v = v * (1 + coupling * (load - 0.75))
                sd = noise * abs(base)
                v = v + sd * a.rng.standard_normal(t.size)
                lo = ch.range_min if ch.range_min is not None else (min(0.0, base * 3) if base < 0 else 0.0)
                hi = ch.range_max if ch.range_max is not None else 1.2 * ch.span
            a.noise_sd[name] = sd
            a.series[name] = np.clip(v, lo, hi)
            a.flags[name] = np.full(t.size, "N", dtype="<U1")
        # falsification excursions raise the true emission before the flags hide it
        for f in a.faults:
            if f.type == "falsify" and f.excursions_per_day:
                self._excursions(a, f, t)
        for name in list(a.series):
            a.series[name] = self._transform(a, name, t, a.series[name], a.rng_faults, routine=True)
        for f in a.faults:
            if f.type == "falsify":
                sent = np.round(a.series[f.analyte], _decimals(a.spec.channel(f.analyte).span))
                on = f.active(t / DAY) & (sent > f.limit)
                a.flags[f.analyte][on] = f.flag or "M"
            elif f.type == "maintenance":
                on = f.active(t / DAY)
                names = [f.analyte] if f.analyte != "*" else list(a.series)
                for name in names:
                    a.flags[name][on] = f.flag or "M"

    def _excursions(self, a: _Analyzer, f: Fault, t: np.ndarray) -> None:
        """Process upsets (e.g. SCR/ammonia-slip trouble) that push ``f.analyte`` above the limit."""
        t0, t1 = f.start_day * DAY, (f.end_day if f.end_day is not None else self.days) * DAY
        n = a.rng_faults.poisson(f.excursions_per_day * max(0.0, (t1 - t0) / DAY))
        starts = np.sort(a.rng_faults.uniform(t0, max(t0, t1), n))
        width = (f.excursion_hours or 2.0) * 3600.0
        excess = f.excursion if f.excursion is not None else 1.5 * f.limit
        v = a.series[f.analyte]
        for s in starts:
            m = (t >= s) & (t < s + width)
            v[m] += excess * np.sin(np.pi * (t[m] - s) / width) ** 0.5

    def _transform(self, a: _Analyzer, name: str, t: np.ndarray, v: np.ndarray,
                   rng: np.random.Generator, routine: bool = False) -> np.ndarray:
        """Apply drift, bias, noise growth and stuck value to measured values ``v`` at ``t`` [s]."""
        ch = a.spec.channel(name)
        d = t / DAY
        v = np.array(v, dtype=np.float64)
        for f in a.faults:
            if f.analyte != name:
                continue
            on = f.active(d)
            if not np.any(on):
                continue
            el = np.where(on, d - f.start_day, 0.0)
            if f.type == "drift":
                shift = f.per_day / 100.0 * ch.span * el  # [channel unit] at the reference level
                if (f.mode or "span") == "span":
                    ref = a.span_ref.get(name, 0.8 * ch.span)
                    v = v + shift * (v / ref)
                else:
                    v = v + shift
            elif f.type == "bias":
                if f.percent is not None:
                    v = np.where(on, v * (1 + f.percent / 100.0), v)
                if f.offset is not None:
                    v = np.where(on, v + f.offset, v)
            elif f.type == "noise":
                grow = 1.0 + f.per_day * el
                extra = np.sqrt(np.maximum(grow * grow - 1.0, 0.0)) * a.noise_sd.get(name, 0.0)
                v = v + extra * rng.standard_normal(v.size)
            elif f.type == "stuck":
                key = id(f)
                if routine:
                    first = int(np.argmax(on))
                    a.stuck_value[key] = float(v[first])
                v = np.where(on, a.stuck_value.get(key, np.nan), v)
        return v

    def _material_for(self, a: _Analyzer, name: str, kind: str, when: dt.date
                      ) -> tuple[str, float] | None:
        """(material id, reference value in the channel unit) for a check, or None.

        Reference values come from :func:`material_reference` (envcal's certificate rules,
        the analyzer's rule-pack molar volume), so the simulator's ground truth is the value
        envcal will compare with."""
        ch = a.spec.channel(name)
        mv = load_pack(a.spec.rule_pack).molar_volume
        if kind == "zero":
            # zero gas / zero water that lists the analyte; otherwise zero air (empty material)
            best = None
            for m in self.materials:
                if m.kind != "zero_material" or not any(
                        v.analyte in ALIASES.get(name, (name,)) for v in m.values):
                    continue
                got = material_reference(m, name, ch.unit, when, mv)
                if got is None:
                    continue
                score = 0 if got[0] else 1
                if best is None or score < best[0]:
                    best = (score, m.id, got[1])
            return ("", 0.0) if best is None else (best[1], best[2])
        target = (0.8 if kind == "span" else 0.5) * ch.span
        best = None
        for m in self.materials:
            if m.kind not in ("gas_cylinder", "solution"):
                continue
            got = material_reference(m, name, ch.unit, when, mv)
            if got is None:
                continue
            valid, ref = got
            score = (0 if valid else 1, 0 if ref <= ch.span else 1, abs(ref - target))
            if best is None or score < best[0]:
                best = (score, m.id, ref)
        return None if best is None else (best[1], best[2])

    def _plan(self, a: _Analyzer) -> list[tuple[float, str, str]]:
        """(days between checks, kind, analyte) the analyzer's rule pack asks for."""
        pack = a.spec.rule_pack
        names = [c.analyte for c in a.spec.channels]
        gases = [n for n in names if n in ("SO2", "NOx", "NO", "NO2", "CO", "O3", "O2")]
        if a.category in ("cems", "gas") or pack in ("hj75_2017", "hj818_2018", "cfr40_75", "cfr40_60f"):
            plan = [(1.0, k, n) for n in gases for k in ("zero", "span")]
            if a.category == "cems":
                # HJ 75-2017 daily QA also covers the particulate CEMS (zero and span) and
                # the flow-velocity CMS (zero); the span needs a reference (else a note)
                plan += [(1.0, k, n) for n, kinds in (("dust", ("zero", "span")), ("velocity", ("zero",)))
                         if n in names for k in kinds]
            return plan
        if a.category in ("sw", "ww") or pack in ("hj355_2019", "hj915_2017"):
            return [(1.0, "std_sample", n) for n in names
                    if n in ("CODcr", "NH3-N", "TP", "TN", "pH")]
        if a.category == "pm" and "flow" in names:
            return [(float(PM_FLOW_EVERY_DAYS), "flow", "flow")]
        return []

    def _span_refs(self, a: _Analyzer) -> None:
        """The span-check level of each channel: the level at which span drift is specified."""
        for _every, kind, name in self._plan(a):
            if kind == "span":
                m = self._material_for(a, name, kind, self.start.date())
                if m and m[1] > 0:
                    a.span_ref[name] = m[1]

    def _schedule(self, a: _Analyzer) -> None:
        plan = self._plan(a)
        hour0 = {"cems": 1.0, "gas": 3.0, "sw": 2.25, "ww": 2.25, "pm": 10.0}[a.category]
        offset = hour0 * 3600.0 + (a.index % 6) * 7 * MINUTE
        day = 0
        while day < self.days:
            t_next = day * DAY + offset
            for every, kind, name in plan:
                if day % every:
                    continue
                t0 = t_next
                when = (self.start + dt.timedelta(seconds=t0)).date()
                if kind == "flow":
                    mat = ("", PM_SET_FLOW)
                else:
                    mat = self._material_for(a, name, kind, when)
                if mat is None:
                    note = f"{a.spec.id} {name}: no reference material for a {kind} check"
                    if note not in self.notes:
                        self.notes.append(note)
                    continue
                material, ref = mat
                for f in a.faults:
                    if f.type == "material" and f.analyte in ("*", name) and f.active(t0 / DAY):
                        material = f.material
                ev = self._check(a, name, kind, material, ref, t0)
                if ev.t_end >= self.days * DAY:
                    break
                a.checks.append(ev)
                # next check on a whole minute: check readings (at :05, :20, :35, :50 s) never
                # share a timestamp with a routine reading of the same channel
                t_next = math.ceil((ev.t_end + MINUTE) / MINUTE) * MINUTE
            day += 1

    def _check(self, a: _Analyzer, name: str, kind: str, material: str, ref: float,
               t0: float) -> CheckEvent:
        ch = a.spec.channel(name)
        local = self.start + dt.timedelta(seconds=t0)
        cid = f"CK-{a.spec.id}-{local:%Y%m%d%H%M}-{name}-{kind}"
        # the process value at the step start; the transition lasts until the residual of the
        # first-order response is below 0.005 % of span, then the plateau follows
        i = min(int(t0 // (a.interval_min * MINUTE)), a.series[name].size - 1)
        y0 = float(a.series[name][i])
        tau = self._t90(a, kind) / math.log(10.0)
        settle = tau * math.log(max(abs(ref - y0), 1e-12) / (0.00005 * ch.span))
        n_trans = int(min(CHECK_TRANSITION_MAX, max(CHECK_TRANSITION, math.ceil(settle / CHECK_SPACING))))
        times = t0 + 5.0 + CHECK_SPACING * np.arange(n_trans + CHECK_PLATEAU)
        ev = CheckEvent(id=cid, analyzer=a.spec.id, analyte=name, kind=kind, material=material,
                        reference=ref, t0=t0, times=times)
        ev.y0 = y0
        ev.scatter = float(a.rng_checks.normal(0.0, self._check_sd(ch, kind, ref)[0]))
        ev.values = self._response(a, ev, times)
        return ev

    @staticmethod
    def _t90(a: _Analyzer, kind: str) -> float:
        """Response time [s]: a gas path's T90, or a batch analyzer's carry-over (std_sample)."""
        return a.t90 / 5.0 if kind == "std_sample" else a.t90

    @staticmethod
    def _check_sd(ch, kind: str, ref: float) -> tuple[float, float]:
        """(sd of a check's calibration scatter, sd of one check reading) [channel unit].

        Gas, dust and flow checks are judged in % of span, standard-sample checks relative to
        the certified value (pH absolutely), so the scatter of a healthy analyzer follows suit.
        """
        if kind == "std_sample":  # batch analyzer: judged relative to the certified value
            if ch.analyte == "pH":
                return 0.01, 0.01
            return 0.01 * abs(ref), 0.0002 * ch.span + 0.0015 * abs(ref)
        scatter = 0.0006 * ch.span if kind == "zero" else 0.002 * ch.span
        return scatter, 0.0004 * ch.span + 0.0002 * min(abs(ref), ch.span)

    def _response(self, a: _Analyzer, ev: CheckEvent, t: np.ndarray) -> np.ndarray:
        """What the analyzer reads at ``t`` [s] during check ``ev`` (faults included)."""
        ch = a.spec.channel(ev.analyte)
        tau = self._t90(a, ev.kind) / math.log(10.0)
        target = ev.reference + ev.scatter
        y = target + (ev.y0 - target) * np.exp(-np.maximum(t - ev.t0, 0.0) / tau)
        sd = self._check_sd(ch, ev.kind, ev.reference)[1]
        y = y + sd * a.rng_checks.standard_normal(t.size)
        y = self._transform(a, ev.analyte, t, y, a.rng_checks)
        lo = ch.range_min if ch.range_min is not None else (0.0 if ev.analyte != "flue_pressure" else -np.inf)
        return np.maximum(y, lo) if np.isfinite(lo) else y

    def _apply_check_overlay(self, a: _Analyzer) -> None:
        """Routine readings taken while a channel is in a check read the check gas, flagged C."""
        t = self._times(a)
        step = a.interval_min * MINUTE
        for ev in a.checks:
            i0 = int(math.ceil(ev.t0 / step))
            i1 = int(math.floor(ev.t_end / step))
            if i1 < i0:
                continue
            idx = np.arange(i0, min(i1, t.size - 1) + 1)
            a.series[ev.analyte][idx] = self._response(a, ev, t[idx])
            a.flags[ev.analyte][idx] = "C"

    # -------------------------------------------------------------- messages
    def _topic(self, a: _Analyzer, leaf: str) -> str:
        return f"envcal/{a.station}/{a.spec.id}/{leaf}"

    def _json(self, a: _Analyzer, t: float, values: dict, flags: dict,
              check: CheckBlock | None = None) -> bytes:
        """One JSON v1 reading, byte for byte what ``json_v1.encode_readings`` writes (a test
        holds the two together), built directly because this is the simulator's hot loop."""
        a.seq += 1
        obj: dict[str, object] = {"ts": self._iso(t), "seq": a.seq, "values": values, "flags": flags}
        if check is not None:
            block: dict[str, object] = {"id": check.id, "kind": check.kind, "phase": check.phase}
            if check.material is not None:
                block["material"] = check.material
            obj["check"] = block
        return _dumps([obj]).encode("utf-8")

    def _iso(self, t: float) -> str:
        return (self.start + dt.timedelta(seconds=float(t))).isoformat()

    def _hj212(self, a: _Analyzer, t: float, i: int) -> bytes:
        from envcal.protocols import hj212

        local = self.start + dt.timedelta(seconds=float(t))
        groups = []
        hourly = a.category in ("sw", "ww")
        for ch in a.spec.channels:
            code = ch.code
            if code is None:
                continue
            v = a.out[ch.analyte][i]
            flag = a.out_flags[ch.analyte][i]
            if hourly:
                cou = f"{code}-Cou={round(v * 3.6, 1)!r}," if ch.analyte == "water_flow" else ""
                groups.append(f"{cou}{code}-Min={v!r},{code}-Avg={v!r},{code}-Max={v!r},"
                              f"{code}-Flag={flag}")
            else:
                groups.append(f"{code}-Rtd={v!r},{code}-Flag={flag}")
        cp = ";".join(groups)  # water_flow -Cou: m3 in the hour
        qn = f"{local:%Y%m%d%H%M%S}{int(local.microsecond / 1000):03d}"
        return hj212.encode_frame(cn="2061" if hourly else "2011", mn=a.spec.mn or a.spec.id,
                                  cp=cp, qn=qn, st=_ST.get(a.station_kind, "22"),
                                  pw=a.spec.pw or "123456", flag=5, data_time=local)

    def _events(self, a: _Analyzer, day: int) -> list[tuple[float, int, int, object]]:
        """The analyzer's messages of one simulated day: (t, analyzer index, order, job)."""
        out = []
        step = a.interval_min * MINUTE
        t_lo, t_hi = day * DAY, min((day + 1) * DAY, self.n_minutes * MINUTE)
        i0, i1 = int(math.ceil(t_lo / step)), int(math.ceil(t_hi / step))
        for i in range(i0, i1):
            out.append((i * step, a.index, 0, ("r", i)))
        for ev in a.checks:
            if t_lo <= ev.times[0] < t_hi:
                for k in range(ev.times.size):
                    out.append((float(ev.times[k]), a.index, 1, ("c", ev, k)))
        out.sort(key=lambda e: (e[0], e[2]))
        return out

    def _payload(self, a: _Analyzer, job) -> tuple[str, bytes]:
        if job[0] == "r":
            i = job[1]
            t = i * a.interval_min * MINUTE
            if not a.json_data:
                return self._topic(a, "hj212"), self._hj212(a, t, i)
            values = {n: a.out[n][i] for n in a.names}
            flags = {n: a.out_flags[n][i] for n in a.names}
            return self._topic(a, "data"), self._json(a, t, values, flags)
        _, ev, k = job
        ch = a.spec.channel(ev.analyte)
        n = ev.times.size
        phase = "start" if k == 0 else ("end" if k == n - 1 else "run")
        block = CheckBlock(id=ev.id, kind=ev.kind, phase=phase, material=ev.material or None)
        value = round(float(ev.values[k]), _decimals(ch.span))
        return self._topic(a, "data"), self._json(a, float(ev.times[k]), {ev.analyte: value},
                                                  {ev.analyte: "C"}, block)

    def _message_faults(self, a: _Analyzer, t: float, topic: str, payload: bytes) -> bytes | None:
        """Drop or corrupt one message per the analyzer's ``drop`` / ``malformed`` faults."""
        d = t / DAY
        for f in a.faults:
            if f.type not in ("drop", "malformed") or not f.active(d):
                continue
            if a.rng_faults.random() >= f.probability:
                continue
            if f.type == "drop":
                self.stats["dropped"] += 1
                return None
            if f.max_count is not None and a.malformed >= f.max_count:
                continue
            a.malformed += 1
            self.stats["malformed"] += 1
            if topic.endswith("/hj212"):
                body = payload.rstrip(b"\r\n")
                crc = int(body[-4:], 16) ^ 0x5A5A
                return body[:-4] + f"{crc:04X}".encode() + b"\r\n"
            return payload[: max(1, len(payload) // 2)]  # truncated JSON
        return payload

    def messages(self) -> Iterator[tuple[dt.datetime, str, bytes]]:
        """Every message of the run in simulated-time order.

        Yields
        ------
        sim_time : datetime
            When the analyzer sends it (timezone-aware, +08:00).
        topic : str
            MQTT topic (DESIGN.md section 4).
        payload : bytes
            JSON v1 reading(s) or one HJ 212 frame (possibly deliberately malformed).

        Notes
        -----
        Repeatable: each call regenerates the run from the seed; ``stats`` counts messages,
        dropped and malformed ones, checks and check readings of the last full iteration.
        """
        self._build()
        for a in self._an:
            a.seq = 0
            a.malformed = 0
            a.names = [c.analyte for c in a.spec.channels]
            a.out = {c.analyte: np.round(a.series[c.analyte], _decimals(c.span)).tolist()
                     for c in a.spec.channels}
            a.out_flags = {n: a.flags[n].tolist() for n in a.names}
        self.stats = {"messages": 0, "dropped": 0, "malformed": 0, "checks": len(self.checks),
                      "check_readings": 0}
        n_days = int(math.ceil(self.days))
        for day in range(n_days):
            streams = [self._events(a, day) for a in self._an]
            for t, ai, _order, job in heapq.merge(*streams, key=lambda e: (e[0], e[1], e[2])):
                a = self._an[ai]
                topic, payload = self._payload(a, job)
                payload = self._message_faults(a, t, topic, payload)
                if payload is None:
                    continue
                self.stats["messages"] += 1
                if job[0] == "c":
                    self.stats["check_readings"] += 1
                yield self.start + dt.timedelta(seconds=t), topic, payload

    # -------------------------------------------------------------- MQTT
    def status_topics(self) -> list[str]:
        """The retained ``status`` topic of every virtual analyzer."""
        if not self._built:
            self._build()
        return [self._topic(a, "status") for a in self._an]

    def publish(self, broker_url: str, speed: float = 0.0, *, client_prefix: str = "envcal-sim",
                max_pending: int = 2000, progress=None, stop=None) -> dict[str, int]:
        """Publish the run over MQTT (QoS 1), one client per virtual analyzer.

        Parameters
        ----------
        broker_url : str
            ``mqtt://host:port``.
        speed : float, default 0
            Simulated seconds per real second; 0 publishes as fast as the broker acknowledges.
        client_prefix : str
            MQTT client ids are ``{client_prefix}-{analyzer}``.
        max_pending : int
            Messages allowed in flight (not yet acknowledged) per client before waiting.
        progress : callable, optional
            Called as ``progress(sim_time, published)`` about once per simulated hour.
        stop : threading.Event, optional
            Set it to end the run early (e.g. from the demo's Ctrl-C handler); what was
            published so far is still acknowledged and ``offline`` is sent.

        Returns
        -------
        dict
            ``stats`` of the run (messages published, dropped, malformed, checks).

        Notes
        -----
        Each client has a retained ``online`` status and an ``offline`` last will; at the end
        it waits for every PUBACK, publishes ``offline`` (retained) and disconnects.
        """
        import paho.mqtt.client as mqtt

        from envcal.broker import parse_broker_url

        host, port, tls = parse_broker_url(broker_url)
        if not self._built:
            self._build()
        clients: dict[str, mqtt.Client] = {}
        pending: dict[str, deque] = {}
        for a in self._an:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_prefix}-{a.spec.id}",
                            protocol=mqtt.MQTTv311)
            if tls:
                c.tls_set()
            status = self._topic(a, "status")
            c.will_set(status, b"offline", qos=1, retain=True)
            c.max_inflight_messages_set(100)
            c.connect(host, port, keepalive=30)
            c.loop_start()
            clients[a.spec.id] = c
            pending[a.spec.id] = deque()
        try:
            for a in self._an:
                info = clients[a.spec.id].publish(self._topic(a, "status"), b"online", qos=1, retain=True)
                pending[a.spec.id].append(info)
            t_real0 = time.monotonic()
            last_hour = None
            published = 0
            for sim_time, topic, payload in self.messages():
                if stop is not None and stop.is_set():
                    break
                if speed > 0:
                    due = t_real0 + (sim_time - self.start).total_seconds() / speed
                    wait = due - time.monotonic()
                    if wait > 0:
                        if stop is not None:
                            if stop.wait(wait):
                                break
                        else:
                            time.sleep(wait)
                aid = topic.split("/")[2]
                q = pending[aid]
                q.append(clients[aid].publish(topic, payload, qos=1))
                while len(q) > max_pending:
                    q.popleft().wait_for_publish(30)
                published += 1
                if progress is not None:
                    hour = sim_time.replace(minute=0, second=0, microsecond=0)
                    if hour != last_hour:
                        last_hour = hour
                        progress(sim_time, published)
            for a in self._an:
                q = pending[a.spec.id]
                q.append(clients[a.spec.id].publish(self._topic(a, "status"), b"offline", qos=1,
                                                    retain=True))
            for aid, q in pending.items():
                while q:
                    info = q.popleft()
                    info.wait_for_publish(60)
                    if not info.is_published():
                        raise SimulatorError(f"{aid}: message not acknowledged by {broker_url}")
        finally:
            for c in clients.values():
                c.disconnect()
                c.loop_stop()
        stats = dict(self.stats)
        stats["published"] = published
        return stats


def expected_alerts(faults: Iterable[Fault]) -> dict[str, set[str]]:
    """Alert kinds each analyzer's faults are expected to raise: {analyzer: {kind, ...}}."""
    out: dict[str, set[str]] = {}
    for f in faults:
        if f.expect:
            out.setdefault(f.analyzer, set()).update(f.expect)
    return out
