"""The judgement of a check: readings, reference, previous check and rules -> a result.

:func:`evaluate` is a pure function (no database, no MQTT, no clock): everything it needs is
an argument, so the same inputs always give the same :class:`~envcal.checks.result.CheckResult`.
:func:`evaluate_many` judges many checks in one call of the batch kernel
:func:`envcal.kernels.evaluate_checks`, with its verdict stage on: one kernel row per
(check, rule), each row compares the rule's quantity with the rule's warning level and
limit (:func:`envcal.kernels.limit_verdict`); the worst verdict decides (ties: the first
rule of the pack). Live checks, replay and the Dask replay all come here.

The steps of one channel check:

1. **Rules.** ``pack.rules_for(kind, analyte)``; none: ``invalid``.
2. **Reference.** The certified value in the channel unit (gathered by the caller from
   :mod:`envcal.certificates`); a refusal (expired, unknown, revoked material): ``invalid``
   with the refusal's reason.
3. **Numbers.** The stable plateau (longest final window whose rolling standard deviation
   and slope stay within the pack's ``[plateau]`` bounds), T90, n, mean, s, u(mean), the
   errors (absolute, relative [% of reference], of span [% F.S.]), the drift against
   ``previous`` [% F.S.], E_n (k = 2) and the ISO Guide 33 bias test.
4. **Verdict.** ``|q| <= warn`` pass, ``<= limit`` warn, else fail; no plateau, too few
   readings or a quantity that cannot be computed: ``invalid`` with the reason.

A linearity check has one level per material; :func:`combine_levels` makes the level with
the largest |error| stand for the check and keeps every level in ``details.levels``.

References
----------
HJ 75-2017 clause 7 and Appendix A (zero/span drift, % of span); HJ 355-2019 (standard
sample check, relative error); ISO 13528:2022 §9.7 (E_n); ISO Guide 33:2015 §7.3 (bias
test); 40 CFR 75 Appendix A §3.1 (calibration error).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from envcal import kernels
from envcal.checks.result import CheckResult, finite_or_none, jsonable
from envcal.codes import (
    QUANTITY_CODES,
    VERDICT_INVALID_NO_PLATEAU,
    VERDICT_INVALID_TOO_SHORT,
    VERDICT_RANK,
    verdict_of_code,
)
from envcal.rules import Rule, RulePack

INVALID_REASONS: dict[int, tuple[str, str]] = {
    VERDICT_INVALID_NO_PLATEAU: (
        "no stable plateau: the response did not settle within the pack's bounds "
        "(rolling s <= {max_std:.4g} {unit}, |slope| <= {max_slope:.4g} {unit}/s over {window} readings)",
        "无稳定平台：响应未在规则包限值内稳定（{window} 个读数内标准偏差 <= {max_std:.4g} {unit}，"
        "斜率 <= {max_slope:.4g} {unit}/s）"),
    VERDICT_INVALID_TOO_SHORT: (
        "check too short: {n} readings (at least {min_n} and the plateau window {window} needed)",
        "核查过短：仅 {n} 个读数（至少需要 {min_n} 个且不少于平台窗口 {window} 个）"),
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChannelReadings:
    """The readings of one channel in one check (one level of a linearity check).

    ``ts`` is ``datetime64[us]`` (UTC), ``values`` float64 [``unit``] with NaN for "no
    number"; ``span`` [``unit``] is the channel's span.
    """

    analyzer: str
    station: str
    analyte: str
    kind: str
    check_id: str
    unit: str
    span: float
    ts: np.ndarray
    values: np.ndarray
    material: str = ""
    source: str = "readings"
    level: int | None = None
    device_verdict: str | None = None
    device_measured: float | None = None
    completeness: dict[str, Any] | None = None

    @property
    def start(self) -> dt.datetime:
        return aware(self.ts[0])

    @property
    def end(self) -> dt.datetime:
        return aware(self.ts[-1])


@dataclasses.dataclass(frozen=True, slots=True)
class Reference:
    """The reference value of a check [channel unit], or why there is none.

    ``u`` is the standard uncertainty [channel unit]; ``molar_volume`` [L/mol] the one a
    gas conversion used. ``value is None`` means refused: ``refusal_code`` and the reasons
    say why.
    """

    value: float | None
    u: float | None
    certificate_pk: int | None = None
    molar_volume: float | None = None
    refused_en: str | None = None
    refused_zh: str | None = None
    refusal_code: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    """The inputs of one evaluation: readings, reference, previous check mean, rule pack.

    ``previous`` is the mean of the previous valid check of the same channel and kind
    [channel unit] (None: there is none; drift is then not computable).
    """

    readings: ChannelReadings
    reference: Reference
    previous: float | None
    pack: RulePack


def aware(t64: np.datetime64) -> dt.datetime:
    """A ``datetime64`` (UTC) as a timezone-aware datetime."""
    return t64.astype("datetime64[us]").astype(dt.datetime).replace(tzinfo=dt.UTC)


def evaluate(readings: ChannelReadings, reference: Reference, previous: float | None,
             rules: RulePack) -> CheckResult:
    """Judge one channel check (see the module docstring).

    Parameters
    ----------
    readings : ChannelReadings
        The check's readings of one channel [channel unit].
    reference : Reference
        Certified value and standard uncertainty [channel unit], or a refusal.
    previous : float or None
        Mean of the previous valid check of this channel and kind [channel unit].
    rules : RulePack
        The analyzer's rule pack (rules, ``[plateau]`` bounds, version).

    Returns
    -------
    CheckResult

    References
    ----------
    HJ 75-2017 clause 7; HJ 355-2019; 40 CFR 75 Appendix A §3.1; ISO 13528:2022 §9.7.
    """
    return evaluate_many([Case(readings, reference, previous, rules)])[0]


def _base(c: Case, rules: list[Rule]) -> dict[str, Any]:
    r = c.readings
    details: dict[str, Any] = {"level": r.level} if r.level is not None else {}
    if r.completeness is not None:
        details["completeness"] = dict(r.completeness)
    return dict(
        analyzer=r.analyzer, station=r.station, analyte=r.analyte, kind=r.kind,
        check_id=r.check_id, source=r.source, start=r.start, end=r.end, unit=r.unit,
        span=float(r.span), n=int(np.isfinite(r.values).sum()), verdict="invalid",
        rule=rules[0].id if rules else None, rule_status=rules[0].status if rules else None,
        pack=c.pack.name, pack_version=c.pack.effective_version, material=r.material or None,
        device_verdict=r.device_verdict, device_measured=r.device_measured, details=details)


def _invalid(base: dict[str, Any], en: str, zh: str) -> CheckResult:
    base.update(verdict="invalid", reason_en=f"invalid: {en}", reason_zh=f"无效：{zh}")
    return CheckResult(**base)


def _plateau_setup(c: Case) -> tuple[int, int, float, float]:
    """(window, min_n, max_std [unit], max_slope [unit/s]) of a case."""
    p = c.pack.plateau
    span = float(c.readings.span)
    window, min_n = int(p.window), int(p.min_n)
    n = len(c.readings.values)
    if c.readings.source == "summary" and n < window:
        window = max(1, n)  # a device summary: its own plateau was already chosen
        min_n = min(min_n, max(1, n))
    return window, min_n, p.max_std * span, p.max_slope * span / 60.0


def evaluate_many(cases: Sequence[Case]) -> list[CheckResult]:
    """Judge many channel checks with one batch-kernel call per plateau setting.

    Parameters
    ----------
    cases : sequence of Case

    Returns
    -------
    list of CheckResult
        One per case, in order. Equal to ``[evaluate(*c) for c in cases]``.

    References
    ----------
    As :func:`evaluate`.
    """
    out: list[CheckResult | None] = [None] * len(cases)
    pending: dict[tuple[int, int], list[tuple[int, dict[str, Any], list[Rule]]]] = {}
    for i, c in enumerate(cases):
        rules = c.pack.rules_for(c.readings.kind, c.readings.analyte)
        base = _base(c, rules)
        if not rules:
            out[i] = _invalid(base, f"no rule in pack {c.pack.name} for a {c.readings.kind} check "
                                    f"of {c.readings.analyte}",
                              f"规则包 {c.pack.name} 中没有 {c.readings.analyte} 的 "
                              f"{c.readings.kind} 核查规则")
            continue
        ref = c.reference
        if ref.value is None:
            m = c.readings.material
            base["details"]["material_refusal"] = ref.refusal_code
            out[i] = _invalid(base, f"reference material {m or '(none)'}: {ref.refused_en}",
                              f"标准物质 {m or '（无）'}：{ref.refused_zh}")
            continue
        base.update(reference=float(ref.value), u_reference=ref.u,
                    certificate_pk=ref.certificate_pk, molar_volume=ref.molar_volume)
        window, min_n, _, _ = _plateau_setup(c)
        pending.setdefault((window, min_n), []).append((i, base, rules))
    for (window, min_n), group in pending.items():
        for i, res in zip([g[0] for g in group], _kernel_group(cases, group, window, min_n),
                          strict=True):
            out[i] = res
    return [r for r in out if r is not None]


def _kernel_group(cases: Sequence[Case], group: list[tuple[int, dict[str, Any], list[Rule]]],
                  window: int, min_n: int) -> list[CheckResult]:
    """One kernel call for every (case, rule) row of cases that share a plateau setting."""
    rows = [(k, rule) for k, (_, _, rules) in enumerate(group) for rule in rules]
    width = max(len(cases[i].readings.values) for i, _, _ in group)
    m = len(rows)
    values = np.full((m, width), np.nan)
    times = np.full((m, width), np.nan)
    n_valid = np.zeros(m, np.int64)
    ref = np.empty(m)
    span = np.empty(m)
    u_ref = np.empty(m)
    prev = np.empty(m)
    warn = np.empty(m)
    limit = np.empty(m)
    qcode = np.empty(m, np.int64)
    max_std = np.empty(m)
    max_slope = np.empty(m)
    for j, (k, rule) in enumerate(rows):
        i, base, _ = group[k]
        c = cases[i]
        r = c.readings
        nv = len(r.values)
        values[j, :nv] = r.values
        times[j, :nv] = (r.ts - r.ts[0]).astype("timedelta64[us]").astype(np.float64) / 1e6
        n_valid[j] = nv
        ref[j] = base["reference"]
        u_ref[j] = np.nan if base["u_reference"] is None else base["u_reference"]
        span[j] = float(r.span)
        prev[j] = np.nan if c.previous is None else float(c.previous)
        warn[j], limit[j] = rule.warn, rule.limit
        qcode[j] = QUANTITY_CODES[rule.quantity]
        _, _, max_std[j], max_slope[j] = _plateau_setup(c)
    ev = kernels.evaluate_checks(values, times, n_valid, ref, span, u_ref, prev, warn, limit,
                                 qcode, window, max_std, max_slope, min_n)
    results = []
    j = 0
    for i, base, rules in group:
        idx = list(range(j, j + len(rules)))
        j += len(rules)
        results.append(_finish(cases[i], base, rules, ev, idx, window, min_n))
    return results


def _finish(c: Case, base: dict[str, Any], rules: list[Rule], ev: kernels.CheckEvaluation,
            idx: list[int], window: int, min_n: int) -> CheckResult:
    r = c.readings
    j = idx[0]  # plateau and statistics do not depend on the rule
    i0, i1, n = int(ev.i0[j]), int(ev.i1[j]), int(ev.n[j])
    if i0 >= 0:
        base.update(plateau_start=aware(r.ts[i0]), plateau_end=aware(r.ts[i1 - 1]))
    if n > 0:
        base["n"] = n
    code = int(ev.verdict[j])
    if code in INVALID_REASONS:
        en, zh = INVALID_REASONS[code]
        _, _, max_std, max_slope = _plateau_setup(c)
        fmt = dict(max_std=max_std, max_slope=max_slope, unit=r.unit, window=window,
                   n=base["n"], min_n=min_n)
        return _invalid(base, en.format(**fmt), zh.format(**fmt))
    base.update(mean=finite_or_none(ev.mean[j]), sd=finite_or_none(ev.sd[j]),
                u_mean=finite_or_none(ev.u_mean[j]), t90_s=finite_or_none(ev.t90[j]),
                error_abs=finite_or_none(ev.err_abs[j]),
                error_rel_pct=finite_or_none(ev.err_rel_pct[j]),
                error_fs_pct=finite_or_none(ev.err_fs_pct[j]),
                drift_fs_pct=finite_or_none(ev.drift_fs_pct[j]), en=finite_or_none(ev.en[j]),
                bias_ok=bool(ev.bias_ok[j]))
    outcomes = []
    for rule, row in zip(rules, idx, strict=True):
        outcomes.append({"rule": rule.id, "quantity": rule.quantity,
                         "value": finite_or_none(ev.q[row]), "limit": rule.limit,
                         "warn": rule.warn, "verdict": verdict_of_code(int(ev.verdict[row])),
                         "status": rule.status})
    k = max(range(len(rules)), key=lambda x: VERDICT_RANK[outcomes[x]["verdict"]])
    worst, rule = outcomes[k], rules[k]
    base["details"]["rules"] = outcomes
    base.update(verdict=worst["verdict"], rule=rule.id, rule_status=rule.status)
    base["reason_en"], base["reason_zh"] = _reasons(worst["verdict"], worst["value"], rule)
    return CheckResult(**base)


def _reasons(verdict: str, q: float | None, rule: Rule) -> tuple[str, str]:
    qn, unit, lim = rule.quantity, rule.unit, rule.limit
    if verdict == "invalid" or q is None:
        return (f"invalid: {qn} cannot be computed for rule {rule.id}",
                f"无效：规则 {rule.id} 的 {qn} 无法计算")
    cmp_en = {"pass": "within", "warn": "within the limit but beyond the warning level of",
              "fail": "outside"}[verdict]
    cmp_zh = {"pass": "符合", "warn": "未超限但超过预警值", "fail": "超出"}[verdict]
    word_zh = {"pass": "合格", "warn": "预警", "fail": "不合格"}[verdict]
    en = (f"{verdict}: {qn} = {q:+.3g} {unit} is {cmp_en} ±{lim:g} {unit} "
          f"({rule.source.standard} {rule.source.clause}; rule {rule.id}, {rule.status})")
    zh = (f"{word_zh}：{qn} = {q:+.3g} {unit}，{cmp_zh} ±{lim:g} {unit}"
          f"（{rule.source.standard} {rule.source.clause}；规则 {rule.id}，"
          f"{'已确认' if rule.status == 'confirmed' else '未核实'}）")
    return en, zh


def combine_levels(levels: Sequence[CheckResult]) -> CheckResult:
    """A linearity check from its levels: the level with the worst verdict and then the
    largest |error of span| stands for the check; every level is kept in
    ``details.levels`` and ``details.max_abs_error_fs_pct``.

    References
    ----------
    HJ 75-2017 clause 7.2 (linearity: the largest error of the levels decides).
    """
    if len(levels) == 1:
        return levels[0]

    def key(r: CheckResult) -> tuple[int, float]:
        err = abs(r.error_fs_pct) if r.error_fs_pct is not None else -1.0
        return (VERDICT_RANK[r.verdict], err)

    worst = max(levels, key=key)
    details = dict(worst.details)
    details.pop("level", None)
    details["levels"] = [
        {k: jsonable(r[k]) for k in ("material", "reference", "mean", "n", "error_abs",
                                     "error_rel_pct", "error_fs_pct", "verdict", "rule")}
        for r in levels]
    details["max_abs_error_fs_pct"] = max(
        (abs(r.error_fs_pct) for r in levels if r.error_fs_pct is not None), default=None)
    return worst.replace(details=details, start=min(r.start for r in levels),
                         end=max(r.end for r in levels))
