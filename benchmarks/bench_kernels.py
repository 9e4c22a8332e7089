"""Kernels of verification against their baselines: first the production paths (the batch
check kernel, the check core and a replay through the Verifier, the QARTOD data-quality
kernels against ioos_qc), then the kernels kept for comparison only
(:mod:`benchmarks.research_kernels`: rolling mean/std against bottleneck, pandas and SaQC,
many-row drift slope against numpy BLAS).

Timing: JIT warm-up is excluded, and envcal and its baseline are timed in alternation
(:func:`_alternating_best`, best of several rounds each), so that load from other processes
on a shared machine hits both sides alike instead of whichever happened to run during a
burst. In the drift rows comparison each timed call follows a settle pause: OpenBLAS's
worker threads busy-wait for about 0.1 s after every call (measured: ~100 ms of CPU in a
0.3 s sleep after ``Y @ t``, ~8 ms after the numba kernel), so without it the envcal call
timed right after ``Y @ t`` shares a core with a spinning BLAS thread.

BLAS baseline: where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (older OpenBLAS builds
need them on some processors; they slow a current numpy), the ``Y @ t`` baseline runs in a
subprocess with both unset, on the same data (same seed); the row records which BLAS
kernel threadpoolctl reports there (``blas``), or numpy's build config if threadpoolctl is
not installed.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numba
import numpy as np
from sqlmodel import Session

from benchmarks import research_kernels as B
from benchmarks.common import best_of, row
from envcal import kernels as K
from envcal import kernels_ref as R
from envcal.checks.core import Case, ChannelReadings, Reference, evaluate, evaluate_many
from envcal.checks.extract import archived_checks
from envcal.db import init_db, make_engine
from envcal.models import Reading
from envcal.registry import load_registry, sync_registry
from envcal.rules import load_pack
from envcal.verify import Verifier, replay

STATIONS = Path(__file__).resolve().parents[1] / "stations"

_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: pause before each timed call of the drift rows comparison [s] (> OpenBLAS's busy-wait)
_SETTLE_S = 0.25


def _alternating_best(fns: dict, repeat: int, settle: float = 0.0) -> dict:
    """Best wall time [s] of each callable over ``repeat`` rounds, calling them in turn.

    ``settle`` [s] is slept before each timed call, so that worker threads the previous
    call left spinning (OpenBLAS busy-waits about 0.1 s after each call; OpenMP briefly)
    are asleep and do not take a core from the next one."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            gc.collect()
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
        info = [f"{d.get('internal_api')}:{d.get('architecture')}:{d.get('num_threads')}thr"
                for d in threadpool_info() if d.get("user_api") == "blas"]
        return ",".join(info) or "unknown"
    except ImportError:
        cfg = np.show_config(mode="dicts") if hasattr(np, "show_config") else {}
        blas = (cfg.get("Build Dependencies", {}) or {}).get("blas", {})
        return f"{blas.get('name', 'unknown')} {blas.get('version', '')} (threadpoolctl absent)"


def _rows_data(r: int, p: int):
    rng = np.random.default_rng(42)
    Y = np.empty((r, p), np.float32)
    for i in range(r):
        Y[i] = (2.0 + 1e-5 * np.arange(p) + rng.standard_normal(p)).astype(np.float32)
    return np.arange(p, dtype=np.float64) / 1440.0, Y


def _blas_baseline_child(r: int, p: int) -> None:  # runs in the subprocess
    t, Y = _rows_data(r, p)
    t32 = t.astype(np.float32)
    Y @ t32
    s = best_of(lambda: Y @ t32, 5)
    print(json.dumps({"s": s, "blas": _blas_info()}))


def _blas_baseline(r: int, p: int, Y, t) -> tuple[float, str, str]:
    if any(k in os.environ for k in _BLAS_ENV):
        env = {k: v for k, v in os.environ.items() if k not in _BLAS_ENV}
        code = ("import sys; from benchmarks.bench_kernels import _blas_baseline_child as f; "
                f"f({r}, {p})")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, cwd=os.path.dirname(os.path.dirname(
                                 os.path.abspath(__file__))))
        res = json.loads(out.stdout.strip().splitlines()[-1])
        return res["s"], res["blas"], "subprocess, OPENBLAS_CORETYPE/L2_SIZE unset"
    t32 = t.astype(np.float32)
    Y @ t32
    return best_of(lambda: Y @ t32, 3), _blas_info(), "in process (no OPENBLAS_* set)"


def _rel_err_std(x, s, window, k=400):
    idx = np.linspace(window - 1, x.size - 1, k).astype(np.int64)
    ex = np.array([x[i - window + 1:i + 1].std(ddof=1) for i in idx])
    return float(np.max(np.abs(s[idx] - ex) / ex))


def bench_rolling(quick: bool) -> list[dict]:
    import bottleneck as bn
    import pandas as pd

    n = 10_000_000 if quick else 100_000_000
    w = 60
    x = 1e6 + np.random.default_rng(0).standard_normal(n)
    B.rolling_mean_std(x[:1000], w)  # JIT warm-up (cached after the first run)
    m, s = B.rolling_mean_std(x, w)
    err = _rel_err_std(x, s, w)
    del m, s
    gc.collect()
    bm = bn.move_std(x, w, min_count=1, ddof=1)
    bn_err = _rel_err_std(x, bm, w)
    del bm
    bn.move_mean(x[:1000], w, min_count=1)
    best = _alternating_best({
        "envcal": lambda: B.rolling_mean_std(x, w),
        "bn": lambda: (bn.move_mean(x, w, min_count=1), bn.move_std(x, w, min_count=1, ddof=1)),
    }, 3 if quick else 5)
    env_s, bn_s = best["envcal"], best["bn"]
    ser = pd.Series(x)
    pd_s = best_of(lambda: (ser.rolling(w, min_periods=1).mean(),
                            ser.rolling(w, min_periods=1).std()), 1 if not quick else 2)
    common = {"n": n, "window": w, "max_rel_err_std": err}
    return [
        row("rolling_mean_std_vs_bottleneck", env_s, "bottleneck.move_mean+move_std", bn_s,
            baseline_max_rel_err_std=bn_err, **common),
        row("rolling_mean_std_vs_pandas", env_s, "pandas rolling mean+std", pd_s, **common),
    ]


def bench_drift_rows(quick: bool) -> list[dict]:
    r, p = (100, 500_000) if quick else (1000, 500_000)
    t, Y = _rows_data(r, p)
    B.drift_slope_rows(t[:10], Y[:2, :10])
    B.drift_slope_rows(t[:10] ** 2, Y[:2, :10])  # both time-grid variants compiled
    slope = B.drift_slope_rows(t, Y)[0]
    ref = [R.drift_slope(t, Y[i].astype(np.float64))[0] for i in range(3)]
    err = float(np.max(np.abs(slope[:3] - ref) / np.abs(ref)))
    if any(k in os.environ for k in _BLAS_ENV):
        env_s = best_of(lambda: B.drift_slope_rows(t, Y), 5)
        base_s, blas, how = _blas_baseline(r, p, Y, t)
    else:
        t32 = t.astype(np.float32)
        Y @ t32
        # both sides multi-threaded (numba: all cores, OpenBLAS: its default threads); each
        # timed call starts after a settle pause, because OpenBLAS's workers busy-wait ~0.1 s
        # after a call and would otherwise take a core from the envcal call that follows
        best = _alternating_best({"envcal": lambda: B.drift_slope_rows(t, Y),
                                  "blas": lambda: Y @ t32}, 7, settle=_SETTLE_S)
        env_s, base_s = best["envcal"], best["blas"]
        blas, how = _blas_info(), "in process (no OPENBLAS_* set), alternating with envcal"
    return [row("drift_slope_vs_numpy_blas", env_s, "float32 Y @ t (BLAS gemv)", base_s,
                shape=[r, p], max_rel_err_slope=err, blas=blas, blas_run=how,
                numba_threads=numba.get_num_threads(), settle_s=_SETTLE_S,
                gb_per_s_envcal=Y.nbytes / env_s / 1e9, gb_per_s_blas=Y.nbytes / base_s / 1e9)]


def _checks(m: int, w: int = 60):
    rng = np.random.default_rng(1)
    t = np.tile(np.arange(w) * 60.0, (m, 1))
    resp = 200 * (1 - np.exp(-np.arange(w) / 3.0))
    x = resp + rng.normal(0, 0.5, (m, w))
    x[rng.random((m, w)) < 0.01] = np.nan
    return dict(values2d=x, times2d=t, n_valid=np.full(m, w), ref=200.0, span=250.0,
                u_ref=1.0, prev_mean=np.where(rng.random(m) < 0.5, np.nan, 199.0),
                warn_limit=2.0, fail_limit=2.5, quantity_code=rng.integers(0, 5, m),
                window=10, max_std=2.0, max_slope=0.01, min_n=5)


def bench_checks(quick: bool) -> list[dict]:
    m = 100_000
    args = _checks(m)
    K.evaluate_checks(**_checks(10))
    env_s = best_of(lambda: K.evaluate_checks(**args), 3)
    sub = 1_000 if quick else 5_000
    sargs = _checks(sub)
    t0 = time.perf_counter()
    R.evaluate_checks(**sargs)
    base_s = (time.perf_counter() - t0) * (m / sub)
    return [row("check_eval_100k", env_s, "numpy reference (envcal.kernels_ref)", base_s,
                checks=m, readings=60, baseline_rows_timed=sub,
                baseline_note="row-by-row reference timed on a subset, scaled linearly")]


def _cases(m: int, w: int = 60) -> list[Case]:
    rng = np.random.default_rng(2)
    pack = load_pack("hj75_2017")
    ts = np.datetime64("2026-11-02T08:00:00", "us") + np.arange(w) * np.timedelta64(60, "s")
    resp = 160 * (1 - np.exp(-np.arange(w) / 3.0))
    return [Case(ChannelReadings(analyzer="A", station="S", analyte="SO2", kind="span",
                                 check_id=f"CK{i}", unit="mg/m3", span=200.0, ts=ts,
                                 values=resp + rng.normal(0, 0.3, w) + rng.normal(0, 2.0),
                                 material="LOT"), Reference(160.0, 0.8), None, pack)
            for i in range(m)]


def bench_core(quick: bool) -> list[dict]:
    """The check core as production calls it (one batch) against one kernel call per check
    (how live checks and replay were judged before)."""
    m = 2_000 if quick else 20_000
    cases = _cases(m)
    evaluate_many(cases[:10])
    assert evaluate_many(cases[:50]) == [evaluate(c.readings, c.reference, c.previous, c.pack)
                                         for c in cases[:50]]
    best = _alternating_best({
        "batch": lambda: evaluate_many(cases),
        "per_check": lambda: [evaluate(c.readings, c.reference, c.previous, c.pack) for c in cases],
    }, 3)
    return [row("check_core_batch", best["batch"], "one kernel call per check", best["per_check"],
                checks=m, readings=60, checks_per_s=m / best["batch"])]


def _replay_world(root: Path, n_days: int) -> tuple:
    """A SQLite database with zero and span checks of one CEMS (SO2, NOx) on n_days days."""
    eng = make_engine(f"sqlite:///{root / 'replay.db'}")
    init_db(eng)
    reg = load_registry(STATIONS)
    sync_registry(eng, reg)
    t0 = dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC)
    rng = np.random.default_rng(4)
    rows = []
    for d in range(n_days):
        for k, kind in enumerate(("zero", "zero")):
            start = t0 + dt.timedelta(days=d, hours=2 * k)
            ck = f"CK-{d}-{k}"
            for analyte, level in (("SO2", 0.5 + 0.01 * d), ("NOx", 1.0)):
                for i in range(20):
                    v = level * (1 - np.exp(-(i + 1) / 1.5)) + rng.normal(0, 0.01)
                    rows.append(Reading(analyzer_id="NB-PP02-CEMS", analyte=analyte,
                                        ts=start + dt.timedelta(seconds=20 * i), value=v,
                                        flag="C", check_id=ck, check_kind=kind,
                                        check_phase="end" if i == 19 else "run",
                                        material="", received_at=start))
    with Session(eng) as s:
        s.add_all(rows)
        s.commit()
    return eng, reg, t0, t0 + dt.timedelta(days=n_days + 1)


def bench_replay(quick: bool) -> list[dict]:
    """``envcal verify replay`` on the batch path against evaluating and storing one check
    at a time (the replay loop before the check core)."""
    n_days = 100 if quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        eng, reg, start, end = _replay_world(Path(tmp), n_days)
        v = Verifier(eng, reg)
        checks = archived_checks(eng, None, reg, start, end)

        def per_check():
            todo = archived_checks(eng, None, reg, start, end)
            for c in sorted(todo, key=lambda c: (c.ts[-1], c.check_id)):
                v.evaluate_and_store([c])

        replay(v, None, start, end)  # warm-up (and the stored results exist: both upsert)
        best = _alternating_best({"batch": lambda: replay(v, None, start, end),
                                  "per_check": per_check}, 2)
        eng.dispose()
    n = len(checks) * 2
    return [row("replay_batch", best["batch"], "evaluate and store one check at a time",
                best["per_check"], channel_checks=n, checks_per_s=n / best["batch"],
                note="SQLite, hot store only; includes reading the checks and storing results")]


def bench_qartod(quick: bool) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ioos_qc import qartod
    n = 1440 * (100 if quick else 1000)  # one day of 1-minute data for 1,000 analyzers
    rng = np.random.default_rng(3)
    x = np.round(50 + np.cumsum(rng.normal(0, 0.2, n)), 1)
    t = np.arange(n) * 60.0
    tdt = (t * 1e9).astype("datetime64[ns]")
    K.flat_line(x[:100], 0.05, 5, 10)
    K.spike(x[:100], 2.0, 5.0)
    K.rate_of_change(t[:100], x[:100], 0.05, 0.1)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fl = best_of(lambda: K.flat_line(x, 0.05, 5, 10), 3)
        fl_b = best_of(lambda: qartod.flat_line_test(x, tdt, 300, 600, 0.05), 1)
        rows.append(row("flat_line_vs_ioos_qc", fl, "ioos_qc.qartod.flat_line_test", fl_b, n=n))
        sp = best_of(lambda: K.spike(x, 2.0, 5.0), 3)
        sp_b = best_of(lambda: qartod.spike_test(x, 2.0, 5.0), 1)
        rows.append(row("spike_vs_ioos_qc", sp, "ioos_qc.qartod.spike_test", sp_b, n=n))
        rc = best_of(lambda: K.rate_of_change(t, x, 0.05, 0.1), 3)
        rc_b = best_of(lambda: qartod.rate_of_change_test(x, tdt, 0.05, 0.1), 1)
        rows.append(row("rate_of_change_vs_ioos_qc", rc, "ioos_qc.qartod.rate_of_change_test",
                        rc_b, n=n))
    return rows


def bench_saqc(quick: bool) -> list[dict]:
    """SaQC where a comparable function exists: rolling mean + std (``SaQC.rolling``,
    trailing window) and the flat-line test (``SaQC.flagConstants``). SaQC has no least-squares
    drift slope (``flagDriftFromReference`` flags distances between series per period), so
    there is no drift row. Skipped, with a row saying why, when saqc is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pandas as pd
            import saqc
    except ImportError as exc:  # optional (bench extra)
        return [{"name": "saqc", "error": f"saqc not importable: {exc}"}]
    rows = []
    n = 1_000_000 if quick else 10_000_000
    w = 60
    x = 1e6 + np.random.default_rng(0).standard_normal(n)
    idx = pd.date_range("2024-01-01", periods=n, freq="1min")
    B.rolling_mean_std(x[:1000], w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qc = saqc.SaQC(pd.DataFrame({"x": x}, index=idx))

        def _saqc_roll():
            q = qc.rolling("x", window=w, func="mean", target="m", min_periods=1, center=False)
            return q.rolling("x", window=w, func="std", target="s", min_periods=1,
                             center=False)

        s_ref = _saqc_roll().data["s"].to_numpy()
        s_env = B.rolling_mean_std(x, w)[1]
        agree = float(np.nanmax(np.abs(s_env[w:] - s_ref[w:]) / s_ref[w:]))
        best = _alternating_best({"envcal": lambda: B.rolling_mean_std(x, w),
                                  "saqc": _saqc_roll}, 2 if quick else 3)
        rows.append(row("rolling_mean_std_vs_saqc", best["envcal"],
                        "saqc SaQC.rolling mean+std (trailing, window 60)", best["saqc"],
                        n=n, window=w, max_rel_diff_std_vs_saqc=agree))
        # flat line: 1-minute data rounded to 0.1, flat when the range over 6 samples < 0.05
        m = 1440 * (100 if quick else 1000)
        rng = np.random.default_rng(3)
        y = np.round(50 + np.cumsum(rng.normal(0, 0.2, m)), 1)
        qf = saqc.SaQC(pd.DataFrame({"y": y}, index=pd.date_range("2024-01-01", periods=m,
                                                                   freq="1min")))
        K.flat_line(y[:100], 0.05, 5)
        qf.flagConstants("y", window=6, thresh=0.04)
        best = _alternating_best({"envcal": lambda: K.flat_line(y, 0.05, 5),
                                  "saqc": lambda: qf.flagConstants("y", window=6, thresh=0.04)},
                                 3)
        rows.append(row("flat_line_vs_saqc", best["envcal"],
                        "saqc SaQC.flagConstants (window 6 samples)", best["saqc"], n=m,
                        note="same data and window; SaQC flags every sample of a flat window"
                             " (thresh is <=), envcal the window's last sample (< tol)"))
    return rows


def run(quick: bool) -> list[dict]:
    rows: list[dict] = []
    for part in (bench_checks, bench_core, bench_replay, bench_qartod, bench_rolling,
                 bench_drift_rows, bench_saqc):
        rows.extend(part(quick))
        gc.collect()
    return rows
