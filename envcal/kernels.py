"""Numba kernels of verification: plain numeric arrays in, arrays or scalars out.

No units, no objects, no I/O. Every kernel accumulates in float64 (also for float32 input)
and treats NaN as a gap: non-finite samples are skipped, never counted. Units are converted
once, at the edges, by :mod:`envcal.units`; statistical quantiles (Student t, chi-square) are
computed at the edge with scipy and passed in.

Verdict codes of :func:`evaluate_checks` (``VERDICT_*``) and the tested-quantity codes
(``Q_*``) are module constants so that the verification module and the kernels share them.
QARTOD flag values (``QC_*``) follow ioos_qc: 1 pass, 2 not evaluated, 3 suspect, 4 fail,
9 missing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from envcal import codes
from envcal.codes import (
    LIMIT_RTOL,
    QUANTITY_CODES,
    VERDICT_FAIL,
    VERDICT_INVALID_NO_PLATEAU,
    VERDICT_INVALID_NOT_COMPUTABLE,
    VERDICT_INVALID_TOO_SHORT,
    VERDICT_NAMES,
    VERDICT_PASS,
    VERDICT_WARN,
)

__all__ = [
    "VERDICT_PASS", "VERDICT_WARN", "VERDICT_FAIL", "VERDICT_INVALID_NO_PLATEAU",
    "VERDICT_INVALID_TOO_SHORT", "VERDICT_INVALID_NOT_COMPUTABLE", "VERDICT_NAMES",
    "Q_ERR_ABS", "Q_ERR_REL_PCT", "Q_ERR_FS_PCT", "Q_DRIFT_FS_PCT", "Q_EN", "QUANTITY_CODES",
    "QC_PASS", "QC_NOT_EVALUATED", "QC_SUSPECT", "QC_FAIL", "QC_MISSING", "LIMIT_RTOL",
    "CheckEvaluation", "limit_verdict",
    "find_plateau", "t90", "plateau_stats", "check_errors",
    "iso_guide33_bias", "evaluate_checks", "ewma", "cusum",
    "forecast_crossing", "trend_alarm_kernel", "cfr58_d", "cfr58_cv_ub", "cfr58_bias_ub", "flat_line", "spike",
    "rate_of_change", "out_of_range",
]

# --- codes shared with envcal.checks / envcal.alerts (defined in envcal.codes) ----------
Q_ERR_ABS = QUANTITY_CODES["error_abs"]
Q_ERR_REL_PCT = QUANTITY_CODES["error_rel_pct"]
Q_ERR_FS_PCT = QUANTITY_CODES["error_fs_pct"]
Q_DRIFT_FS_PCT = QUANTITY_CODES["drift_fs_pct"]
Q_EN = QUANTITY_CODES["en"]

QC_PASS = 1
QC_NOT_EVALUATED = 2
QC_SUSPECT = 3
QC_FAIL = 4
QC_MISSING = 9

_NAN = np.nan


# =========================================================================================
# 2-4. plateau, T90 and plateau statistics
# =========================================================================================
@njit(cache=True)
def _window_ok(st, sx, stt, sxx, stx, w, max_std, max_slope):
    var = (sxx - sx * sx / w) / (w - 1.0)
    if var < 0.0:
        var = 0.0
    sdt = stt - st * st / w
    if not sdt > 0.0:
        return False
    slope = (stx - st * sx / w) / sdt
    return np.sqrt(var) <= max_std and abs(slope) <= max_slope


@njit(cache=True)
def _plateau_core(t, x, window, max_std, max_slope, idx):
    n = x.shape[0]
    m = 0
    for i in range(n):
        ti = np.float64(t[i])
        xi = np.float64(x[i])
        if ti - ti == 0.0 and xi - xi == 0.0:
            idx[m] = i
            m += 1
    if window < 2:
        # no stability test (batch analyzers: one value per analysis cycle): every finite
        # reading belongs to the plateau
        if m == 0:
            return -1, -1
        return idx[0], idx[m - 1] + 1
    if m < window:
        return -1, -1
    t0 = np.float64(t[idx[m - 1]])
    x0 = np.float64(x[idx[m - 1]])
    st = 0.0
    sx = 0.0
    stt = 0.0
    sxx = 0.0
    stx = 0.0
    for k in range(m - window, m):
        a = np.float64(t[idx[k]]) - t0
        b = np.float64(x[idx[k]]) - x0
        st += a
        sx += b
        stt += a * a
        sxx += b * b
        stx += a * b
    w = np.float64(window)
    if not _window_ok(st, sx, stt, sxx, stx, w, max_std, max_slope):
        return -1, -1
    first = m - window
    for k in range(m - window - 1, -1, -1):
        a = np.float64(t[idx[k]]) - t0
        b = np.float64(x[idx[k]]) - x0
        r = k + window
        c = np.float64(t[idx[r]]) - t0
        d = np.float64(x[idx[r]]) - x0
        st += a - c
        sx += b - d
        stt += a * a - c * c
        sxx += b * b - d * d
        stx += a * b - c * d
        if not _window_ok(st, sx, stt, sxx, stx, w, max_std, max_slope):
            break
        first = k
    return idx[first], idx[m - 1] + 1


@njit(cache=True)
def find_plateau(t, x, window, max_std, max_slope):
    """Longest final stable window of a QC check response.

    Parameters
    ----------
    t : ndarray, shape (n,), float64
        Sample times [s], increasing.
    x : ndarray, shape (n,)
        Readings [channel unit]; samples where ``t`` or ``x`` is not finite are gaps.
    window : int
        Rolling window [finite samples]. Below 2 there is no stability test: the plateau
        is every finite sample (batch analyzers, one value per analysis cycle).
    max_std : float
        Largest allowed sample standard deviation (ddof = 1) of every window [channel unit].
    max_slope : float
        Largest allowed absolute least-squares slope of every window [channel unit / s].

    Returns
    -------
    i0, i1 : int
        The plateau is ``x[i0:i1]``: ``i1`` is one past the last finite sample and every
        window of ``window`` consecutive finite samples inside it is stable; ``(-1, -1)``
        when the final window is not stable or there are fewer than ``window`` finite
        samples.

    References
    ----------
    .. [1] HJ 75-2017 (zero/span checks are read once the response has stabilised);
       clause numbers to be confirmed against the primary text.
    """
    idx = np.empty(x.shape[0], np.int64)
    return _plateau_core(t, x, window, max_std, max_slope, idx)


@njit(cache=True)
def _nanmean_range(x, i0, i1):
    s = 0.0
    c = 0
    for i in range(max(i0, 0), min(i1, x.shape[0])):
        v = np.float64(x[i])
        if v - v == 0.0:
            s += v
            c += 1
    return s / c if c > 0 else _NAN


@njit(cache=True)
def t90(t, x, i_step, i0, i1):
    """Response time T90 of a step, from the step start to 90 % of the change.

    Parameters
    ----------
    t : ndarray, shape (n,), float64
        Sample times [s].
    x : ndarray, shape (n,)
        Readings [channel unit].
    i_step : int
        Index of the step start; ``x[i_step]`` is the pre-step value.
    i0, i1 : int
        Plateau bounds (from :func:`find_plateau`); the final value is ``mean(x[i0:i1])``.

    Returns
    -------
    float
        ``t[j] - t[i_step]`` [s] for the first finite sample ``j >= i_step`` with
        ``|x[j] - x[i_step]| >= 0.9 |final - x[i_step]|`` in the direction of the change
        (sample resolution, no interpolation); NaN if never reached, if the plateau is
        missing (``i0 < 0``), if ``x[i_step]`` is not finite or if there is no change.

    References
    ----------
    .. [1] HJ 76-2017 / HJ 75-2017 (CEMS response time, T90: time to 90 % of the final
       reading); clause numbers to be confirmed against the primary text.
    """
    n = x.shape[0]
    if i0 < 0 or i1 <= i0 or i_step < 0 or i_step >= n:
        return _NAN
    x0 = np.float64(x[i_step])
    ts = np.float64(t[i_step])
    if not (x0 - x0 == 0.0 and ts - ts == 0.0):
        return _NAN
    xf = _nanmean_range(x, i0, i1)
    change = xf - x0
    if not abs(change) > 0.0:
        return _NAN
    sgn = 1.0 if change > 0.0 else -1.0
    target = 0.9 * abs(change)
    for j in range(i_step, n):
        v = np.float64(x[j])
        tj = np.float64(t[j])
        if v - v == 0.0 and tj - tj == 0.0 and (v - x0) * sgn >= target:
            return tj - ts
    return _NAN


@njit(cache=True)
def plateau_stats(x, i0, i1):
    """Statistics of the plateau readings ``x[i0:i1]`` (finite samples only).

    Parameters
    ----------
    x : ndarray, shape (n,)
        Readings [channel unit].
    i0, i1 : int
        Plateau bounds; ``i0 < 0`` means no plateau.

    Returns
    -------
    n : int
        Number of finite readings.
    mean : float
        Mean [channel unit] (NaN when n = 0).
    sd : float
        Sample standard deviation, ddof = 1 [channel unit] (NaN when n < 2).
    u_mean : float
        Standard uncertainty of the mean, sd / sqrt(n) [channel unit] (type A).

    References
    ----------
    .. [1] JCGM 100:2008 (GUM), clause 4.2 (type A evaluation: eqs. (3)-(5)).
    """
    if i0 < 0 or i1 <= i0:
        return 0, _NAN, _NAN, _NAN
    lo = max(i0, 0)
    hi = min(i1, x.shape[0])
    s = 0.0
    c = 0
    for i in range(lo, hi):
        v = np.float64(x[i])
        if v - v == 0.0:
            s += v
            c += 1
    if c == 0:
        return 0, _NAN, _NAN, _NAN
    mean = s / c
    if c < 2:
        return c, mean, _NAN, _NAN
    ss = 0.0
    for i in range(lo, hi):
        v = np.float64(x[i])
        if v - v == 0.0:
            ss += (v - mean) * (v - mean)
    sd = np.sqrt(ss / (c - 1))
    return c, mean, sd, sd / np.sqrt(c)


# =========================================================================================
# 5-6. errors, E_n, ISO Guide 33 bias test
# =========================================================================================
@njit(cache=True)
def _errors_one(mean, ref, span, u_meas, u_ref, prev_mean):
    err_abs = mean - ref
    err_rel = err_abs / ref * 100.0 if ref != 0.0 else _NAN
    err_fs = err_abs / span * 100.0 if span > 0.0 else _NAN
    drift = (mean - prev_mean) / span * 100.0 if span > 0.0 else _NAN
    big_u2 = (2.0 * u_meas) ** 2 + (2.0 * u_ref) ** 2
    en = err_abs / np.sqrt(big_u2) if big_u2 > 0.0 else _NAN
    return err_abs, err_rel, err_fs, drift, en


@njit(cache=True)
def check_errors(mean, ref, span, u_meas, u_ref, prev_mean):
    """Errors of QC checks against their reference values, one element per check.

    Parameters
    ----------
    mean : ndarray, shape (m,)
        Plateau means [channel unit].
    ref : ndarray, shape (m,)
        Certified reference values C [channel unit].
    span : ndarray, shape (m,)
        Analyzer span (full scale) [channel unit].
    u_meas, u_ref : ndarray, shape (m,)
        STANDARD uncertainties of the mean and of C [channel unit]; expanded with k = 2.
    prev_mean : ndarray, shape (m,)
        Mean of the previous check of the same kind [channel unit] (NaN: none).

    Returns
    -------
    err_abs : ndarray
        mean - C [channel unit].
    err_rel_pct : ndarray
        (mean - C) / C x 100 [% of reference]; NaN when C == 0.
    err_fs_pct : ndarray
        (mean - C) / span x 100 [% of span]; NaN when span <= 0.
    drift_fs_pct : ndarray
        (mean - prev_mean) / span x 100 [% of span]; NaN without a previous check.
    en : ndarray
        (mean - C) / sqrt(U_meas^2 + U_C^2), U = 2u [-]; NaN when both U are 0.

    References
    ----------
    .. [1] HJ 75-2017 (zero/span drift as % of span; clause to be confirmed).
    .. [2] 40 CFR 75 Appendix A, §3.1 (calibration error as % of span).
    .. [3] ISO 13528:2022, §9.7 (E_n numbers); ISO/IEC 17043:2023.
    """
    m = mean.shape[0]
    a = np.empty(m, np.float64)
    r = np.empty(m, np.float64)
    f = np.empty(m, np.float64)
    d = np.empty(m, np.float64)
    e = np.empty(m, np.float64)
    for i in range(m):
        a[i], r[i], f[i], d[i], e[i] = _errors_one(
            np.float64(mean[i]), np.float64(ref[i]), np.float64(span[i]),
            np.float64(u_meas[i]), np.float64(u_ref[i]), np.float64(prev_mean[i]))
    return a, r, f, d, e


@njit(cache=True)
def iso_guide33_bias(mean, sd, n, u_ref, ref=0.0):
    """ISO Guide 33 bias test of a measured mean against a certified value.

    Parameters
    ----------
    mean : float
        Measured mean x̄ [channel unit]; with the default ``ref = 0`` pass the bias
        x̄ - C directly.
    sd : float
        Sample standard deviation s of the readings [channel unit].
    n : int
        Number of readings.
    u_ref : float
        Standard uncertainty of the certified value u_C [channel unit].
    ref : float
        Certified value C [channel unit].

    Returns
    -------
    delta : float
        |x̄ - C| [channel unit].
    limit : float
        2 sqrt(s²/n + u_C²) [channel unit]; NaN when n < 1 or s is not finite (n = 1).
    ok : bool
        ``delta <= limit`` (False when either is NaN).

    References
    ----------
    .. [1] ISO Guide 33:2015, assessment of bias against a CRM (|x̄ - C| <= 2 sqrt(s²/n +
       u_CRM²)); clause number to be confirmed.
    """
    delta = abs(mean - ref)
    if n <= 0 or not sd - sd == 0.0:
        return delta, _NAN, False
    limit = 2.0 * np.sqrt(sd * sd / n + u_ref * u_ref)
    return delta, limit, delta <= limit


# =========================================================================================
# 7. batch evaluation of checks
# =========================================================================================
#: :func:`envcal.codes.limit_verdict` compiled (one definition of the comparison)
limit_verdict = njit(cache=True)(codes.limit_verdict)


@njit(cache=True, parallel=True)
def _evaluate_checks_kernel(values2d, times2d, n_valid, ref, span, u_ref, prev_mean,
                            warn_limit, fail_limit, quantity_code, window, max_std,
                            max_slope, min_n):
    m = values2d.shape[0]
    width = values2d.shape[1]
    i0 = np.full(m, -1, np.int64)
    i1 = np.full(m, -1, np.int64)
    n = np.zeros(m, np.int64)
    mean = np.full(m, _NAN)
    sd = np.full(m, _NAN)
    u_mean = np.full(m, _NAN)
    t90s = np.full(m, _NAN)
    err_abs = np.full(m, _NAN)
    err_rel = np.full(m, _NAN)
    err_fs = np.full(m, _NAN)
    drift = np.full(m, _NAN)
    en = np.full(m, _NAN)
    q = np.full(m, _NAN)
    bias_ok = np.zeros(m, np.uint8)
    verdict = np.full(m, VERDICT_INVALID_TOO_SHORT, np.uint8)
    w_eff = max(window, 1)
    for c in prange(m):
        nv = min(max(n_valid[c], 0), width)
        x = values2d[c, :nv]
        t = times2d[c, :nv]
        finite = 0
        for j in range(nv):
            v = np.float64(x[j])
            tj = np.float64(t[j])
            if v - v == 0.0 and tj - tj == 0.0:
                finite += 1
        if finite < w_eff or finite < min_n:
            continue
        idx = np.empty(nv, np.int64)
        a, b = _plateau_core(t, x, window, max_std[c], max_slope[c], idx)
        if a < 0:
            verdict[c] = VERDICT_INVALID_NO_PLATEAU
            continue
        i0[c] = a
        i1[c] = b
        k, mu, s, um = plateau_stats(x, a, b)
        n[c] = k
        mean[c] = mu
        sd[c] = s
        u_mean[c] = um
        t90s[c] = t90(t, x, 0, a, b)
        ea, er, ef, dr, e = _errors_one(mu, ref[c], span[c], um, u_ref[c], prev_mean[c])
        err_abs[c] = ea
        err_rel[c] = er
        err_fs[c] = ef
        drift[c] = dr
        en[c] = e
        _, _, ok = iso_guide33_bias(mu, s, k, u_ref[c], ref[c])
        bias_ok[c] = 1 if ok else 0
        if k < min_n:
            continue  # plateau too short: VERDICT_INVALID_TOO_SHORT
        code = quantity_code[c]
        qq = _NAN
        if code == Q_ERR_ABS:
            qq = ea
        elif code == Q_ERR_REL_PCT:
            qq = er
        elif code == Q_ERR_FS_PCT:
            qq = ef
        elif code == Q_DRIFT_FS_PCT:
            qq = dr
        elif code == Q_EN:
            qq = e
        q[c] = qq
        verdict[c] = limit_verdict(qq, warn_limit[c], fail_limit[c])
    return (i0, i1, n, mean, sd, u_mean, t90s, err_abs, err_rel, err_fs, drift, en, q,
            bias_ok, verdict)


class CheckEvaluation(NamedTuple):
    """Outputs of :func:`evaluate_checks`, one element per check (row)."""

    i0: np.ndarray  #: plateau start index in the row (int64, -1: none)
    i1: np.ndarray  #: plateau end index, exclusive (int64, -1: none)
    n: np.ndarray  #: finite readings in the plateau (int64)
    mean: np.ndarray  #: plateau mean [channel unit]
    sd: np.ndarray  #: plateau sample standard deviation [channel unit]
    u_mean: np.ndarray  #: standard uncertainty of the mean sd/sqrt(n) [channel unit]
    t90: np.ndarray  #: response time from the row's first reading [s]
    err_abs: np.ndarray  #: mean - C [channel unit]
    err_rel_pct: np.ndarray  #: (mean - C)/C x 100 [% of reference]
    err_fs_pct: np.ndarray  #: (mean - C)/span x 100 [% of span]
    drift_fs_pct: np.ndarray  #: (mean - prev_mean)/span x 100 [% of span]
    en: np.ndarray  #: E_n with U_meas = 2 u_mean, U_C = 2 u_ref [-]
    q: np.ndarray  #: the tested quantity selected by quantity_code
    bias_ok: np.ndarray  #: ISO Guide 33 bias test passed (uint8 0/1)
    verdict: np.ndarray  #: VERDICT_* code (uint8)


def evaluate_checks(values2d: np.ndarray, times2d: np.ndarray, n_valid: np.ndarray,
                    ref, span, u_ref, prev_mean, warn_limit, fail_limit, quantity_code,
                    window: int, max_std, max_slope, min_n: int) -> CheckEvaluation:
    """Evaluate many QC checks at once: plateau, statistics, errors, E_n and verdict.

    Parameters
    ----------
    values2d : ndarray, shape (m, w), float32 or float64
        Readings of each check [channel unit], left-aligned, padded after ``n_valid``.
    times2d : ndarray, shape (m, w), float64
        Reading times [s]; the first reading of a row is the step start (for T90).
    n_valid : array_like of int, shape (m,)
        Number of used columns per row.
    ref, span, u_ref, prev_mean : array_like, shape (m,) or scalar
        Certified value C, span, standard uncertainty of C, previous check mean
        (NaN: none) [channel unit].
    warn_limit, fail_limit : array_like, shape (m,) or scalar
        Limits on |q| in the unit of the tested quantity; NaN warn_limit = no warning level.
        ``|q| <= limit`` passes (with a relative tolerance of ``LIMIT_RTOL``).
    quantity_code : array_like of int, shape (m,) or scalar
        Tested quantity: 0 err_abs, 1 err_rel_pct, 2 err_fs_pct, 3 drift_fs_pct, 4 en.
    window : int
        Plateau window [samples].
    max_std, max_slope : array_like, shape (m,) or scalar
        Plateau bounds [channel unit] and [channel unit / s].
    min_n : int
        Minimum number of finite readings (in the row and in the plateau).

    Returns
    -------
    CheckEvaluation
        A named tuple of arrays (see its fields). Verdict codes: 0 pass, 1 warn, 2 fail,
        3 invalid_no_plateau, 4 invalid_too_short (row or plateau shorter than ``min_n``
        or than ``window``), 5 invalid_not_computable (q is NaN). E_n uses the type-A
        uncertainty of the mean only; call :func:`check_errors` for a fuller budget.

    Notes
    -----
    Defined results on odd data, never an exception: NaN and ±inf readings or times are
    gaps (not counted in n); rows are taken in array order, times should increase — equal
    times inside a plateau window give no slope (that window is not stable: verdict 3 when
    every window is affected), decreasing times are fitted as given (the plateau test uses
    ``|slope|``); a zero-length row is 4; T90 is NaN when the row has no step to settle
    from. Limits: see :func:`limit_verdict` (NaN ``warn_limit``: no warning level).

    References
    ----------
    .. [1] HJ 75-2017 (% of span); HJ 355-2019 (relative error of standard-sample checks).
    .. [2] 40 CFR 75 Appendix A, §3.1; 40 CFR 58 Appendix A, §3.1.1 (one-point QC).
    .. [3] ISO 13528:2022, §9.7 (E_n); ISO Guide 33:2015 (bias test).
    """
    values2d = np.ascontiguousarray(values2d)
    if values2d.dtype not in (np.float32, np.float64):
        values2d = values2d.astype(np.float64)
    times2d = np.ascontiguousarray(times2d, dtype=np.float64)
    if values2d.ndim != 2 or times2d.shape != values2d.shape:
        raise ValueError(f"values2d {values2d.shape} and times2d {times2d.shape} must be "
                         "2-D arrays of the same shape")
    m = values2d.shape[0]

    def vec(a, dtype=np.float64):
        arr = np.asarray(a, dtype=dtype)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, m)):
            raise ValueError(f"per-check input of shape {arr.shape} does not match {m} checks")
        return np.ascontiguousarray(np.broadcast_to(arr, (m,)))

    out = _evaluate_checks_kernel(
        values2d, times2d, vec(n_valid, np.int64), vec(ref), vec(span), vec(u_ref),
        vec(prev_mean), vec(warn_limit), vec(fail_limit), vec(quantity_code, np.int64),
        int(window), vec(max_std), vec(max_slope), int(min_n))
    return CheckEvaluation(*out)


# =========================================================================================
# 8. trend statistics
# =========================================================================================
@njit(cache=True)
def ewma(x, lam, z0):
    """Exponentially weighted moving average z_i = lam x_i + (1 - lam) z_{i-1}.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Observations (e.g. check errors [% of span]); a NaN carries z forward.
    lam : float
        Weight 0 < lam <= 1 [-].
    z0 : float
        Starting value z_{-1} (usually the target) [same unit as x].

    Returns
    -------
    z : ndarray, shape (n,), float64
        EWMA statistic [same unit as x].

    References
    ----------
    .. [1] D. C. Montgomery, Introduction to Statistical Quality Control, 7th ed., §9.2,
       eq. (9.22).
    """
    n = x.shape[0]
    z = np.empty(n, np.float64)
    prev = np.float64(z0)
    for i in range(n):
        v = np.float64(x[i])
        if v - v == 0.0:
            prev = lam * v + (1.0 - lam) * prev
        z[i] = prev
    return z


@njit(cache=True)
def cusum(x, target, k, h):
    """Two-sided tabular CUSUM.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Observations [unit]; a NaN carries both sums forward.
    target : float
        Target value mu_0 [unit].
    k : float
        Reference value (allowance) K [unit], often half the shift to detect.
    h : float
        Decision interval H [unit].

    Returns
    -------
    c_plus, c_minus : ndarray, shape (n,), float64
        C+_i = max(0, x_i - (mu_0 + K) + C+_{i-1}), C-_i = max(0, (mu_0 - K) - x_i + C-_{i-1})
        [unit], both >= 0, starting from 0.
    first_alarm_index : int
        First i with C+_i > H or C-_i > H; -1 if none.

    References
    ----------
    .. [1] D. C. Montgomery, Introduction to Statistical Quality Control, 7th ed., §9.1.2,
       eqs. (9.2)-(9.3).
    """
    n = x.shape[0]
    cp = np.empty(n, np.float64)
    cm = np.empty(n, np.float64)
    a = 0.0
    b = 0.0
    first = -1
    for i in range(n):
        v = np.float64(x[i])
        if v - v == 0.0:
            a = max(0.0, v - (target + k) + a)
            b = max(0.0, (target - k) - v + b)
        cp[i] = a
        cm[i] = b
        if first < 0 and (a > h or b > h):
            first = i
    return cp, cm, first


@njit(cache=True)
def forecast_crossing(slope, se, intercept, t_last, limit, t_quantile):
    """When the drift trend will cross the limit in the direction of the drift.

    Parameters
    ----------
    slope, se : float
        Trend slope and its standard error [% of span / d].
    intercept : float
        Trend value at t = 0 [% of span].
    t_last : float
        Time of the last check [d].
    limit : float
        Fail limit, > 0 [% of span]; the target is +limit when slope > 0, -limit when < 0.
    t_quantile : float
        Student t quantile for the band (e.g. t_{0.975, n-2}, from scipy at the edge).

    Returns
    -------
    t_cross : float
        Time at which intercept + slope t reaches the limit [d]; NaN when the slope is 0 or
        not finite. May be <= t_last when the trend is already beyond the limit; then all
        three values are t_cross.
    t_cross_early, t_cross_late : float
        Crossing times of lines through the fitted value at t_last with slopes
        slope ± t_quantile se (the steeper gives the early time) [d]; late is +inf when the
        band includes a zero or reversed slope (may never cross).

    References
    ----------
    .. [1] Montgomery, Peck & Vining, Introduction to Linear Regression Analysis, §2.4.2
       (confidence interval on the slope).
    """
    if not (slope - slope == 0.0) or slope == 0.0 or not (intercept - intercept == 0.0):
        return _NAN, _NAN, _NAN
    target = abs(limit) if slope > 0.0 else -abs(limit)
    sgn = 1.0 if slope > 0.0 else -1.0
    t_cross = (target - intercept) / slope
    y_last = intercept + slope * t_last
    remaining = (target - y_last) * sgn  # > 0 while the limit is still ahead
    if not remaining > 0.0:
        return t_cross, t_cross, t_cross
    half = abs(t_quantile * se) if se - se == 0.0 else np.inf
    steep = abs(slope) + half
    shallow = abs(slope) - half
    early = t_last + remaining / steep
    late = t_last + remaining / shallow if shallow > 0.0 else np.inf
    return t_cross, early, late


@njit(cache=True)
def trend_alarm_kernel(offsets, t, q, passed, limit, window, min_points, horizon, min_t, reset):
    """Drift-trend early warning at every check of many series (CSR layout).

    At check i the last ``window`` finite values up to i are fitted by least squares
    (slope, its standard error); the alarm is raised when at least ``min_points`` values
    were used, check i passes, ``|slope| >= min_t · SE`` and the fitted line at t_i reaches
    ``±limit`` (in the direction of the slope) within ``(0, horizon]`` days.

    Parameters
    ----------
    offsets : int64 (nser + 1)
    t : float64
        Check times [d].
    q : float64
        Signed tested quantity [rule unit], NaN for invalid checks.
    passed : bool
    limit : float64 (nser)
        Fail limit [rule unit].
    window, min_points : int
    horizon : float
        [d]
    min_t : float
        Required slope / SE ratio [-].
    reset : float
        A step between consecutive values larger than ``reset × limit`` (an adjustment or
        recalibration) restarts the fit [-].

    Returns
    -------
    alarm : bool per check
    slope, se, days : float64 per check
        [unit/d], [unit/d], days to the crossing (NaN when not computed).

    Notes
    -----
    Times must not decrease within a series (they are the stored checks' end times in
    order); equal times are allowed and give ``sxx = 0`` (no fit, NaN) while all points
    share one time. NaN or ±inf values are skipped (an invalid check neither counts nor
    breaks the fit). A non-positive or NaN ``limit`` never alarms (no crossing target).

    References
    ----------
    Montgomery, Peck & Vining, *Introduction to Linear Regression Analysis*, §2.2-2.4.
    """
    n = q.shape[0]
    alarm = np.zeros(n, np.bool_)
    slope = np.full(n, np.nan)
    se = np.full(n, np.nan)
    days = np.full(n, np.nan)
    buf_t = np.empty(window, np.float64)
    buf_q = np.empty(window, np.float64)
    for s in range(offsets.shape[0] - 1):
        a = offsets[s]
        b = offsets[s + 1]
        m = 0
        head = 0
        prev = np.nan
        for i in range(a, b):
            v = q[i]
            if v - v != 0.0:  # NaN or +-inf: skipped
                continue
            if prev == prev and abs(v - prev) > reset * limit[s]:
                m = 0
                head = 0
            prev = v
            buf_t[head] = t[i]
            buf_q[head] = v
            head = (head + 1) % window
            if m < window:
                m += 1
            if m < min_points or m < 3:
                continue
            st = 0.0
            sq = 0.0
            for j in range(m):
                st += buf_t[j]
                sq += buf_q[j]
            tm = st / m
            qm = sq / m
            sxx = 0.0
            sxy = 0.0
            syy = 0.0
            for j in range(m):
                dx = buf_t[j] - tm
                dy = buf_q[j] - qm
                sxx += dx * dx
                sxy += dx * dy
                syy += dy * dy
            if not sxx > 0.0:
                continue
            b1 = sxy / sxx
            sse = syy - b1 * sxy
            if sse < 0.0:
                sse = 0.0
            e = np.sqrt(sse / (m - 2) / sxx)
            slope[i] = b1
            se[i] = e
            if b1 == 0.0:
                continue
            y_now = qm + b1 * (t[i] - tm)
            target = limit[s] if b1 > 0.0 else -limit[s]
            d = (target - y_now) / b1
            days[i] = d
            if passed[i] and limit[s] > 0.0 and abs(b1) >= min_t * e and d > 0.0 and d <= horizon:
                alarm[i] = True
    return alarm, slope, se, days


# =========================================================================================
# 9. 40 CFR 58 Appendix A §4.1 statistics
# =========================================================================================
@njit(cache=True)
def cfr58_d(meas, audit):
    """Percent difference of one-point QC checks, d = (meas - audit)/audit x 100.

    Parameters
    ----------
    meas : ndarray, shape (n,)
        Concentrations measured by the analyzer [channel unit].
    audit : ndarray, shape (n,)
        Audit (known) concentrations [channel unit].

    Returns
    -------
    d : ndarray, shape (n,), float64
        [% of audit]; NaN when audit == 0 or an input is not finite.

    References
    ----------
    .. [1] 40 CFR Part 58, Appendix A, §4.1.1, equation 1.
    """
    n = meas.shape[0]
    d = np.empty(n, np.float64)
    for i in range(n):
        a = np.float64(audit[i])
        d[i] = (np.float64(meas[i]) - a) / a * 100.0 if a != 0.0 else _NAN
    return d


@njit(cache=True)
def _finite_sorted(d):
    m = 0
    buf = np.empty(d.shape[0], np.float64)
    for i in range(d.shape[0]):
        v = np.float64(d[i])
        if v - v == 0.0:
            buf[m] = v
            m += 1
    return np.sort(buf[:m])


@njit(cache=True)
def cfr58_cv_ub(d, chi2_q):
    """Upper bound of the coefficient of variation of one-point QC checks.

    Parameters
    ----------
    d : ndarray, shape (n,)
        Percent differences (:func:`cfr58_d`) [%]; NaN ignored.
    chi2_q : float
        chi^2_{0.1, n-1}, the 10th percentile of chi-square with n-1 degrees of freedom
        (from scipy at the edge, n = number of finite d).

    Returns
    -------
    float
        CV_ub = sqrt((n Σd² - (Σd)²) / (n (n-1))) x sqrt((n-1) / chi2_q) [%]; NaN when n < 2.
        n Σd² - (Σd)² is computed as n Σ(d - d̄)² (same value, no cancellation).

    References
    ----------
    .. [1] 40 CFR Part 58, Appendix A, §4.1.2 (precision estimate, equation 2; equation
       numbers as recalled, the eCFR text was not retrievable in this session).
    """
    v = _finite_sorted(d)
    n = v.shape[0]
    if n < 2 or not chi2_q > 0.0:
        return _NAN
    mu = v.sum() / n
    ss = 0.0
    for x in v:
        ss += (x - mu) * (x - mu)
    return np.sqrt(n * ss / (n * (n - 1.0))) * np.sqrt((n - 1.0) / chi2_q)


@njit(cache=True)
def _percentile_linear(v, p):
    # v sorted, len >= 1; numpy's default ("linear") definition
    pos = p / 100.0 * (v.shape[0] - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, v.shape[0] - 1)
    frac = pos - lo
    return v[lo] + (v[hi] - v[lo]) * frac


@njit(cache=True)
def cfr58_bias_ub(d, t_q):
    """Upper bound of the bias of one-point QC checks, with its sign.

    Parameters
    ----------
    d : ndarray, shape (n,)
        Percent differences (:func:`cfr58_d`) [%]; NaN ignored.
    t_q : float
        t_{0.95, n-1}, the 95th percentile of Student t with n-1 degrees of freedom.

    Returns
    -------
    bias_ub : float
        AB + t_q AS / sqrt(n) [%] (eq. 3), AB = mean |d| (eq. 4), AS = sqrt((nΣ|d|² -
        (Σ|d|)²) / (n (n-1))) (eq. 5); NaN when n < 2.
    sign : int
        +1 when the 25th and 75th percentiles of d are both positive, -1 when both are
        negative, 0 otherwise (reported as ±) (percentiles with linear interpolation).

    References
    ----------
    .. [1] 40 CFR Part 58, Appendix A, §4.1.3 (bias estimate, equations 3-5) and §4.1.3.1
       (sign); equation numbers as recalled, eCFR text not retrieved in this session.
    """
    v = _finite_sorted(d)
    n = v.shape[0]
    if n < 2:
        return _NAN, 0
    ab = 0.0
    for x in v:
        ab += abs(x)
    ab /= n
    ss = 0.0
    for x in v:
        ss += (abs(x) - ab) * (abs(x) - ab)
    as_ = np.sqrt(n * ss / (n * (n - 1.0)))
    ub = ab + t_q * as_ / np.sqrt(n)
    p25 = _percentile_linear(v, 25.0)
    p75 = _percentile_linear(v, 75.0)
    sign = 0
    if p25 > 0.0 and p75 > 0.0:
        sign = 1
    elif p25 < 0.0 and p75 < 0.0:
        sign = -1
    return ub, sign


# =========================================================================================
# 10. continuous-data tests (QARTOD flags, ioos_qc semantics)
# =========================================================================================
@njit(cache=True)
def flat_line(x, tol, min_run, fail_run=0):
    """Flat-line (stuck value) test.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Readings [channel unit].
    tol : float
        Tolerance [channel unit]: a window whose range (max - min of finite values) is
        < tol is flat.
    min_run : int
        Number of preceding samples: sample i is SUSPECT when ``x[i-min_run : i+1]`` is flat
        (ioos_qc: suspect_threshold / median sampling interval).
    fail_run : int
        Same for FAIL (0: not used).

    Returns
    -------
    flags : ndarray, shape (n,), uint8
        1 pass, 3 suspect, 4 fail, 9 missing; the first ``min_run`` samples pass.

    Notes
    -----
    Runs are counted in samples, not in time: the caller converts its time thresholds with
    the channel's sampling interval (ioos_qc takes seconds and divides by the median
    interval itself). NaN and ±inf readings are missing (9) and skipped inside a window. A
    tolerance that is not > 0 (0, negative, NaN) never flags (as ioos_qc: ``range < tol``
    is then never true); ``inf`` flags every complete window; ``min_run <= 0`` and
    ``fail_run <= 0`` switch the level off.

    References
    ----------
    .. [1] IOOS QARTOD manuals, flat line test (e.g. QARTOD Manual for In-Situ Temperature
       and Salinity, v2.1, test 10); ioos_qc.qartod.flat_line_test.
    """
    n = x.shape[0]
    flags = np.full(n, QC_PASS, np.uint8)
    for run, code in ((min_run, QC_SUSPECT), (fail_run, QC_FAIL)):
        if run <= 0 or not tol > 0.0:
            continue
        for i in range(run, n):
            lo = np.inf
            hi = -np.inf
            flat = True
            for j in range(i, i - run - 1, -1):
                v = np.float64(x[j])
                if v - v == 0.0:
                    lo = min(lo, v)
                    hi = max(hi, v)
                    if hi - lo >= tol:
                        flat = False
                        break
            if flat and hi >= lo:
                flags[i] = code
    for i in range(n):
        v = np.float64(x[i])
        if not v - v == 0.0:
            flags[i] = QC_MISSING
    return flags


@njit(cache=True)
def spike(x, threshold, fail_threshold=np.inf):
    """Spike test: |x_i - (x_{i-1} + x_{i+1})/2| against thresholds.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Readings [channel unit].
    threshold : float
        SUSPECT above this [channel unit] (0 or inf: not used, as ioos_qc).
    fail_threshold : float
        FAIL above this [channel unit].

    Returns
    -------
    flags : ndarray, shape (n,), uint8
        1 pass, 3 suspect, 4 fail; 2 (not evaluated) for the first and last samples and
        where a neighbour is missing; 9 where x is missing.

    Notes
    -----
    NaN and ±inf readings are missing (9) and make their neighbours 2. A threshold that is
    not > 0 (0, negative, NaN) or is ``inf`` is not used, as in ioos_qc. Times play no
    part (equal or unordered times give the same flags): samples are taken in array order.

    References
    ----------
    .. [1] IOOS QARTOD manuals, spike test; ioos_qc.qartod.spike_test (method "average").
    """
    n = x.shape[0]
    flags = np.full(n, QC_PASS, np.uint8)
    for i in range(n):
        v = np.float64(x[i])
        if not v - v == 0.0:
            flags[i] = QC_MISSING
            continue
        if i == 0 or i == n - 1:
            flags[i] = QC_NOT_EVALUATED
            continue
        ref = (np.float64(x[i - 1]) + np.float64(x[i + 1])) / 2.0
        if not ref - ref == 0.0:
            flags[i] = QC_NOT_EVALUATED
            continue
        diff = abs(v - ref)
        if fail_threshold > 0.0 and diff > fail_threshold:
            flags[i] = QC_FAIL
        elif threshold > 0.0 and diff > threshold:
            flags[i] = QC_SUSPECT
    return flags


@njit(cache=True)
def rate_of_change(t, x, max_rate, fail_rate=np.inf):
    """Rate-of-change test: |x_i - x_{i-1}| / (t_i - t_{i-1}) against a rate.

    Parameters
    ----------
    t : ndarray, shape (n,), float64
        Times [s], increasing.
    x : ndarray, shape (n,)
        Readings [channel unit].
    max_rate : float
        SUSPECT above this rate [channel unit / s].
    fail_rate : float
        FAIL above this rate [channel unit / s].

    Returns
    -------
    flags : ndarray, shape (n,), uint8
        1 pass (also the first sample and a sample after a missing one, as ioos_qc),
        2 not evaluated (see Notes), 3 suspect, 4 fail, 9 missing.

    Notes
    -----
    Defined results on odd data, never an exception (one bad pair must not abort a
    many-channel call):

    - ``t_i <= t_{i-1}`` (a duplicated or decreasing time) or a non-finite time: the rate is
      undefined, the sample is 2 (not evaluated). ioos_qc divides anyway: a duplicated time
      gives ``inf`` (suspect) or ``nan`` (pass), a decreasing one the absolute rate.
    - NaN and ±inf readings are missing (9); the next sample then passes, as in ioos_qc.
    - A NaN threshold never flags; a negative one flags every evaluated sample.
    - ioos_qc has one threshold (suspect); ``fail_rate`` is envcal's addition.

    References
    ----------
    .. [1] IOOS QARTOD manuals, rate of change test; ioos_qc.qartod.rate_of_change_test.
    """
    n = x.shape[0]
    flags = np.full(n, QC_PASS, np.uint8)
    for i in range(n):
        v = np.float64(x[i])
        if not v - v == 0.0:
            flags[i] = QC_MISSING
            continue
        if i == 0:
            continue
        dt = np.float64(t[i]) - np.float64(t[i - 1])
        if not dt > 0.0 or dt - dt != 0.0:
            flags[i] = QC_NOT_EVALUATED
            continue
        roc = abs(v - np.float64(x[i - 1])) / dt
        if roc > fail_rate:
            flags[i] = QC_FAIL
        elif roc > max_rate:
            flags[i] = QC_SUSPECT
    return flags


@njit(cache=True)
def out_of_range(x, lo, hi, suspect_lo=-np.inf, suspect_hi=np.inf):
    """Gross range test.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Readings [channel unit].
    lo, hi : float
        Physical / sensor range [channel unit]: outside is FAIL.
    suspect_lo, suspect_hi : float
        Optional user range [channel unit]: outside is SUSPECT.

    Returns
    -------
    flags : ndarray, shape (n,), uint8
        1 pass, 3 suspect, 4 fail, 9 missing.

    Notes
    -----
    NaN and ±inf readings are missing (9), never out of range (ioos_qc flags ±inf as fail:
    envcal treats a non-finite number as no number). A NaN bound is not used (the
    comparison is false); ``lo > hi`` fails every reading.

    References
    ----------
    .. [1] IOOS QARTOD manuals, gross range test; ioos_qc.qartod.gross_range_test.
    """
    n = x.shape[0]
    flags = np.full(n, QC_PASS, np.uint8)
    for i in range(n):
        v = np.float64(x[i])
        if not v - v == 0.0:
            flags[i] = QC_MISSING
        elif v < lo or v > hi:
            flags[i] = QC_FAIL
        elif v < suspect_lo or v > suspect_hi:
            flags[i] = QC_SUSPECT
    return flags
