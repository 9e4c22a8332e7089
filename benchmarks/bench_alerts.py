"""Alert evaluation: a year of daily checks for 1,000 analyzers x 5 channels, and one day
of 1-minute data-quality tests for 1,000 analyzers (5 channels each).

``alerts_eval_year``: out-of-control periods (HJ 75 single 1x and 40 CFR 60 App. F 2x5
conditions), out-of-tolerance state and the drift-trend early warning at every check, over
5,000 channels x 365 checks, with the numba kernels of :mod:`envcal.alerts`. Baseline: the
same rules per channel in plain Python (a subset, scaled).
``alerts_data_quality_day``: flat line, gross range, spike, rate of change and the
falsification statistic over 5,000 channels x 1,440 readings
(:func:`envcal.data_quality.channel_tests`). Baseline: ioos_qc's QARTOD tests (flat line,
gross range, spike, rate of change) on the same data, where installed.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import best_of, row
from envcal import data_quality as dq
from envcal.alerts import ooc_periods_kernel
from envcal.kernels import trend_alarm_kernel


def _checks(n_ch: int, days: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    drift = np.where(rng.random(n_ch) < 0.1, rng.uniform(0.05, 0.3, n_ch), 0.0)
    t = np.tile(np.arange(days, dtype=np.float64), n_ch)
    q = (rng.normal(0, 0.5, (n_ch, days)) + drift[:, None] * (np.arange(days) % 30)).ravel()
    offsets = np.arange(n_ch + 1, dtype=np.int64) * days
    return t, q, offsets


def eval_year(t, q, offsets, limit=2.5):
    n_ch = len(offsets) - 1
    passed = np.abs(q) <= limit
    qa = np.abs(q) / limit
    out = []
    for factor, run in ((1.0, 1), (2.0, 5)):
        out.append(ooc_periods_kernel(offsets, qa, passed, np.full(n_ch, factor),
                                      np.full(n_ch, run, np.int64)))
    out.append(trend_alarm_kernel(offsets, t, q, passed, np.full(n_ch, limit), 30, 7, 7.0, 3.0, 0.4))
    return out


def _python_eval(t, q, offsets, limit=2.5):
    alarms = 0
    for s in range(len(offsets) - 1):
        a, b = offsets[s], offsets[s + 1]
        open_ = False
        for i in range(a, b):
            fail = abs(q[i]) > limit
            if open_ and not fail:
                open_ = False
            elif fail:
                open_ = True
            lo = max(a, i - 29)
            if i - lo >= 6:
                sl, ic = np.polyfit(t[lo:i + 1], q[lo:i + 1], 1)
                y = ic + sl * t[i]
                d = ((limit if sl > 0 else -limit) - y) / sl if sl else np.inf
                alarms += int(0 < d <= 7 and not fail)
    return alarms


def _minutes(n_an: int, n_chan: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = 1440
    nch = n_an * n_chan
    x = 30 + rng.normal(0, 2, (nch, n))
    x[::97, 300:420] = 31.0  # some stuck channels
    x[::53, 700] = 500.0     # some glitches
    fcls = np.zeros((nch, n), np.int8)
    fcls[::31, 900:930] = dq.FLAG_MASKED
    t = np.tile(np.arange(n) * 60.0, nch)
    offsets = np.arange(nch + 1, dtype=np.int64) * n
    return t, x.ravel(), fcls.ravel(), offsets, nch


def run(quick: bool = False) -> list[dict]:
    n_an = 100 if quick else 1000
    t, q, offsets = _checks(n_an * 5, 365)
    eval_year(t[:730], q[:730], offsets[:3])  # JIT warm-up
    env_s = best_of(lambda: eval_year(t, q, offsets), 3)
    sub = 20
    t0 = time.perf_counter()
    _python_eval(t, q, offsets[:sub + 1])
    base_s = (time.perf_counter() - t0) * (len(offsets) - 1) / sub
    rows = [row("alerts_eval_year", env_s, "python_per_check_polyfit (scaled from 20 channels)", base_s,
                channels=int(len(offsets) - 1), checks=int(len(q)))]

    tm, x, fcls, offs, nch = _minutes(n_an, 5)
    span = np.full(nch, 200.0)
    lo, hi, lim = np.full(nch, -4.0), np.full(nch, 240.0), np.full(nch, 50.0)

    def dq_day():
        return dq.channel_tests(tm, x, fcls, offs, span, lo, hi, lim)

    dq.channel_tests(tm[:2880], x[:2880], fcls[:2880], offs[:3], span[:2], lo[:2], hi[:2], lim[:2])
    dq_s = best_of(dq_day, 3)
    base_name, base = None, None
    try:
        from ioos_qc import qartod

        def ioos(k):
            a, b = offs[k], offs[k + 1]
            xs = x[a:b]
            ts = (tm[a:b] * 1e9).astype("datetime64[ns]")
            qartod.flat_line_test(inp=xs, tinp=ts, suspect_threshold=3600, fail_threshold=7200,
                                  tolerance=0.02)
            qartod.gross_range_test(inp=xs, fail_span=(-4, 240))
            qartod.spike_test(inp=xs, suspect_threshold=40, fail_threshold=80)
            qartod.rate_of_change_test(inp=xs, tinp=ts, threshold=1.0)

        k = 20
        t0 = time.perf_counter()
        for i in range(k):
            ioos(i)
        base = (time.perf_counter() - t0) * nch / k
        base_name = "ioos_qc qartod 4 tests (scaled from 20 channels)"
    except Exception:  # noqa: BLE001 - baseline optional
        pass
    rows.append(row("alerts_data_quality_day", dq_s, base_name, base, channels=int(nch),
                    readings=int(len(x))))
    return rows
