"""Kernels of verification against their baselines (bottleneck, pandas, numpy BLAS, the numpy
reference implementation, ioos_qc).

BLAS baseline: where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set (older OpenBLAS builds
need them on some processors; they slow a current numpy), the ``Y @ t`` baseline runs in a
subprocess with both unset, on the same data (same seed); the row records which BLAS
kernel threadpoolctl reports there (``blas``), or numpy's build config if threadpoolctl is
not installed.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

from benchmarks.common import best_of, row
from envcal import kernels as K
from envcal import kernels_ref as R

_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


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
    s = best_of(lambda: Y @ t32, 3)
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
    K.rolling_mean_std(x[:1000], w)  # JIT warm-up (cached after the first run)
    m, s = K.rolling_mean_std(x, w)
    err = _rel_err_std(x, s, w)
    del m, s
    gc.collect()
    env_s = best_of(lambda: K.rolling_mean_std(x, w), 3)
    bm = bn.move_std(x, w, min_count=1, ddof=1)
    bn_err = _rel_err_std(x, bm, w)
    del bm
    bn_s = best_of(lambda: (bn.move_mean(x, w, min_count=1),
                            bn.move_std(x, w, min_count=1, ddof=1)), 3)
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
    K.drift_slope_rows(t[:10], Y[:2, :10])
    env_s = best_of(lambda: K.drift_slope_rows(t, Y), 3)
    slope = K.drift_slope_rows(t, Y)[0]
    ref = [R.drift_slope(t, Y[i].astype(np.float64))[0] for i in range(3)]
    err = float(np.max(np.abs(slope[:3] - ref) / np.abs(ref)))
    base_s, blas, how = _blas_baseline(r, p, Y, t)
    return [row("drift_slope_vs_numpy_blas", env_s, "float32 Y @ t (BLAS gemv)", base_s,
                shape=[r, p], max_rel_err_slope=err, blas=blas, blas_run=how)]


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


def run(quick: bool) -> list[dict]:
    rows: list[dict] = []
    for part in (bench_rolling, bench_drift_rows, bench_checks, bench_qartod):
        rows.extend(part(quick))
        gc.collect()
    return rows
