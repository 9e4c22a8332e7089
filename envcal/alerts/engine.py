"""Alerts: detection rules, out-of-control periods, the state machine and dispatch.

Each alert kind comes from one rule whose parameters live in :class:`AlertConfig`
(``[alerts]`` of ``envcal.toml``):

``out_of_tolerance``
    the newest valid check of some check kind of the channel failed its rule.
``out_of_control``
    an out-of-control condition of the rule pack (``[[out_of_control]]``: one check with
    ``|q| > factor × limit``, or ``days`` consecutive such checks) opens an
    :class:`~envcal.models.OutOfControlPeriod`; it closes at the next passing check
    (verdict pass or warn). The alert is open while a period is open; readings of the
    channel inside a period get ``Reading.qa_ok = False``.
``drift_trend``
    over the last ``drift_history`` valid checks of a kind, the least-squares line of the
    rule's quantity reaches the fail limit within ``drift_horizon_days`` of the newest
    check, with ``|slope| >= drift_min_t × SE(slope)``, at least ``drift_min_points``
    checks, while the newest check still passes.
``check_overdue``
    a check kind the pack requires (``frequency_h``) is older than
    ``frequency × (1 + overdue_grace)`` at data time.
``material_invalid``
    the newest check of the channel was refused for its material (unknown, expired,
    revoked); and a revoked lot already used (``Finding(kind="material_revoked")``,
    analyzer-level alert, resolved by staff).
``data_quality``
    :mod:`envcal.data_quality` tests on the readings since the last tick: flat line, out of
    physical range, spikes, rate of change, the C/M falsification pattern; seq gaps
    (``DataGap``) and no data (analyzer-level). Resolved after ``dq_clear_h`` clean hours.
``peer_drift``
    ambient stations within ``peer_radius_km``: a station whose daily mean deviates from
    the median of at least ``peer_min_neighbours`` neighbours by more than
    ``peer_threshold`` (relative) on each of the last ``peer_days`` days.

State machine: open → acknowledged → resolved (automatically when the condition clears,
or by staff with a note); one unresolved alert per (analyzer, analyte, kind) — a unique
``open_key`` in the database; new evidence updates it. Every transition is an
:class:`~envcal.models.AlertEvent`, an audit-trail entry, an MQTT message on
``envcal/alerts/{station}/{analyzer}`` and, when configured, a webhook delivery. Delivery
is at least once (the MQTT outbox of :mod:`envcal.outbox`, webhook retries): every payload
carries the transition's ``event_id`` (the :class:`~envcal.models.AlertEvent` id) and
consumers de-duplicate by it.
Evaluation recomputes the desired state from stored data, so replaying a period opens
nothing twice (an alert resolved by staff is not reopened by the evidence that opened it).

References
----------
40 CFR 75.24 (out-of-control periods); 40 CFR 60 App. F Proc. 1 §4.3 (drift out of
control: 2× for 5 consecutive days, 4× once); HJ 75-2017 (失控时段, data flags); IOOS
QARTOD manuals (data-quality tests).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from envcal import audit
from envcal import data_quality as dq
from envcal.alerts.common import Desired, alert_json, days, finite, iso, jsonable, open_key
from envcal.alerts.config import (
    ACTOR,
    FALSIFY_BUCKETS,
    FALSIFY_COUNTS,
    SEVERITIES,
    AlertConfig,
)
from envcal.alerts.periods import condition_periods
from envcal.alerts_dispatch import Publisher, WebhookDispatcher, alert_topic, check_webhook_url
from envcal.codes import CHECK_KINDS
from envcal.instruments import verification_due, verification_due_alert
from envcal.models import (
    Alert,
    AlertEvent,
    CheckResult,
    DataGap,
    Finding,
    OutOfControlPeriod,
    Reading,
    WebhookDelivery,
    utcnow,
)
from envcal.registry import Registry
from envcal.rules import RulePack
from envcal.rules.confirmations import load_pack
from envcal.trends import trend_alarms

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- the engine
def _findings(kind: str, evidence: dict) -> dict:
    """The part of an alert's evidence that makes an ``update`` event when it changes.

    Fields that move with every timer tick (how late a check is, the data time of the tick,
    the data-quality window) are left out: an unchanged finding is stored quietly instead of
    publishing an event per tick (per channel, every few seconds).
    """
    if kind == "data_quality":
        return {k: v for k, v in evidence.items() if k not in ("window", "last_seen")}
    if kind == "check_overdue":
        late = evidence.get("overdue") or {}
        return {"overdue": {k: {f: x for f, x in v.items() if f != "hours_late"} for k, v in late.items()}}
    return evidence


class AlertEngine:
    """Evaluates alert rules, keeps alerts and out-of-control periods, dispatches transitions.

    Parameters
    ----------
    engine : Engine
        Storage (migrated).
    registry : Registry
        Stations and analyzers (spans, rule packs, coordinates).
    publisher : callable, optional
        ``publisher(topic, payload_bytes)`` (the service's MQTT client, QoS 1); called after
        each commit, errors are logged, never raised.
    webhook_url : str, optional
        POST every transition there (background thread, retries with back-off).
    config : AlertConfig
    outbox : envcal.outbox.Outbox, optional
        Publish through it instead of ``publisher``: at least once, the event marked
        published after the broker's PUBACK and published again by the owner's timer
        otherwise (consumers de-duplicate by ``event_id``).
    """

    def __init__(self, engine: Engine, registry: Registry, publisher: Publisher | None = None,
                 webhook_url: str | None = None, config: AlertConfig | None = None, *,
                 outbox: Any = None) -> None:
        self.engine = engine
        self.registry = registry
        self.publisher = publisher
        self.outbox = outbox
        self.webhook_url = check_webhook_url(webhook_url) if webhook_url else None
        self.config = config or AlertConfig()
        self.packs: dict[str, RulePack] = {}
        for a in registry.analyzers.values():
            if a.rule_pack not in self.packs:
                self.packs[a.rule_pack] = load_pack(a.rule_pack, engine)
        self._lock = threading.RLock()
        #: (analyzer, analyte) -> smallest result id of the batch being judged: a trend alarm
        #: at any of the batch's checks is raised even when a later check of the same batch
        #: already ends it (a batch may hold several days of a fast-forwarded or backfilled run)
        self._trend_new: dict[tuple[str, str], int] = {}
        self._dq_since: dt.datetime | None = None
        # per channel: [bucket start, newest tick, counts of FALSIFY_COUNTS...] of the last
        # dq_window_h, so the falsification statistic sees a whole window even when ticks
        # are short (bounded: see _falsify_window)
        self._falsify_hist: dict[tuple[str, str], list[tuple]] = {}
        # usual interval between an analyzer's routine readings [s] (batch water analyzers
        # report every 1-4 h: "no data" is judged against a multiple of it)
        self._interval: dict[str, float] = {}
        self._peer_day: dt.date | None = None
        self.dispatcher: WebhookDispatcher | None = None
        if webhook_url:
            c = self.config
            self.dispatcher = WebhookDispatcher(
                engine, timeout_s=c.webhook_timeout_s, max_attempts=c.webhook_max_attempts,
                backoff_s=c.webhook_backoff_s, backoff_max_s=c.webhook_backoff_max_s).start()

    def close(self) -> None:
        """Stop the webhook thread (pending deliveries stay stored and resume next start)."""
        if self.dispatcher is not None:
            self.dispatcher.stop()

    # -- entry points --------------------------------------------------------------------
    def on_results(self, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Verifier listener: evaluate the channels of a batch of result dicts.

        Returns
        -------
        list of dict
            The alert JSON of every transition made (also published).
        """
        pairs = sorted({(r["analyzer"], r["analyte"]) for r in results
                        if r.get("analyzer") in self.registry.analyzers and r.get("analyte")})
        judged = set(pairs)
        with self._lock:
            for r in results:
                key = (r.get("analyzer"), r.get("analyte"))
                if key in judged and r.get("id") is not None:
                    self._trend_new[key] = min(self._trend_new.get(key, int(r["id"])), int(r["id"]))
        return self.evaluate_channels(pairs)

    def evaluate_channels(self, pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Re-evaluate the result-driven kinds (out_of_tolerance, out_of_control,
        drift_trend, material_invalid) of the given (analyzer, analyte) channels."""
        out: list[dict[str, Any]] = []
        for analyzer, analyte in pairs:
            with self._lock:
                desired, periods = self._channel_state(analyzer, analyte)
                out.extend(self._apply(desired, periods=(analyzer, analyte, periods)))
        return out

    def reevaluate_all(self) -> list[dict[str, Any]]:
        """Every channel that has results (``envcal alerts evaluate --results``)."""
        c = CheckResult.__table__.c
        with self.engine.connect() as conn:
            pairs = [tuple(r) for r in conn.execute(sa.select(c.analyzer_id, c.analyte).distinct())]
        return self.evaluate_channels([p for p in pairs if p[0] in self.registry.analyzers])

    def tick(self, now: dt.datetime | None = None, *,
             analyzers: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Timer: overdue checks, data quality since the last tick, revoked lots, peer
        drift, escalation, quality flags of open periods, webhook retries.

        Parameters
        ----------
        now : datetime, optional
            Data time (the newest reading); read from the hot store when not given.
        analyzers : iterable of str, optional
            Act only for these analyzers (a worker of a group: the ones it owns, see
            :mod:`envcal.ownership`); default every analyzer of the registry.
        """
        only = None if analyzers is None else frozenset(analyzers)

        def mine(ds: list[Desired]) -> list[Desired]:
            return ds if only is None else [d for d in ds if d.analyzer in only]

        with self._lock:
            now = now or self.data_time()
            if now is None:
                return []
            out: list[dict[str, Any]] = []
            out.extend(self._apply(mine(self._overdue(now))))
            out.extend(self._apply(mine(self._data_quality(now))))
            out.extend(self._apply(mine(self._revocations(now))))
            out.extend(self._apply(mine(self._peer_drift(now))))
            out.extend(self._apply(mine(self._verification_due(now))))
            out.extend(self._escalate(now, only))
            self._mark_open_periods(only)
        if self.dispatcher is not None:
            self.dispatcher.wake()
        return out

    def data_time(self) -> dt.datetime | None:
        """The newest reading time in the hot store (else the newest result end)."""
        with self.engine.connect() as conn:
            t = conn.execute(sa.select(sa.func.max(Reading.__table__.c.ts))).scalar()
            if t is None:
                t = conn.execute(sa.select(sa.func.max(CheckResult.__table__.c.end))).scalar()
        if t is not None and t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return t

    # -- result-driven kinds -------------------------------------------------------------
    def _history(self, analyzer: str, analyte: str) -> list[dict[str, Any]]:
        c = CheckResult.__table__.c
        p = OutOfControlPeriod.__table__.c
        with self.engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(c.end)).where(
                c.analyzer_id == analyzer, c.analyte == analyte)).scalar()
            if newest is None:
                return []
            if newest.tzinfo is None:
                newest = newest.replace(tzinfo=dt.UTC)
            since = newest - dt.timedelta(days=self.config.history_days)
            oldest_open = conn.execute(sa.select(sa.func.min(p.start)).where(
                p.analyzer_id == analyzer, p.analyte == analyte, p.end.is_(None))).scalar()
            if oldest_open is not None:
                oldest_open = oldest_open if oldest_open.tzinfo else oldest_open.replace(tzinfo=dt.UTC)
                since = min(since, oldest_open - dt.timedelta(days=1))
            rows = conn.execute(
                sa.select(c.id, c.kind, c.start, c.end, c.verdict, c.rule, c.error_abs,
                          c.error_rel_pct, c.error_fs_pct, c.drift_fs_pct, c.en, c.details,
                          c.material, c.check_id, c.reason_en, c.reason_zh)
                .where(c.analyzer_id == analyzer, c.analyte == analyte, c.end >= since)
                .order_by(c.end, c.id)).mappings().all()
        return [dict(r) for r in rows]

    def _channel_state(self, analyzer: str, analyte: str):
        spec = self.registry.analyzers[analyzer]
        pack = self.packs[spec.rule_pack]
        hist = self._history(analyzer, analyte)
        desired: list[Desired] = []
        if not hist:
            return desired, []
        last_ts = hist[-1]["end"]

        # material_invalid: the newest check refused for its material
        newest = hist[-1]
        refusal = (newest.get("details") or {}).get("material_refusal") if newest["verdict"] == "invalid" else None
        if refusal:
            desired.append(Desired(
                analyzer, analyte, "material_invalid", True, "warning",
                f"{analyzer} {analyte}: check used an unusable reference material {newest['material'] or '(none)'}",
                f"{analyzer} {analyte}：核查所用标准物质不可用 {newest['material'] or '（无）'}",
                {"refusal": refusal, "material": newest["material"], "check_id": newest["check_id"],
                 "reason_en": newest["reason_en"], "reason_zh": newest["reason_zh"]},
                [newest["id"]], f"result:{newest['id']}", newest["end"]))
        else:
            desired.append(Desired(analyzer, analyte, "material_invalid", False, data_ts=last_ts,
                                   note=f"check {newest['check_id']} used a valid material"))

        # out_of_tolerance: the newest valid check of a kind failed
        latest: dict[str, dict] = {}
        for r in hist:
            if r["verdict"] != "invalid":
                latest[r["kind"]] = r
        failing = {k: r for k, r in latest.items() if r["verdict"] == "fail"}
        if failing:
            ev = {k: {"result": r["id"], "check_id": r["check_id"], "rule": r["rule"],
                      "end": r["end"], "error_fs_pct": finite(r["error_fs_pct"]),
                      "error_rel_pct": finite(r["error_rel_pct"]), "reason_en": r["reason_en"],
                      "reason_zh": r["reason_zh"]} for k, r in sorted(failing.items())}
            newest_fail = max(failing.values(), key=lambda r: (r["end"], r["id"]))
            desired.append(Desired(
                analyzer, analyte, "out_of_tolerance", True, "warning",
                f"{analyzer} {analyte}: {', '.join(sorted(failing))} check out of tolerance",
                f"{analyzer} {analyte}：{'、'.join(sorted(failing))} 核查超出允许误差",
                {"failing": ev}, sorted(r["id"] for r in failing.values()),
                f"result:{newest_fail['id']}", newest_fail["end"]))
        else:
            desired.append(Desired(analyzer, analyte, "out_of_tolerance", False, data_ts=last_ts,
                                   note="the newest checks pass"))

        # out_of_control periods (per condition of the pack, series per check kind)
        periods = []
        for cond in pack.out_of_control:
            periods.extend(condition_periods(pack, cond, hist, analyte))
        open_p = [p for p in periods if p["end"] is None]
        if open_p:
            first = min(open_p, key=lambda p: p["start"])
            desired.append(Desired(
                analyzer, analyte, "out_of_control", True, "critical",
                f"{analyzer} {analyte}: out of control since {iso(first['start'])} ({first['rule_id']})",
                f"{analyzer} {analyte}：自 {iso(first['start'])} 起失控（{first['rule_id']}），期间数据无效",
                {"periods": [{k: p[k] for k in ("rule_id", "start", "opened_by_result", "start_result",
                                                "source")} | p["evidence"] for p in open_p]},
                sorted({p["opened_by_result"] for p in open_p}),
                "period:" + ",".join(sorted(f"{p['rule_id']}:{p['opened_by_result']}" for p in open_p)),
                last_ts))
        else:
            closed = [p for p in periods if p["end"] is not None]
            note = "no open out-of-control period"
            if closed:
                lastp = max(closed, key=lambda p: p["end"])
                note = f"period closed by passing check (result {lastp['closed_by_result']})"
            desired.append(Desired(analyzer, analyte, "out_of_control", False, data_ts=last_ts, note=note))

        # drift_trend per check kind
        c = self.config
        alarms = {}
        first_new = self._trend_new.pop((analyzer, analyte), None)
        transient: dict[str, Any] | None = None  # the earliest alarm among this batch's checks
        for kind in sorted({r["kind"] for r in hist}):
            rules = pack.rules_for(kind, analyte) if kind in CHECK_KINDS else []
            if not rules:
                continue
            rule = rules[0]
            rows = [r for r in hist if r["kind"] == kind]
            t = np.array([days(r["end"]) for r in rows])
            qv = np.array([r[rule.quantity] if (r["verdict"] != "invalid" and r[rule.quantity] is not None)
                           else np.nan for r in rows], dtype=np.float64)
            passed = np.array([r["verdict"] in ("pass", "warn") for r in rows])
            al, sl, se, dd = trend_alarms(t, qv, passed, rule.limit, c.trend_model())

            def info(i: int, rule=rule, rows=rows, qv=qv, sl=sl, se=se, dd=dd) -> dict[str, Any]:
                return {"rule": rule.id, "quantity": rule.quantity, "limit": rule.limit,
                        "slope_per_day": finite(sl[i]), "slope_se": finite(se[i]),
                        "days_to_limit": finite(dd[i]),
                        "crossing": iso(rows[i]["end"] + dt.timedelta(days=float(dd[i]))),
                        "last_value": finite(qv[i]), "last_result": rows[i]["id"],
                        "n": int(min(np.isfinite(qv[:i + 1]).sum(), c.drift_history))}
            if al[-1]:
                alarms[kind] = info(len(rows) - 1)
            elif first_new is not None:
                hits = [i for i, r in enumerate(rows) if r["id"] >= first_new and al[i]]
                if hits and (transient is None or rows[hits[0]]["end"] < transient["end"]):
                    transient = {"kind": kind, "end": rows[hits[0]]["end"], "info": info(hits[0])}
        if not alarms and transient is not None:
            a = transient["info"]
            desired.append(Desired(
                analyzer, analyte, "drift_trend", True, "warning",
                f"{analyzer} {analyte}: drift reaches the limit in {a['days_to_limit']:.1f} d",
                f"{analyzer} {analyte}：按漂移趋势约 {a['days_to_limit']:.1f} 天后超限",
                {"trends": {transient["kind"]: a}, "horizon_days": c.drift_horizon_days},
                [a["last_result"]], f"result:{a['last_result']}", transient["end"]))
        if alarms:
            ids = sorted(a["last_result"] for a in alarms.values())
            soonest = min(alarms.values(), key=lambda a: a["days_to_limit"])
            desired.append(Desired(
                analyzer, analyte, "drift_trend", True, "warning",
                f"{analyzer} {analyte}: drift reaches the limit in {soonest['days_to_limit']:.1f} d",
                f"{analyzer} {analyte}：按漂移趋势约 {soonest['days_to_limit']:.1f} 天后超限",
                {"trends": alarms, "horizon_days": c.drift_horizon_days}, ids,
                f"result:{max(ids)}", last_ts))
        else:
            desired.append(Desired(analyzer, analyte, "drift_trend", False, data_ts=last_ts,
                                   note="no trend predicts crossing the limit within the horizon"))
        return desired, periods

    # -- timer-driven kinds --------------------------------------------------------------
    def _overdue(self, now: dt.datetime) -> list[Desired]:
        c = CheckResult.__table__.c
        r = Reading.__table__.c
        with self.engine.connect() as conn:
            last = {(a, x, k): t for a, x, k, t in conn.execute(
                sa.select(c.analyzer_id, c.analyte, c.kind, sa.func.max(c.end))
                .group_by(c.analyzer_id, c.analyte, c.kind))}
            first = {a: t for a, t in conn.execute(
                sa.select(r.analyzer_id, sa.func.min(r.ts)).group_by(r.analyzer_id))}
        out = []
        for aid, spec in self.registry.analyzers.items():
            pack = self.packs[spec.rule_pack]
            for ch in spec.channels:
                late = {}
                for kind, interval in pack.required_checks(ch.analyte):
                    t = last.get((aid, ch.analyte, kind))
                    base = t if t is not None else first.get(aid)
                    if base is None:
                        continue
                    base = base if base.tzinfo else base.replace(tzinfo=dt.UTC)
                    due = base + interval * (1 + self.config.overdue_grace)
                    if now > due:
                        late[kind] = {"last_check": iso(t), "interval_h": interval.total_seconds() / 3600,
                                      "due": iso(due), "hours_late": round((now - due).total_seconds() / 3600, 2)}
                if late:
                    out.append(Desired(aid, ch.analyte, "check_overdue", True, "warning",
                                       f"{aid} {ch.analyte}: {', '.join(sorted(late))} check overdue",
                                       f"{aid} {ch.analyte}：{'、'.join(sorted(late))} 核查逾期",
                                       {"overdue": late, "data_time": iso(now)}, [],
                                       None, now))
                else:
                    out.append(Desired(aid, ch.analyte, "check_overdue", False, data_ts=now,
                                       note="required checks are on time"))
        return out

    def _data_quality(self, now: dt.datetime) -> list[Desired]:
        cfg = self.config
        since = self._dq_since or (now - dt.timedelta(hours=cfg.dq_window_h))
        if since >= now:
            return []
        context = dt.timedelta(minutes=max(cfg.flat_minutes, cfg.falsify_context_minutes) + 1)
        r = Reading.__table__.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(r.analyzer_id, r.analyte, r.ts, r.value, r.flag, r.check_id)
                .where(r.ts > since - context, r.ts <= now)
                .order_by(r.analyzer_id, r.analyte, r.ts)).all()
            gaps = conn.execute(
                sa.select(DataGap.__table__.c.analyzer_id, sa.func.sum(DataGap.__table__.c.missing),
                          sa.func.count())
                .where(DataGap.__table__.c.ts_after > since, DataGap.__table__.c.ts_after <= now)
                .group_by(DataGap.__table__.c.analyzer_id)).all()
            newest = dict(conn.execute(sa.select(r.analyzer_id, sa.func.max(r.ts)).group_by(r.analyzer_id)).all())
            open_dq = {(a.analyzer_id, a.analyte): a for a in Session(conn).exec(
                sa.select(Alert).where(Alert.kind == "data_quality", Alert.state != "resolved")).scalars()}
        self._dq_since = now
        issues: dict[tuple[str, str | None], dict[str, Any]] = {}
        if rows:
            cols = list(zip(*rows, strict=True))
            aid = np.array(cols[0], dtype=object)
            ana = np.array(cols[1], dtype=object)
            t = np.array([days(x if x.tzinfo else x.replace(tzinfo=dt.UTC)) * 86400.0 for x in cols[2]])
            x = np.array([np.nan if v is None else v for v in cols[3]], dtype=np.float64)
            flags = np.array(cols[4], dtype=object)
            in_check = np.array([c is not None for c in cols[5]])
            key = np.char.add(aid.astype(str), np.char.add("\x1f", ana.astype(str)))
            change = np.nonzero(key[1:] != key[:-1])[0] + 1
            offsets = np.concatenate([[0], change, [len(rows)]]).astype(np.int64)
            # C/M readings next to a recorded QC check (the analyzer purging the check gas
            # or settling) are part of the check, not a pattern of hiding exceedances
            near_check = np.zeros(len(rows), bool)
            win = cfg.check_settle_minutes * 60.0
            for o0, o1 in zip(offsets[:-1], offsets[1:], strict=True):
                tt, ic = t[o0:o1], in_check[o0:o1]
                last = np.maximum.accumulate(np.where(ic, tt, -np.inf))
                nxt = np.minimum.accumulate(np.where(ic, tt, np.inf)[::-1])[::-1]
                near_check[o0:o1] = ((tt - last) <= win) | ((nxt - tt) <= win)
            fcls = np.full(len(rows), dq.FLAG_OTHER, np.int8)
            fcls[(flags == "N") & ~in_check] = dq.FLAG_NORMAL
            fcls[np.isin(flags, ["C", "M"]) & ~in_check & ~near_check] = dq.FLAG_MASKED
            chans = [(aid[o], ana[o]) for o in offsets[:-1]]
            span, lo, hi, lim = [], [], [], []
            for a, x_ in chans:
                spec = self.registry.analyzers.get(a)
                ch = spec.channel(x_) if spec else None
                s = float(ch.span) if ch else 1.0
                span.append(s)
                lo.append(ch.range_min if ch and ch.range_min is not None else cfg.range_low_fraction * s)
                hi.append(ch.range_max if ch and ch.range_max is not None else cfg.range_high_fraction * s)
                lim.append(cfg.falsify_limits.get(x_, np.nan))
            counts = dq.channel_tests(
                t, x, fcls, offsets, np.array(span), np.array(lo), np.array(hi), np.array(lim),
                t_from=days(since) * 86400.0, flat_tol_fraction=cfg.flat_tol_fraction,
                flat_s=cfg.flat_minutes * 60.0, spike_fraction=cfg.spike_fraction,
                roc_fraction_per_min=cfg.roc_fraction_per_min,
                near_fraction=cfg.falsify_near_fraction, context_s=cfg.falsify_context_minutes * 60.0)
            for (a, _analyte), o0, o1 in zip(chans, offsets[:-1], offsets[1:], strict=True):
                tn = t[o0:o1][fcls[o0:o1] == dq.FLAG_NORMAL]
                if tn.size >= 3:
                    self._interval[a] = max(float(np.median(np.diff(tn))), 0.0)
            for (a, x_), row in zip(chans, counts, strict=True):
                if a not in self.registry.analyzers:
                    continue
                n = dict(zip(dq.COLUMNS, (int(v) for v in row), strict=True))
                found: dict[str, Any] = {}
                if n["flat_line"] > 0:
                    found["flat_line"] = {"readings": n["flat_line"], "minutes": cfg.flat_minutes}
                if n["out_of_range"] >= cfg.range_min_count:
                    found["out_of_range"] = {"readings": n["out_of_range"]}
                if n["spike"] >= cfg.spike_min_count:
                    found["spike"] = {"readings": n["spike"]}
                if n["rate_of_change"] >= cfg.roc_min_count:
                    found["rate_of_change"] = {"readings": n["rate_of_change"]}
                (ep, ep_near, normal, normal_near, m_above, masked,
                 n_above) = self._falsify_window((a, x_), now, tuple(n[k] for k in FALSIFY_COUNTS))
                if ep or m_above:
                    f = dq.falsification(ep, ep_near, normal, normal_near,
                                         min_episodes=cfg.falsify_min_episodes,
                                         alpha=cfg.falsify_alpha)
                    if not f.flagged:
                        f = dq.masked_exceedance(m_above, masked, n_above, normal,
                                                 min_readings=cfg.falsify_min_episodes,
                                                 alpha=cfg.falsify_alpha)
                    if f.flagged:
                        found["falsification"] = f.as_dict() | {
                            "limit": cfg.falsify_limits.get(x_), "masked_above_limit": n["masked_above_limit"]}
                if found:
                    issues[(a, x_)] = found
        for a, missing, count in gaps:
            if a in self.registry.analyzers and int(missing or 0) >= cfg.gap_min_missing:
                issues.setdefault((a, None), {})["seq_gaps"] = {"missing": int(missing), "gaps": int(count)}
        for a in self.registry.analyzers:
            t_last = newest.get(a)
            if t_last is None:
                continue
            t_last = t_last if t_last.tzinfo else t_last.replace(tzinfo=dt.UTC)
            allowed = max(cfg.no_data_minutes * 60.0, 3.0 * self._interval.get(a, 0.0))
            if now - t_last > dt.timedelta(seconds=allowed):
                issues.setdefault((a, None), {})["no_data"] = {"last_reading": iso(t_last)}
        out = []
        window = {"from": iso(since), "to": iso(now)}
        for (a, x_), found in sorted(issues.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            sev = "critical" if "falsification" in found else "warning"
            tests = ", ".join(sorted(found))
            out.append(Desired(a, x_, "data_quality", True, sev,
                               f"{a} {x_ or ''}: data quality ({tests})".replace("  ", " "),
                               f"{a} {x_ or ''}：数据质量问题（{tests}）".replace("  ", " "),
                               {"tests": found, "window": window, "last_seen": iso(now)}, [], None, now))
        for (a, x_), alert in open_dq.items():
            if (a, x_) in issues:
                continue
            seen = (alert.evidence or {}).get("last_seen")
            seen_t = dt.datetime.fromisoformat(seen.replace("Z", "+00:00")) if seen else alert.updated_at
            if now - seen_t >= dt.timedelta(hours=cfg.dq_clear_h):
                out.append(Desired(a, x_, "data_quality", False, data_ts=now,
                                   note=f"no data-quality finding for {cfg.dq_clear_h:g} h"))
        return out

    def _falsify_window(self, key: tuple[str, str], now: dt.datetime,
                        counts: tuple[int, ...]) -> list[int]:
        """Add one tick's falsification counts of a channel; return the sums over the last
        ``dq_window_h`` (data time).

        Ticks are merged into buckets ``dq_window_h / FALSIFY_BUCKETS`` wide, so a channel
        keeps at most ``FALSIFY_BUCKETS + 2`` entries however short the timer period (one
        entry per tick grew to 17 280 per channel in a day of 5 s ticks). A bucket is
        dropped once its newest tick is older than the window, so the sums cover the last
        ``dq_window_h`` plus at most one bucket width.
        """
        width = dt.timedelta(hours=self.config.dq_window_h) / FALSIFY_BUCKETS
        hist = self._falsify_hist.setdefault(key, [])
        last = hist[-1] if hist else None
        if last is not None and dt.timedelta(0) <= now - last[0] < width:
            last[1] = max(last[1], now)
            for i, v in enumerate(counts):
                last[2 + i] += v
        else:
            hist.append([now, now, *counts])
        keep_from = now - dt.timedelta(hours=self.config.dq_window_h)
        if hist[0][1] <= keep_from:
            hist[:] = [h for h in hist if h[1] > keep_from]
        return [sum(h[2 + i] for h in hist) for i in range(len(counts))]

    def _revocations(self, now: dt.datetime) -> list[Desired]:
        f = Finding.__table__.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(f.id, f.object_id, f.details, f.resolved_at, f.created_at)
                                .where(f.kind == "material_revoked").order_by(f.id)).all()
        per: dict[str, list] = {}
        for fid, lot, details, resolved, created in rows:
            for a in (details or {}).get("analyzers", []):
                if a in self.registry.analyzers:
                    per.setdefault(a, []).append((fid, lot, details or {}, resolved, created))
        out = []
        for a, items in per.items():
            live = [i for i in items if i[3] is None]
            if not live:
                out.append(Desired(a, None, "material_invalid", False, data_ts=now,
                                   note="revocation findings resolved"))
                continue
            ids = sorted({rid for i in live for rid in (i[2].get("result_ids") or []) if rid is not None})
            out.append(Desired(
                a, None, "material_invalid", True, "critical",
                f"{a}: reference material lot(s) {', '.join(sorted({i[1] for i in live}))} revoked after use",
                f"{a}：已使用的标准物质批次 {'、'.join(sorted({i[1] for i in live}))} 被撤销，相关结果需复核",
                {"revoked": [{"finding": i[0], "lot": i[1], "reason": i[2].get("reason"),
                              "revoked_by": i[2].get("revoked_by")} for i in live]},
                ids, "finding:" + ",".join(str(i[0]) for i in live), now))
        return out

    def _peer_drift(self, now: dt.datetime) -> list[Desired]:
        cfg = self.config
        day = now.date()
        if self._peer_day == day:
            return []
        self._peer_day = day
        amb = {s.id: s for s in self.registry.stations.values() if s.kind == "ambient_air"}
        chans: dict[str, list[tuple[str, str, float]]] = {}
        for a in self.registry.analyzers.values():
            if a.station in amb:
                for ch in a.channels:
                    chans.setdefault(ch.analyte, []).append((a.station, a.id, float(ch.span)))
        end = dt.datetime.combine(day, dt.time(), dt.UTC)
        start = end - dt.timedelta(days=cfg.peer_days)
        out = []
        r = Reading.__table__.c
        for analyte, members in chans.items():
            if len(members) < cfg.peer_min_neighbours + 1:
                continue
            ids = [m[1] for m in members]
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(r.analyzer_id, r.ts, r.value).where(
                    r.analyte == analyte, r.analyzer_id.in_(ids), r.ts >= start, r.ts < end,
                    r.flag == "N", r.check_id.is_(None), r.value.is_not(None))).all()
            daily = np.full((len(ids), cfg.peer_days), np.nan)
            sums = np.zeros_like(daily)
            cnt = np.zeros_like(daily)
            pos = {a: i for i, a in enumerate(ids)}
            for a, ts, v in rows:
                ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
                d = (ts - start).days
                sums[pos[a], d] += v
                cnt[pos[a], d] += 1
            np.divide(sums, cnt, out=daily, where=cnt > 0)
            nbs = []
            for st, _, _ in members:
                s0 = amb[st]
                nbs.append(np.array([j for j, (st2, _, _) in enumerate(members) if st2 != st and
                                     dq.haversine_km(s0.lat, s0.lon, amb[st2].lat, amb[st2].lon)
                                     <= cfg.peer_radius_km], dtype=np.int64))
            floor = cfg.peer_floor_fraction * np.median([m[2] for m in members])
            dev = dq.peer_deviation(daily, nbs, floor)
            for i, (_st, aid, _) in enumerate(members):
                if len(nbs[i]) < cfg.peer_min_neighbours:
                    continue
                d = dev[i]
                if np.all(np.isfinite(d)) and np.all(np.abs(d) > cfg.peer_threshold) and (
                        np.all(d > 0) or np.all(d < 0)):
                    out.append(Desired(aid, analyte, "peer_drift", True, "info",
                                       f"{aid} {analyte}: deviates from its neighbours' median",
                                       f"{aid} {analyte}：与邻近站点中位数持续偏离",
                                       {"daily_relative_deviation": [finite(v) for v in d],
                                        "days": [iso(start + dt.timedelta(days=k)) for k in range(cfg.peer_days)],
                                        "neighbours": [members[j][1] for j in nbs[i]],
                                        "threshold": cfg.peer_threshold, "radius_km": cfg.peer_radius_km},
                                       [], f"peer:{analyte}:{day.isoformat()}", now))
                elif np.isfinite(d[-1]):
                    out.append(Desired(aid, analyte, "peer_drift", False, data_ts=now,
                                       note="back within the neighbours' range"))
        return out

    def _verification_due(self, now: dt.datetime) -> list[Desired]:
        """Instrument verification records due or expired (rule: :func:`envcal.instruments.verification_due`)."""
        due = verification_due(self.engine, now, sorted(self.registry.analyzers),
                               lead_days=self.config.verification_due_days)
        return [Desired(aid, None, "verification_due", True, **verification_due_alert(d), data_ts=now)
                if d is not None else Desired(aid, None, "verification_due", False, data_ts=now,
                                              note="instrument verification renewed")
                for aid, d in due.items()]

    def _escalate(self, now: dt.datetime, only: frozenset[str] | None = None) -> list[dict[str, Any]]:
        limit = now - dt.timedelta(hours=self.config.escalate_after_h)
        out = []
        with Session(self.engine, expire_on_commit=False) as s:
            q = sa.select(Alert).where(Alert.state == "open", Alert.escalated_at.is_(None),
                                       Alert.opened_at <= limit)
            if only is not None:
                q = q.where(Alert.analyzer_id.in_(sorted(only)))
            alerts = s.exec(q).scalars().all()
            msgs = []
            for a in alerts:
                a.escalated_at = now
                a.severity = SEVERITIES[min(SEVERITIES.index(a.severity) + 1, 2)]
                a.updated_at = now
                msgs.append(self._event(s, a, "escalate", ACTOR,
                                        f"unacknowledged for {self.config.escalate_after_h:g} h", now))
            s.commit()
        for a, payload in msgs:
            out.append(payload)
            self._publish(a, payload)
        return out

    # -- quality flags -------------------------------------------------------------------
    def _store_periods(self, s: Session, analyzer: str, analyte: str, periods: list[dict]) -> None:
        t = OutOfControlPeriod.__table__
        now = utcnow()
        existing = {(r.rule_id, r.opened_by_result): r for r in s.exec(
            sa.select(OutOfControlPeriod).where(OutOfControlPeriod.analyzer_id == analyzer,
                                                OutOfControlPeriod.analyte == analyte)).scalars()}
        r = Reading.__table__
        if periods:  # recompute the flags from the earliest period on (a closed period un-flags
            # readings after its end that were flagged while it was open)
            s.execute(r.update().where(r.c.analyzer_id == analyzer, r.c.analyte == analyte,
                                       r.c.ts > min(p["start"] for p in periods),
                                       r.c.qa_ok.is_(False)).values(qa_ok=None))
        for p in periods:
            k = (p["rule_id"], p["opened_by_result"])
            ev = jsonable(p["evidence"])
            row = existing.get(k)
            if row is None:
                s.execute(t.insert().values(analyzer_id=analyzer, analyte=analyte, updated_at=now,
                                            **{**p, "evidence": ev}))
            elif (row.start, row.end, row.closed_by_result) != (p["start"], p["end"], p["closed_by_result"]):
                s.execute(t.update().where(t.c.id == row.id).values(
                    start=p["start"], end=p["end"], closed_by_result=p["closed_by_result"],
                    start_result=p["start_result"], evidence=ev, updated_at=now))
            cond = [r.c.analyzer_id == analyzer, r.c.analyte == analyte, r.c.ts > p["start"]]
            if p["end"] is not None:
                cond.append(r.c.ts <= p["end"])
            s.execute(r.update().where(*cond, sa.or_(r.c.qa_ok.is_(None), r.c.qa_ok.is_(True)))
                      .values(qa_ok=False))

    def _mark_open_periods(self, only: frozenset[str] | None = None) -> None:
        p = OutOfControlPeriod.__table__.c
        r = Reading.__table__
        q = sa.select(p.analyzer_id, p.analyte, p.start).where(p.end.is_(None))
        if only is not None:
            q = q.where(p.analyzer_id.in_(sorted(only)))
        with self.engine.begin() as conn:
            for a, x, start in conn.execute(q).all():
                conn.execute(r.update().where(r.c.analyzer_id == a, r.c.analyte == x, r.c.ts > start,
                                              r.c.qa_ok.is_(None)).values(qa_ok=False))

    # -- the state machine ---------------------------------------------------------------
    def _apply(self, desired: Sequence[Desired], periods=None) -> list[dict[str, Any]]:
        if not desired and not periods:
            return []
        msgs: list[tuple[Alert, dict]] = []
        with Session(self.engine, expire_on_commit=False) as s:
            try:
                if periods is not None:
                    self._store_periods(s, *periods)
                for d in desired:
                    m = self._apply_one(s, d)
                    if m is not None:
                        msgs.append(m)
                s.commit()
            except Exception:
                s.rollback()
                raise
        out = []
        for a, payload in msgs:
            self._publish(a, payload)
            out.append(payload)
        return out

    def _apply_one(self, s: Session, d: Desired) -> tuple[Alert, dict] | None:
        key = open_key(d.analyzer, d.analyte, d.kind)
        cur = s.exec(sa.select(Alert).where(Alert.open_key == key)).scalars().first()
        ts = d.data_ts or utcnow()
        if not d.open:
            if cur is None:
                return None
            cur.state = "resolved"
            cur.open_key = None
            cur.resolved_at = ts
            cur.resolved_by = ACTOR
            cur.updated_at = ts
            return self._event(s, cur, "resolve", ACTOR, d.note, ts)
        evidence = jsonable(d.evidence)
        if cur is None:
            if d.trigger is not None:
                done = s.exec(sa.select(Alert.id).where(
                    Alert.analyzer_id == d.analyzer, Alert.kind == d.kind, Alert.trigger == d.trigger,
                    (Alert.analyte == d.analyte) if d.analyte is not None else Alert.analyte.is_(None))
                ).first()
                if done is not None:
                    return None  # this evidence was already handled (replay; or resolved by staff)
            station = self.registry.analyzers[d.analyzer].station
            cur = Alert(analyzer_id=d.analyzer, station_id=station, analyte=d.analyte, kind=d.kind,
                        severity=d.severity, state="open", open_key=key, opened_at=ts, updated_at=ts,
                        title_en=d.title_en, title_zh=d.title_zh, evidence=evidence,
                        result_ids=list(d.result_ids), trigger=d.trigger)
            s.add(cur)
            s.flush()
            return self._event(s, cur, "open", ACTOR, None, ts)
        ids = list(dict.fromkeys(list(cur.result_ids or []) + list(d.result_ids)))
        if evidence == (cur.evidence or {}) and ids == list(cur.result_ids or []):
            return None
        if ids == list(cur.result_ids or []) and _findings(d.kind, evidence) == _findings(d.kind, cur.evidence or {}):
            cur.evidence = evidence  # same findings, only clock-driven fields moved: keep quietly
            return None
        cur.evidence = evidence
        cur.result_ids = ids
        cur.title_en, cur.title_zh = d.title_en, d.title_zh
        if SEVERITIES.index(d.severity) > SEVERITIES.index(cur.severity):
            cur.severity = d.severity
        if d.trigger is not None:
            cur.trigger = d.trigger
        cur.updated_at = max(ts, cur.updated_at)
        return self._event(s, cur, "update", ACTOR, None, ts)

    def _event(self, s: Session, a: Alert, action: str, actor: str, note: str | None,
               data_ts: dt.datetime | None) -> tuple[Alert, dict]:
        s.flush()
        ev = AlertEvent(alert_id=a.id, ts=utcnow(), data_ts=data_ts, action=action, actor=actor,
                        state=a.state, severity=a.severity, note=note, evidence=a.evidence)
        s.add(ev)
        s.flush()
        payload = alert_json(a) | {"event": action, "event_id": ev.id}
        audit.record(s, actor, f"alert.{action}", "alert", str(a.id),
                     {"kind": a.kind, "analyzer": a.analyzer_id, "analyte": a.analyte,
                      "state": a.state, "severity": a.severity, "note": note})
        if self.webhook_url:
            s.add(WebhookDelivery(alert_id=a.id, url=self.webhook_url, payload=payload,
                                  state="pending", next_retry_at=utcnow(), created_at=utcnow()))
        return a, payload

    def _publish(self, a: Alert, payload: dict) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
        if self.publisher is None and self.outbox is None:
            return
        topic = alert_topic(a.station_id, a.analyzer_id)
        body = json.dumps(payload, ensure_ascii=False).encode()
        try:
            if self.outbox is not None:
                self.outbox.publish(topic, body, ("alert_event", payload["event_id"]))
            else:
                self.publisher(topic, body)
        except Exception:  # noqa: BLE001 - dispatch must never break evaluation
            log.exception("publishing alert %s failed", a.id)
