"""Analyzer state and operator integrity: the domain rules the app and reports show.

Both are computed from what the alert engine (:class:`envcal.alerts.AlertEngine`) stored —
out-of-control periods and alerts — and from the stored check results; nothing here
re-judges a check or derives a period. The pure rules are :func:`state_of`,
:func:`is_falsification` and :func:`integrity_score`; :func:`analyzer_states` and
:func:`operator_integrity` gather their inputs from the database.

Analyzer state at ``at`` (:func:`state_of`, first match wins)
-------------------------------------------------------------
1. ``out_of_control``, reason ``open_period``: an out-of-control period of one of its
   channels is open at ``at`` (HJ 75-2017 clause 11-12; 40 CFR 75.24);
2. ``out_of_control``, reason ``critical_alert``: a critical alert is open at ``at`` (opened
   at or before, not resolved before), as :func:`is_critical` decides: an ``out_of_control``
   alert, a ``data_quality`` alert with falsification evidence, or an alert the engine raised
   as critical. Escalation (an alert left unacknowledged for ``escalate_after_h``) raises the
   stored severity to call staff, but says nothing new about the instrument, so it does not
   change the state;
3. ``no_data``, reason ``no_result``: no check result within :data:`STATE_WINDOW`;
4. ``warning``, reason ``out_of_tolerance``: an ``out_of_tolerance`` alert is open (the
   newest valid check of some kind failed its rule, but no out-of-control condition);
5. ``warning``, reason ``newest_failed``: a newest result (per channel and check kind)
   failed (a failure is out of tolerance; out of control only by the pack's
   ``[[out_of_control]]`` conditions, i.e. an open period);
6. ``warning``, reason ``newest_warn``: a newest result is ``warn`` or ``invalid``;
7. ``in_control``.

Operator integrity over [start, end) (:data:`INTEGRITY_FORMULA`)
-----------------------------------------------------------------
Per operator: failed checks / checks, analyzers with an overdue routine check at ``end``
(:func:`coverage_at`) / analyzers, out-of-control hours / (analyzers × hours), the number of
falsification alerts open at some time in the period (:func:`is_falsification`: a
``data_quality`` alert whose evidence has a ``falsification`` test), and the number of
results that used a material expired or revoked at the check.

References
----------
HJ 75-2017 clause 11-12 (失控时段); 40 CFR 75.24 (out-of-control periods); HJ 75-2017
clause 11 and the PRC Metrology Law art. 9 (verification coverage); 《环境监测数据弄虚作假
行为判定及处理办法》(环发〔2015〕175号) art. 4 (falsification of monitoring data).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.instruments import CoverageReport, coverage
from envcal.models import (
    Alert,
    Analyzer,
    Certificate,
    Channel,
    CheckResult,
    OutOfControlPeriod,
    Station,
)
from envcal.rules import load_pack

STATES: tuple[str, ...] = ("in_control", "warning", "out_of_control", "no_data")
#: worst first when sorting (a map colours a station by its worst analyzer)
STATE_RANK: dict[str, int] = {"out_of_control": 3, "warning": 2, "no_data": 1, "in_control": 0}
#: reason codes of :func:`state_of`
REASONS: tuple[str, ...] = ("open_period", "critical_alert", "no_result", "out_of_tolerance",
                            "newest_failed", "newest_warn", "")
STATE_WINDOW = dt.timedelta(days=35)  # covers monthly checks (HJ 817-2018 flow)

INTEGRITY_FORMULA = ("S = clip(100 − 30·r_fail − 20·r_overdue − 20·r_ooc − 10·N_falsification "
                     "− 5·N_expired_CRM, 0, 100); r_fail = failed checks / checks, r_overdue = "
                     "analyzers with overdue checks / analyzers, r_ooc = out-of-control hours / "
                     "(analyzers × hours in the period); N_falsification = data-quality alerts "
                     "with falsification evidence open in the period")
INTEGRITY_THRESHOLD = 80.0

STATE_COLUMNS = ["analyzer", "station", "station_name", "operator", "kind", "lat", "lon",
                 "model", "serial", "rule_pack", "state", "reason", "last_check", "checks_30d",
                 "failed_30d", "open_alerts", "open_critical"]
INTEGRITY_COLUMNS = ["operator", "analyzers", "checks", "failed", "overdue_analyzers",
                     "ooc_hours", "falsification", "expired_crm", "r_fail", "r_overdue", "r_ooc",
                     "score"]


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: pass a timezone-aware time")
    return t.astimezone(dt.UTC)


# --------------------------------------------------------------------------- pure rules
def state_of(*, open_period: bool, critical_alerts: int, out_of_tolerance: bool,
             newest_verdicts: Iterable[str]) -> tuple[str, str]:
    """The state of one analyzer and its reason code (see the module docstring).

    Parameters
    ----------
    open_period : bool
        An out-of-control period of one of its channels is open.
    critical_alerts : int
        Alerts of severity ``critical`` open.
    out_of_tolerance : bool
        An ``out_of_tolerance`` alert is open.
    newest_verdicts : iterable of str
        Verdict of the newest result of each (channel, check kind) in the state window.

    Returns
    -------
    (state, reason) : tuple of str
        ``state`` in :data:`STATES`, ``reason`` in :data:`REASONS`.

    References
    ----------
    HJ 75-2017 clause 11-12; 40 CFR 75.24.
    """
    verdicts = list(newest_verdicts)
    if open_period:
        return "out_of_control", "open_period"
    if critical_alerts > 0:
        return "out_of_control", "critical_alert"
    if not verdicts:
        return "no_data", "no_result"
    if out_of_tolerance:
        return "warning", "out_of_tolerance"
    if "fail" in verdicts:
        return "warning", "newest_failed"
    if any(v != "pass" for v in verdicts):
        return "warning", "newest_warn"
    return "in_control", ""


def is_falsification(kind: str, evidence: Mapping[str, Any] | None) -> bool:
    """Whether an alert reports falsification: a ``data_quality`` alert whose evidence
    holds a ``falsification`` test (:func:`envcal.data_quality.falsification`)."""
    return kind == "data_quality" and "falsification" in ((evidence or {}).get("tests") or {})


def is_critical(kind: str, severity: str, escalated: bool,
                evidence: Mapping[str, Any] | None) -> bool:
    """Whether an open alert makes its analyzer out of control (rule 2 of the state).

    Parameters
    ----------
    kind, severity : str
        The alert's kind and stored severity.
    escalated : bool
        The engine escalated it (unacknowledged too long): its stored severity was raised
        one step to call staff, which is not evidence about the instrument.
    evidence : mapping, optional
        The alert's evidence (for :func:`is_falsification`).

    Returns
    -------
    bool

    References
    ----------
    40 CFR 75.24 (out-of-control periods); HJ 75-2017 clause 12 (失控).
    """
    if kind == "out_of_control" or is_falsification(kind, evidence):
        return True
    return severity == "critical" and not escalated


def integrity_score(r_fail: float, r_overdue: float, r_ooc: float, n_falsification: int,
                    n_expired: int) -> float:
    """The operator integrity score of :data:`INTEGRITY_FORMULA` [0-100 points].

    Parameters
    ----------
    r_fail, r_overdue, r_ooc : float
        Ratios [0-1] of failed checks, analyzers with overdue checks, out-of-control time.
    n_falsification, n_expired : int
        Falsification alerts and results on expired or revoked materials in the period.

    Returns
    -------
    float

    References
    ----------
    环发〔2015〕175号 art. 4 (falsification); HJ 75-2017 clause 11-12.
    """
    s = 100.0 - 30.0 * r_fail - 20.0 * r_overdue - 20.0 * r_ooc - 10.0 * n_falsification \
        - 5.0 * n_expired
    return float(min(100.0, max(0.0, s)))


def out_of_control_hours(periods: pd.DataFrame, start: dt.datetime, end: dt.datetime) -> pd.Series:
    """Hours of out-of-control time per analyzer inside [start, end) (overlapping periods of
    one analyzer's channels are merged, so an hour counts once per analyzer).

    ``periods`` has columns analyzer, start, end (None/NaT: open)."""
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


# --------------------------------------------------------------------------- queries
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


def alerts_open_at(engine: Engine, at: dt.datetime) -> pd.DataFrame:
    """Alerts open at ``at`` (opened at or before, not resolved by then): id, analyzer,
    analyte, kind, severity, escalated (escalated by ``at``), evidence, critical
    (:func:`is_critical`)."""
    t = Alert.__table__.c
    escalated = sa.and_(t.escalated_at.is_not(None), t.escalated_at <= at).label("escalated")
    q = (sa.select(t.id, t.analyzer_id.label("analyzer"), t.analyte, t.kind, t.severity,
                   escalated, t.evidence)
         .where(t.opened_at <= at, sa.or_(t.resolved_at.is_(None), t.resolved_at > at)))
    with engine.connect() as conn:
        df = pd.DataFrame(conn.execute(q).mappings().all(),
                          columns=["id", "analyzer", "analyte", "kind", "severity", "escalated",
                                   "evidence"])
    df["escalated"] = df["escalated"].fillna(False).astype(bool)
    df["critical"] = [is_critical(k, sev, bool(e), ev) for k, sev, e, ev in
                      zip(df["kind"], df["severity"], df["escalated"], df["evidence"], strict=True)]
    return df


def out_of_control_periods(engine: Engine, *, analyzer: str | None = None,
                           start: dt.datetime | None = None,
                           end: dt.datetime | None = None) -> pd.DataFrame:
    """The out-of-control periods the alert engine stored, overlapping [start, end).

    Returns
    -------
    pandas.DataFrame
        analyzer, analyte, kind (the check kind of the result that opened the period),
        rule (the pack's condition id), start, end (UTC; None while open), source — by start.

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
    return pd.DataFrame(rows, columns=["analyzer", "analyte", "kind", "rule", "start", "end",
                                       "source"])


def analyzer_states(engine: Engine, at: dt.datetime, *,
                    window: dt.timedelta = STATE_WINDOW) -> pd.DataFrame:
    """Each analyzer's state at ``at`` (:func:`state_of`), worst first.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    at : datetime
        Timezone-aware time evaluated.
    window : timedelta, default :data:`STATE_WINDOW`
        Results older than this before ``at`` do not count.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STATE_COLUMNS`: the analyzer and its station, ``state``, ``reason``
        (:data:`REASONS`), ``last_check`` (UTC), ``checks_30d``, ``failed_30d``,
        ``open_alerts`` and ``open_critical`` (alerts open at ``at``); sorted worst state
        first, then most failed checks, then analyzer id.

    References
    ----------
    HJ 75-2017 clause 11-12; 40 CFR 75.24.
    """
    at = _utc(at)
    an = analyzers_frame(engine)
    r = CheckResult.__table__.c
    newest = (sa.select(r.analyzer_id, r.analyte, r.kind, sa.func.max(r.end).label("end"))
              .where(r.end > at - window, r.end <= at).group_by(r.analyzer_id, r.analyte, r.kind)
              .subquery())
    p = OutOfControlPeriod.__table__.c
    with engine.connect() as conn:
        recent = pd.DataFrame(conn.execute(
            sa.select(r.analyzer_id, r.analyte, r.kind, r.end, r.verdict)
            .join(newest, sa.and_(r.analyzer_id == newest.c.analyzer_id,
                                  r.analyte == newest.c.analyte, r.kind == newest.c.kind,
                                  r.end == newest.c.end))
            .order_by(r.end)).all(), columns=["analyzer", "analyte", "kind", "end", "verdict"])
        counts = pd.DataFrame(conn.execute(
            sa.select(r.analyzer_id, sa.func.count(),
                      sa.func.sum(sa.case((r.verdict == "fail", 1), else_=0)))
            .where(r.end > at - dt.timedelta(days=30), r.end <= at)
            .group_by(r.analyzer_id)).all(), columns=["analyzer", "checks_30d", "failed_30d"])
        open_p = set(conn.execute(sa.select(p.analyzer_id).where(
            p.start <= at, sa.or_(p.end.is_(None), p.end > at)).distinct()).scalars())
    alerts = alerts_open_at(engine, at)
    latest = recent.groupby(["analyzer", "analyte", "kind"], sort=False).tail(1)
    verdicts = latest.groupby("analyzer")["verdict"].apply(list).to_dict()
    n_alerts = alerts["analyzer"].value_counts().to_dict()
    n_crit = alerts.loc[alerts["critical"], "analyzer"].value_counts().to_dict()
    oot = set(alerts.loc[alerts["kind"] == "out_of_tolerance", "analyzer"])
    decided = [state_of(open_period=aid in open_p, critical_alerts=int(n_crit.get(aid, 0)),
                        out_of_tolerance=aid in oot, newest_verdicts=verdicts.get(aid, []))
               for aid in an["analyzer"]]
    an["state"] = [s for s, _ in decided]
    an["reason"] = [w for _, w in decided]
    an["last_check"] = an["analyzer"].map(recent.groupby("analyzer")["end"].max())
    an = an.merge(counts, on="analyzer", how="left")
    an[["checks_30d", "failed_30d"]] = an[["checks_30d", "failed_30d"]].fillna(0).astype(int)
    an["open_alerts"] = an["analyzer"].map(n_alerts).fillna(0).astype(int)
    an["open_critical"] = an["analyzer"].map(n_crit).fillna(0).astype(int)
    an["rank"] = an["state"].map(STATE_RANK)
    an = an.sort_values(["rank", "failed_30d", "analyzer"], ascending=[False, False, True])
    return an.drop(columns="rank").reset_index(drop=True)[STATE_COLUMNS]


def required_checks(engine: Engine) -> dict[str, list[tuple[str, dt.timedelta]]]:
    """Analyzer id -> [(check kind, max interval)] its rule pack requires for its channels.

    A pack that cannot be loaded is an error (:class:`envcal.rules.RulePackError`), never
    an analyzer silently without requirements."""
    a, c = Analyzer.__table__.c, Channel.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(a.id, a.rule_pack, c.analyte)
                            .join_from(Analyzer.__table__, Channel.__table__,
                                       a.id == c.analyzer_id)).all()
    packs = {name: load_pack(name) for name in sorted({p for _, p, _ in rows})}
    out: dict[str, dict[str, dt.timedelta]] = {}
    for aid, pack, analyte in rows:
        for kind, freq in packs[pack].required_checks(analyte):
            cur = out.setdefault(aid, {})
            cur[kind] = min(cur.get(kind, freq), freq)
    return {k: sorted(v.items()) for k, v in out.items()}


def coverage_at(engine: Engine, at: dt.datetime) -> CoverageReport:
    """Verification coverage at ``at`` with the routine checks evaluated
    (:func:`envcal.instruments.coverage` fed with the packs' required checks and the newest
    valid check of each kind).

    References
    ----------
    HJ 75-2017 clause 11; PRC Metrology Law art. 9.
    """
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


def falsification_alerts(engine: Engine, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Falsification alerts (:func:`is_falsification`) open at some time in [start, end):
    id, analyzer, analyte, opened_at, resolved_at."""
    t = Alert.__table__.c
    q = (sa.select(t.id, t.analyzer_id.label("analyzer"), t.analyte, t.kind, t.evidence,
                   t.opened_at, t.resolved_at)
         .where(t.kind == "data_quality", t.opened_at < _utc(end),
                sa.or_(t.resolved_at.is_(None), t.resolved_at >= _utc(start))))
    with engine.connect() as conn:
        rows = [m for m in conn.execute(q).mappings() if is_falsification(m["kind"], m["evidence"])]
    return pd.DataFrame(rows, columns=["id", "analyzer", "analyte", "kind", "evidence",
                                       "opened_at", "resolved_at"]).drop(columns=["kind", "evidence"])


def operator_integrity(engine: Engine, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Per operator the record metrology integrity rests on, over [start, end).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`INTEGRITY_COLUMNS`, sorted by score ascending (see the module
        docstring for each term and :func:`integrity_score`).

    References
    ----------
    环发〔2015〕175号 art. 4; HJ 75-2017 clause 11-12; 40 CFR 75.24.
    """
    start, end = _utc(start), _utc(end)
    an = analyzers_frame(engine)
    r, c = CheckResult.__table__.c, Certificate.__table__.c
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
    bad = np.array([(e.date() > x) or (rv is not None and not pd.isna(rv) and rv <= e)
                    for e, x, rv in zip(exp["end"], exp["expires"], exp["revoked_at"], strict=True)],
                   dtype=bool)
    exp_n = exp[bad].groupby("analyzer").size() if len(exp) else pd.Series(dtype=int)
    fz_n = falsification_alerts(engine, start, end).groupby("analyzer").size()
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
    return g.sort_values(["score", "operator"]).reset_index(drop=True)[INTEGRITY_COLUMNS]
