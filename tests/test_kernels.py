"""Kernels of verification: kernel vs ``.py_func`` vs the numpy reference, worked examples
computed by hand (arithmetic in the comments), boundaries exactly at a limit, NaN gaps,
float32, empty and length-1 inputs, ioos_qc agreement, and the gufuncs under xarray + dask."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from envcal import kernels as K
from envcal import kernels_ref as R

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _series(min_size=0, max_size=80, dtype=np.float64):
    elems = st.one_of(st.floats(-1e3, 1e3, allow_nan=False, width=32), st.just(np.nan))
    return arrays(dtype, st.integers(min_size, max_size), elements=elems)


def _same(a, b, rtol=1e-9, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


# --------------------------------------------------------------------------- environment
def test_numba_cache_dir_set_by_test_setup_not_by_import():
    d = os.environ.get("NUMBA_CACHE_DIR")
    assert d and os.access(d, os.W_OK)  # tests/conftest.py: envcal.numba_cache.configure()
    assert not hasattr(K, "NUMBA_CACHE_DIR")
    code = ("import os, sys; os.environ.pop('NUMBA_CACHE_DIR', None); before = dict(os.environ); "
            "import envcal.kernels; print(dict(os.environ) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# --------------------------------------------------------------------------- rolling


# --------------------------------------------------------------------------- plateau
def _bracket_plateau(t, x, window, max_std, max_slope, got):
    """The kernel's answer must lie between the reference with slightly tighter and slightly
    looser bounds (rounding may flip a window that sits exactly on a bound)."""
    tight = R.find_plateau(t, x, window, max_std * (1 - 1e-7), max_slope * (1 - 1e-7))
    loose = R.find_plateau(t, x, window, max_std * (1 + 1e-7) + 1e-12,
                           max_slope * (1 + 1e-7) + 1e-12)
    if got == (-1, -1):
        assert tight == (-1, -1)
        return
    assert loose != (-1, -1) and got[1] == loose[1]
    assert loose[0] <= got[0]
    if tight != (-1, -1):
        assert got[0] <= tight[0]


@SETTINGS
@given(x=_series(0, 60), window=st.integers(1, 8), max_std=st.floats(0.01, 500),
       max_slope=st.floats(0.001, 50), f32=st.booleans())
def test_find_plateau_matches_reference(x, window, max_std, max_slope, f32):
    if f32:
        x = x.astype(np.float32)
    t = np.arange(x.size, dtype=np.float64) * 10.0
    got = K.find_plateau(t, x, window, max_std, max_slope)
    assert got == K.find_plateau.py_func(t, x, window, max_std, max_slope)
    _bracket_plateau(t, x, window, max_std, max_slope, got)


def test_find_plateau_worked_step_response():
    # zero air 0 for 3 samples, then the span gas: 50, 90, 99, then 100 +- 0.1 for 8 samples;
    # window 4, max_std 0.2, max_slope 0.01 /s at 10 s sampling: the first stable window is
    # [100.1, 99.9, 100.0, 100.1] starting at index 6; the window starting at 5 contains 99
    # (std 0.55 > 0.2), so the plateau is [6, 14)
    x = np.array([0, 0, 0, 50, 90, 99, 100.1, 99.9, 100.0, 100.1, 99.9, 100.0, 100.1, 99.9])
    t = np.arange(x.size) * 10.0
    assert K.find_plateau(t, x, 4, 0.2, 0.01) == (6, 14)
    # a trailing gap does not end the plateau early: i1 is one past the last finite sample
    xg = np.append(x, np.nan)
    assert K.find_plateau(np.arange(xg.size) * 10.0, xg, 4, 0.2, 0.01) == (6, 14)
    # still rising at the end: no plateau
    assert K.find_plateau(t[:6], x[:6], 3, 0.2, 0.01) == (-1, -1)
    # fewer finite samples than the window
    assert K.find_plateau(t[:3], x[:3], 4, 1.0, 1.0) == (-1, -1)
    assert K.find_plateau(np.empty(0), np.empty(0), 4, 1.0, 1.0) == (-1, -1)


def test_find_plateau_slope_bound_rejects_slow_drift():
    # a perfectly smooth ramp of 0.02 units/s has zero noise but slope 0.02 > 0.01
    t = np.arange(30) * 10.0
    x = 100 + 0.02 * t
    assert K.find_plateau(t, x, 5, 10.0, 0.01) == (-1, -1)
    assert K.find_plateau(t, x, 5, 10.0, 0.03) == (0, 30)


# --------------------------------------------------------------------------- T90, stats
def test_t90_worked_example():
    # pre-step 0 at t=0; plateau mean 100 -> 90 % of the change is 90; first sample >= 90
    # is x=90 at t=40 s -> T90 = 40 s
    x = np.array([0, 20, 50, 80, 90, 99, 100, 100, 100.0])
    t = np.arange(x.size) * 10.0
    assert K.t90(t, x, 0, 6, 9) == 40.0
    assert K.t90.py_func(t, x, 0, 6, 9) == R.t90(t, x, 0, 6, 9) == 40.0
    # falling step 100 -> 0 (zero check): 90 % of -100 reached at x <= 10
    xd = 100 - x
    assert K.t90(t, xd, 0, 6, 9) == 40.0
    # never reached (plateau above all earlier samples is impossible), missing plateau, no change
    assert math.isnan(K.t90(t, x, 0, -1, -1))
    assert math.isnan(K.t90(t, np.full(5, 3.0), 0, 2, 5))
    assert math.isnan(K.t90(t[:1], x[:1], 0, 0, 1))


def test_plateau_stats_worked_example():
    # [10, 12, NaN, 14]: n=3, mean 12, sd sqrt((4+0+4)/2) = 2, u = 2/sqrt(3) = 1.1547
    n, mean, sd, u = K.plateau_stats(np.array([0.0, 10, 12, np.nan, 14]), 1, 5)
    assert (n, mean, sd) == (3, 12.0, 2.0)
    assert u == pytest.approx(2 / math.sqrt(3), rel=1e-15)
    n, mean, sd, u = K.plateau_stats(np.array([5.0]), 0, 1)
    assert n == 1 and mean == 5.0 and math.isnan(sd) and math.isnan(u)
    assert K.plateau_stats(np.array([5.0]), -1, -1)[0] == 0


@SETTINGS
@given(x=_series(0, 40), a=st.integers(0, 40), b=st.integers(0, 40))
def test_plateau_stats_matches_reference(x, a, b):
    got = K.plateau_stats(x, a, b)
    _same(got, K.plateau_stats.py_func(x, a, b))
    _same(got, R.plateau_stats(x, a, b), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- errors
def test_check_errors_worked_examples():
    # span check 198.0 vs C = 200 on span 200: err_abs = -2.0; relative -2/200*100 = -1.0 %;
    # CE = -2/200*100 = -1.0 % F.S.; previous span mean 199.0 -> drift (198-199)/200*100 = -0.5
    # E_n: u_meas 0.3, u_ref 0.4 -> U 0.6, 0.8 -> sqrt(0.36 + 0.64) = 1.0 -> E_n = -2.0
    a, r, f, d, e = K.check_errors(*(np.array([v]) for v in (198.0, 200.0, 200.0, 0.3, 0.4,
                                                              199.0)))
    assert a[0] == -2.0 and r[0] == -1.0 and f[0] == -1.0 and d[0] == -0.5
    assert e[0] == pytest.approx(-2.0, rel=1e-15)
    # zero check: C = 0 -> relative error NaN; no previous check -> drift NaN; no
    # uncertainty at all -> E_n NaN; zero span -> % F.S. NaN
    a, r, f, d, e = K.check_errors(*(np.array([v]) for v in (0.5, 0.0, 0.0, 0.0, 0.0,
                                                              np.nan)))
    assert a[0] == 0.5 and all(math.isnan(v[0]) for v in (r, f, d, e))


@SETTINGS
@given(n=st.integers(0, 20), seed=st.integers(0, 2**16))
def test_check_errors_matches_reference(n, seed):
    rng = np.random.default_rng(seed)
    cols = [rng.normal(100, 5, n), rng.choice([0.0, 100.0, 50.0], n),
            rng.choice([0.0, 200.0], n), np.abs(rng.normal(0, 1, n)) * rng.integers(0, 2, n),
            np.abs(rng.normal(0, 1, n)) * rng.integers(0, 2, n),
            np.where(rng.random(n) < 0.3, np.nan, rng.normal(100, 5, n))]
    got = K.check_errors(*cols)
    for g, p, r in zip(got, K.check_errors.py_func(*cols), R.check_errors(*cols), strict=True):
        _same(g, p)
        _same(g, r, rtol=1e-12)


def test_iso_guide33_bias_worked_example_and_boundary():
    # x̄ = 10.2, C = 10.0, s = 0.3, n = 9, u_C = 0.08:
    # s²/n = 0.09/9 = 0.01; u_C² = 0.0064; limit = 2 sqrt(0.0164) = 0.256125; 0.2 <= limit
    delta, limit, ok = K.iso_guide33_bias(10.2, 0.3, 9, 0.08, 10.0)
    assert delta == pytest.approx(0.2, abs=1e-12) and ok
    assert limit == pytest.approx(0.25612496949731395, rel=1e-12)
    # exactly at the limit: s = 0, u_C = 0.5 -> limit 1.0, |x̄ - C| = 1.0 -> ok
    assert K.iso_guide33_bias(1.0, 0.0, 4, 0.5) == (1.0, 1.0, True)
    assert K.iso_guide33_bias(11.0, 0.3, 9, 0.08, 10.0)[2] is False
    assert K.iso_guide33_bias(10.2, np.nan, 1, 0.08, 10.0)[2] is False
    assert K.iso_guide33_bias.py_func(10.2, 0.3, 9, 0.08, 10.0) == pytest.approx(
        R.iso_guide33_bias(10.2, 0.3, 9, 0.08, 10.0))


# --------------------------------------------------------------------------- batch evaluation
def _batch(m=300, w=30, seed=3):
    rng = np.random.default_rng(seed)
    t = np.tile(np.arange(w) * 60.0, (m, 1))
    level = rng.choice([0.0, 200.0], m)
    resp = level[:, None] * (1 - np.exp(-np.arange(w) / 3.0))
    noise = rng.choice([0.05, 0.5, 30.0], m)[:, None]
    x = resp + rng.normal(0, 1, (m, w)) * noise
    x[rng.random((m, w)) < 0.05] = np.nan
    n_valid = rng.integers(0, w + 1, m)
    x[np.arange(w)[None, :] >= n_valid[:, None]] = -999.0  # padding must be ignored
    return dict(values2d=x, times2d=t, n_valid=n_valid, ref=level,
                span=np.full(m, 250.0), u_ref=np.full(m, 1.0),
                prev_mean=np.where(rng.random(m) < 0.5, np.nan, level + 1.0),
                warn_limit=np.where(rng.random(m) < 0.3, np.nan, 1.0),
                fail_limit=np.full(m, 2.5), quantity_code=rng.integers(0, 5, m),
                window=5, max_std=np.full(m, 2.0), max_slope=np.full(m, 0.05), min_n=4)


def test_evaluate_checks_matches_reference_and_py_func():
    b = _batch()
    got = K.evaluate_checks(**b)
    ref = R.evaluate_checks(**b)
    for name, g, r in zip(K.CheckEvaluation._fields, got, ref, strict=True):
        if name in ("i0", "i1", "n", "verdict", "bias_ok"):
            assert np.array_equal(g, r), name
        else:
            _same(g, r, rtol=1e-9, atol=1e-9)
    assert set(np.unique(got.verdict)) >= {0, 1, 2, 3, 4, 5}
    small = {k: (v[:20] if isinstance(v, np.ndarray) else v) for k, v in b.items()}
    small["values2d"], small["times2d"] = b["values2d"][:20], b["times2d"][:20]
    args = K.evaluate_checks.__code__.co_varnames[:14]
    kern = K.evaluate_checks(**small)
    pyf = K._evaluate_checks_kernel.py_func(
        *(np.ascontiguousarray(np.broadcast_to(small[a], (20,))) if a not in
          ("values2d", "times2d", "window", "min_n") else small[a] for a in args))
    for g, p in zip(kern, pyf, strict=True):
        _same(g, p)


def test_evaluate_checks_float32_and_deterministic():
    b = _batch(m=200, seed=11)
    a = K.evaluate_checks(**b)
    again = K.evaluate_checks(**b)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, again, strict=True))
    b32 = dict(b, values2d=b["values2d"].astype(np.float32))
    c = K.evaluate_checks(**b32)
    assert c.mean.dtype == np.float64
    ok = np.isfinite(a.mean) & np.isfinite(c.mean)
    _same(c.mean[ok], a.mean[ok], rtol=1e-5, atol=1e-3)


def _one(values, **kw):
    values = np.asarray(values, dtype=np.float64)
    params = dict(values2d=values[None, :], times2d=np.arange(values.size)[None, :] * 60.0,
                  n_valid=values.size, ref=200.0, span=200.0, u_ref=0.5, prev_mean=np.nan,
                  warn_limit=np.nan, fail_limit=2.5, quantity_code=K.Q_ERR_FS_PCT, window=3,
                  max_std=1.0, max_slope=0.01, min_n=3)
    params.update(kw)
    return K.evaluate_checks(**params)


def test_evaluate_checks_boundary_exactly_at_limit_passes():
    # plateau mean 205 vs C 200 on span 200: CE = 5/200*100 = 2.5 % F.S. == limit -> pass
    r = _one([205.0] * 6)
    assert r.err_fs_pct[0] == 2.5 and r.verdict[0] == K.VERDICT_PASS
    # 206 -> 3.0 % > 2.5 -> fail; with a warning level 2.0 and fail 3.0 -> warn
    assert _one([206.0] * 6).verdict[0] == K.VERDICT_FAIL
    assert _one([206.0] * 6, warn_limit=2.0, fail_limit=3.0).verdict[0] == K.VERDICT_WARN
    # 204 with warn 2.0: CE 2.0 == warn limit -> pass
    assert _one([204.0] * 6, warn_limit=2.0, fail_limit=3.0).verdict[0] == K.VERDICT_PASS
    # rounding: 0.1 + 0.2 style results just above the limit still pass (LIMIT_RTOL)
    r = _one([200.3] * 6, ref=200.0, span=100.0, fail_limit=0.3)
    assert r.verdict[0] == K.VERDICT_PASS


def test_evaluate_checks_invalid_verdicts():
    assert _one([200.0, 200.0]).verdict[0] == K.VERDICT_INVALID_TOO_SHORT      # 2 < window 3
    assert _one([200.0] * 5, min_n=8).verdict[0] == K.VERDICT_INVALID_TOO_SHORT
    noisy = [190.0, 210.0] * 5
    assert _one(noisy).verdict[0] == K.VERDICT_INVALID_NO_PLATEAU
    # drift without a previous check is not computable
    r = _one([200.0] * 6, quantity_code=K.Q_DRIFT_FS_PCT)
    assert r.verdict[0] == K.VERDICT_INVALID_NOT_COMPUTABLE and math.isnan(r.q[0])
    # one reading only
    assert _one([200.0]).verdict[0] == K.VERDICT_INVALID_TOO_SHORT
    with pytest.raises(ValueError, match="checks"):
        _one([200.0] * 6, ref=np.ones(3))


def test_evaluate_checks_en_uses_type_a_uncertainty():
    # readings 99, 101, 99, 101: mean 100, sd sqrt(4/3) = 1.1547, u = 1.1547/2 = 0.57735;
    # C = 98, u_C = 0.5 -> E_n = 2 / sqrt((2*0.57735)^2 + 1^2) = 2 / sqrt(1.33333 + 1) = 1.3093
    r = _one([99.0, 101.0, 99.0, 101.0], ref=98.0, u_ref=0.5, window=2, max_std=2.0,
             max_slope=1.0, quantity_code=K.Q_EN, fail_limit=1.0, min_n=2)
    assert r.en[0] == pytest.approx(2 / math.sqrt(4 / 3 + 1), rel=1e-12)
    assert r.verdict[0] == K.VERDICT_FAIL


# --------------------------------------------------------------------------- trends


def test_ewma_worked_example():
    # lam 0.5, z0 0: z = 0.5*2 = 1; NaN carries 1; 0.5*4 + 0.5*1 = 2.5
    x = np.array([2.0, np.nan, 4.0])
    _same(K.ewma(x, 0.5, 0.0), [1.0, 1.0, 2.5])
    _same(K.ewma.py_func(x, 0.5, 0.0), R.ewma(x, 0.5, 0.0))
    assert K.ewma(np.empty(0), 0.2, 0.0).shape == (0,)


def test_cusum_worked_example():
    # target 10, K 0.5, H 2: C+ = 11-10.5 = 0.5; 0.5+12-10.5 = 2.0 (not > H); 2.0+10-10.5 =
    # 1.5; 1.5+7-10.5 < 0 -> 0. C- = max(0, 9.5-x+C-): 0, 0, 0, 9.5-7 = 2.5 > 2 -> alarm at 3
    cp, cm, first = K.cusum(np.array([11.0, 12.0, 10.0, 7.0]), 10.0, 0.5, 2.0)
    _same(cp, [0.5, 2.0, 1.5, 0.0])
    _same(cm, [0.0, 0.0, 0.0, 2.5])
    assert first == 3
    x = np.array([11.0, np.nan, 13.0])
    a, b, f = K.cusum.py_func(x, 10.0, 0.5, 2.0)
    ra, rb, rf = R.cusum(x, 10.0, 0.5, 2.0)
    _same(a, ra)
    _same(b, rb)
    assert f == rf == 2
    assert K.cusum(np.empty(0), 0.0, 0.5, 4.0)[2] == -1


def test_forecast_crossing_worked_example():
    # slope 0.1 %/d, intercept 0, last check at day 10 (trend 1.0 %), limit 2.5:
    # t_cross = 2.5/0.1 = 25 d; band t_q*se = 2*0.02 = 0.04 -> steep 0.14: 10 + 1.5/0.14 =
    # 20.714 d; shallow 0.06: 10 + 1.5/0.06 = 35 d
    tc, early, late = K.forecast_crossing(0.1, 0.02, 0.0, 10.0, 2.5, 2.0)
    assert tc == pytest.approx(25.0) and early == pytest.approx(10 + 1.5 / 0.14)
    assert late == pytest.approx(35.0)
    # negative drift heads for -limit: mirror image
    tc, early, late = K.forecast_crossing(-0.1, 0.02, 0.0, 10.0, 2.5, 2.0)
    assert tc == pytest.approx(25.0) and late == pytest.approx(35.0)
    # band includes zero slope -> may never cross
    assert K.forecast_crossing(0.1, 0.1, 0.0, 10.0, 2.5, 2.0)[2] == math.inf
    # no drift -> NaN; already beyond -> all three at the (past) crossing
    assert all(math.isnan(v) for v in K.forecast_crossing(0.0, 0.01, 1.0, 10.0, 2.5, 2.0))
    assert K.forecast_crossing(0.5, 0.01, 0.0, 10.0, 2.5, 2.0) == (5.0, 5.0, 5.0)
    assert K.forecast_crossing.py_func(0.1, 0.02, 0.0, 10.0, 2.5, 2.0) == pytest.approx(
        K.forecast_crossing(0.1, 0.02, 0.0, 10.0, 2.5, 2.0))


# --------------------------------------------------------------------------- 40 CFR 58
def test_cfr58_worked_example():
    # eq. 1: meas 0.0515 ppm vs audit 0.0500 ppm -> d = 0.0015/0.05*100 = 3.0 %
    d = K.cfr58_d(np.array([0.0515, 1.0]), np.array([0.05, 0.0]))
    assert d[0] == pytest.approx(3.0, rel=1e-12) and math.isnan(d[1])
    # d = [1, -2, 3, 4, 2], n = 5: Σd = 8, Σd² = 34, nΣd² - (Σd)² = 170 - 64 = 106,
    # /(n(n-1)) = 106/20 = 5.3, sqrt = 2.302173; χ²_{0.1,4} = 1.063623 (scipy chi2.ppf(0.1, 4))
    # -> sqrt(4/1.063623) = 1.939261 -> CV_ub = 4.464512 %
    dd = np.array([1.0, -2.0, 3.0, 4.0, 2.0])
    chi2_q = 1.063623216779224
    assert K.cfr58_cv_ub(dd, chi2_q) == pytest.approx(4.464512324474148, rel=1e-12)
    # |d| = [1, 2, 3, 4, 2]: AB = 12/5 = 2.4; Σ|d|² = 34, nΣ - (Σ)² = 170 - 144 = 26,
    # /20 = 1.3 -> AS = 1.140175; t_{0.95,4} = 2.131847 -> 2.4 + 2.131847*1.140175/sqrt(5)
    # = 2.4 + 1.087033 = 3.487033 %; sorted d [-2, 1, 2, 3, 4]: P25 = 1, P75 = 3 -> sign +
    ub, sign = K.cfr58_bias_ub(dd, 2.1318467863266495)
    assert ub == pytest.approx(3.487032836346965, rel=1e-12) and sign == 1
    assert K.cfr58_bias_ub(-dd * 3 - 10, 2.0)[1] == -1
    assert K.cfr58_bias_ub(np.array([-3.0, -1.0, 1.0, 3.0]), 2.0)[1] == 0
    assert math.isnan(K.cfr58_cv_ub(np.array([1.0]), 1.0))
    assert math.isnan(K.cfr58_bias_ub(np.empty(0), 2.0)[0])


@SETTINGS
@given(d=_series(0, 40))
def test_cfr58_statistics_match_reference(d):
    # the printed form n*Σd² - (Σd)² cancels (error ~ sqrt(eps) * n * max|d| after the sqrt);
    # the kernel uses the equal centred form, so compare within that rounding
    tol = 1e-6 * (1 + d.size * float(np.nanmax(np.abs(d)) if np.isfinite(d).any() else 0))
    _same(K.cfr58_cv_ub(d, 1.5), R.cfr58_cv_ub(d, 1.5), rtol=1e-7, atol=tol)
    _same(K.cfr58_cv_ub.py_func(d, 1.5), K.cfr58_cv_ub(d, 1.5))
    ub, sign = K.cfr58_bias_ub(d, 2.0)
    rub, rsign = R.cfr58_bias_ub(d, 2.0)
    _same(ub, rub, rtol=1e-7, atol=tol)
    assert sign == rsign == K.cfr58_bias_ub.py_func(d, 2.0)[1]


# --------------------------------------------------------------------------- QARTOD tests
def _ioos():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ioos_qc import qartod
    return qartod


@SETTINGS
@given(x=_series(0, 60), tol=st.floats(0.0, 5.0), run=st.integers(1, 6))
def test_flat_line_matches_reference_and_ioos_qc(x, tol, run):
    x = np.round(x / 100)  # make repeated values likely
    flags = K.flat_line(x, tol, run, run + 2)
    assert flags.dtype == np.uint8
    assert np.array_equal(flags, K.flat_line.py_func(x, tol, run, run + 2))
    assert np.array_equal(flags, R.flat_line(x, tol, run, run + 2))
    if x.size >= 3:  # ioos_qc does not evaluate fewer than 3 points
        t = np.arange(x.size) * 60.0
        ioos = _ioos().flat_line_test(x, t, run * 60, (run + 2) * 60, tol)
        assert np.array_equal(flags, np.asarray(ioos))


def test_flat_line_worked_example():
    # stuck at 5.0 from index 1: with min_run 3, index 4 is the first whose window
    # x[1:5] = [5, 5, 5, 5] has range 0 < tol
    flags = K.flat_line(np.array([1.0, 5, 5, 5, 5, 5, np.nan]), 0.01, 3)
    assert flags.tolist() == [1, 1, 1, 1, 3, 3, 9]
    assert K.flat_line(np.empty(0), 0.1, 3).shape == (0,)


@SETTINGS
@given(x=_series(1, 60), thr=st.floats(0.5, 300))
def test_spike_matches_ioos_qc(x, thr):
    flags = K.spike(x, thr, thr * 3)
    assert np.array_equal(flags, K.spike.py_func(x, thr, thr * 3))
    ioos = _ioos().spike_test(x, suspect_threshold=thr, fail_threshold=thr * 3)
    assert np.array_equal(flags, np.asarray(ioos))


@SETTINGS
@given(x=_series(1, 60), rate=st.floats(0.01, 10))
def test_rate_of_change_matches_ioos_qc(x, rate):
    t = np.arange(x.size) * 60.0
    flags = K.rate_of_change(t, x, rate, rate * 3)
    assert np.array_equal(flags, K.rate_of_change.py_func(t, x, rate, rate * 3))
    ioos = _ioos().rate_of_change_test(x, t, rate, rate * 3)
    assert np.array_equal(flags, np.asarray(ioos))


@SETTINGS
@given(x=_series(0, 60))
def test_out_of_range_matches_ioos_qc(x):
    flags = K.out_of_range(x, -500.0, 500.0, -100.0, 100.0)
    assert np.array_equal(flags, K.out_of_range.py_func(x, -500.0, 500.0, -100.0, 100.0))
    if x.size:
        ioos = _ioos().gross_range_test(x, (-500.0, 500.0), (-100.0, 100.0))
        assert np.array_equal(flags, np.asarray(ioos))


def test_qartod_worked_examples():
    # spike: x1 = 10 vs neighbours (0+0)/2 = 0 -> |10| > 5 suspect, > 20 fail? no -> 3
    assert K.spike(np.array([0.0, 10.0, 0.0]), 5.0, 20.0).tolist() == [2, 3, 2]
    # rate: (10 - 0)/60 s = 0.1667 /s > 0.1 -> suspect; exactly 0.1 passes
    t = np.array([0.0, 60.0, 120.0])
    assert K.rate_of_change(t, np.array([0.0, 10.0, 16.0]), 0.1).tolist() == [1, 3, 1]
    assert K.out_of_range(np.array([-1.0, 0.0, 10.0, 11.0, np.nan]), 0.0, 10.0).tolist() == [
        4, 1, 1, 4, 9]


# --------------------------------------------------------------------------- gufuncs


# --------------------------------------------------------------------------- fast paths


# --------------------------------------------------------------------------- odd data
_ODD = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(np.nan), st.just(np.inf),
                 st.just(-np.inf))
_THR = st.one_of(st.floats(-10, 10, allow_nan=False), st.just(np.nan), st.just(np.inf))


def test_rate_of_change_duplicate_or_decreasing_time_not_evaluated():
    # two readings with the same time used to raise ZeroDivisionError (a whole call lost)
    t = np.array([0.0, 60.0, 60.0, 30.0, 120.0, np.nan, 180.0])
    x = np.array([1.0, 2.0, 5.0, 5.0, 6.0, 6.0, 6.0])
    flags = K.rate_of_change(t, x, 0.01, 1.0)
    assert flags.tolist() == [1, 3, 2, 2, 3, 2, 2]
    assert np.array_equal(flags, K.rate_of_change.py_func(t, x, 0.01, 1.0))


@SETTINGS
@given(t=arrays(np.float64, st.integers(0, 30), elements=_ODD),
       x=arrays(np.float64, st.integers(0, 30), elements=_ODD), a=_THR, b=_THR)
def test_qartod_kernels_defined_on_odd_data(t, x, a, b):
    n = min(len(t), len(x))
    t, x = t[:n], x[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for f, args in ((K.rate_of_change, (t, x, a, b)), (K.spike, (x, a, b)),
                        (K.flat_line, (x, a, 3, 5)), (K.out_of_range, (x, a, b))):
            got = f(*args)
            assert np.array_equal(got, f.py_func(*args))
            assert set(got.tolist()) <= {1, 2, 3, 4, 9}
            assert np.all((got == 9) == ~np.isfinite(x))
        roc = K.rate_of_change(t, x, a, b)
        dt = np.diff(t)
        undefined = np.concatenate([[False], ~(dt > 0)]) & np.isfinite(x)
        assert np.all(roc[undefined] == 2)


@SETTINGS
@given(x=arrays(np.float64, st.integers(0, 25), elements=_ODD), dup=st.booleans(),
       warn=_THR, limit=_THR)
def test_evaluate_checks_defined_on_odd_data(x, dup, warn, limit):
    n = len(x)
    t = np.repeat(np.arange((n + 1) // 2) * 10.0, 2)[:n] if dup else np.arange(n) * 10.0
    args = (x[None, :], t[None, :], np.array([n]), np.array([100.0]), np.array([200.0]),
            np.array([1.0]), np.array([np.nan]), np.array([warn]), np.array([limit]),
            np.array([2]), 3, np.array([1.0]), np.array([0.01]), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ev = K.evaluate_checks(*args[:3], *args[3:])
        ref = K._evaluate_checks_kernel.py_func(*args)
    assert int(ev.verdict[0]) in range(6)
    assert int(ev.verdict[0]) == int(ref[-1][0]) and int(ev.n[0]) == int(ref[2][0])
    assert ev.n[0] <= np.isfinite(x).sum()


@SETTINGS
@given(q=_ODD, warn=_THR, limit=_THR)
def test_limit_verdict_compiled_equals_python(q, warn, limit):
    from envcal import codes

    assert K.limit_verdict(q, warn, limit) == codes.limit_verdict(q, warn, limit)
    assert (K.limit_verdict(q, warn, limit) == K.VERDICT_INVALID_NOT_COMPUTABLE) == (not np.isfinite(q))


@SETTINGS
@given(q=arrays(np.float64, st.integers(0, 20), elements=_ODD), limit=_THR,
       dec=st.booleans())
def test_trend_alarm_kernel_defined_on_odd_data(q, limit, dec):
    n = len(q)
    t = -np.arange(n, dtype=float) if dec else np.zeros(n)
    args = (np.array([0, n], np.int64), t, q, np.ones(n, np.bool_), np.array([limit]), 30, 3,
            7.0, 3.0, 0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        al, sl, se, dd = K.trend_alarm_kernel(*args)
        ral = K.trend_alarm_kernel.py_func(*args)[0]
    assert np.array_equal(al, ral)
    if not limit > 0:
        assert not al.any()
