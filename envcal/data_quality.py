"""Continuous-data quality tests for alerting: many channels at once, arrays in, counts out.

The readings of many channels are passed as flat arrays sorted by channel and time, with
``offsets`` (CSR layout: channel ``c`` is ``[offsets[c], offsets[c+1])``). One numba pass
runs, per channel, the QARTOD-style kernels of :mod:`envcal.kernels` (flat line, gross
range, spike, rate of change) and the falsification statistic below, and returns counts
per channel. No SQL, no MQTT, no units: values are in each channel's unit, times in
seconds.

Falsification statistic (HJ 75-2017 data flags C = calibration, M = maintenance)
--------------------------------------------------------------------------------
An *episode* is a maximal run of consecutive readings flagged ``C`` or ``M`` outside a
recorded QC check. An episode is *near the limit* when one of its unflagged neighbours
(the last ``N`` reading before it and the first after it, each within ``context`` seconds)
is at or above ``near_fraction × limit`` (the channel's emission limit). If flags were
set independently of the level, an episode would be near the limit with probability
``q0 = 1 - (1 - p0)^2``, ``p0`` being the fraction of unflagged readings at or above
``near_fraction × limit``. With ``E`` episodes of which ``K`` are near the limit, the
pattern is reported when ``K >= min_episodes`` and the binomial tail
``P(X >= K | E, max(q0, q_floor)) < alpha``.

Where flagged readings still carry their values, a second, sharper test looks at the
readings above the limit: if flags were independent of the level, each of the ``N`` readings
above the limit would be flagged with the probability ``f`` that any valued reading is
flagged; the pattern is reported when at least ``min_episodes`` of them are flagged and the
binomial tail ``P(X >= K_above | N, max(f, q_floor)) < alpha``
(:func:`masked_exceedance`).

References
----------
IOOS QARTOD manuals (flat line, gross range, spike, rate of change tests);
HJ 212-2017 Table 8 (data flags); HJ 75-2017 (data flags and invalid data).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit

from envcal import kernels

#: flag classes passed to :func:`channel_tests`
FLAG_NORMAL = 0
FLAG_MASKED = 1  # C or M outside a QC check
FLAG_OTHER = 2   # anything else (F, S, D, T, B, readings of a QC check)

#: columns of the counts returned by :func:`channel_tests`
COLUMNS = ("n", "flat_line", "out_of_range", "spike", "rate_of_change", "episodes",
           "episodes_near_limit", "normal", "normal_near_limit", "masked_above_limit",
           "masked", "normal_above_limit")


@njit(cache=True)
def _median_step(t, a, b):
    if b - a < 2:
        return 60.0
    d = np.empty(b - a - 1, np.float64)
    for i in range(a, b - 1):
        d[i - a] = t[i + 1] - t[i]
    m = np.median(d)
    return m if m > 0.0 else 60.0


@njit(cache=True)
def _channel_tests_kernel(t, x, fcls, offsets, span, lo, hi, limit, t_from, flat_tol_frac,
                          flat_s, spike_frac, roc_frac_per_s, near_frac, context_s):
    nch = offsets.shape[0] - 1
    out = np.zeros((nch, 12), np.int64)
    for c in range(nch):
        a = offsets[c]
        b = offsets[c + 1]
        if b <= a:
            continue
        tc = t[a:b]
        xn = x[a:b].copy()
        for i in range(b - a):
            if fcls[a + i] != FLAG_NORMAL:
                xn[i] = np.nan
        sp = span[c]
        # flat line over the normal readings only: masked readings and QC-check sequences
        # (15 s apart) must neither set the sampling step nor leave a window with a single
        # finite value in it, which the kernel would call flat
        nv = 0
        for i in range(b - a):
            if xn[i] == xn[i]:
                nv += 1
        iv = np.empty(nv, np.int64)
        tv = np.empty(nv, np.float64)
        xv = np.empty(nv, np.float64)
        k = 0
        for i in range(b - a):
            if xn[i] == xn[i]:
                iv[k] = i
                tv[k] = tc[i]
                xv[k] = xn[i]
                k += 1
        step = _median_step(tv, 0, nv)
        run = int(flat_s[c] / step + 0.5)
        fv = kernels.flat_line(xv, flat_tol_frac * sp, run if run > 1 else 2, 0)
        f_flat = np.full(b - a, 9, np.uint8)
        for k in range(nv):
            f_flat[iv[k]] = fv[k]
        f_rng = kernels.out_of_range(xn, lo[c], hi[c], -np.inf, np.inf)
        f_spk = kernels.spike(xn, spike_frac * sp, np.inf)
        f_roc = kernels.rate_of_change(tc, xn, roc_frac_per_s * sp, np.inf)
        lim = limit[c]
        near = near_frac * lim
        for i in range(b - a):
            if tc[i] <= t_from:
                continue
            out[c, 0] += 1
            if f_flat[i] >= 3 and f_flat[i] != 9:
                out[c, 1] += 1
            if f_rng[i] == 4:
                out[c, 2] += 1
            if f_spk[i] >= 3 and f_spk[i] != 9:
                out[c, 3] += 1
            if f_roc[i] >= 3 and f_roc[i] != 9:
                out[c, 4] += 1
            if fcls[a + i] == FLAG_NORMAL and xn[i] == xn[i]:
                out[c, 7] += 1
                if lim == lim and xn[i] >= near:
                    out[c, 8] += 1
                if lim == lim and xn[i] > lim:
                    out[c, 11] += 1
            if fcls[a + i] == FLAG_MASKED and x[a + i] == x[a + i]:
                out[c, 10] += 1
                if lim == lim and x[a + i] > lim:
                    out[c, 9] += 1
        if not lim == lim:
            continue
        i = 0
        m = b - a
        while i < m:
            if fcls[a + i] != FLAG_MASKED:
                i += 1
                continue
            j = i
            while j + 1 < m and fcls[a + j + 1] == FLAG_MASKED:
                j += 1
            if tc[j] > t_from:
                out[c, 5] += 1
                hit = False
                k = i - 1
                while k >= 0 and fcls[a + k] != FLAG_NORMAL:
                    k -= 1
                if k >= 0 and tc[i] - tc[k] <= context_s and x[a + k] >= near:
                    hit = True
                k = j + 1
                while k < m and fcls[a + k] != FLAG_NORMAL:
                    k += 1
                if k < m and tc[k] - tc[j] <= context_s and x[a + k] >= near:
                    hit = True
                if hit:
                    out[c, 6] += 1
            i = j + 1
    return out


def channel_tests(t: np.ndarray, x: np.ndarray, flag_class: np.ndarray, offsets: np.ndarray,
                  span: np.ndarray, lo: np.ndarray, hi: np.ndarray, limit: np.ndarray, *,
                  t_from: float = -np.inf, flat_tol_fraction: float = 1e-4,
                  flat_s: np.ndarray | float = 3600.0, spike_fraction: float = 0.2,
                  roc_fraction_per_min: float = 0.3, near_fraction: float = 0.8,
                  context_s: float = 600.0) -> np.ndarray:
    """Data-quality test counts for many channels in one pass.

    Parameters
    ----------
    t : ndarray, float64
        Reading times [s], sorted within each channel.
    x : ndarray, float64
        Values [channel unit] (NaN: no number).
    flag_class : ndarray, int8
        :data:`FLAG_NORMAL`, :data:`FLAG_MASKED` or :data:`FLAG_OTHER` per reading; only
        normal readings are tested by the QARTOD tests.
    offsets : ndarray, int64, shape (nch + 1,)
        Channel boundaries.
    span, lo, hi : ndarray, shape (nch,)
        Span (full scale) and physical range [channel unit].
    limit : ndarray, shape (nch,)
        Emission limit for the falsification statistic [channel unit]; NaN: not tested.
    t_from : float
        Only readings with ``t > t_from`` are counted (earlier ones give context) [s].
    flat_tol_fraction : float
        A window whose range is below this fraction of span is flat [-].
    flat_s : float or ndarray
        Shortest flat duration reported [s] (per channel or one for all).
    spike_fraction : float
        Spike threshold [fraction of span].
    roc_fraction_per_min : float
        Rate-of-change threshold [fraction of span per minute].
    near_fraction : float
        "Near the limit" level [fraction of the limit].
    context_s : float
        Longest distance from an episode to its unflagged neighbour [s].

    Returns
    -------
    ndarray, int64, shape (nch, 10)
        Counts per channel in the order of :data:`COLUMNS`.

    References
    ----------
    IOOS QARTOD manuals (flat line, gross range, spike, rate of change); HJ 212-2017
    Table 8 (data flags).
    """
    nch = len(offsets) - 1
    flat = np.broadcast_to(np.asarray(flat_s, dtype=np.float64), (nch,)).copy()
    return _channel_tests_kernel(
        np.ascontiguousarray(t, np.float64), np.ascontiguousarray(x, np.float64),
        np.ascontiguousarray(flag_class, np.int8), np.ascontiguousarray(offsets, np.int64),
        np.ascontiguousarray(span, np.float64), np.ascontiguousarray(lo, np.float64),
        np.ascontiguousarray(hi, np.float64), np.ascontiguousarray(limit, np.float64),
        float(t_from), float(flat_tol_fraction), flat, float(spike_fraction),
        float(roc_fraction_per_min) / 60.0, float(near_fraction), float(context_s))


@dataclass(frozen=True)
class FalsificationTest:
    """The outcome of the falsification statistic for one channel."""

    episodes: int
    near_limit: int
    p0: float
    q0: float
    p_value: float
    flagged: bool
    test: str = "episodes_near_limit"  # or "masked_above_limit" (see masked_exceedance)

    def as_dict(self) -> dict:
        if self.test == "masked_above_limit":
            return {"test": self.test, "readings_above_limit": self.episodes,
                    "flagged_above_limit": self.near_limit, "p0": self.p0, "q0": self.q0,
                    "p_value": self.p_value}
        return {"test": self.test, "episodes": self.episodes,
                "episodes_near_limit": self.near_limit, "p0": self.p0, "q0": self.q0,
                "p_value": self.p_value}


def falsification(episodes: int, near_limit: int, normal: int, normal_near: int, *,
                  min_episodes: int = 3, alpha: float = 1e-3,
                  q_floor: float = 0.02) -> FalsificationTest:
    """Judge the C/M-around-high-readings pattern (see the module docstring).

    Parameters
    ----------
    episodes, near_limit : int
        Flagged episodes E and those with a neighbour near the limit K.
    normal, normal_near : int
        Unflagged readings and those at or above the near-limit level.
    min_episodes : int
        Smallest K reported.
    alpha : float
        Significance of the binomial tail [-].
    q_floor : float
        Lower bound of the chance probability q0 [-] (a clean channel that is never near
        the limit must not make one coincidence significant).

    Returns
    -------
    FalsificationTest
    """
    from scipy.stats import binom

    p0 = normal_near / normal if normal else 0.0
    q0 = max(1.0 - (1.0 - p0) ** 2, q_floor)
    p = float(binom.sf(near_limit - 1, episodes, q0)) if episodes else 1.0
    flagged = near_limit >= min_episodes and p < alpha
    return FalsificationTest(int(episodes), int(near_limit), float(p0), float(q0), p, bool(flagged))


def masked_exceedance(masked_above: int, masked: int, normal_above: int, normal: int, *,
                      min_readings: int = 3, alpha: float = 1e-3,
                      q_floor: float = 0.02) -> FalsificationTest:
    """Judge whether readings above the limit are flagged C/M more often than chance.

    Parameters
    ----------
    masked_above, masked : int
        Flagged (C/M, outside QC checks) readings with a value above the limit, and all
        flagged readings with a value.
    normal_above, normal : int
        Unflagged readings above the limit, and all unflagged readings with a value.
    min_readings : int
        Fewest flagged readings above the limit reported.
    alpha : float
        Significance of the binomial tail [-].
    q_floor : float
        Lower bound of the chance probability [-].

    Returns
    -------
    FalsificationTest
        ``episodes`` = readings above the limit, ``near_limit`` = those flagged, ``p0`` the
        flagged share of all valued readings, ``q0`` = max(p0, q_floor).

    References
    ----------
    HJ 212-2017 Table 8 (C, M flags); HJ 75-2017 (data marked during calibration and
    maintenance are excluded from compliance evaluation).
    """
    from scipy.stats import binom

    n_above = masked_above + normal_above
    total = masked + normal
    p0 = masked / total if total else 0.0
    q0 = max(p0, q_floor)
    p = float(binom.sf(masked_above - 1, n_above, q0)) if n_above else 1.0
    flagged = masked_above >= min_readings and p < alpha
    return FalsificationTest(int(n_above), int(masked_above), float(p0), float(q0), p,
                             bool(flagged), "masked_above_limit")


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance [km] on a sphere of radius 6371 km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, a)))


def peer_deviation(daily: np.ndarray, neighbours: list[np.ndarray], floor: float) -> np.ndarray:
    """Relative deviation of each station's daily mean from its neighbours' median.

    Parameters
    ----------
    daily : ndarray, shape (stations, days)
        Daily means of one analyte [channel unit] (NaN: no data that day).
    neighbours : list of ndarray of int
        Indices of each station's neighbours (within the radius, itself excluded).
    floor : float
        Smallest denominator [channel unit] (clean air near zero must not blow up ratios).

    Returns
    -------
    ndarray, shape (stations, days)
        ``(x - median(neighbours)) / max(|median|, floor)`` [-]; NaN without neighbours.
    """
    out = np.full(daily.shape, np.nan)
    for i, nb in enumerate(neighbours):
        if len(nb) == 0:
            continue
        with np.errstate(all="ignore"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(daily[nb], axis=0)
        out[i] = (daily[i] - med) / np.maximum(np.abs(med), floor)
    return out
