"""Out-of-control periods from a channel's check history (the packs' ``[[out_of_control]]``).

A condition is one check with ``|q| > factor × limit``, or ``days`` consecutive such checks;
a period opens at the end of the last passing check before the failure and closes at the
next passing check (verdict pass or warn).

References
----------
40 CFR 75.24; 40 CFR 60 App. F Proc. 1 §4.3 (2× for 5 consecutive days, 4× once); HJ 75-2017
(失控时段).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from envcal.alerts.common import finite
from envcal.rules import RulePack


# ----------------------------------------------------------------------------- kernels
@njit(cache=True)
def ooc_periods_kernel(offsets, qabs, passed, threshold, run_len):
    """Out-of-control periods of many check series (CSR layout, each sorted by time).

    Parameters
    ----------
    offsets : int64 (nser + 1)
    qabs : float64
        ``|q|`` of each check [rule unit]; NaN for an invalid check (neither counts nor breaks).
    passed : bool
        Verdict pass or warn.
    threshold : float64 (nser)
        ``factor × limit`` of the condition [rule unit].
    run_len : int64 (nser)
        Checks above the threshold in a row needed (1 for ``single``).

    Returns
    -------
    start_idx, trigger_idx, close_idx : int64 arrays, one entry per period
        Global indices: the last passing check before (start of the period; -1 none known;
        for ``run_len > 1`` the check completing the run), the check that opened it, and the
        passing check that closed it (-1: still open).
    state : int8 per check
        1 where the check lies in an open period after it (inclusive of the trigger).

    References
    ----------
    40 CFR 75.24; 40 CFR 60 App. F Proc. 1 §4.3.1; HJ 75-2017 (失控时段).
    """
    n = qabs.shape[0]
    st = np.empty(n, np.int64)
    tr = np.empty(n, np.int64)
    cl = np.empty(n, np.int64)
    state = np.zeros(n, np.int8)
    k = 0
    for s in range(offsets.shape[0] - 1):
        a = offsets[s]
        b = offsets[s + 1]
        last_pass = -1
        run = 0
        run_first_pass = -1
        open_ = False
        for i in range(a, b):
            q = qabs[i]
            if open_:
                state[i] = 1
                if passed[i]:
                    cl[k] = i
                    k += 1
                    open_ = False
                    state[i] = 0
                    last_pass = i
                    run = 0
                continue
            if not q == q:
                continue
            if passed[i]:
                last_pass = i
                run = 0
                continue
            if q > threshold[s]:
                if run == 0:
                    run_first_pass = last_pass
                run += 1
                if run >= run_len[s]:
                    st[k] = run_first_pass if run_len[s] == 1 else i
                    tr[k] = i
                    open_ = True
                    state[i] = 1
            else:
                run = 0
        if open_:
            cl[k] = -1
            k += 1
    return st[:k], tr[:k], cl[:k], state


# ----------------------------------------------------------------------------- out-of-control periods
def condition_periods(pack: RulePack, cond: Any, hist: Sequence[dict[str, Any]],
                      analyte: str) -> list[dict[str, Any]]:
    """The out-of-control periods one condition of a pack finds in a channel's checks.

    Each check kind the condition covers is its own series (CSR layout of
    :func:`ooc_periods_kernel`): a run of ``days`` checks above ``factor × limit`` counts
    checks of one kind, so a passing zero check neither breaks a run of failing span checks
    nor (with ``close = "same_kind"``) closes the period they opened. With
    ``close = "all_kinds"`` a period opened by any kind closes at the first passing check
    after which the newest valid check of every kind the condition covers for the channel
    passed after the trigger; triggers while it is open belong to it.

    Parameters
    ----------
    pack : RulePack
    cond : envcal.rules.OutOfControl
    hist : sequence of dict
        The channel's results ordered by (end, id): ``id, kind, start, end, verdict, rule,
        check_id`` and the rules' quantities [rule unit].
    analyte : str

    Returns
    -------
    list of dict
        ``rule_id, start, end (None: open), opened_by_result, closed_by_result,
        start_result, source, evidence`` per period, ordered by trigger.

    References
    ----------
    HJ 75-2017 (失控数据的判别与修约: per check kind, closed by that kind passing again);
    40 CFR 60 App. F Proc. 1 §4.3.1 (either CD out of control; ends when the CDs at both
    the zero and the high level are within limits); 40 CFR 75.24.
    """
    rules = {rid: pack.rule(rid) for rid in cond.rules}
    covered = sorted({x.check_kind for x in rules.values() if analyte in x.analytes})
    rows = [r for r in hist if r["kind"] in covered and (
        r["rule"] in rules or (r["verdict"] == "invalid" and any(x.applies_to(r["kind"], analyte)
                                                                 for x in rules.values())))]
    if not rows:
        return []
    kinds = sorted({r["kind"] for r in rows})
    # CSR: one series per check kind, each in time order (hist is sorted)
    order = [r for k in kinds for r in rows if r["kind"] == k]
    counts = [sum(1 for r in rows if r["kind"] == k) for k in kinds]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def qval(r):
        rule = rules.get(r["rule"])
        if r["verdict"] == "invalid" or rule is None or r[rule.quantity] is None:
            return np.nan
        return abs(float(r[rule.quantity])) / rule.limit  # |q| / limit: threshold = factor

    q = np.array([qval(r) for r in order], dtype=np.float64)
    passed = np.array([r["verdict"] in ("pass", "warn") for r in order], dtype=np.bool_)
    nser = len(kinds)
    st, tr, cl, _ = ooc_periods_kernel(offsets, q, passed, np.full(nser, float(cond.factor)),
                                       np.full(nser, cond.days, np.int64))
    found = sorted(zip(st.tolist(), tr.tolist(), cl.tolist(), strict=True),
                   key=lambda x: (order[x[1]]["end"], order[x[1]]["id"]))
    if cond.close == "all_kinds":
        found = close_all_kinds(order, q, passed, found, covered)

    out = []
    for s_i, t_i, c_i in found:
        trig = order[t_i]
        trule = rules.get(trig["rule"])
        out.append({
            "rule_id": cond.id, "start": order[s_i]["end"] if s_i >= 0 else trig["start"],
            "end": order[c_i]["end"] if c_i >= 0 else None,
            "opened_by_result": trig["id"],
            "closed_by_result": order[c_i]["id"] if c_i >= 0 else None,
            "start_result": order[s_i]["id"] if s_i >= 0 else None,
            "source": f"{cond.source.standard} {cond.source.clause}",
            "evidence": {"condition": cond.kind, "factor": cond.factor, "days": cond.days,
                         "trigger_check": trig["check_id"], "trigger_rule": trig["rule"],
                         "trigger_kind": trig["kind"],
                         "trigger_value": finite(trig[trule.quantity]) if trule else None,
                         "limit": trule.limit if trule else None,
                         "close": cond.close, "close_kinds": covered if cond.close == "all_kinds"
                         else [trig["kind"]],
                         "close_source": f"{cond.close_source.standard} {cond.close_source.clause}",
                         "status": cond.status, "consequence": cond.consequence}})
    return out


def close_all_kinds(order: list[dict[str, Any]], q: np.ndarray, passed: np.ndarray,
                     found: list[tuple[int, int, int]], kinds: list[str]) -> list[tuple[int, int, int]]:
    """Merge per-kind periods into ``all_kinds`` periods (see :func:`condition_periods`).

    A period opens at the earliest trigger not inside an earlier period and closes at the
    first passing check (in time order, any kind) after which every kind in ``kinds`` has a
    valid check after the trigger and its newest valid check passed.
    """
    if not found:
        return []
    seq = sorted(range(len(order)), key=lambda i: (order[i]["end"], order[i]["id"]))
    pos = {i: n for n, i in enumerate(seq)}
    out = []
    k = 0
    while k < len(found):
        s_i, t_i, _ = found[k]
        newest: dict[str, bool] = {order[t_i]["kind"]: False}
        close = -1
        for i in seq[pos[t_i] + 1:]:
            if not q[i] == q[i]:
                continue  # invalid: neither passes nor fails
            newest[order[i]["kind"]] = bool(passed[i])
            if passed[i] and all(newest.get(kd, False) for kd in kinds):
                close = i
                break
        out.append((s_i, t_i, close))
        # triggers before the close (or any, while still open) belong to this period
        k += 1
        while k < len(found) and (close < 0 or pos[found[k][1]] < pos[close]):
            k += 1
    return out
