"""Check extraction and evaluation: readings of a QC check -> a stored, explained result.

The path of one check (all numbers from :mod:`envcal.kernels`, all limits from the
analyzer's rule pack, all reference values from :mod:`envcal.certificates`):

1. **Extraction.** Readings that carry a ``check`` block are grouped by check id. A check
   is complete when a reading with ``phase == "end"`` arrived, or when the analyzer has
   sent newer readings for longer than ``stale_after`` (data time, not wall time, so a
   fast-forwarded simulation behaves like the real thing). Each analyte in the check is a
   channel result; a linearity check is split into levels by material.
2. **Reference.** The certified value of the named material in the channel's unit, valid
   at the check's end (:func:`envcal.certificates.certified_value`, converted with the
   pack's molar volume). A zero check without material uses 0 with no uncertainty, where
   the pack's rule allows it; a flow check without material uses the channel's set point
   (its span, the design flow).
3. **Numbers.** :func:`envcal.kernels.evaluate_checks` finds the stable plateau (longest
   final window whose rolling standard deviation and slope stay within the pack's
   ``[plateau]`` bounds), T90, n, mean, s, u(mean), and the errors: absolute, relative
   [% of reference], of span [% F.S.], drift against the previous valid check of the same
   kind [% F.S.], E_n (k = 2) and the ISO Guide 33 bias test.
4. **Verdict.** Every rule of the pack for this check kind and analyte tests its quantity
   (``|q| <= warn`` pass, ``<= limit`` warn, else fail); the worst decides. A check with no
   plateau, too few readings, or an unusable material is ``invalid`` with the reason.

Results are one row per (analyzer, analyte, check id) in ``check_result``: evaluating the
same check again (a redelivery, ``envcal verify replay``) rewrites the same numbers.

**Completeness in a worker group.** When several ingest workers share an analyzer's
messages (``envcal ingest --group``), the worker that stored the ``end`` reading cannot
know that the other workers have stored the earlier ones: one may still hold some in an
uncommitted batch, or be retrying a database outage. There the owner of the analyzer
(:mod:`envcal.ownership`) judges a check from its timer only when :func:`completeness`
says all its readings are in: the check has ``start`` and ``end`` readings and the
analyzer's ``seq`` numbers from the first to the last reading of the check are contiguous
in the hot store; or, for readings without ``seq`` (or with a gap that never fills), once
``settle`` seconds (wall time, longer than any worker's batch window) have passed since the
check's last reading was received. The result records which (``details.completeness``),
with the number of missing seq numbers if it was judged on a gap. Results are then
inserted once, never overwritten (``store_results(..., only_new=True)``), and only a stored
one is published.

References
----------
HJ 75-2017 clause 7 and Appendix A (zero/span drift, % of span); HJ 355-2019 (standard
sample check, relative error); ISO 13528:2022 §9.7 (E_n); ISO Guide 33:2015 §7.3 (bias
test); 40 CFR 75 Appendix A §3.1 (calibration error).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal import kernels
from envcal.models import CheckResult, CheckSummaryRecord, Reading, utcnow
from envcal.registry import AnalyzerSpec, Registry
from envcal.rules import RulePack, load_pack

#: quantity name (rule packs) -> quantity code (kernels.evaluate_checks)
QUANTITY_CODES = {"error_abs": 0, "error_rel_pct": 1, "error_fs_pct": 2, "drift_fs_pct": 3,
                  "en": 4}
VERDICT_ORDER = {"pass": 0, "warn": 1, "fail": 2, "invalid": 3}
_INVALID_REASONS = {
    3: ("no stable plateau: the response did not settle within the pack's bounds "
        "(rolling s <= {max_std:.4g} {unit}, |slope| <= {max_slope:.4g} {unit}/s over {window} readings)",
        "无稳定平台：响应未在规则包限值内稳定（{window} 个读数内标准偏差 <= {max_std:.4g} {unit}，"
        "斜率 <= {max_slope:.4g} {unit}/s）"),
    4: ("check too short: {n} readings (at least {min_n} and the plateau window {window} needed)",
        "核查过短：仅 {n} 个读数（至少需要 {min_n} 个且不少于平台窗口 {window} 个）"),
    5: ("the tested quantity cannot be computed (e.g. relative error against a zero reference)",
        "无法计算被检验的量（例如参考值为零时的相对误差）"),
}

ResultListener = Callable[[list[dict[str, Any]]], None]


# ----------------------------------------------------------------------------- extraction
@dataclass
class CheckReadings:
    """The readings of one check of one analyzer (one or several analytes)."""

    analyzer_id: str
    check_id: str
    kind: str
    ts: np.ndarray  # datetime64[us] (UTC), per row
    analyte: np.ndarray  # object, per row
    value: np.ndarray  # float64, per row (NaN: no number)
    material: np.ndarray  # object, per row ('' for none)
    phase: np.ndarray  # object, per row
    source: str = "readings"
    device_verdict: dict[str, str] = field(default_factory=dict)  # analyte -> device verdict
    device_measured: dict[str, float] = field(default_factory=dict)
    completeness: dict[str, Any] | None = None  # how a group worker knew it was complete

    @property
    def ended(self) -> bool:
        return bool(np.any(self.phase == "end"))


def _frame_to_checks(analyzer_id: str, rows: Sequence[Sequence[Any]]) -> list[CheckReadings]:
    """Group rows ``(check_id, ts, analyte, value, kind, phase, material)`` by check id."""
    groups: dict[str, list[Sequence[Any]]] = {}
    for r in rows:
        groups.setdefault(r[0], []).append(r)
    out = []
    for check_id, rs in groups.items():
        rs.sort(key=lambda r: (r[1], r[2]))
        kinds = {r[4] for r in rs if r[4]}
        out.append(CheckReadings(
            analyzer_id=analyzer_id, check_id=check_id,
            kind=sorted(kinds)[0] if kinds else "span",
            ts=np.array([_naive_utc(r[1]) for r in rs], dtype="datetime64[us]"),
            analyte=np.array([r[2] for r in rs], dtype=object),
            value=np.array([np.nan if r[3] is None else float(r[3]) for r in rs], dtype=np.float64),
            phase=np.array([r[5] or "run" for r in rs], dtype=object),
            material=np.array([r[6] or "" for r in rs], dtype=object),
        ))
    return out


def _naive_utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t


def _aware(t64: np.datetime64) -> dt.datetime:
    return t64.astype("datetime64[us]").astype(dt.datetime).replace(tzinfo=dt.UTC)


def load_check(engine: Engine, analyzer_id: str, check_id: str) -> CheckReadings | None:
    """The readings of one check from the hot store (None when it has none)."""
    r = Reading.__table__.c
    q = (sa.select(r.check_id, r.ts, r.analyte, r.value, r.check_kind, r.check_phase, r.material)
         .where(r.analyzer_id == analyzer_id, r.check_id == check_id))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    checks = _frame_to_checks(analyzer_id, rows)
    return checks[0] if checks else None


def pending_checks(engine: Engine, *, stale_after: dt.timedelta = dt.timedelta(minutes=30),
                   analyzer_ids: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Checks in the hot store that are complete and have no result yet.

    A check is complete when it has an ``end`` reading, or when its analyzer has readings
    newer than ``stale_after`` past the check's last reading (data time).

    Returns
    -------
    list of (analyzer_id, check_id), ordered by the check's last reading time.
    """
    r = Reading.__table__.c
    c = CheckResult.__table__.c
    last = (sa.select(r.analyzer_id, r.check_id, sa.func.max(r.ts).label("last_ts"),
                      sa.func.max(sa.case((r.check_phase == "end", 1), else_=0)).label("ended"))
            .where(r.check_id.is_not(None))
            .group_by(r.analyzer_id, r.check_id))
    if analyzer_ids is not None:
        last = last.where(r.analyzer_id.in_(list(analyzer_ids)))
    last = last.subquery()
    newest = (sa.select(r.analyzer_id, sa.func.max(r.ts).label("newest"))
              .group_by(r.analyzer_id).subquery())
    done = sa.select(c.analyzer_id, c.check_id).distinct().subquery()
    q = (sa.select(last.c.analyzer_id, last.c.check_id, last.c.last_ts, last.c.ended, newest.c.newest)
         .join(newest, newest.c.analyzer_id == last.c.analyzer_id)
         .outerjoin(done, sa.and_(done.c.analyzer_id == last.c.analyzer_id,
                                  done.c.check_id == last.c.check_id))
         .where(done.c.check_id.is_(None))
         .order_by(last.c.last_ts))
    out = []
    with engine.connect() as conn:
        for a, ck, last_ts, ended, newest_ts in conn.execute(q):
            if ended or (newest_ts - last_ts) > stale_after:
                out.append((a, ck))
    return out


def completeness(engine: Engine, analyzer_id: str, check_id: str, *, settle: dt.timedelta,
                 now: dt.datetime) -> dict[str, Any] | None:
    """Whether all readings of a check are stored (worker groups; see the module docstring).

    Parameters
    ----------
    engine : Engine
    analyzer_id, check_id : str
    settle : timedelta
        Wait [s] after the check's last reading was received before judging a check whose
        completeness the ``seq`` numbers cannot prove.
    now : datetime
        Wall time (UTC), compared with ``Reading.received_at``.

    Returns
    -------
    dict or None
        None: wait. Else a note for ``details.completeness``: ``{"basis": "seq",
        "seq_first", "seq_last"}`` (start and end present, seq contiguous), or ``{"basis":
        "settle", "settle_s", "seq_missing"}`` (``seq_missing``: seq numbers absent between
        the check's first and last, None without seq).
    """
    r = Reading.__table__.c
    q = (sa.select(sa.func.max(r.received_at), sa.func.min(r.seq), sa.func.max(r.seq),
                   sa.func.count(), sa.func.count(r.seq),
                   sa.func.max(sa.case((r.check_phase == "start", 1), else_=0)),
                   sa.func.max(sa.case((r.check_phase == "end", 1), else_=0)),
                   sa.func.min(r.ts), sa.func.max(r.ts))
         .where(r.analyzer_id == analyzer_id, r.check_id == check_id))
    with engine.connect() as conn:
        last_rx, s0, s1, n, n_seq, started, ended, t0, t1 = conn.execute(q).one()
        if not n:
            return None
        missing = None
        if n_seq == n and s0 is not None:
            # every reading of the analyzer between the check's first and last seq (other
            # channels' readings interleaved with the check count too); seq grows with time
            have = conn.execute(sa.select(sa.func.count(sa.distinct(r.seq))).where(
                r.analyzer_id == analyzer_id, r.ts >= t0, r.ts <= t1, r.seq >= s0,
                r.seq <= s1)).scalar_one()
            missing = int(s1 - s0 + 1 - have)
    if missing == 0 and started and ended:
        return {"basis": "seq", "seq_first": int(s0), "seq_last": int(s1)}
    if last_rx.tzinfo is None:
        last_rx = last_rx.replace(tzinfo=dt.UTC)
    if now - last_rx >= settle:
        return {"basis": "settle", "settle_s": settle.total_seconds(), "seq_missing": missing}
    return None


def summary_to_check(rec: CheckSummaryRecord) -> CheckReadings:
    """A device-computed check summary as check readings.

    With raw readings, they are spread evenly from ``start`` to ``end``; with only a
    measured value, that value stands as one reading (and is judged as such: a one-reading
    check cannot show a plateau and is evaluated with n = 1 only if the pack's ``min_n``
    allows it).
    """
    readings = list(rec.readings or [])
    if not readings and rec.measured is not None:
        readings = [rec.measured]
    n = len(readings)
    start, end = _naive_utc(rec.start), _naive_utc(rec.end)
    if n > 1:
        step = (end - start) / (n - 1)
        ts = [start + i * step for i in range(n)]
    else:
        ts = [end] * n
    return CheckReadings(
        analyzer_id=rec.analyzer_id, check_id=rec.check_id, kind=rec.kind,
        ts=np.array(ts, dtype="datetime64[us]"),
        analyte=np.array([rec.analyte] * n, dtype=object),
        value=np.array([np.nan if v is None else float(v) for v in readings], dtype=np.float64),
        material=np.array([rec.material or ""] * n, dtype=object),
        phase=np.array(["run"] * (n - 1) + ["end"] if n else [], dtype=object),
        source="summary",
        device_verdict={rec.analyte: rec.device_verdict} if rec.device_verdict else {},
        device_measured={rec.analyte: rec.measured} if rec.measured is not None else {},
    )


# ----------------------------------------------------------------------------- evaluation
@dataclass
class Reference:
    value: float | None
    u: float | None  # standard uncertainty [channel unit]
    certificate_pk: int | None = None
    molar_volume: float | None = None
    refused_en: str | None = None
    refused_zh: str | None = None
    refusal_code: str | None = None


class Verifier:
    """Evaluates checks for the analyzers of a registry under their rule packs.

    Parameters
    ----------
    engine : Engine
        Storage (results are written here; certificates and previous results read).
    registry : Registry
        Stations and analyzers; every analyzer's ``rule_pack`` is loaded at construction,
        so a missing or malformed pack is an error at start, not at the first check.
    listeners : list of callables, optional
        Called with the list of result dicts (the JSON of ``envcal results list``) after
        each batch is stored; the ingest service publishes them on MQTT.
    """

    def __init__(self, engine: Engine, registry: Registry, *,
                 listeners: Sequence[ResultListener] = ()) -> None:
        self.engine = engine
        self.registry = registry
        self.listeners = list(listeners)
        self.packs: dict[str, RulePack] = {}
        for a in registry.analyzers.values():
            if a.rule_pack not in self.packs:
                self.packs[a.rule_pack] = load_pack(a.rule_pack, engine=engine)

    # -- references ---------------------------------------------------------------------
    def reference(self, analyzer: AnalyzerSpec, analyte: str, kind: str, material: str,
                  at: dt.datetime, pack: RulePack) -> Reference:
        from envcal.certificates import Refusal, certified_value

        channel = analyzer.channel(analyte)
        if not material:
            if kind == "zero":
                return Reference(0.0, 0.0)
            if kind == "flow":
                return Reference(float(channel.span), 0.0)
            return Reference(None, None, refusal_code="no_material",
                             refused_en=f"a {kind} check must name its reference material",
                             refused_zh=f"{kind} 核查必须注明所用标准物质")
        got = certified_value(self.engine, material, analyte, channel.unit, at,
                              molar_volume=pack.molar_volume)
        if isinstance(got, Refusal):
            return Reference(None, None, refusal_code=got.code, refused_en=got.reason,
                             refused_zh=got.reason_zh)
        return Reference(float(got.value), float(got.u), got.certificate_pk, got.molar_volume)

    def previous_mean(self, analyzer_id: str, analyte: str, kind: str, before: dt.datetime,
                      check_id: str) -> float:
        c = CheckResult.__table__.c
        q = (sa.select(c.mean).where(c.analyzer_id == analyzer_id, c.analyte == analyte,
                                     c.kind == kind, c.end < before, c.check_id != check_id,
                                     c.verdict != "invalid", c.mean.is_not(None))
             .order_by(c.end.desc()).limit(1))
        with self.engine.connect() as conn:
            v = conn.execute(q).scalar()
        return float("nan") if v is None else float(v)

    # -- one check -----------------------------------------------------------------------
    def evaluate(self, check: CheckReadings) -> list[dict[str, Any]]:
        """Evaluate one check: one result dict per analyte (per level for linearity)."""
        analyzer = self.registry.analyzers[check.analyzer_id]
        pack = self.packs[analyzer.rule_pack]
        results = []
        for analyte in sorted(set(check.analyte.tolist())):
            sel = check.analyte == analyte
            channel = analyzer.channel(analyte)
            if channel is None:
                continue  # ingest dead-letters unknown analytes; nothing to judge here
            ts, values, materials = check.ts[sel], check.value[sel], check.material[sel]
            segments = _material_segments(materials) if check.kind == "linearity" else [
                (0, len(values))]
            levels = []
            for k, (a, b) in enumerate(segments):
                levels.append(self._evaluate_channel(
                    check, analyzer, pack, analyte, ts[a:b], values[a:b],
                    _first_material(materials[a:b]), level=k if len(segments) > 1 else None))
            if len(levels) == 1:
                results.append(levels[0])
            else:
                results.append(_combine_levels(levels))
        return results

    def _evaluate_channel(self, check: CheckReadings, analyzer: AnalyzerSpec, pack: RulePack,
                          analyte: str, ts: np.ndarray, values: np.ndarray, material: str,
                          level: int | None) -> dict[str, Any]:
        channel = analyzer.channel(analyte)
        station = self.registry.analyzers[analyzer.id].station
        start, end = _aware(ts[0]), _aware(ts[-1])
        rules = pack.rules_for(check.kind, analyte)
        base: dict[str, Any] = {
            "analyzer": analyzer.id, "station": station, "analyte": analyte, "kind": check.kind,
            "check_id": check.check_id, "source": check.source, "start": start, "end": end,
            "unit": channel.unit, "span": float(channel.span), "n": int(np.isfinite(values).sum()),
            "mean": None, "sd": None, "u_mean": None, "t90_s": None, "plateau_start": None,
            "plateau_end": None, "reference": None, "u_reference": None, "error_abs": None,
            "error_rel_pct": None, "error_fs_pct": None, "drift_fs_pct": None, "en": None,
            "bias_ok": None, "verdict": "invalid", "rule": rules[0].id if rules else None,
            "rule_status": rules[0].status if rules else None, "pack": pack.name,
            "pack_version": pack.effective_version, "material": material or None,
            "certificate_pk": None, "molar_volume": None,
            "device_verdict": check.device_verdict.get(analyte),
            "device_measured": check.device_measured.get(analyte),
            "details": {"level": level} if level is not None else {},
        }
        if check.completeness is not None:
            base["details"]["completeness"] = dict(check.completeness)
        if not rules:
            return _invalid(base, f"no rule in pack {pack.name} for a {check.kind} check of {analyte}",
                            f"规则包 {pack.name} 中没有 {analyte} 的 {check.kind} 核查规则")
        ref = self.reference(analyzer, analyte, check.kind, material, end, pack)
        if ref.value is None:
            base["details"]["material_refusal"] = ref.refusal_code
            return _invalid(base, f"reference material {material or '(none)'}: {ref.refused_en}",
                            f"标准物质 {material or '（无）'}：{ref.refused_zh}")
        base.update(reference=ref.value, u_reference=ref.u, certificate_pk=ref.certificate_pk,
                    molar_volume=ref.molar_volume)
        prev = self.previous_mean(analyzer.id, analyte, check.kind, start, check.check_id)
        plateau = pack.plateau
        span = float(channel.span)
        t_s = (ts - ts[0]).astype("timedelta64[us]").astype(np.float64) / 1e6
        window = int(plateau.window)
        min_n = int(plateau.min_n)
        if check.source == "summary" and len(values) < window:
            window = max(1, len(values))  # a device summary: its own plateau was already chosen
            min_n = min(min_n, max(1, len(values)))
        ev = kernels.evaluate_checks(
            values[None, :], t_s[None, :], np.array([len(values)]), ref.value, span, ref.u, prev,
            np.nan, np.inf, QUANTITY_CODES[rules[0].quantity], window,
            plateau.max_std * span, plateau.max_slope * span / 60.0, min_n)
        code = int(ev.verdict[0])
        n = int(ev.n[0])
        i0, i1 = int(ev.i0[0]), int(ev.i1[0])
        if i0 >= 0:
            base.update(plateau_start=_aware(ts[i0]), plateau_end=_aware(ts[i1 - 1]))
        base["n"] = n if n > 0 else base["n"]
        if code in (3, 4):
            en, zh = _INVALID_REASONS[code]
            fmt = dict(max_std=plateau.max_std * span, max_slope=plateau.max_slope * span / 60.0,
                       unit=channel.unit, window=window, n=base["n"], min_n=min_n)
            return _invalid(base, en.format(**fmt), zh.format(**fmt))
        nums = {
            "mean": ev.mean[0], "sd": ev.sd[0], "u_mean": ev.u_mean[0], "t90_s": ev.t90[0],
            "error_abs": ev.err_abs[0], "error_rel_pct": ev.err_rel_pct[0],
            "error_fs_pct": ev.err_fs_pct[0], "drift_fs_pct": ev.drift_fs_pct[0], "en": ev.en[0],
        }
        base.update({k: _num(v) for k, v in nums.items()})
        base["bias_ok"] = bool(ev.bias_ok[0])
        return _judge(base, rules)

    # -- batches -------------------------------------------------------------------------
    def evaluate_and_store(self, checks: Iterable[CheckReadings], *,
                           only_new: bool = False) -> list[dict[str, Any]]:
        """Evaluate checks in time order, store each result, notify listeners.

        Parameters
        ----------
        checks : iterable of CheckReadings
        only_new : bool, default False
            Insert results that do not exist yet and drop the others (worker groups: a
            result is decided and published once); default: upsert (replay rewrites).

        Returns
        -------
        list of dict
            The results stored (and passed to the listeners).
        """
        out: list[dict[str, Any]] = []
        for check in sorted(checks, key=lambda c: (c.ts[-1] if len(c.ts) else np.datetime64(0, "us"), c.check_id)):
            if len(check.ts) == 0 or check.analyzer_id not in self.registry.analyzers:
                continue
            results = self.evaluate(check)
            out.extend(store_results(self.engine, results, only_new=only_new))
        if out:
            payload = [result_json(r) for r in out]
            for fn in self.listeners:
                fn(payload)
        return out

    def verify_pending(self, *, stale_after: dt.timedelta = dt.timedelta(minutes=30),
                       analyzer_ids: Iterable[str] | None = None,
                       settle: dt.timedelta | None = None, now: dt.datetime | None = None,
                       only_new: bool = False) -> list[dict[str, Any]]:
        """Evaluate every complete check in the hot store that has no result yet; also
        the device summaries that have none.

        Parameters
        ----------
        stale_after : timedelta
            A check without ``end`` is complete after this much newer data (data time).
        analyzer_ids : iterable of str, optional
            Only these analyzers (a group worker: the ones it owns).
        settle : timedelta, optional
            Worker groups: also require :func:`completeness` (default: not checked).
        now : datetime, optional
            Wall time for ``settle`` (default: now).
        only_new : bool, default False
            See :meth:`evaluate_and_store`.

        Returns
        -------
        list of dict
            The results stored.
        """
        if analyzer_ids is not None:
            analyzer_ids = list(analyzer_ids)
        now = now or dt.datetime.now(dt.UTC)
        checks = []
        for analyzer_id, check_id in pending_checks(self.engine, stale_after=stale_after,
                                                    analyzer_ids=analyzer_ids):
            note = None
            if settle is not None:
                note = completeness(self.engine, analyzer_id, check_id, settle=settle, now=now)
                if note is None:
                    continue  # readings may still be in another worker's batch
            c = load_check(self.engine, analyzer_id, check_id)
            if c is not None:
                c.completeness = note
                checks.append(c)
        checks.extend(pending_summaries(self.engine, analyzer_ids=analyzer_ids))
        return self.evaluate_and_store(checks, only_new=only_new)

    def on_commit(self, ended_checks: Sequence[tuple[str, str]], summaries: Sequence[int]) -> list[dict[str, Any]]:
        """Ingest hook: evaluate the checks whose ``end`` reading was just committed."""
        checks = [c for a, ck in ended_checks if (c := load_check(self.engine, a, ck)) is not None]
        if summaries:
            with self.engine.connect() as conn:
                from sqlmodel import Session, select
                with Session(bind=conn) as s:
                    recs = s.exec(select(CheckSummaryRecord).where(
                        CheckSummaryRecord.id.in_(list(summaries)))).all()
            checks.extend(summary_to_check(r) for r in recs)
        return self.evaluate_and_store(checks)


def pending_summaries(engine: Engine, analyzer_ids: Iterable[str] | None = None) -> list[CheckReadings]:
    """Device check summaries without a result of their own (of these analyzers only)."""
    from sqlmodel import Session, select

    s_t = CheckSummaryRecord.__table__.c
    c = CheckResult.__table__.c
    done = (sa.select(c.analyzer_id, c.check_id, c.analyte).where(c.source == "summary").subquery())
    q = (sa.select(s_t.id).outerjoin(done, sa.and_(done.c.analyzer_id == s_t.analyzer_id,
                                                   done.c.check_id == s_t.check_id,
                                                   done.c.analyte == s_t.analyte))
         .where(done.c.check_id.is_(None)))
    if analyzer_ids is not None:
        q = q.where(s_t.analyzer_id.in_(list(analyzer_ids)))
    with Session(engine) as s:
        ids = [i for (i,) in s.execute(q)]
        if not ids:
            return []
        recs = s.exec(select(CheckSummaryRecord).where(CheckSummaryRecord.id.in_(ids))).all()
    return [summary_to_check(r) for r in recs]


def _num(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _invalid(base: dict[str, Any], en: str, zh: str) -> dict[str, Any]:
    base.update(verdict="invalid", reason_en=f"invalid: {en}", reason_zh=f"无效：{zh}")
    return base


def _judge(base: dict[str, Any], rules: list) -> dict[str, Any]:
    """Apply every rule; the worst verdict decides (ties: the first rule in the pack)."""
    outcomes = []
    for rule in rules:
        q = base.get(rule.quantity)
        verdict = "invalid" if q is None else rule.verdict(q)
        outcomes.append({"rule": rule.id, "quantity": rule.quantity, "value": q,
                         "limit": rule.limit, "warn": rule.warn, "verdict": verdict,
                         "status": rule.status})
    worst = max(outcomes, key=lambda o: VERDICT_ORDER[o["verdict"]])
    rule = next(r for r in rules if r.id == worst["rule"])
    base["details"]["rules"] = outcomes
    base.update(verdict=worst["verdict"], rule=rule.id, rule_status=rule.status)
    q, lim = worst["value"], rule.limit
    qn = rule.quantity
    unit = rule.unit
    if worst["verdict"] == "invalid":
        base["reason_en"] = f"invalid: {qn} cannot be computed for rule {rule.id}"
        base["reason_zh"] = f"无效：规则 {rule.id} 的 {qn} 无法计算"
        return base
    cmp_en = {"pass": "within", "warn": "within the limit but beyond the warning level of",
              "fail": "outside"}[worst["verdict"]]
    cmp_zh = {"pass": "符合", "warn": "未超限但超过预警值", "fail": "超出"}[worst["verdict"]]
    base["reason_en"] = (f"{worst['verdict']}: {qn} = {q:+.3g} {unit} is {cmp_en} "
                         f"±{lim:g} {unit} ({rule.source.standard} {rule.source.clause}; "
                         f"rule {rule.id}, {rule.status})")
    base["reason_zh"] = (f"{ {'pass': '合格', 'warn': '预警', 'fail': '不合格'}[worst['verdict']] }："
                         f"{qn} = {q:+.3g} {unit}，{cmp_zh} ±{lim:g} {unit}"
                         f"（{rule.source.standard} {rule.source.clause}；规则 {rule.id}，"
                         f"{'已确认' if rule.status == 'confirmed' else '未核实'}）")
    return base


def _material_segments(materials: np.ndarray) -> list[tuple[int, int]]:
    segs, start = [], 0
    for i in range(1, len(materials) + 1):
        if i == len(materials) or materials[i] != materials[start]:
            segs.append((start, i))
            start = i
    return segs


def _first_material(materials: np.ndarray) -> str:
    for m in materials:
        if m:
            return str(m)
    return ""


def _combine_levels(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """A linearity check: the level with the largest |error| stands for the check; every
    level's numbers are kept in ``details.levels``."""
    def key(r):
        order = VERDICT_ORDER[r["verdict"]]
        err = abs(r["error_fs_pct"]) if r.get("error_fs_pct") is not None else -1.0
        return (order, err)

    worst = dict(max(levels, key=key))
    worst["details"] = dict(worst.get("details") or {})
    worst["details"].pop("level", None)
    worst["details"]["levels"] = [
        {k: _jsonable(r[k]) for k in ("material", "reference", "mean", "n", "error_abs",
                                      "error_rel_pct", "error_fs_pct", "verdict", "rule")}
        for r in levels]
    worst["details"]["max_abs_error_fs_pct"] = max(
        (abs(r["error_fs_pct"]) for r in levels if r.get("error_fs_pct") is not None), default=None)
    worst["start"] = min(r["start"] for r in levels)
    worst["end"] = max(r["end"] for r in levels)
    return worst


# ----------------------------------------------------------------------------- storage
RESULT_FIELDS = ("analyzer", "station", "analyte", "kind", "check_id", "source", "start", "end",
                 "unit", "span", "n", "mean", "sd", "u_mean", "t90_s", "plateau_start",
                 "plateau_end", "reference", "u_reference", "error_abs", "error_rel_pct",
                 "error_fs_pct", "drift_fs_pct", "en", "bias_ok", "verdict", "rule",
                 "rule_status", "pack", "pack_version", "material", "certificate_pk",
                 "molar_volume", "reason_en", "reason_zh", "device_verdict", "device_measured",
                 "details")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def result_json(r: dict[str, Any]) -> dict[str, Any]:
    """A result as the JSON object of ``envcal results list`` and the results topic."""
    return {k: _jsonable(r.get(k)) if k != "details" else json.loads(json.dumps(r.get(k) or {}, default=_jsonable))
            for k in RESULT_FIELDS}


def _row(r: dict[str, Any]) -> dict[str, Any]:
    row = {k: r.get(k) for k in RESULT_FIELDS if k not in ("analyzer", "station")}
    row["reason_en"] = r.get("reason_en") or ""
    row["reason_zh"] = r.get("reason_zh") or ""
    row["analyzer_id"] = r["analyzer"]
    row["station_id"] = r["station"]
    row["details"] = json.loads(json.dumps(r.get("details") or {}, default=_jsonable))
    row["evaluated_at"] = utcnow()
    return row


def store_results(engine: Engine, results: Sequence[dict[str, Any]], *,
                  only_new: bool = False) -> list[dict[str, Any]]:
    """Insert or update results by (analyzer, analyte, check id) in one transaction.

    Parameters
    ----------
    engine : Engine
    results : sequence of dict
    only_new : bool, default False
        Insert only results whose (analyzer, analyte, check id) has none yet; keep the
        stored one otherwise (``INSERT ... ON CONFLICT DO NOTHING``).

    Returns
    -------
    list of dict
        The results written (all of them unless ``only_new``).
    """
    if not results:
        return []
    table = CheckResult.__table__
    rows = [_row(r) for r in results]
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    if only_new:
        keep = insert(table).on_conflict_do_nothing(
            index_elements=["analyzer_id", "analyte", "check_id"]).returning(table.c.id)
        written = []
        with engine.begin() as conn:
            for r, row in zip(results, rows, strict=True):
                if conn.execute(keep, row).first() is not None:
                    written.append(r)
        return written
    stmt = insert(table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns
              if c.name not in ("id", "analyzer_id", "analyte", "check_id", "needs_review")}
    stmt = stmt.on_conflict_do_update(index_elements=["analyzer_id", "analyte", "check_id"],
                                      set_=update)
    with engine.begin() as conn:
        conn.execute(stmt, rows)
    return list(results)


def list_results(engine: Engine, *, analyzer: str | None = None, analyte: str | None = None,
                 start: dt.datetime | None = None, end: dt.datetime | None = None,
                 verdict: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored results as JSON objects (``envcal results list --json``), ordered by end time."""
    c = CheckResult.__table__.c
    q = sa.select(CheckResult.__table__)
    if analyzer:
        q = q.where(c.analyzer_id == analyzer)
    if analyte:
        q = q.where(c.analyte == analyte)
    if start:
        q = q.where(c.end >= start)
    if end:
        q = q.where(c.end < end)
    if verdict:
        q = q.where(c.verdict == verdict)
    q = q.order_by(c.end, c.analyzer_id, c.analyte, c.check_id)
    if limit:
        q = q.limit(limit)
    out = []
    with engine.connect() as conn:
        for m in conn.execute(q).mappings():
            d = dict(m)
            d["analyzer"] = d.pop("analyzer_id")
            d["station"] = d.pop("station_id")
            j = result_json(d)
            j["id"] = d["id"]
            j["needs_review"] = d["needs_review"]
            out.append(j)
    return out


# ----------------------------------------------------------------------------- replay
def archived_checks(engine: Engine, archive_dir, registry: Registry, start: dt.datetime,
                    end: dt.datetime, *, margin: dt.timedelta = dt.timedelta(hours=6),
                    analyzer_ids: Iterable[str] | None = None) -> list[CheckReadings]:
    """Checks that END in [start, end), read from the hot store and the NetCDF archive.

    Readings up to ``margin`` before ``start`` are read too, so that a check that began
    before the period (e.g. across midnight) is complete.
    """
    from envcal.archive import readings_frame

    wanted = set(analyzer_ids) if analyzer_ids is not None else None
    out: list[CheckReadings] = []
    for analyzer in registry.analyzers.values():
        if wanted is not None and analyzer.id not in wanted:
            continue
        rows: list[tuple] = []
        for ch in analyzer.channels:
            df = readings_frame(engine, archive_dir, analyzer.id, ch.analyte, start - margin,
                                end + margin)
            df = df[df["check_id"].notna()]
            for ts, value, ck, kind, phase, material in zip(
                    df["ts"], df["value"], df["check_id"], df["check_kind"], df["check_phase"],
                    df["material"], strict=True):
                rows.append((ck, ts.to_pydatetime(), ch.analyte,
                             None if value != value else float(value), kind, phase, material))
        for check in _frame_to_checks(analyzer.id, rows):
            last = _aware(check.ts[-1])
            if start <= last < end:
                out.append(check)
    return out


def summaries_in(engine: Engine, start: dt.datetime, end: dt.datetime) -> list[CheckReadings]:
    """Device check summaries whose check ended in [start, end)."""
    from sqlmodel import Session, select

    with Session(engine) as s:
        recs = s.exec(select(CheckSummaryRecord).where(CheckSummaryRecord.end >= start,
                                                       CheckSummaryRecord.end < end)).all()
    return [summary_to_check(r) for r in recs]


def replay(verifier: Verifier, archive_dir, start: dt.datetime, end: dt.datetime, *,
           analyzer_ids: Iterable[str] | None = None,
           progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Re-evaluate every check that ended in [start, end) from the hot store and archive.

    Checks are evaluated in time order with the same code as the live path, so the stored
    results are identical to live evaluation (same rule pack version and certificates).

    Parameters
    ----------
    verifier : Verifier
    archive_dir : str or Path or None
        NetCDF archive root (None: hot store only).
    start, end : datetime
        Timezone-aware period [start, end).
    analyzer_ids : iterable of str, optional
        Limit to these analyzers.
    progress : callable, optional
        Called with (done, total) checks.

    Returns
    -------
    list of dict
        The results (as stored).
    """
    checks = archived_checks(verifier.engine, archive_dir, verifier.registry, start, end,
                             analyzer_ids=analyzer_ids)
    checks += [c for c in summaries_in(verifier.engine, start, end)
               if analyzer_ids is None or c.analyzer_id in set(analyzer_ids)]
    checks.sort(key=lambda c: (c.ts[-1], c.check_id))
    out: list[dict[str, Any]] = []
    step = 200
    for i in range(0, len(checks), step):
        out.extend(verifier.evaluate_and_store(checks[i:i + step]))
        if progress:
            progress(min(i + step, len(checks)), len(checks))
    return out
