"""Trend statistics over a channel's check history (consumed by alerts and the UI).

For one analyzer channel and check kind, the series of check errors [% of span] is fitted
with a least-squares line (drift slope and its standard error), smoothed with an EWMA and
watched with a two-sided tabular CUSUM; the line is extrapolated to the date at which it
will cross the rule's fail limit, with a band from the slope's confidence interval.
The numbers come from :mod:`envcal.kernels`; the t quantile is computed here (the edge).

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
class TrendParams:
    """Trend settings: EWMA weight, CUSUM allowance and decision interval [% of span],
    the history used [checks] and the confidence of the forecast band."""

    lam: float = 0.2
    cusum_k: float = 0.5
    cusum_h: float = 4.0
    history: int = 30
    min_points: int = 5
    confidence: float = 0.95


@dataclass(frozen=True)
class Trend:
    """The trend of one channel's check errors [% of span]."""

    analyzer: str
    analyte: str
    kind: str
    quantity: str
    n: int
    slope_per_day: float | None  # [% of span / d]
    slope_se: float | None  # [% of span / d]
    intercept: float | None  # [% of span] at the first check
    last_error: float | None  # [% of span]
    ewma: float | None  # [% of span]
    cusum_plus: float | None
    cusum_minus: float | None
    cusum_alarm: bool
    limit: float | None  # [% of span]
    crossing: dt.datetime | None  # when the trend line reaches ±limit
    crossing_early: dt.datetime | None
    crossing_late: dt.datetime | None
    last_check: dt.datetime | None

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


def history(engine: Engine, analyzer: str, analyte: str, kind: str, *,
            until: dt.datetime | None = None, limit: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Times [d since 1970] and errors [% of span] of the last ``limit`` valid checks."""
    c = CheckResult.__table__.c
    q = (sa.select(c.end, c.error_fs_pct)
         .where(c.analyzer_id == analyzer, c.analyte == analyte, c.kind == kind,
                c.verdict != "invalid", c.error_fs_pct.is_not(None))
         .order_by(c.end.desc()).limit(limit))
    if until is not None:
        q = q.where(c.end <= until)
    with engine.connect() as conn:
        rows = conn.execute(q).all()[::-1]
    t = np.array([_days(r[0]) for r in rows], dtype=np.float64)
    y = np.array([r[1] for r in rows], dtype=np.float64)
    return t, y


def trend_of(t_days: np.ndarray, errors: np.ndarray, limit: float | None, *,
             params: TrendParams = TrendParams(), analyzer: str = "", analyte: str = "",
             kind: str = "", quantity: str = "error_fs_pct") -> Trend:
    """Trend statistics of a series of check errors.

    Parameters
    ----------
    t_days : ndarray
        Check times [d] (any origin; days since 1970 for dates in the result).
    errors : ndarray
        Check errors [% of span].
    limit : float or None
        Fail limit [% of span]; without it no crossing is forecast.
    params : TrendParams

    Returns
    -------
    Trend
    """
    n = int(np.isfinite(errors).sum())
    empty = Trend(analyzer, analyte, kind, quantity, n, None, None, None,
                  _fin(errors[-1]) if len(errors) else None, None, None, None, False, limit,
                  None, None, None, _from_days(t_days[-1]) if len(t_days) else None)
    if n < 2:
        return empty
    slope, se, icpt, used = kernels.drift_slope(t_days, errors)
    z = kernels.ewma(errors, params.lam, 0.0)
    cp, cm, first = kernels.cusum(errors, 0.0, params.cusum_k, params.cusum_h)
    crossing = early = late = None
    if limit and n >= params.min_points and math.isfinite(se):
        tq = float(stats.t.ppf(0.5 + params.confidence / 2.0, max(int(used) - 2, 1)))
        tc, te, tl = kernels.forecast_crossing(slope, se, icpt, float(t_days[-1]), float(limit), tq)
        crossing, early, late = _from_days(tc), _from_days(te), _from_days(tl)
    return Trend(analyzer, analyte, kind, quantity, n, _fin(slope), _fin(se), _fin(icpt),
                 _fin(errors[-1]), _fin(z[-1]), _fin(cp[-1]), _fin(cm[-1]), bool(first >= 0),
                 limit, crossing, early, late, _from_days(float(t_days[-1])))


def channel_trend(engine: Engine, analyzer: str, analyte: str, kind: str, limit: float | None,
                  *, until: dt.datetime | None = None,
                  params: TrendParams = TrendParams()) -> Trend:
    """Trend of one channel's check errors from the stored results (see :func:`trend_of`)."""
    t, y = history(engine, analyzer, analyte, kind, until=until, limit=params.history)
    return trend_of(t, y, limit, params=params, analyzer=analyzer, analyte=analyte, kind=kind)


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
