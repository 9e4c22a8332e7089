"""Kernels without a production caller, kept for the benchmarks (``make bench``).

envcal's verification never calls these: plateau detection uses the windowed sums of
:func:`envcal.kernels.evaluate_checks`, trends use :func:`envcal.kernels.trend_alarm_kernel`.
They stay here, tested (``tests/benchmarks/test_research_kernels.py``), as measured
alternatives: a rolling mean / standard deviation (vs bottleneck, pandas, saqc), a
many-row drift slope at memory-bandwidth parity with BLAS, and gufuncs for
``xarray.apply_ufunc(..., dask="parallelized")``.

References
----------
Welford (1962), Technometrics 4(3), 419-420 (running variance); Montgomery, Peck & Vining,
*Introduction to Linear Regression Analysis*, §2.2-2.4 (least-squares slope and its SE).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import guvectorize, njit, prange

_NAN = np.nan

__all__ = ["drift_slope", "drift_slope_gu", "drift_slope_rows", "rolling_mean_std",
           "rolling_mean_std_gu"]


# =========================================================================================
# 1. rolling mean and standard deviation
# =========================================================================================
@njit(cache=True)
def _block_len(window):
    return window * max(1, 1024 // window)


@njit(cache=True, error_model="numpy")
def _rolling_block(x, b, blk, window, min_count, ddof, mean_out, std_out, cnt_buf):
    # General (NaN-aware) path for one block x[b : b+blk] (blk a multiple of window, ~1024
    # samples): sums of d = x - K over the trailing window, with the anchor K and the sums
    # re-made from scratch for every block, so rounding never accumulates over more than one
    # block, large offsets cancel before squaring, and blocks are independent (parallel and
    # serial runs give identical bits).
    n = x.shape[0]
    e = min(b + blk, n)
    k_anchor = 0.0
    for j in range(b, e):
        v = np.float64(x[j])
        if v - v == 0.0:
            k_anchor = v
            break
    s1 = 0.0
    s2 = 0.0
    cnt = 0.0
    for j in range(max(0, b - window), b):
        v = np.float64(x[j])
        if v - v == 0.0:
            d = v - k_anchor
            s1 += d
            s2 += d * d
            cnt += 1.0
    for i in range(b, e):
        # one dependent add per accumulator and sample: new minus old is formed off the chain
        v = np.float64(x[i])
        ok = v - v == 0.0
        d = v - k_anchor if ok else 0.0
        c_in = 1.0 if ok else 0.0
        j = i - window
        d_out = 0.0
        c_out = 0.0
        if j >= 0:
            w = np.float64(x[j])
            ok_out = w - w == 0.0
            d_out = w - k_anchor if ok_out else 0.0
            c_out = 1.0 if ok_out else 0.0
        s1 += d - d_out
        s2 += d * d - d_out * d_out
        cnt += c_in - c_out
        mean_out[i] = s1
        std_out[i] = s2
        cnt_buf[i - b] = cnt
    # finish: a separate, vectorisable loop
    mc = np.float64(max(min_count, 1))
    dd = np.float64(ddof)
    mo = mean_out[b:e]
    so = std_out[b:e]
    for i in range(e - b):
        c = cnt_buf[i]
        a1 = mo[i]
        m = a1 / c
        var = (so[i] - a1 * m) / (c - dd)
        var = max(var, 0.0)
        ok = c >= mc
        ok2 = ok & (c > dd)
        mo[i] = k_anchor + m if ok else _NAN
        so[i] = np.sqrt(var) if ok2 else _NAN


@njit(cache=True, error_model="numpy")
def _rolling_block_dense(x, b, e, window, inv_w, inv_wd, mean_out, std_out):
    # Fast path for a block whose window is always full (b >= window): no masks, no count,
    # two samples per step on the dependency chain (the in-minus-out terms of a pair are
    # summed off the chain), and multiplications by 1/window and 1/(window - ddof) instead of
    # divisions. Any NaN/inf in x[b-window : e] leaves the final sums non-finite: then the
    # caller redoes the block with the NaN-aware :func:`_rolling_block` (returns False).
    k = np.float64(x[b])
    xs = x[b - window:b]
    s1 = 0.0
    s2 = 0.0
    for j in range(window):
        d = np.float64(xs[j]) - k
        s1 += d
        s2 += d * d
    xi = x[b:e]
    xo = x[b - window:e - window]
    mo = mean_out[b:e]
    so = std_out[b:e]
    m = e - b
    m2 = m - (m & 1)
    for j in range(0, m2, 2):
        di0 = np.float64(xi[j]) - k
        do0 = np.float64(xo[j]) - k
        di1 = np.float64(xi[j + 1]) - k
        do1 = np.float64(xo[j + 1]) - k
        p1 = di0 - do0
        p2 = di0 * di0 - do0 * do0
        q1 = p1 + (di1 - do1)
        q2 = p2 + (di1 * di1 - do1 * do1)
        mo[j] = s1 + p1
        so[j] = s2 + p2
        s1 += q1
        s2 += q2
        mo[j + 1] = s1
        so[j + 1] = s2
    if m2 < m:
        di = np.float64(xi[m2]) - k
        do = np.float64(xo[m2]) - k
        s1 += di - do
        s2 += di * di - do * do
        mo[m2] = s1
        so[m2] = s2
    if not (s1 - s1 == 0.0 and s2 - s2 == 0.0):
        return False
    for j in range(m):
        a1 = mo[j]
        mm = a1 * inv_w
        var = (so[j] - a1 * mm) * inv_wd
        mo[j] = k + mm
        so[j] = np.sqrt(max(var, 0.0))
    return True


@njit(cache=True)
def _rolling_one_block(x, b, blk, window, min_count, ddof, mean_out, std_out, cnt_buf):
    e = min(b + blk, x.shape[0])
    if b >= window and window > ddof and min_count <= window:
        inv_w = 1.0 / np.float64(window)
        inv_wd = 1.0 / np.float64(window - ddof)
        if _rolling_block_dense(x, b, e, window, inv_w, inv_wd, mean_out, std_out):
            return
    _rolling_block(x, b, blk, window, min_count, ddof, mean_out, std_out, cnt_buf)


@njit(cache=True)
def _rolling_serial(x, window, min_count, ddof, mean_out, std_out):
    if window < 1:
        raise ValueError("window must be >= 1")
    blk = _block_len(window)
    cnt_buf = np.empty(blk, np.float64)
    for b in range(0, x.shape[0], blk):
        _rolling_one_block(x, b, blk, window, min_count, ddof, mean_out, std_out, cnt_buf)


@njit(cache=True, parallel=True)
def _rolling_parallel(x, window, min_count, ddof, mean_out, std_out):
    if window < 1:
        raise ValueError("window must be >= 1")
    n = x.shape[0]
    blk = _block_len(window)
    nblocks = (n + blk - 1) // blk
    # many small chunks handed out dynamically (chunk size 1, set by the caller): a core
    # that is busy elsewhere slows the run down by its share only
    nchunks = min(nblocks, 256)
    for c in prange(nchunks):
        cnt_buf = np.empty(blk, np.float64)
        lo = nblocks * c // nchunks
        hi = nblocks * (c + 1) // nchunks
        for bi in range(lo, hi):
            _rolling_one_block(x, bi * blk, blk, window, min_count, ddof, mean_out, std_out,
                               cnt_buf)


def rolling_mean_std(x: np.ndarray, window: int, min_count: int = 1, ddof: int = 1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Trailing rolling mean and standard deviation, NaN-aware, in one pass.

    Parameters
    ----------
    x : ndarray, shape (n,), float32 or float64
        Values [channel unit]; NaN/inf are gaps and are not counted.
    window : int
        Window length [samples], >= 1; the window ending at ``i`` is ``x[i-window+1 : i+1]``.
    min_count : int
        Minimum number of finite samples in the window, else NaN.
    ddof : int
        Delta degrees of freedom of the standard deviation (1: sample standard deviation).

    Returns
    -------
    mean, std : ndarray, shape (n,), float64
        Mean [channel unit] and standard deviation [channel unit]; ``std`` is NaN where the
        finite count is <= ``ddof``.

    Notes
    -----
    Jitted kernels: ``_rolling_serial`` / ``_rolling_parallel`` (blocks are independent, so
    both give identical bits; the parallel one hands blocks out dynamically). Sums of
    deviations from an anchor value re-chosen every block of about 1024 samples
    (shifted-data algorithm, Chan, Golub & LeVeque 1983), accumulated in float64. A block
    whose window is always full takes a branch-free path (two samples per step on the
    dependency chain, multiplications by 1/window and 1/(window - ddof) instead of
    divisions); a NaN/inf leaves its sums non-finite and the block is redone by the NaN-aware
    path. Where the true std is ~0 inside data of range D the absolute error is about
    3e-7 D (as for any add/remove algorithm).

    References
    ----------
    .. [1] T. F. Chan, G. H. Golub, R. J. LeVeque, "Algorithms for computing the sample
       variance", The American Statistician 37 (1983) 242-247.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    n = x.shape[0]
    mean = np.empty(n, np.float64)
    std = np.empty(n, np.float64)
    # a Python-level dispatcher: the parallel kernel called from inside another jitted
    # function ran 2.5x slower (measured), so allocation and dispatch stay here.
    if n >= 1 << 16:
        with numba.parallel_chunksize(1):
            _rolling_parallel(x, int(window), int(min_count), int(ddof), mean, std)
    else:
        _rolling_serial(x, int(window), int(min_count), int(ddof), mean, std)
    return mean, std



@njit(cache=True)
def drift_slope(t, y):
    """Least-squares drift slope of a channel's check history, NaN-aware.

    Parameters
    ----------
    t : ndarray, shape (n,)
        Check times [d].
    y : ndarray, shape (n,)
        Errors [% of span] (or any quantity [q]); pairs with a non-finite member are gaps.

    Returns
    -------
    slope : float
        [% of span / d] ([q/d]); NaN with fewer than 2 points or no spread in t.
    se_slope : float
        Standard error of the slope sqrt(SSE/(n-2)/Sxx) [% of span / d]; NaN when n < 3.
    intercept : float
        Fitted value at t = 0 [% of span].
    n : int
        Number of points used.

    References
    ----------
    .. [1] D. C. Montgomery, E. A. Peck, G. G. Vining, Introduction to Linear Regression
       Analysis, 5th ed., §2.2-2.3 (OLS slope and its standard error).
    """
    c = 0
    st = 0.0
    sy = 0.0
    for i in range(t.shape[0]):
        a = np.float64(t[i])
        b = np.float64(y[i])
        if a - a == 0.0 and b - b == 0.0:
            st += a
            sy += b
            c += 1
    if c < 2:
        return _NAN, _NAN, _NAN, c
    tm = st / c
    ym = sy / c
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for i in range(t.shape[0]):
        a = np.float64(t[i])
        b = np.float64(y[i])
        if a - a == 0.0 and b - b == 0.0:
            da = a - tm
            db = b - ym
            sxx += da * da
            sxy += da * db
            syy += db * db
    if not sxx > 0.0:
        return _NAN, _NAN, _NAN, c
    slope = sxy / sxx
    intercept = ym - slope * tm
    se = _NAN
    if c > 2:
        sse = syy - slope * sxy
        if sse < 0.0:
            sse = 0.0
        se = np.sqrt(sse / (c - 2) / sxx)
    return slope, se, intercept, c


_FASTMATH_SUMS = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FASTMATH_SUMS)
def _t_grid(t):
    # The time grid of drift_slope_rows, in three vectorised passes over t (all finite,
    # checked by the caller): the centre tshift (mean of t), the sums of tc = t - tshift and
    # tc², and whether t is equally spaced to its rounding (|tc_j - (t0 + dt j)| <= 4 eps
    # max|t| for all j; max|t| of such a grid is at an end). No array is allocated: the
    # kernels form tc on the fly. Float64 throughout.
    p = t.shape[0]
    m = np.uint64(p)
    s = 0.0
    for j in range(m):
        s += t[j]
    tshift = s / p if p > 0 else 0.0
    st = 0.0
    stt = 0.0
    for j in range(m):
        a = t[j] - tshift
        st += a
        stt += a * a
    if p < 2:
        return tshift, st, stt, 0.0, 0.0, False
    t0 = t[0] - tshift
    dt = ((t[p - 1] - tshift) - t0) / (p - 1)
    tol = 4.0 * np.finfo(np.float64).eps * max(abs(t[0]), abs(t[p - 1]))
    nbad = 0
    jf = 0.0
    for j in range(m):  # a count, not an early exit, so that the pass vectorises
        nbad += abs((t[j] - tshift) - (t0 + dt * jf)) > tol
        jf += 1.0
    return tshift, st, stt, t0, dt, nbad == 0


@njit(cache=True, fastmath=_FASTMATH_SUMS)
def _row_sums(t, tshift, st_all, stt_all, row):
    # NaN-aware pass over one row (masks, not branches; unsigned indices so it needs no
    # negative-index wrap-around); the sums of tc = t - tshift over all columns are
    # precomputed, and only a row with gaps takes a second pass to subtract the tc sums of
    # its gaps. float64 accumulation throughout.
    p = np.uint64(row.shape[0])
    k = 0.0
    for j in range(p):
        v = np.float64(row[j])
        if v - v == 0.0:
            k = v
            break
    nbad = 0.0
    sy = 0.0
    sty = 0.0
    syy = 0.0
    for j in range(p):
        v = np.float64(row[j])
        ok = v - v == 0.0
        d = v - k if ok else 0.0
        nbad += 0.0 if ok else 1.0
        sy += d
        sty += (t[j] - tshift) * d
        syy += d * d
    n = row.shape[0] - nbad
    st = st_all
    stt = stt_all
    if nbad > 0.0:
        for j in range(p):
            v = np.float64(row[j])
            if not v - v == 0.0:
                a = t[j] - tshift
                st -= a
                stt -= a * a
    return n, st, stt, sy, sty, syy, k


@njit(cache=True, fastmath=_FASTMATH_SUMS)
def _quad_sums_tc(t, tshift, r0, r1, r2, r3, k, out):
    # Branch-free pass over four rows at once: each t load (centred in-register) serves four
    # rows, and the rows give independent dependency chains; float32 samples are widened
    # in-register. A NaN/inf anywhere in a row leaves that row's sums non-finite (the caller
    # then redoes the row with :func:`_row_sums`). out[3q : 3q+3] = Σd, Σ tc d, Σd² of row
    # q, d = y - k[q], tc = t - tshift.
    a0 = b0 = c0 = a1 = b1 = c1 = a2 = b2 = c2 = a3 = b3 = c3 = 0.0
    k0, k1, k2, k3 = k[0], k[1], k[2], k[3]
    for j in range(np.uint64(r0.shape[0])):
        tt = t[j] - tshift
        d0 = np.float64(r0[j]) - k0
        d1 = np.float64(r1[j]) - k1
        d2 = np.float64(r2[j]) - k2
        d3 = np.float64(r3[j]) - k3
        a0 += d0
        b0 += tt * d0
        c0 += d0 * d0
        a1 += d1
        b1 += tt * d1
        c1 += d1 * d1
        a2 += d2
        b2 += tt * d2
        c2 += d2 * d2
        a3 += d3
        b3 += tt * d3
        c3 += d3 * d3
    out[0], out[1], out[2] = a0, b0, c0
    out[3], out[4], out[5] = a1, b1, c1
    out[6], out[7], out[8] = a2, b2, c2
    out[9], out[10], out[11] = a3, b3, c3


@njit(cache=True, fastmath=_FASTMATH_SUMS)
def _quad_sums_lin(r0, r1, r2, r3, k, out):
    # As :func:`_quad_sums_tc` for equally spaced times, without reading t: the column index
    # j (exact in float64) is generated in-register and out[3q+1] = Σ j d.
    a0 = b0 = c0 = a1 = b1 = c1 = a2 = b2 = c2 = a3 = b3 = c3 = 0.0
    k0, k1, k2, k3 = k[0], k[1], k[2], k[3]
    jf = 0.0
    for j in range(np.uint64(r0.shape[0])):
        t = jf
        jf += 1.0
        d0 = np.float64(r0[j]) - k0
        d1 = np.float64(r1[j]) - k1
        d2 = np.float64(r2[j]) - k2
        d3 = np.float64(r3[j]) - k3
        a0 += d0
        b0 += t * d0
        c0 += d0 * d0
        a1 += d1
        b1 += t * d1
        c1 += d1 * d1
        a2 += d2
        b2 += t * d2
        c2 += d2 * d2
        a3 += d3
        b3 += t * d3
        c3 += d3 * d3
    out[0], out[1], out[2] = a0, b0, c0
    out[3], out[4], out[5] = a1, b1, c1
    out[6], out[7], out[8] = a2, b2, c2
    out[9], out[10], out[11] = a3, b3, c3


@njit(cache=True)
def _first_finite(row):
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        if v - v == 0.0:
            return v
    return 0.0


@njit(cache=True)
def _finish_rows(n, st, stt, sy, sty, syy, k, tshift):
    if n < 2.0:
        return _NAN, _NAN, _NAN
    sxx = stt - st * st / n
    if not sxx > 0.0:
        return _NAN, _NAN, _NAN
    sxy = sty - st * sy / n
    slope = sxy / sxx
    # intercept at t = 0 (original time origin): ybar - slope * tbar
    intercept = (k + sy / n) - slope * (tshift + st / n)
    se = _NAN
    if n > 2.0:
        sse = (syy - sy * sy / n) - slope * sxy
        if sse < 0.0:
            sse = 0.0
        se = np.sqrt(sse / (n - 2.0) / sxx)
    return slope, se, intercept


@njit(cache=True)
def _finish_one_row(t, tshift, st_all, stt_all, row, k, sy, sty, syy, slope, se, icpt, n, i):
    p = np.float64(row.shape[0])
    if sy - sy == 0.0 and sty - sty == 0.0 and syy - syy == 0.0:
        nn, st, stt = p, st_all, stt_all
    else:  # a gap (or inf) in the row: the NaN-aware pass
        nn, st, stt, sy, sty, syy, k = _row_sums(t, tshift, st_all, stt_all, row)
    slope[i], se[i], icpt[i] = _finish_rows(nn, st, stt, sy, sty, syy, k, tshift)
    n[i] = np.int64(nn)


@njit(cache=True, parallel=True)
def _drift_rows_kernel(t, y2d):
    # t: float64, all finite (checked by drift_slope_rows). For equally spaced times (to the
    # rounding of t) tc_j = t0 + dt j, and Σ tc d is formed as t0 Σd + dt Σ j d without
    # reading t (the dense pass then reads Y only).
    r = y2d.shape[0]
    tshift, st_all, stt_all, t0, dt, lin = _t_grid(t)
    slope = np.empty(r, np.float64)
    se = np.empty(r, np.float64)
    icpt = np.empty(r, np.float64)
    n = np.empty(r, np.int64)
    for h in prange((r + 3) // 4):
        out = np.empty(12, np.float64)
        kk = np.empty(4, np.float64)
        idx = np.empty(4, np.int64)
        for q in range(4):
            idx[q] = min(4 * h + q, r - 1)  # a short last group repeats its last row
            kk[q] = _first_finite(y2d[idx[q]])
        if lin:
            _quad_sums_lin(y2d[idx[0]], y2d[idx[1]], y2d[idx[2]], y2d[idx[3]], kk, out)
        else:
            _quad_sums_tc(t, tshift, y2d[idx[0]], y2d[idx[1]], y2d[idx[2]], y2d[idx[3]], kk,
                          out)
        for q in range(4):
            if q > 0 and idx[q] == idx[q - 1]:
                break
            sy = out[3 * q]
            sty = out[3 * q + 1]
            if lin:
                sty = t0 * sy + dt * sty
            _finish_one_row(t, tshift, st_all, stt_all, y2d[idx[q]], kk[q], sy, sty,
                            out[3 * q + 2], slope, se, icpt, n, idx[q])
    return slope, se, icpt, n


def drift_slope_rows(t: np.ndarray, Y: np.ndarray):
    """:func:`drift_slope` for many channels at once (rows of ``Y``), in one pass over ``Y``.

    Parameters
    ----------
    t : ndarray, shape (p,)
        Times shared by all rows [d], all finite.
    Y : ndarray, shape (r, p), float32 or float64
        One channel per row [% of span]; NaN are gaps.

    Returns
    -------
    slope, se_slope, intercept : ndarray, shape (r,), float64
        As :func:`drift_slope` [% of span / d], [% of span / d], [% of span].
    n : ndarray, shape (r,), int64
        Points used per row.

    Notes
    -----
    Single pass with t centred on its mean (in-register, no copy of t; the grid statistics
    take three vectorised passes over t) and each row shifted by its first finite value,
    float64 accumulation, rows processed in parallel (independent, so deterministic). Four
    rows are read together in a branch-free, vectorised pass (each t load serves four rows;
    for equally spaced t, to the rounding of t, t is not read at all: Σ t d = t0 Σ d +
    dt Σ j d); a row whose sums come out non-finite (a gap or an inf) is redone by a
    NaN-aware pass, so rows with gaps cost two passes.

    References
    ----------
    .. [1] Montgomery, Peck & Vining, Introduction to Linear Regression Analysis, §2.2-2.3.
    """
    Y = np.asarray(Y)
    if Y.dtype not in (np.float32, np.float64):
        Y = Y.astype(np.float64)
    Y = np.ascontiguousarray(Y)
    t = np.ascontiguousarray(t, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != t.shape[0]:
        raise ValueError(f"Y {Y.shape} must be 2-D with as many columns as t {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("t must be finite (gaps are NaN in Y)")
    with numba.parallel_chunksize(1):
        return _drift_rows_kernel(t, Y)



# =========================================================================================
# 11. gufuncs for xarray.apply_ufunc(..., dask="parallelized")
# =========================================================================================
@guvectorize(["void(float64[:], int64, int64, int64, float64[:], float64[:])",
              "void(float32[:], int64, int64, int64, float64[:], float64[:])"],
             "(n),(),(),()->(n),(n)", cache=True)
def rolling_mean_std_gu(x, window, min_count, ddof, mean, std):  # pragma: no cover - numba
    """Generalised ufunc of :func:`rolling_mean_std` over the last axis.

    Call as ``mean, std = rolling_mean_std_gu(x, window, min_count, ddof)``; with xarray:
    ``xr.apply_ufunc(rolling_mean_std_gu, da, window, 1, 1, input_core_dims=[["time"], [],
    [], []], output_core_dims=[["time"], ["time"]], dask="parallelized",
    output_dtypes=[float, float])`` (``time`` must be one chunk).

    References
    ----------
    .. [1] Chan, Golub & LeVeque (1983), see :func:`rolling_mean_std`.
    """
    _rolling_serial(x, window, min_count, ddof, mean, std)


@guvectorize(["void(float64[:], float64[:], float64[:], float64[:], float64[:], float64[:])",
              "void(float64[:], float32[:], float64[:], float64[:], float64[:], float64[:])"],
             "(n),(n)->(),(),(),()", cache=True)
def drift_slope_gu(t, y, slope, se, intercept, n):  # pragma: no cover - numba
    """Generalised ufunc of :func:`drift_slope` over the last axis.

    Returns ``slope, se_slope, intercept, n`` (n as float64) [% of span / d], [% of span / d],
    [% of span], [-].

    References
    ----------
    .. [1] Montgomery, Peck & Vining, Introduction to Linear Regression Analysis, §2.2-2.3.
    """
    a, b, c, k = drift_slope(t, y)
    slope[0] = a
    se[0] = b
    intercept[0] = c
    n[0] = k
