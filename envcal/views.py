"""The read layer of the Streamlit app: KPIs, tables and series as plain data.

Every number the UI shows comes from here (or from the modules this calls:
:mod:`envcal.verify`, :mod:`envcal.trends`, :mod:`envcal.instruments`,
:mod:`envcal.certificates`, :mod:`envcal.rules`, :mod:`envcal.archive`, :mod:`envcal.alerts`);
the pages only lay it out. Each function takes an engine and explicit times, returns
dataclasses or pandas DataFrames, and can be tested without Streamlit.

Analyzer state and operator integrity are domain rules of :mod:`envcal.state` (from the
out-of-control periods and alerts :class:`envcal.alerts.AlertEngine` stored); this module
re-exports them for the pages and computes nothing of its own.

References
----------
HJ 75-2017 clause 11-12 (out-of-control periods); 40 CFR 75.24 (out-of-control periods);
HJ 75-2017 clause 11 and the PRC Metrology Law art. 9 (verification coverage).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal import kernels
from envcal.archive import readings_frame
from envcal.certificates import list_certificates, results_using_material, show_certificate
from envcal.models import Alert, Analyzer, Channel, CheckResult
from envcal.rules.confirmations import load_all, load_pack
from envcal.state import (
    INTEGRITY_FORMULA,
    INTEGRITY_THRESHOLD,
    STATE_RANK,
    STATE_WINDOW,
    STATES,
    analyzer_states,
    analyzers_frame,
    coverage_at,
    integrity_score,
    operator_integrity,
    out_of_control_hours,
    out_of_control_periods,
    required_checks,
)
from envcal.trends import TrendModel, channel_trend

STATE_COLORS: dict[str, str] = {"in_control": "#2e7d32", "warning": "#f9a825",
                                "out_of_control": "#c62828", "no_data": "#9e9e9e"}
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")


def local_tz() -> ZoneInfo:
    """The agency's time zone for day boundaries (``ENVCAL_TZ``, default Asia/Shanghai)."""
    return ZoneInfo(os.environ.get("ENVCAL_TZ", "Asia/Shanghai"))


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: pass a timezone-aware time")
    return t.astimezone(dt.UTC)


def channels_of(engine: Engine, analyzer: str) -> pd.DataFrame:
    """Channels of one analyzer: analyte, unit, span, kinds (check kinds with results)."""
    c, r = Channel.__table__.c, CheckResult.__table__.c
    with engine.connect() as conn:
        ch = conn.execute(sa.select(c.analyte, c.unit, c.span).where(c.analyzer_id == analyzer)
                          .order_by(c.id)).all()
        kinds = conn.execute(sa.select(r.analyte, r.kind).where(r.analyzer_id == analyzer)
                             .distinct()).all()
    by: dict[str, list[str]] = {}
    for an, k in kinds:
        by.setdefault(an, []).append(k)
    return pd.DataFrame([{"analyte": a, "unit": u, "span": sp, "kinds": sorted(by.get(a, []))}
                         for a, u, sp in ch], columns=["analyte", "unit", "span", "kinds"])


# --------------------------------------------------------------------------- alerts (read)
ALERT_COLUMNS = ["id", "kind", "severity", "state", "station", "analyzer", "analyte",
                 "opened_at", "updated_at", "title_en", "title_zh", "evidence",
                 "acknowledged_by", "resolved_by"]


def alerts_frame(engine: Engine, *, state: str | None = None, kind: str | None = None,
                 severity: str | None = None, station: str | None = None,
                 analyzer: str | None = None, start: dt.datetime | None = None,
                 end: dt.datetime | None = None) -> pd.DataFrame:
    """Alerts (newest first) with the columns of :data:`ALERT_COLUMNS`.

    ``state="open"`` selects every alert not resolved. ``start``/``end`` filter on the
    opening time.
    """
    t = Alert.__table__.c
    q = sa.select(t.id, t.kind, t.severity, t.state, t.station_id.label("station"),
                  t.analyzer_id.label("analyzer"), t.analyte, t.opened_at, t.updated_at,
                  t.title_en, t.title_zh, t.evidence, t.acknowledged_by, t.resolved_by)
    if state == "open":
        q = q.where(t.state != "resolved")
    elif state:
        q = q.where(t.state == state)
    for col, val in ((t.kind, kind), (t.severity, severity), (t.station_id, station),
                     (t.analyzer_id, analyzer)):
        if val:
            q = q.where(col == val)
    if start is not None:
        q = q.where(t.opened_at >= _utc(start))
    if end is not None:
        q = q.where(t.opened_at < _utc(end))
    q = q.order_by(t.opened_at.desc(), t.id)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all(), columns=ALERT_COLUMNS)


def open_alerts_by_severity(engine: Engine) -> dict[str, int]:
    """Number of open (not resolved) alerts per severity, every severity present as a key."""
    df = alerts_frame(engine, state="open")
    out = dict.fromkeys(SEVERITIES, 0)
    for sev, n in df["severity"].value_counts().items():
        out[str(sev)] = int(n)
    return out


# --------------------------------------------------------------------------- out-of-control
PERIOD_COLUMNS = ["analyzer", "analyte", "kind", "rule", "start", "end", "source"]


COVERAGE_FORMULA = ("coverage = N_verified / N_total; an analyzer is verified when it holds a "
                    "qualified, unexpired instrument verification record AND every check its "
                    "rule pack requires is within its interval")


# --------------------------------------------------------------------------- overview
@dataclass(frozen=True)
class Overview:
    """Everything the Overview page shows, computed at ``at``."""

    at: dt.datetime
    states: dict[str, int]
    total: int
    coverage_rate: float | None
    coverage_target: float
    coverage_verified: int
    coverage_total: int
    coverage_formula: str
    checks_today: int
    passed_today: int
    alerts_by_severity: dict[str, int]
    stations: pd.DataFrame  # station, station_name, lat, lon, operator, worst, n_analyzers
    worst: pd.DataFrame  # analyzer rows sorted worst first (see analyzer_states)
    not_verified: pd.DataFrame = field(default_factory=pd.DataFrame)  # analyzer, reasons


def overview(engine: Engine, at: dt.datetime, *, worst_n: int = 15) -> Overview:
    """KPIs, station map data and worst analyzers at ``at`` (see the module docstring).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    at : datetime
        Time evaluated (timezone-aware); "today" is the calendar day of ``at`` in
        :func:`local_tz`.
    worst_n : int, default 15
        Rows of the worst-analyzers table.

    Returns
    -------
    Overview
    """
    at = _utc(at)
    st = analyzer_states(engine, at)
    counts = {s: int((st["state"] == s).sum()) for s in STATES}
    cov = coverage_at(engine, at)
    tz = local_tz()
    day0 = at.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    r = CheckResult.__table__.c
    with engine.connect() as conn:
        n_today, n_pass = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.case((r.verdict == "pass", 1), else_=0)))
            .where(r.end >= day0.astimezone(dt.UTC), r.end <= at)).one()
    if len(st):
        g = st.assign(rank=st["state"].map(STATE_RANK)).groupby(
            ["station", "station_name", "lat", "lon", "operator"], as_index=False)
        stations = g.agg(rank=("rank", "max"), n_analyzers=("analyzer", "count"))
        inv = {v: k for k, v in STATE_RANK.items()}
        stations["worst"] = stations["rank"].map(inv)
        stations = stations.drop(columns="rank")
    else:
        stations = pd.DataFrame(columns=["station", "station_name", "lat", "lon", "operator",
                                         "n_analyzers", "worst"])
    nv = pd.DataFrame([{"analyzer": a.analyzer_id, "reasons": "; ".join(a.reasons)}
                       for a in cov.analyzers if not a.verified], columns=["analyzer", "reasons"])
    return Overview(at, counts, len(st), cov.rate, cov.target, cov.verified, cov.total,
                    COVERAGE_FORMULA, int(n_today or 0), int(n_pass or 0),
                    open_alerts_by_severity(engine), stations, st.head(worst_n), nv)


# --------------------------------------------------------------------------- analyzer detail
RESULT_COLUMNS = ["id", "check_id", "kind", "start", "end", "value", "verdict", "mean",
                  "reference", "unit", "material", "certificate_pk", "rule", "rule_status",
                  "pack", "pack_version", "reason_en", "reason_zh", "needs_review",
                  "plateau_start", "plateau_end", "device_verdict"]


@dataclass(frozen=True)
class ControlChart:
    """One channel's check history against its rule: values [``unit``] of ``quantity``,
    warn/limit bands, EWMA and CUSUM series, the drift trend and out-of-control periods."""

    analyzer: str
    analyte: str
    kind: str
    quantity: str
    unit: str
    warn: float | None
    limit: float | None
    rule_id: str | None
    rule_source: str | None
    rule_status: str | None
    results: pd.DataFrame  # RESULT_COLUMNS
    ewma: np.ndarray
    cusum_plus: np.ndarray
    cusum_minus: np.ndarray
    cusum_h: float
    trend: Any  # envcal.trends.Trend
    periods: pd.DataFrame  # PERIOD_COLUMNS


def _rule_for(pack_name: str, kind: str, analyte: str, engine: Engine | None = None):
    pack = load_pack(pack_name, engine)
    rules = pack.rules_for(kind, analyte)
    return rules[0] if rules else None


def control_chart(engine: Engine, analyzer: str, analyte: str, kind: str, *,
                  start: dt.datetime | None = None, end: dt.datetime | None = None,
                  model: TrendModel = TrendModel()) -> ControlChart:
    """The control chart data of one channel and check kind.

    The plotted quantity is that of the analyzer's rule pack rule for this check (e.g.
    ``error_fs_pct`` [% of span] for HJ 75-2017 drift, ``error_rel_pct`` [%] for HJ 355-2019);
    EWMA (λ = 0.2) and a two-sided tabular CUSUM (k = 0.5, h = 4, in the quantity's unit)
    are computed over it by :mod:`envcal.kernels`; the trend and forecast crossing of the
    fail limit come from :func:`envcal.trends.channel_trend`, the model of the
    ``drift_trend`` alert (pass the alert configuration's
    :meth:`~envcal.alerts.AlertConfig.trend_model` when it differs from the defaults).

    References
    ----------
    Montgomery, *Introduction to Statistical Quality Control*, 7th ed., §9.1-9.2.
    """
    with engine.connect() as conn:
        pack_name = conn.execute(sa.select(Analyzer.__table__.c.rule_pack)
                                 .where(Analyzer.__table__.c.id == analyzer)).scalar()
    rule = _rule_for(pack_name, kind, analyte, engine) if pack_name else None
    quantity = rule.quantity if rule is not None else "error_fs_pct"
    r = CheckResult.__table__.c
    q = (sa.select(r.id, r.check_id, r.kind, r.start, r.end, r[quantity].label("value"),
                   r.verdict, r.mean, r.reference, r.unit, r.material, r.certificate_pk, r.rule,
                   r.rule_status, r.pack, r.pack_version, r.reason_en, r.reason_zh,
                   r.needs_review, r.plateau_start, r.plateau_end, r.device_verdict)
         .where(r.analyzer_id == analyzer, r.analyte == analyte, r.kind == kind)
         .order_by(r.end))
    if start is not None:
        q = q.where(r.end >= _utc(start))
    if end is not None:
        q = q.where(r.end < _utc(end))
    with engine.connect() as conn:
        res = pd.DataFrame(conn.execute(q).mappings().all(), columns=RESULT_COLUMNS)
    y = res.loc[res["verdict"] != "invalid", "value"].astype(float).to_numpy()
    y = y[np.isfinite(y)]
    if len(y):
        z = kernels.ewma(y, model.lam, 0.0)
        cp, cm, _ = kernels.cusum(y, 0.0, model.cusum_k, model.cusum_h)
    else:
        z = cp = cm = np.array([], dtype=np.float64)
    limit = rule.limit if rule is not None else None
    trend = channel_trend(engine, analyzer, analyte, kind, quantity, limit, until=end, model=model)
    periods = out_of_control_periods(engine, analyzer=analyzer, start=start, end=end)
    periods = periods[periods["analyte"] == analyte]
    return ControlChart(analyzer, analyte, kind, quantity, rule.unit if rule else "% F.S.",
                        rule.warn if rule else None, limit, rule.id if rule else None,
                        f"{rule.source.standard} {rule.source.clause}" if rule else None,
                        rule.status if rule else None, res, z, cp, cm, model.cusum_h, trend,
                        periods.reset_index(drop=True))


@dataclass(frozen=True)
class CheckReadings:
    """Raw readings around one check, with the check's plateau and result."""

    result: dict[str, Any]
    readings: pd.DataFrame  # envcal.archive.readings_frame columns
    plateau_start: dt.datetime | None
    plateau_end: dt.datetime | None


def readings_around_check(engine: Engine, result_id: int, archive_dir: str | None = None, *,
                          margin: dt.timedelta = dt.timedelta(minutes=30)) -> CheckReadings:
    """The channel's readings from ``margin`` before the check's start to ``margin`` after
    its end (hot store and NetCDF archive, :func:`envcal.archive.readings_frame`)."""
    t = CheckResult.__table__
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.id == result_id)).mappings().first()
    if row is None:
        raise KeyError(f"no check result {result_id}")
    row = dict(row)
    df = readings_frame(engine, archive_dir, row["analyzer_id"], row["analyte"],
                        row["start"] - margin, row["end"] + margin)
    return CheckReadings(row, df, row["plateau_start"], row["plateau_end"])


# --------------------------------------------------------------------------- certificates
def certificates_frame(engine: Engine, on: dt.date | None = None) -> pd.DataFrame:
    """Current certificates with their state on ``on`` (valid, expired, revoked, ...)
    and the number of results that used each lot."""
    rows = list_certificates(engine, on=on)
    df = pd.DataFrame(rows, columns=["id", "version", "pk", "kind", "crm_code", "name", "lot",
                                     "analytes", "issued", "expires", "state", "current"])
    r = CheckResult.__table__.c
    with engine.connect() as conn:
        used = dict(conn.execute(sa.select(r.material, sa.func.count())
                                 .where(r.material.is_not(None)).group_by(r.material)).all())
    df["analytes"] = df["analytes"].map(lambda a: ", ".join(a))
    df["results"] = df["id"].map(used).fillna(0).astype(int)
    return df


def certificate_detail(engine: Engine, cert_id: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """A lot (:func:`envcal.certificates.show_certificate`) and the results that used it."""
    d = show_certificate(engine, cert_id)
    res = pd.DataFrame(results_using_material(engine, cert_id))
    cols = ["id", "analyzer_id", "analyte", "kind", "end", "verdict", "error_fs_pct",
            "error_rel_pct", "needs_review"]
    res = res[[c for c in cols if c in res.columns]] if len(res) else pd.DataFrame(columns=cols)
    return d, res


# --------------------------------------------------------------------------- rules
def rules_frame(engine: Engine | None = None) -> pd.DataFrame:
    """Every rule of every pack in force: pack, standard, version, rule, title_zh, title_en,
    check_kind, analytes, quantity, warn, limit, unit, frequency_h, source, status,
    confirmed_by, confirmed_at, citation, consequence."""
    rows = []
    for name, p in load_all(engine).items():
        for r in p.rules:
            c = r.confirmation
            rows.append({"pack": name, "standard": p.standard, "version": p.effective_version,
                         "rule": r.id, "title_zh": r.title_zh, "title_en": r.title_en,
                         "check_kind": r.check_kind, "analytes": ", ".join(r.analytes),
                         "quantity": r.quantity, "warn": r.warn, "limit": r.limit,
                         "unit": r.unit, "frequency_h": r.frequency_h,
                         "source": f"{r.source.standard} {r.source.clause}",
                         "status": r.status, "confirmed_by": c.by if c else None,
                         "confirmed_at": c.at if c else None,
                         "citation": c.citation if c else r.quote,
                         "consequence": r.consequence})
    return pd.DataFrame(rows)


def month_bounds(year: int, month: int) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a calendar month in :func:`local_tz`, as UTC datetimes."""
    tz = local_tz()
    s = dt.datetime(year, month, 1, tzinfo=tz)
    e = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    return s.astimezone(dt.UTC), e.astimezone(dt.UTC)


__all__ = [
    "ALERT_COLUMNS", "COVERAGE_FORMULA", "INTEGRITY_FORMULA", "INTEGRITY_THRESHOLD",
    "PERIOD_COLUMNS", "RESULT_COLUMNS", "SEVERITIES", "STATES", "STATE_COLORS", "STATE_RANK",
    "STATE_WINDOW", "CheckReadings", "ControlChart", "Overview", "alerts_frame",
    "analyzer_states", "analyzers_frame", "certificate_detail", "certificates_frame",
    "channels_of", "control_chart", "coverage_at", "integrity_score", "local_tz", "month_bounds",
    "open_alerts_by_severity", "operator_integrity", "out_of_control_hours",
    "out_of_control_periods", "overview", "readings_around_check", "required_checks",
    "rules_frame",
]
