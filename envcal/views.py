"""The read layer of the Streamlit app: KPIs, tables and series as plain data.

Every number the UI shows comes from here (or from the modules this calls:
:mod:`envcal.verify`, :mod:`envcal.trends`, :mod:`envcal.instruments`,
:mod:`envcal.certificates`, :mod:`envcal.rules`, :mod:`envcal.archive`, :mod:`envcal.alerts`);
the pages only lay it out. Each function takes an engine and explicit times, returns
dataclasses or pandas DataFrames, and can be tested without Streamlit.

Analyzer state
--------------
From the newest result of each (channel, check kind) within :data:`STATE_WINDOW` before
``at``, and the open out-of-control periods:

- ``out_of_control``: an open out-of-control period, or a newest result ``fail``;
- ``warning``: a newest result ``warn`` or ``invalid``;
- ``in_control``: every newest result ``pass``;
- ``no_data``: no result in the window.

Out-of-control periods are the ones :class:`envcal.alerts.AlertEngine` stored
(:class:`~envcal.models.OutOfControlPeriod`); this module only reads them and never derives
periods from the results itself (the UI computes nothing).

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
from envcal.models import (
    Analyzer,
    Certificate,
    Channel,
    CheckResult,
    Finding,
    OutOfControlPeriod,
    Station,
)

STATES: tuple[str, ...] = ("in_control", "warning", "out_of_control", "no_data")
#: worst first when sorting (a map colours a station by its worst analyzer)
STATE_RANK: dict[str, int] = {"out_of_control": 3, "warning": 2, "no_data": 1, "in_control": 0}
STATE_COLORS: dict[str, str] = {"in_control": "#2e7d32", "warning": "#f9a825",
                                "out_of_control": "#c62828", "no_data": "#9e9e9e"}
STATE_WINDOW = dt.timedelta(days=35)  # covers monthly checks (HJ 817-2018 flow)
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
FALSIFICATION_MARKERS: tuple[str, ...] = ("falsif", "tamper", "flag_mask", "stuck", "flatline")


def local_tz() -> ZoneInfo:
    """The agency's time zone for day boundaries (``ENVCAL_TZ``, default Asia/Shanghai)."""
    return ZoneInfo(os.environ.get("ENVCAL_TZ", "Asia/Shanghai"))


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: pass a timezone-aware time")
    return t.astimezone(dt.UTC)


def _has_table(conn, name: str) -> sa.Table | None:
    """The table ``name`` when the database has it: the model's table (times as aware UTC)
    when :mod:`envcal.models` defines it, else reflected."""
    from sqlmodel import SQLModel

    if not sa.inspect(conn).has_table(name):
        return None
    if name in SQLModel.metadata.tables:
        return SQLModel.metadata.tables[name]
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def _col(table: sa.Table, *names: str):
    for n in names:
        if n in table.c:
            return table.c[n]
    return None


# --------------------------------------------------------------------------- registry
def analyzers_frame(engine: Engine) -> pd.DataFrame:
    """Analyzers with their station: analyzer, station, station_name, operator, kind, lat,
    lon, model, serial, rule_pack."""
    a, s = Analyzer.__table__.c, Station.__table__.c
    q = (sa.select(a.id.label("analyzer"), a.station_id.label("station"),
                   s.name.label("station_name"), s.operator, s.kind, s.lat, s.lon, a.model,
                   a.serial, a.rule_pack)
         .join_from(Analyzer.__table__, Station.__table__, a.station_id == s.id)
         .order_by(a.id))
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all(),
                            columns=["analyzer", "station", "station_name", "operator", "kind",
                                     "lat", "lon", "model", "serial", "rule_pack"])


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

    Reads the ``alert`` table of :mod:`envcal.alerts` by reflection, so the page works
    (empty) before that module's migration exists. ``state="open"`` selects every alert not
    resolved. ``start``/``end`` filter on the opening time.
    """
    with engine.connect() as conn:
        t = _has_table(conn, "alert")
        if t is None:
            return pd.DataFrame(columns=ALERT_COLUMNS)
        cols = {
            "id": _col(t, "id"), "kind": _col(t, "kind"), "severity": _col(t, "severity"),
            "state": _col(t, "state"), "station": _col(t, "station_id", "station"),
            "analyzer": _col(t, "analyzer_id", "analyzer"),
            "analyte": _col(t, "analyte"),
            "opened_at": _col(t, "opened_at", "created_at", "first_seen", "ts", "raised_at"),
            "updated_at": _col(t, "updated_at", "last_seen", "resolved_at"),
            "title_en": _col(t, "title_en", "message", "title"),
            "title_zh": _col(t, "title_zh", "message_zh"),
            "evidence": _col(t, "evidence", "details"),
            "acknowledged_by": _col(t, "acknowledged_by"),
            "resolved_by": _col(t, "resolved_by"),
        }
        q = sa.select(*[c.label(k) for k, c in cols.items() if c is not None])
        if state == "open" and cols["state"] is not None:
            q = q.where(cols["state"] != "resolved")
        elif state and cols["state"] is not None:
            q = q.where(cols["state"] == state)
        for key, val in (("kind", kind), ("severity", severity), ("station", station),
                         ("analyzer", analyzer)):
            if val and cols[key] is not None:
                q = q.where(cols[key] == val)
        if cols["opened_at"] is not None:
            if start is not None:
                q = q.where(cols["opened_at"] >= _utc(start))
            if end is not None:
                q = q.where(cols["opened_at"] < _utc(end))
            q = q.order_by(cols["opened_at"].desc())
        rows = conn.execute(q).mappings().all()
    df = pd.DataFrame(rows)
    for c in ALERT_COLUMNS:
        if c not in df.columns:
            df[c] = None
    return df[ALERT_COLUMNS]


def open_alerts_by_severity(engine: Engine) -> dict[str, int]:
    """Number of open (not resolved) alerts per severity, every severity present as a key."""
    df = alerts_frame(engine, state="open")
    out = dict.fromkeys(SEVERITIES, 0)
    for sev, n in df["severity"].value_counts().items():
        out[str(sev)] = int(n)
    return out


# --------------------------------------------------------------------------- out-of-control
PERIOD_COLUMNS = ["analyzer", "analyte", "kind", "rule", "start", "end", "source"]


def out_of_control_periods(engine: Engine, *, analyzer: str | None = None,
                           start: dt.datetime | None = None,
                           end: dt.datetime | None = None) -> pd.DataFrame:
    """The out-of-control periods the alert engine stored, overlapping [start, end).

    Only reads :class:`~envcal.models.OutOfControlPeriod` rows, which
    :class:`envcal.alerts.AlertEngine` keeps from the rule packs' ``[[out_of_control]]``
    conditions; nothing is derived here, so no period exists until the engine has
    evaluated the results.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    analyzer : str, optional
        Only this analyzer's periods.
    start, end : datetime, optional
        Window (timezone-aware); a period overlaps it when it starts before ``end`` and is
        open or ends at or after ``start``.

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`PERIOD_COLUMNS`, by start: analyzer, analyte, kind (the check kind
        of the result that opened the period), rule (the pack's condition id), start, end
        (UTC, aware; None while open) and source (the standard and clause of the condition).

    References
    ----------
    40 CFR 75.24; HJ 75-2017 clause 11-12 (失控时段).
    """
    p, r = OutOfControlPeriod.__table__.c, CheckResult.__table__.c
    q = (sa.select(p.analyzer_id.label("analyzer"), p.analyte, r.kind,
                   p.rule_id.label("rule"), p.start, p.end, p.source)
         .select_from(OutOfControlPeriod.__table__.outerjoin(
             CheckResult.__table__, r.id == p.opened_by_result))
         .order_by(p.start, p.id))
    if analyzer:
        q = q.where(p.analyzer_id == analyzer)
    if end is not None:
        q = q.where(p.start < _utc(end))
    if start is not None:
        q = q.where(sa.or_(p.end.is_(None), p.end >= _utc(start)))
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return pd.DataFrame(rows, columns=PERIOD_COLUMNS)


def out_of_control_hours(periods: pd.DataFrame, start: dt.datetime, end: dt.datetime) -> pd.Series:
    """Hours of out-of-control time per analyzer inside [start, end) (overlapping periods of
    one analyzer's channels are merged, so an hour counts once per analyzer)."""
    s0, e0 = _utc(start), _utc(end)
    out: dict[str, float] = {}
    for aid, g in periods.groupby("analyzer"):
        iv = sorted((max(s, s0), min(e if e is not None and not pd.isna(e) else e0, e0))
                    for s, e in zip(g["start"], g["end"], strict=True))
        total, cur_s, cur_e = 0.0, None, None
        for s, e in iv:
            if e <= s:
                continue
            if cur_e is None or s > cur_e:
                if cur_e is not None:
                    total += (cur_e - cur_s).total_seconds()
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None:
            total += (cur_e - cur_s).total_seconds()
        out[str(aid)] = total / 3600.0
    return pd.Series(out, dtype=float, name="ooc_hours")


# --------------------------------------------------------------------------- states
def _open_period_analyzers(engine: Engine, at: dt.datetime) -> set[str]:
    """Analyzers with a stored out-of-control period open at ``at``."""
    p = OutOfControlPeriod.__table__.c
    q = sa.select(p.analyzer_id).where(
        p.start <= at, sa.or_(p.end.is_(None), p.end > at)).distinct()
    with engine.connect() as conn:
        return set(conn.execute(q).scalars())


def analyzer_states(engine: Engine, at: dt.datetime, *,
                    window: dt.timedelta = STATE_WINDOW) -> pd.DataFrame:
    """Each analyzer's state at ``at`` (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        analyzer, station, station_name, operator, kind, lat, lon, rule_pack, state,
        last_check (UTC), checks_30d, failed_30d, open_alerts, reason — sorted worst first.
        ``reason`` is a code: open_period, no_result, newest_failed, newest_warn or "".
    """
    at = _utc(at)
    an = analyzers_frame(engine)
    r = CheckResult.__table__.c
    w0 = at - window
    newest = (sa.select(r.analyzer_id, r.analyte, r.kind, sa.func.max(r.end).label("end"))
              .where(r.end > w0, r.end <= at).group_by(r.analyzer_id, r.analyte, r.kind)
              .subquery())
    with engine.connect() as conn:
        recent = pd.DataFrame(conn.execute(
            sa.select(r.analyzer_id, r.analyte, r.kind, r.end, r.verdict)
            .join(newest, sa.and_(r.analyzer_id == newest.c.analyzer_id,
                                  r.analyte == newest.c.analyte, r.kind == newest.c.kind,
                                  r.end == newest.c.end))
            .order_by(r.end)).all(),
            columns=["analyzer", "analyte", "kind", "end", "verdict"])
        counts = pd.DataFrame(conn.execute(
            sa.select(r.analyzer_id, sa.func.count(),
                      sa.func.sum(sa.case((r.verdict == "fail", 1), else_=0)))
            .where(r.end > at - dt.timedelta(days=30), r.end <= at)
            .group_by(r.analyzer_id)).all(), columns=["analyzer", "checks_30d", "failed_30d"])
    latest = recent.groupby(["analyzer", "analyte", "kind"], sort=False).tail(1)
    rank = latest["verdict"].map({"pass": 0, "warn": 1, "invalid": 1, "fail": 2})
    worst = latest.assign(rank=rank).groupby("analyzer")["rank"].max()
    last = recent.groupby("analyzer")["end"].max()
    open_p = _open_period_analyzers(engine, at)
    alerts = alerts_frame(engine, state="open")
    n_alerts = alerts["analyzer"].value_counts()
    states, reasons = [], []
    for aid in an["analyzer"]:
        w = worst.get(aid)
        if aid in open_p:
            states.append("out_of_control")
            reasons.append("open_period")
        elif w is None or pd.isna(w):
            states.append("no_data")
            reasons.append("no_result")
        elif w >= 2:
            states.append("out_of_control")
            reasons.append("newest_failed")
        elif w >= 1:
            states.append("warning")
            reasons.append("newest_warn")
        else:
            states.append("in_control")
            reasons.append("")
    an["state"] = states
    an["reason"] = reasons
    an["last_check"] = an["analyzer"].map(last)
    an = an.merge(counts, on="analyzer", how="left")
    an[["checks_30d", "failed_30d"]] = an[["checks_30d", "failed_30d"]].fillna(0).astype(int)
    an["open_alerts"] = an["analyzer"].map(n_alerts).fillna(0).astype(int)
    an["rank"] = an["state"].map(STATE_RANK)
    an = an.sort_values(["rank", "failed_30d", "analyzer"], ascending=[False, False, True])
    return an.drop(columns="rank").reset_index(drop=True)


# --------------------------------------------------------------------------- coverage
def required_checks(engine: Engine) -> dict[str, list[tuple[str, dt.timedelta]]]:
    """Analyzer id -> [(check kind, max interval)] its rule pack requires for its channels."""
    from envcal.rules import RulePackError, load_pack

    a, c = Analyzer.__table__.c, Channel.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(a.id, a.rule_pack, c.analyte)
                            .join_from(Analyzer.__table__, Channel.__table__,
                                       a.id == c.analyzer_id)).all()
    packs: dict[str, Any] = {}
    out: dict[str, dict[str, dt.timedelta]] = {}
    for aid, pack, analyte in rows:
        if pack not in packs:
            try:
                packs[pack] = load_pack(pack)
            except RulePackError:
                packs[pack] = None
        p = packs[pack]
        if p is None:
            continue
        for kind, freq in p.required_checks(analyte):
            cur = out.setdefault(aid, {})
            cur[kind] = min(cur.get(kind, freq), freq)
    return {k: sorted(v.items()) for k, v in out.items()}


def coverage_at(engine: Engine, at: dt.datetime):
    """Verification coverage at ``at`` with the routine checks evaluated
    (:func:`envcal.instruments.coverage` fed with the packs' required checks and the newest
    valid check of each kind).

    Returns
    -------
    envcal.instruments.CoverageReport
    """
    from envcal.instruments import coverage

    at = _utc(at)
    req = required_checks(engine)
    longest = max((f for v in req.values() for _, f in v), default=dt.timedelta(days=31))
    r = CheckResult.__table__.c

    def newest(since: dt.datetime | None, analyzers=None):
        q = (sa.select(r.analyzer_id, r.kind, sa.func.max(r.end))
             .where(r.end <= at, r.verdict != "invalid").group_by(r.analyzer_id, r.kind))
        if since is not None:
            q = q.where(r.end > since)
        if analyzers is not None:
            q = q.where(r.analyzer_id.in_(sorted(analyzers)))
        with engine.connect() as conn:
            return {(aid, k): t for aid, k, t in conn.execute(q)}

    # the recent window answers almost every analyzer; older history only for the rest
    last = newest(at - 2 * longest)
    missing = {aid for aid, v in req.items() for k, _ in v if (aid, k) not in last}
    if missing:
        last.update(newest(None, missing))
    return coverage(engine, at, None, required_checks=req,
                    last_check=lambda aid, kind: last.get((aid, kind)))


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
    from envcal.rules import RulePackError, load_pack

    try:
        pack = load_pack(pack_name, engine)
    except RulePackError:
        return None
    rules = pack.rules_for(kind, analyte)
    return rules[0] if rules else None


def control_chart(engine: Engine, analyzer: str, analyte: str, kind: str, *,
                  start: dt.datetime | None = None, end: dt.datetime | None = None) -> ControlChart:
    """The control chart data of one channel and check kind.

    The plotted quantity is that of the analyzer's rule pack rule for this check (e.g.
    ``error_fs_pct`` [% of span] for HJ 75-2017 drift, ``error_rel_pct`` [%] for HJ 355-2019);
    EWMA (λ = 0.2) and a two-sided tabular CUSUM (k = 0.5, h = 4, in the quantity's unit)
    are computed over it by :mod:`envcal.kernels`; the trend and forecast crossing of the
    fail limit come from :func:`envcal.trends.channel_trend`.

    References
    ----------
    Montgomery, *Introduction to Statistical Quality Control*, 7th ed., §9.1-9.2.
    """
    from envcal.trends import TrendParams, channel_trend, trend_of

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
    params = TrendParams()
    y = res.loc[res["verdict"] != "invalid", "value"].astype(float).to_numpy()
    y = y[np.isfinite(y)]
    if len(y):
        z = kernels.ewma(y, params.lam, 0.0)
        cp, cm, _ = kernels.cusum(y, 0.0, params.cusum_k, params.cusum_h)
    else:
        z = cp = cm = np.array([], dtype=np.float64)
    limit = rule.limit if rule is not None else None
    if quantity == "error_fs_pct":
        trend = channel_trend(engine, analyzer, analyte, kind, limit, until=end)
    else:
        ok = res[(res["verdict"] != "invalid") & res["value"].notna()].tail(params.history)
        t = np.array([(e - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() / 86400.0
                      for e in ok["end"]], dtype=np.float64)
        trend = trend_of(t, ok["value"].astype(float).to_numpy(), limit, params=params,
                         analyzer=analyzer, analyte=analyte, kind=kind, quantity=quantity)
    periods = out_of_control_periods(engine, analyzer=analyzer, start=start, end=end)
    periods = periods[periods["analyte"] == analyte]
    return ControlChart(analyzer, analyte, kind, quantity, rule.unit if rule else "% F.S.",
                        rule.warn if rule else None, limit, rule.id if rule else None,
                        f"{rule.source.standard} {rule.source.clause}" if rule else None,
                        rule.status if rule else None, res, z, cp, cm, params.cusum_h, trend,
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
    from envcal.archive import readings_frame

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
    from envcal.certificates import list_certificates

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
    from envcal.certificates import results_using_material, show_certificate

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
    from envcal.rules import load_all

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


# --------------------------------------------------------------------------- operators
INTEGRITY_FORMULA = ("S = clip(100 − 30·r_fail − 20·r_overdue − 20·r_ooc − 10·N_falsification "
                     "− 5·N_expired_CRM, 0, 100); r_fail = failed checks / checks, r_overdue = "
                     "analyzers with overdue checks / analyzers, r_ooc = out-of-control hours / "
                     "(analyzers × hours in the period)")
INTEGRITY_THRESHOLD = 80.0


def integrity_score(r_fail: float, r_overdue: float, r_ooc: float, n_falsification: int,
                    n_expired: int) -> float:
    """The operator integrity score of :data:`INTEGRITY_FORMULA` [0-100 points]."""
    s = 100.0 - 30.0 * r_fail - 20.0 * r_overdue - 20.0 * r_ooc - 10.0 * n_falsification \
        - 5.0 * n_expired
    return float(min(100.0, max(0.0, s)))


def operator_integrity(engine: Engine, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Per operator the record metrology integrity rests on, over [start, end).

    Returns
    -------
    pandas.DataFrame
        operator, analyzers, checks, failed, overdue_analyzers, ooc_hours, falsification,
        expired_crm, r_fail, r_overdue, r_ooc, score — sorted by score ascending.
        ``expired_crm`` counts results whose material was expired or revoked at the check;
        ``falsification`` counts findings and alerts whose kind names a falsification
        pattern (:data:`FALSIFICATION_MARKERS`).
    """
    start, end = _utc(start), _utc(end)
    an = analyzers_frame(engine)
    r, c, f = CheckResult.__table__.c, Certificate.__table__.c, Finding.__table__.c
    with engine.connect() as conn:
        chk = pd.DataFrame(conn.execute(
            sa.select(r.analyzer_id, sa.func.count(),
                      sa.func.sum(sa.case((r.verdict == "fail", 1), else_=0)))
            .where(r.end >= start, r.end < end).group_by(r.analyzer_id)).all(),
            columns=["analyzer", "checks", "failed"])
        exp = pd.DataFrame(conn.execute(
            sa.select(r.analyzer_id, r.end, c.expires, c.revoked_at)
            .join_from(CheckResult.__table__, Certificate.__table__,
                       sa.and_(r.material == c.cert_id, c.current == sa.true()))
            .where(r.end >= start, r.end < end)).all(),
            columns=["analyzer", "end", "expires", "revoked_at"])
        fnd = pd.DataFrame(conn.execute(
            sa.select(f.analyzer_id, f.kind).where(f.created_at >= start, f.created_at < end)).all(),
            columns=["analyzer", "kind"])
    if len(exp):
        bad = [(e.date() > x) or (rv is not None and not pd.isna(rv) and rv <= e)
               for e, x, rv in zip(exp["end"], exp["expires"], exp["revoked_at"], strict=True)]
        exp_n = exp[bad].groupby("analyzer").size()
    else:
        exp_n = pd.Series(dtype=int)
    al = alerts_frame(engine, start=start, end=end)[["analyzer", "kind"]]
    fz = pd.concat([fnd, al], ignore_index=True)
    mask = np.array([any(m in str(k or "").lower() for m in FALSIFICATION_MARKERS)
                     for k in fz["kind"]], dtype=bool)
    fz = fz.loc[mask]
    fz_n = fz.groupby("analyzer").size()
    cov = coverage_at(engine, min(end, dt.datetime.now(dt.UTC)))
    overdue = {a.analyzer_id for a in cov.analyzers if a.checks == "overdue"}
    hours = out_of_control_hours(out_of_control_periods(engine, start=start, end=end), start, end)
    df = an[["analyzer", "operator"]].merge(chk, on="analyzer", how="left").fillna(
        {"checks": 0, "failed": 0})
    df["overdue"] = df["analyzer"].isin(overdue).astype(int)
    df["ooc_hours"] = df["analyzer"].map(hours).fillna(0.0)
    df["falsification"] = df["analyzer"].map(fz_n).fillna(0).astype(int)
    df["expired_crm"] = df["analyzer"].map(exp_n).fillna(0).astype(int)
    period_h = (end - start).total_seconds() / 3600.0
    g = df.groupby("operator", as_index=False).agg(
        analyzers=("analyzer", "count"), checks=("checks", "sum"), failed=("failed", "sum"),
        overdue_analyzers=("overdue", "sum"), ooc_hours=("ooc_hours", "sum"),
        falsification=("falsification", "sum"), expired_crm=("expired_crm", "sum"))
    g["r_fail"] = np.where(g["checks"] > 0, g["failed"] / g["checks"].clip(lower=1), 0.0)
    g["r_overdue"] = g["overdue_analyzers"] / g["analyzers"].clip(lower=1)
    g["r_ooc"] = (g["ooc_hours"] / (g["analyzers"].clip(lower=1) * period_h)).clip(upper=1.0)
    g["score"] = [integrity_score(a, b, c_, int(d), int(e)) for a, b, c_, d, e in
                  zip(g["r_fail"], g["r_overdue"], g["r_ooc"], g["falsification"],
                      g["expired_crm"], strict=True)]
    for col in ("checks", "failed", "overdue_analyzers"):
        g[col] = g[col].astype(int)
    return g.sort_values(["score", "operator"]).reset_index(drop=True)


def month_bounds(year: int, month: int) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a calendar month in :func:`local_tz`, as UTC datetimes."""
    tz = local_tz()
    s = dt.datetime(year, month, 1, tzinfo=tz)
    e = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    return s.astimezone(dt.UTC), e.astimezone(dt.UTC)
