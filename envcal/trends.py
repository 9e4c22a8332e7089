"""The drift-trend model of a channel's check history: one model for alerts, app and reports.

For one analyzer channel and check kind, the series of the rule's tested quantity (e.g.
``error_fs_pct`` [% of span] under HJ 75-2017, ``error_rel_pct`` [%] under HJ 355-2019) is
fitted by least squares over the last :attr:`TrendModel.history` valid checks, restarting
after a step larger than ``reset_fraction × limit`` (a recalibration); the line is
extrapolated to the date at which it crosses the rule's fail limit, with a band from the
slope's confidence interval. A forecast is made only when at least ``min_points`` checks
are in the fit and ``|slope| >= min_t × SE(slope)``. The ``drift_trend`` alert
(:class:`envcal.alerts.AlertEngine`) is raised exactly when :attr:`Trend.alarm` is true:
a forecast crossing within ``horizon_days`` while the newest check still passes. EWMA and
a two-sided tabular CUSUM are computed over the same series for the control chart.

All numbers come from :mod:`envcal.kernels` (:func:`~envcal.kernels.trend_alarm_kernel`,
:func:`~envcal.kernels.forecast_crossing`, :func:`~envcal.kernels.ewma`,
:func:`~envcal.kernels.cusum`); the t quantile is computed here (the edge).

References
----------
Montgomery, *Introduction to Statistical Quality Control*, 7th ed., §9.1 (CUSUM), §9.2
(EWMA); Montgomery, Peck & Vining, *Introduction to Linear Regression Analysis*, §2.2-2.4
(slope, its standard error and confidence interval).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass

import numpy as np
import sqlalchemy as sa
from scipy import stats
from sqlalchemy.engine import Engine

from envcal import kernels
from envcal.models import CheckResult

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class TrendModel:
    """The parameters of the drift-trend model (defaults of ``[alerts]`` ``drift_*``).

    ``history`` [checks] in the fit, ``min_points`` [checks] for a forecast, ``min_t`` [-]
    the required |slope| / SE(slope), ``horizon_days`` [d] of the alarm, ``reset_fraction``
    [-] of the limit: a larger step restarts the fit; ``lam`` EWMA weight, ``cusum_k`` and
    ``cusum_h`` CUSUM allowance and decision interval [quantity unit], ``confidence`` of the
    forecast band.
    """

    history: int = 30
    min_points: int = 7
    min_t: float = 3.0
    horizon_days: float = 7.0
    reset_fraction: float = 0.4
    lam: float = 0.2
    cusum_k: float = 0.5
    cusum_h: float = 4.0
    confidence: float = 0.95


@dataclass(frozen=True)
class Trend:
    """The trend of one channel's tested quantity (see the module docstring); values in
    the quantity's unit, slopes per day."""

    analyzer: str
    analyte: str
    kind: str
    quantity: str
    n: int
    slope_per_day: float | None  # [unit / d]
    slope_se: float | None  # [unit / d]
    intercept: float | None  # [unit] at t = 0 of the time axis (days since 1970)
    last_error: float | None  # [unit]
    ewma: float | None  # [unit]
    cusum_plus: float | None
    cusum_minus: float | None
    cusum_alarm: bool
    limit: float | None  # [quantity unit]
    crossing: dt.datetime | None  # when the trend line reaches ±limit
    crossing_early: dt.datetime | None
    crossing_late: dt.datetime | None
    last_check: dt.datetime | None
    alarm: bool = False  # the drift_trend alert condition holds at the newest check
    days_to_limit: float | None = None  # [d] from the newest check to the crossing

    def days_to_crossing(self, now: dt.datetime) -> float | None:
        if self.crossing is None:
            return None
        return (self.crossing - now).total_seconds() / 86400.0

    def as_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, dt.datetime):
                d[k] = v.isoformat()
        return d


def _days(t: dt.datetime) -> float:
    return (t - EPOCH).total_seconds() / 86400.0


def _from_days(d: float) -> dt.datetime | None:
    if not math.isfinite(d) or abs(d) > 1e6:
        return None
    return EPOCH + dt.timedelta(days=d)


def _fin(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def history(engine: Engine, analyzer: str, analyte: str, kind: str, quantity: str, *,
            until: dt.datetime | None = None,
            limit: int = TrendModel.history) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times [d since 1970], values of ``quantity`` (NaN for an invalid check) and passed
    flags (verdict pass or warn) of a channel's checks of one kind, oldest first: the last
    ``limit`` valid ones and every check after the oldest of them (an invalid newest check
    stays the newest check, as the alert engine sees it)."""
    c = CheckResult.__table__.c
    col = c[quantity]
    mine = sa.and_(c.analyzer_id == analyzer, c.analyte == analyte, c.kind == kind)
    if until is not None:
        mine = sa.and_(mine, c.end <= until)
    valid = (sa.select(c.end).where(mine, c.verdict != "invalid", col.is_not(None))
             .order_by(c.end.desc()).limit(limit).subquery())
    q = (sa.select(c.end, col, c.verdict)
         .where(mine, c.end >= sa.select(sa.func.min(valid.c.end)).scalar_subquery())
         .order_by(c.end, c.id))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    t = np.array([_days(r[0]) for r in rows], dtype=np.float64)
    y = np.array([np.nan if r[1] is None or r[2] == "invalid" else r[1] for r in rows],
                 dtype=np.float64)
    passed = np.array([r[2] in ("pass", "warn") for r in rows], dtype=np.bool_)
    return t, y, passed


def trend_alarms(t_days: np.ndarray, values: np.ndarray, passed: np.ndarray,
                 limit: float | None, model: TrendModel = TrendModel()):
    """The trend model at every check of one series.

    Parameters
    ----------
    t_days : ndarray
        Check times [d], not decreasing.
    values : ndarray
        Signed tested quantity [unit]; NaN for invalid checks.
    passed : ndarray of bool
        Verdict pass or warn.
    limit : float or None
        The rule's fail limit [unit] (None: no forecast, no alarm).
    model : TrendModel

    Returns
    -------
    alarm : ndarray of bool
    slope, se, days : ndarray
        [unit/d], [unit/d] and days to the crossing (NaN where not computed).

    References
    ----------
    Montgomery, Peck & Vining, §2.2-2.4.
    """
    lim = np.inf if limit is None else float(limit)
    return kernels.trend_alarm_kernel(
        np.array([0, len(values)], np.int64), np.ascontiguousarray(t_days, dtype=np.float64),
        np.ascontiguousarray(values, dtype=np.float64), np.ascontiguousarray(passed, dtype=np.bool_),
        np.array([lim]), int(model.history), int(model.min_points), float(model.horizon_days),
        float(model.min_t), float(model.reset_fraction))


def trend_of(t_days: np.ndarray, values: np.ndarray, limit: float | None, *,
             passed: np.ndarray | None = None, model: TrendModel = TrendModel(),
             analyzer: str = "", analyte: str = "", kind: str = "",
             quantity: str = "error_fs_pct") -> Trend:
    """The trend of a series of a tested quantity at its newest check.

    Parameters
    ----------
    t_days : ndarray
        Check times [d since 1970 for dates in the result], not decreasing.
    values : ndarray
        Signed tested quantity [unit]; NaN for an invalid check (skipped by the fit).
    limit : float or None
        The rule's fail limit [unit]; without it no crossing is forecast.
    passed : ndarray of bool, optional
        Verdict pass or warn per check (default: all passed).
    model : TrendModel

    Returns
    -------
    Trend
        ``alarm`` is the ``drift_trend`` alert condition at the newest check.

    References
    ----------
    Montgomery, Peck & Vining, §2.2-2.4; Montgomery (2013) §9.1-9.2.
    """
    values = np.asarray(values, dtype=np.float64)
    t_days = np.asarray(t_days, dtype=np.float64)
    n = int(min(np.isfinite(values).sum(), model.history))
    last_t = _from_days(float(t_days[-1])) if len(t_days) else None
    if n == 0:
        return Trend(analyzer, analyte, kind, quantity, 0, None, None, None, None, None, None,
                     None, False, limit, None, None, None, last_t)
    if passed is None:
        passed = np.ones(len(values), dtype=np.bool_)
    al, sl, se, dd = trend_alarms(t_days, values, passed, limit, model)
    finite = values[np.isfinite(values)]
    z = kernels.ewma(finite, model.lam, 0.0)
    cp, cm, first = kernels.cusum(finite, 0.0, model.cusum_k, model.cusum_h)
    slope, err, days = float(sl[-1]), float(se[-1]), float(dd[-1])
    icpt = crossing = early = late = None
    if math.isfinite(slope) and limit:
        target = abs(limit) if slope > 0 else -abs(limit)
        y_now = target - days * slope if math.isfinite(days) else math.nan
        icpt = y_now - slope * float(t_days[-1]) if math.isfinite(y_now) else None
        if icpt is not None and math.isfinite(err) and abs(slope) >= model.min_t * err:
            used = min(n, model.history)
            tq = float(stats.t.ppf(0.5 + model.confidence / 2.0, max(used - 2, 1)))
            tc, te, tl = kernels.forecast_crossing(slope, err, icpt, float(t_days[-1]),
                                                   float(limit), tq)
            crossing, early, late = _from_days(tc), _from_days(te), _from_days(tl)
    return Trend(analyzer, analyte, kind, quantity, n, _fin(slope), _fin(err),
                 None if icpt is None else _fin(icpt), _fin(finite[-1]), _fin(z[-1]),
                 _fin(cp[-1]), _fin(cm[-1]), bool(first >= 0), limit, crossing, early, late,
                 last_t, bool(al[-1]), _fin(days) if crossing is not None else None)


def channel_trend(engine: Engine, analyzer: str, analyte: str, kind: str, quantity: str,
                  limit: float | None, *, until: dt.datetime | None = None,
                  model: TrendModel = TrendModel()) -> Trend:
    """Trend of one channel's ``quantity`` from the stored results (see :func:`trend_of`)."""
    t, y, passed = history(engine, analyzer, analyte, kind, quantity, until=until,
                           limit=model.history)
    return trend_of(t, y, limit, passed=passed, model=model, analyzer=analyzer,
                    analyte=analyte, kind=kind, quantity=quantity)


@dataclass(frozen=True)
class PeriodStatistics:
    """40 CFR 58 App A §4.1 statistics of one-point QC checks over a period [%]."""

    analyzer: str
    analyte: str
    n: int
    cv_ub: float | None  # coefficient of variation upper bound [%]
    bias_ub: float | None  # absolute bias upper bound [%]
    bias_sign: int  # +1, -1, or 0 (the 25th and 75th percentiles of d disagree)
    cv_limit: float | None
    bias_limit: float | None
    cv_ok: bool | None
    bias_ok: bool | None


def cfr58_statistics(d: np.ndarray, cv_confidence: float = 0.90,
                     bias_confidence: float = 0.95) -> tuple[float, float, int]:
    """CV and bias upper bounds of percent differences ``d`` of one-point QC checks.

    Parameters
    ----------
    d : ndarray
        Percent differences d = (meas - audit)/audit x 100 [%] (``error_rel_pct``).
    cv_confidence : float, default 0.90
        The CV bound uses the chi-squared quantile at ``1 - cv_confidence`` with n - 1 df.
    bias_confidence : float, default 0.95
        The bias bound uses the t quantile at ``bias_confidence`` with n - 1 df.

    Returns
    -------
    cv_ub, bias_ub : float
        [%]; NaN with fewer than two finite d.
    sign : int
        Sign of the bias (+1, -1; 0 when the 25th and 75th percentiles disagree).

    References
    ----------
    40 CFR Part 58 Appendix A, §4.1.1 (percent difference), §4.1.2 (CV upper bound),
    §4.1.3 (bias upper bound and its sign).
    """
    d = np.asarray(d, dtype=np.float64)
    n = int(np.isfinite(d).sum())
    if n < 2:
        return float("nan"), float("nan"), 0
    chi2_q = float(stats.chi2.ppf(1.0 - cv_confidence, n - 1))
    t_q = float(stats.t.ppf(bias_confidence, n - 1))
    cv_ub = float(kernels.cfr58_cv_ub(d, chi2_q))
    bias_ub, sign = kernels.cfr58_bias_ub(d, t_q)
    return cv_ub, float(bias_ub), int(sign)


def period_statistics(engine: Engine, pack, analyzer: str, analyte: str,
                      start: dt.datetime, end: dt.datetime) -> PeriodStatistics:
    """40 CFR 58 App A statistics of an analyzer channel's checks in [start, end), with the
    pack's ``[statistics]`` limits (see :func:`cfr58_statistics`)."""
    st = pack.statistics
    if st is None:
        raise ValueError(f"rule pack {pack.name} defines no period statistics")
    c = CheckResult.__table__.c
    q = (sa.select(c.error_rel_pct)
         .where(c.analyzer_id == analyzer, c.analyte == analyte, c.kind == st.check_kind,
                c.verdict != "invalid", c.error_rel_pct.is_not(None),
                c.end >= start, c.end < end).order_by(c.end))
    with engine.connect() as conn:
        d = np.array([r[0] for r in conn.execute(q)], dtype=np.float64)
    cv, bias, sign = cfr58_statistics(d, st.cv_confidence, st.bias_confidence)
    lim = st.limit_for(analyte)
    ok_n = len(d) >= st.min_n
    cv_ok = (cv <= lim.cv_ub) if (lim and ok_n and math.isfinite(cv)) else None
    bias_ok = (bias <= lim.bias_ub) if (lim and ok_n and math.isfinite(bias)) else None
    return PeriodStatistics(analyzer, analyte, len(d), _fin(cv), _fin(bias), sign,
                            lim.cv_ub if lim else None, lim.bias_ub if lim else None, cv_ok, bias_ok)
