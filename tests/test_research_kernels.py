"""Kernels kept for the benchmarks (benchmarks/research_kernels.py): kernel vs ``.py_func`` vs the numpy reference, worked examples
computed by hand (arithmetic in the comments), boundaries exactly at a limit, NaN gaps,
float32, empty and length-1 inputs, ioos_qc agreement, and the gufuncs under xarray + dask."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from benchmarks import research_kernels as B
from envcal import kernels as K  # noqa: F401
from envcal import kernels_ref as R

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _series(min_size=0, max_size=80, dtype=np.float64):
    elems = st.one_of(st.floats(-1e3, 1e3, allow_nan=False, width=32), st.just(np.nan))
    return arrays(dtype, st.integers(min_size, max_size), elements=elems)


def _same(a, b, rtol=1e-9, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


@SETTINGS
@given(x=_series(), window=st.integers(1, 12), min_count=st.integers(1, 4),
       ddof=st.integers(0, 1), f32=st.booleans())
def test_rolling_mean_std_matches_reference(x, window, min_count, ddof, f32):
    if f32:
        x = x.astype(np.float32)
    m, s = B.rolling_mean_std(x, window, min_count, ddof)
    mp, sp = np.empty(x.size), np.empty(x.size)
    B._rolling_serial.py_func(x, window, min_count, ddof, mp, sp)
    mr, sr = R.rolling_mean_std(x, window, min_count, ddof)
    assert m.dtype == np.float64 and m.shape == x.shape
    _same(m, mp)
    _same(s, sp)
    # sums-based rolling std: where the true std is ~0 inside data of range D the absolute
    # error is ~sqrt(eps * block) * D (about 3e-7 D), as for any add/remove algorithm
    scale = float(np.nanmax(np.abs(x))) if np.isfinite(x).any() else 0.0
    _same(m, mr, atol=1e-12 * (1 + scale))
    _same(s, sr, atol=2e-6 * (1 + scale))


def test_rolling_mean_std_worked_example():
    # window 3, ddof 1 over [1, 2, NaN, 4, 6]:
    #   i=0 [1] -> mean 1, std NaN (1 value, ddof 1)
    #   i=1 [1, 2] -> mean 1.5, std sqrt(((-.5)^2 + .5^2)/1) = sqrt(0.5) = 0.70711
    #   i=2 [1, 2, NaN] -> same as i=1
    #   i=3 [2, NaN, 4] -> mean 3, std sqrt((1 + 1)/1) = 1.41421
    #   i=4 [NaN, 4, 6] -> mean 5, std 1.41421
    m, s = B.rolling_mean_std(np.array([1.0, 2.0, np.nan, 4.0, 6.0]), 3)
    _same(m, [1.0, 1.5, 1.5, 3.0, 5.0])
    _same(s, [np.nan, math.sqrt(0.5), math.sqrt(0.5), math.sqrt(2.0), math.sqrt(2.0)])


def test_rolling_mean_std_large_offset_parallel_path_is_accurate():
    # 200,000 points (parallel path) around 1e6: relative error of std vs two-pass numpy
    rng = np.random.default_rng(7)
    x = 1e6 + rng.normal(0.0, 1.0, 200_000)
    m, s = B.rolling_mean_std(x, 60)
    idx = np.arange(59, x.size, 1013)
    ex_m = np.array([x[i - 59:i + 1].mean() for i in idx])
    ex_s = np.array([x[i - 59:i + 1].std(ddof=1) for i in idx])
    assert np.max(np.abs(s[idx] - ex_s) / ex_s) < 1e-9
    assert np.max(np.abs(m[idx] - ex_m) / ex_m) < 1e-12
    # the parallel path gives the same bits as the serial one
    ms, ss = np.empty_like(x), np.empty_like(x)
    B._rolling_serial(x, 60, 1, 1, ms, ss)
    assert np.array_equal(m, ms, equal_nan=True) and np.array_equal(s, ss, equal_nan=True)


def test_rolling_mean_std_empty_one_and_bad_window():
    m, s = B.rolling_mean_std(np.empty(0), 5)
    assert m.shape == (0,) and s.shape == (0,)
    m, s = B.rolling_mean_std(np.array([3.0]), 5, 1, 0)
    assert m[0] == 3.0 and s[0] == 0.0
    with pytest.raises(ValueError, match="window"):
        B.rolling_mean_std(np.ones(3), 0)


def test_rolling_mean_std_constant_gives_exact_zero():
    _, s = B.rolling_mean_std(np.full(1000, 123456.789), 60)
    assert np.all(s[1:] == 0.0)


def test_drift_slope_worked_example():
    # t = 0..3 d, y = [1, 3, 2, 4] %: t̄ 1.5, ȳ 2.5, Sxx = 2.25+.25+.25+2.25 = 5,
    # Sxy = 2.25-.25-.25+2.25 = 4 -> slope 0.8 %/d, intercept 2.5 - 0.8*1.5 = 1.3;
    # residuals -0.3, 0.9, -0.9, 0.3 -> SSE 1.8 -> se = sqrt(1.8/2/5) = 0.424264
    slope, se, icpt, n = B.drift_slope(np.arange(4.0), np.array([1.0, 3, 2, 4]))
    assert n == 4
    assert slope == pytest.approx(0.8, rel=1e-14) and icpt == pytest.approx(1.3, rel=1e-14)
    assert se == pytest.approx(math.sqrt(0.18), rel=1e-12)
    assert all(math.isnan(v) for v in B.drift_slope(np.ones(1), np.ones(1))[:3])
    assert B.drift_slope(np.empty(0), np.empty(0))[3] == 0
    assert math.isnan(B.drift_slope(np.arange(2.0), np.arange(2.0))[1])  # n = 2: no se


@SETTINGS
@given(y=_series(0, 50), f32=st.booleans())
def test_drift_slope_matches_reference_and_rows(y, f32):
    if f32:
        y = y.astype(np.float32)
    t = np.arange(y.size, dtype=np.float64) * 0.5 + 20000.0
    got = B.drift_slope(t, y)
    _same(got, B.drift_slope.py_func(t, y))
    _same(got, R.drift_slope(t, y), rtol=1e-8, atol=1e-10)
    rows = B.drift_slope_rows(t, np.stack([y, y]))
    for r in rows:
        assert r.shape == (2,)
    _same([r[1] for r in rows], got, rtol=1e-7, atol=1e-9)


def test_drift_slope_rows_float32_big_offset():
    rng = np.random.default_rng(5)
    t = np.arange(5000.0)
    Y = (3.0 + 0.002 * t + rng.normal(0, 0.1, (4, t.size))).astype(np.float32)
    Y[1, ::7] = np.nan
    slope, se, icpt, n = B.drift_slope_rows(t, Y)
    for i in range(4):
        ref = R.drift_slope(t, Y[i])
        _same([slope[i], se[i], icpt[i], n[i]], ref, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError):
        B.drift_slope_rows(t, Y[:, :10])


def test_gufuncs_under_xarray_and_dask():
    import dask.array as da
    import xarray as xr

    rng = np.random.default_rng(2)
    data = rng.normal(50.0, 2.0, (6, 200))
    data[2, 10:20] = np.nan
    arr = xr.DataArray(da.from_array(data, chunks=(2, 200)), dims=("channel", "time"))
    mean, std = xr.apply_ufunc(
        B.rolling_mean_std_gu, arr, 10, 1, 1,
        input_core_dims=[["time"], [], [], []], output_core_dims=[["time"], ["time"]],
        dask="parallelized", output_dtypes=[np.float64, np.float64])
    assert isinstance(mean.data, da.Array)
    mean, std = mean.compute(), std.compute()
    for i in range(6):
        em, es = B.rolling_mean_std(data[i], 10)
        _same(mean.values[i], em, rtol=0, atol=0)
        _same(std.values[i], es, rtol=0, atol=0)

    t = xr.DataArray(np.arange(200.0) / 24.0, dims="time")
    out = xr.apply_ufunc(
        B.drift_slope_gu, t, arr, input_core_dims=[["time"], ["time"]],
        output_core_dims=[[], [], [], []], dask="parallelized",
        output_dtypes=[np.float64] * 4)
    slope = out[0].compute().values
    nn = out[3].compute().values
    for i in range(6):
        ref = B.drift_slope(t.values, data[i])
        assert slope[i] == ref[0] and nn[i] == ref[3]


@pytest.mark.parametrize("window", [1, 2, 7, 60, 1500])
def test_rolling_mean_std_dense_and_gap_blocks_match_reference(window):
    # long enough for the NaN-free fast path (blocks after the first window) and for the
    # NaN-aware fallback (blocks holding a gap or an inf), serial and parallel
    rng = np.random.default_rng(11)
    x = 500.0 + rng.normal(0.0, 2.0, 70_000)
    x[[5_000, 5_001, 30_000]] = np.nan
    x[50_000] = np.inf
    m, s = B.rolling_mean_std(x, window)
    mr, sr = R.rolling_mean_std(x, window, 1, 1)
    _same(m, mr, rtol=1e-12, atol=1e-9)
    _same(s, sr, rtol=1e-7, atol=1e-9)
    ms, ss = np.empty_like(x), np.empty_like(x)
    B._rolling_serial(x, window, 1, 1, ms, ss)
    assert np.array_equal(m, ms, equal_nan=True) and np.array_equal(s, ss, equal_nan=True)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("uniform", [True, False])
def test_drift_slope_rows_groups_gaps_and_time_grids(rows, uniform):
    # row counts not a multiple of the 4-row group, equally spaced t (t-free pass) and
    # irregular t, a row with a gap and a row of NaN (NaN-aware fallback)
    rng = np.random.default_rng(rows)
    p = 3_000
    t = 19_000.0 + np.arange(p) * 0.25
    if not uniform:
        t = t + np.sort(rng.uniform(0.0, 0.2, p))
    Y = 5.0 + 0.01 * (t - t[0])[None, :] + rng.normal(0.0, 0.3, (rows, p))
    if rows > 1:
        Y[1, 17] = np.nan
    if rows > 2:
        Y[2] = np.nan
    slope, se, icpt, n = B.drift_slope_rows(t, Y)
    for i in range(rows):
        ref = R.drift_slope(t, Y[i])
        _same([slope[i], se[i], icpt[i], n[i]], ref, rtol=1e-9, atol=1e-12)


def test_drift_rows_t_grid_worked_example():
    # t = 1..5: mean 3, tc = -2..2 -> Σtc 0, Σtc² 4+1+0+1+4 = 10, t0 -2, dt 1, equally spaced
    tshift, st_, stt, t0, dt, lin = B._t_grid(np.arange(1.0, 6.0))
    assert (tshift, st_, stt, t0, dt, lin) == (3.0, 0.0, 10.0, -2.0, 1.0, True)
    # t = 0, 1, 3: mean 4/3, not equally spaced (1 != 0 + 1.5 at j = 1)
    tshift, st_, stt, t0, dt, lin = B._t_grid(np.array([0.0, 1.0, 3.0]))
    assert tshift == pytest.approx(4 / 3, rel=1e-15) and not lin
    assert stt == pytest.approx(16 / 9 + 1 / 9 + 25 / 9, rel=1e-14)
    assert B._t_grid(np.array([7.0]))[5] is False  # one point: no spacing


@SETTINGS
@given(start=st.floats(-1e5, 1e5, allow_nan=False), step_exp=st.integers(-10, 4),
       p=st.integers(3, 3000), jitter=st.booleans())
def test_drift_rows_t_grid_matches_py_func(start, step_exp, p, jitter):
    # exactly representable grids (power-of-two steps from an integer start) are equally
    # spaced for both; a jittered grid (steps differing by 1e-3 of a step) for neither
    t = np.floor(start) + np.arange(p) * 2.0 ** step_exp
    if jitter:
        t[p // 2] += 1e-3 * 2.0 ** step_exp
    got = B._t_grid(t)
    ref = B._t_grid.py_func(t)
    assert got[5] == ref[5] == (not jitter)
    _same(got[:5], ref[:5], rtol=1e-12, atol=1e-12 * (abs(t).max() + 1.0) * p)


@SETTINGS
@given(y=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 40)),
                elements=st.one_of(st.floats(-1e3, 1e3, width=32), st.just(np.nan))),
       uniform=st.booleans())
def test_drift_rows_kernel_matches_py_func(y, uniform):
    # the parallel kernel against its pure-Python self (prange as range), both time grids,
    # short last groups and gaps included
    p = y.shape[1]
    t = 100.0 + np.arange(p) * 0.5
    if not uniform:
        t = t + np.linspace(0.0, 0.3, p) ** 2
    got = B._drift_rows_kernel(t, y)
    ref = B._drift_rows_kernel.py_func(t, y)
    for g, r in zip(got, ref, strict=True):
        _same(g, r, rtol=1e-9, atol=1e-9)
    assert np.array_equal(got[3], ref[3])
