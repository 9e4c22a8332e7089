"""Plain numpy/Python reference implementations of :mod:`envcal.kernels`.

Used only by the tests and the benchmarks (as the independent answer and as the numpy
baseline). They favour obviousness over speed: two-pass statistics, explicit loops over
windows, ``np.polyfit``-free closed forms written out.
"""

from __future__ import annotations

import numpy as np

from envcal import kernels as K


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return np.isfinite(a)


def rolling_mean_std(x, window: int, min_count: int = 1, ddof: int = 1):
    """Trailing rolling mean/std by slicing every window (O(n·window))."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    for i in range(n):
        w = x[max(0, i - window + 1): i + 1]
        w = w[np.isfinite(w)]
        if w.size >= max(min_count, 1) and w.size > 0:
            mean[i] = w.mean()
            if w.size > ddof:
                std[i] = np.sqrt(((w - w.mean()) ** 2).sum() / (w.size - ddof))
    return mean, std


def _window_stats(t, x):
    tm, xm = t.mean(), x.mean()
    sd = np.sqrt(((x - xm) ** 2).sum() / (x.size - 1))
    sxx = ((t - tm) ** 2).sum()
    slope = ((t - tm) * (x - xm)).sum() / sxx if sxx > 0 else np.nan
    return sd, slope


def find_plateau(t, x, window: int, max_std: float, max_slope: float):
    """Walk the windows of finite samples backwards from the end (two-pass statistics)."""
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    window = int(window)
    idx = np.flatnonzero(np.isfinite(t) & np.isfinite(x))
    m = idx.size
    if window < 2:  # no stability test: every finite sample
        return (int(idx[0]), int(idx[-1] + 1)) if m else (-1, -1)
    if m < window:
        return -1, -1
    first = None
    for k in range(m - window, -1, -1):
        sel = idx[k: k + window]
        sd, slope = _window_stats(t[sel], x[sel])
        if not (sd <= max_std and abs(slope) <= max_slope):
            break
        first = k
    if first is None:
        return -1, -1
    return int(idx[first]), int(idx[-1] + 1)


def t90(t, x, i_step: int, i0: int, i1: int) -> float:
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if i0 < 0 or i1 <= i0 or not (0 <= i_step < x.size):
        return np.nan
    x0 = x[i_step]
    if not (np.isfinite(x0) and np.isfinite(t[i_step])):
        return np.nan
    seg = x[i0:i1]
    seg = seg[np.isfinite(seg)]
    if seg.size == 0:
        return np.nan
    change = seg.mean() - x0
    if not abs(change) > 0:
        return np.nan
    reached = (np.sign(change) * (x[i_step:] - x0) >= 0.9 * abs(change)) & np.isfinite(
        x[i_step:]) & np.isfinite(t[i_step:])
    hits = np.flatnonzero(reached)
    return float(t[i_step + hits[0]] - t[i_step]) if hits.size else np.nan


def plateau_stats(x, i0: int, i1: int):
    if i0 < 0 or i1 <= i0:
        return 0, np.nan, np.nan, np.nan
    v = np.asarray(x, dtype=np.float64)[max(i0, 0):i1]
    v = v[np.isfinite(v)]
    n = v.size
    if n == 0:
        return 0, np.nan, np.nan, np.nan
    if n < 2:
        return n, float(v.mean()), np.nan, np.nan
    sd = float(v.std(ddof=1))
    return n, float(v.mean()), sd, sd / np.sqrt(n)


def check_errors(mean, ref, span, u_meas, u_ref, prev_mean):
    mean, ref, span, u_meas, u_ref, prev_mean = (np.asarray(a, dtype=np.float64) for a in
                                                 (mean, ref, span, u_meas, u_ref, prev_mean))
    with np.errstate(divide="ignore", invalid="ignore"):
        err_abs = mean - ref
        err_rel = np.where(ref != 0, err_abs / np.where(ref != 0, ref, 1.0) * 100.0, np.nan)
        good_span = span > 0
        sp = np.where(good_span, span, 1.0)
        err_fs = np.where(good_span, err_abs / sp * 100.0, np.nan)
        drift = np.where(good_span, (mean - prev_mean) / sp * 100.0, np.nan)
        big_u = np.sqrt((2 * u_meas) ** 2 + (2 * u_ref) ** 2)
        en = np.where(big_u > 0, err_abs / np.where(big_u > 0, big_u, 1.0), np.nan)
    return err_abs, err_rel, err_fs, drift, en


def iso_guide33_bias(mean, sd, n, u_ref, ref=0.0):
    delta = abs(mean - ref)
    if n <= 0 or not np.isfinite(sd):
        return delta, np.nan, False
    limit = 2.0 * np.sqrt(sd**2 / n + u_ref**2)
    return delta, limit, bool(delta <= limit)


def evaluate_checks(values2d, times2d, n_valid, ref, span, u_ref, prev_mean, warn_limit,
                    fail_limit, quantity_code, window, max_std, max_slope, min_n):
    """Row-by-row numpy evaluation (the ``check_eval_100k`` baseline)."""
    values2d = np.asarray(values2d)
    m = values2d.shape[0]

    def vec(a, dtype=np.float64):
        return np.broadcast_to(np.asarray(a, dtype=dtype), (m,))

    n_valid, quantity_code = vec(n_valid, np.int64), vec(quantity_code, np.int64)
    ref, span, u_ref, prev_mean, warn_limit, fail_limit, max_std, max_slope = (
        vec(a) for a in (ref, span, u_ref, prev_mean, warn_limit, fail_limit, max_std,
                         max_slope))
    out = {k: np.full(m, np.nan) for k in ("mean", "sd", "u_mean", "t90", "err_abs",
                                           "err_rel_pct", "err_fs_pct", "drift_fs_pct",
                                           "en", "q")}
    i0a = np.full(m, -1, np.int64)
    i1a = np.full(m, -1, np.int64)
    na = np.zeros(m, np.int64)
    bias_ok = np.zeros(m, np.uint8)
    verdict = np.full(m, K.VERDICT_INVALID_TOO_SHORT, np.uint8)
    for c in range(m):
        nv = min(max(int(n_valid[c]), 0), values2d.shape[1])
        x = np.asarray(values2d[c, :nv], dtype=np.float64)
        t = np.asarray(times2d[c, :nv], dtype=np.float64)
        finite = int((np.isfinite(x) & np.isfinite(t)).sum())
        if finite < max(window, 1) or finite < min_n:
            continue
        i0, i1 = find_plateau(t, x, window, max_std[c], max_slope[c])
        if i0 < 0:
            verdict[c] = K.VERDICT_INVALID_NO_PLATEAU
            continue
        i0a[c], i1a[c] = i0, i1
        n, mu, sd, um = plateau_stats(x, i0, i1)
        na[c] = n
        out["mean"][c], out["sd"][c], out["u_mean"][c] = mu, sd, um
        out["t90"][c] = t90(t, x, 0, i0, i1)
        errs = [float(e[0]) for e in check_errors([mu], [ref[c]], [span[c]], [um], [u_ref[c]],
                                                  [prev_mean[c]])]
        for key, e in zip(("err_abs", "err_rel_pct", "err_fs_pct", "drift_fs_pct", "en"), errs,
                          strict=True):
            out[key][c] = e
        bias_ok[c] = iso_guide33_bias(mu, sd, n, u_ref[c], ref[c])[2]
        if n < min_n:
            continue
        code = int(quantity_code[c])
        q = errs[code] if 0 <= code <= 4 else np.nan
        out["q"][c] = q
        tol = K.LIMIT_RTOL
        wl, fl = warn_limit[c], fail_limit[c]
        if not np.isfinite(q):
            verdict[c] = K.VERDICT_INVALID_NOT_COMPUTABLE
        elif not np.isnan(wl) and abs(q) <= wl + tol * abs(wl):
            verdict[c] = K.VERDICT_PASS
        elif abs(q) <= fl + tol * abs(fl):
            verdict[c] = K.VERDICT_PASS if np.isnan(wl) else K.VERDICT_WARN
        else:
            verdict[c] = K.VERDICT_FAIL
    return K.CheckEvaluation(i0a, i1a, na, out["mean"], out["sd"], out["u_mean"], out["t90"],
                             out["err_abs"], out["err_rel_pct"], out["err_fs_pct"],
                             out["drift_fs_pct"], out["en"], out["q"], bias_ok, verdict)


def drift_slope(t, y):
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    n = t.size
    if n < 2:
        return np.nan, np.nan, np.nan, n
    tm, ym = t.mean(), y.mean()
    sxx = ((t - tm) ** 2).sum()
    if not sxx > 0:
        return np.nan, np.nan, np.nan, n
    slope = ((t - tm) * (y - ym)).sum() / sxx
    icpt = ym - slope * tm
    se = np.nan
    if n > 2:
        resid = y - (icpt + slope * t)
        se = np.sqrt((resid**2).sum() / (n - 2) / sxx)
    return slope, se, icpt, n


def ewma(x, lam, z0):
    z = np.empty(len(x))
    prev = float(z0)
    for i, v in enumerate(np.asarray(x, dtype=np.float64)):
        if np.isfinite(v):
            prev = lam * v + (1 - lam) * prev
        z[i] = prev
    return z


def cusum(x, target, k, h):
    cp, cm = np.empty(len(x)), np.empty(len(x))
    a = b = 0.0
    first = -1
    for i, v in enumerate(np.asarray(x, dtype=np.float64)):
        if np.isfinite(v):
            a = max(0.0, v - (target + k) + a)
            b = max(0.0, (target - k) - v + b)
        cp[i], cm[i] = a, b
        if first < 0 and (a > h or b > h):
            first = i
    return cp, cm, first


def cfr58_d(meas, audit):
    meas = np.asarray(meas, dtype=np.float64)
    audit = np.asarray(audit, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(audit != 0, (meas - audit) / audit * 100.0, np.nan)


def cfr58_cv_ub(d, chi2_q):
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = d.size
    if n < 2:
        return np.nan
    # equation 2 as printed (clamped at 0: with equal d's rounding can make it negative)
    num = max(n * (d**2).sum() - d.sum() ** 2, 0.0)
    return np.sqrt(num / (n * (n - 1))) * np.sqrt((n - 1) / chi2_q)


def cfr58_bias_ub(d, t_q):
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = d.size
    if n < 2:
        return np.nan, 0
    a = np.abs(d)
    ab = a.mean()
    as_ = np.sqrt(max(n * (a**2).sum() - a.sum() ** 2, 0.0) / (n * (n - 1)))
    p25, p75 = np.percentile(d, [25, 75])
    sign = 1 if (p25 > 0 and p75 > 0) else -1 if (p25 < 0 and p75 < 0) else 0
    return ab + t_q * as_ / np.sqrt(n), sign


def flat_line(x, tol, min_run, fail_run=0):
    x = np.asarray(x, dtype=np.float64)
    flags = np.full(x.size, K.QC_PASS, np.uint8)
    for run, code in ((min_run, K.QC_SUSPECT), (fail_run, K.QC_FAIL)):
        if run <= 0:
            continue
        for i in range(run, x.size):
            w = x[i - run: i + 1]
            w = w[np.isfinite(w)]
            if w.size and w.max() - w.min() < tol:
                flags[i] = code
    flags[~np.isfinite(x)] = K.QC_MISSING
    return flags
