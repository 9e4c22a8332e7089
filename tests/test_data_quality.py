"""Data-quality tests over many channels, the falsification statistic, peer deviation."""

from __future__ import annotations

import numpy as np
import pytest

from envcal import data_quality as dq


def _one(x, fcls=None, limit=np.nan, **kw):
    n = len(x)
    t = np.arange(n) * 60.0
    fcls = np.zeros(n, np.int8) if fcls is None else fcls
    out = dq.channel_tests(t, np.asarray(x, float), fcls, np.array([0, n]), np.array([200.0]),
                           np.array([-4.0]), np.array([240.0]), np.array([limit]), **kw)
    return dict(zip(dq.COLUMNS, out[0], strict=True))


def test_channel_tests_flat_range_spike_roc():
    rng = np.random.default_rng(0)
    x = 30 + rng.normal(0, 1, 300)
    clean = _one(x)
    assert clean["n"] == 300
    assert all(clean[k] == 0 for k in ("flat_line", "out_of_range", "spike", "rate_of_change"))
    y = x.copy()
    y[100:170] = y[100]  # 70 min stuck; flagged from the 61st minute on
    assert _one(y)["flat_line"] == 70 - 60
    y = x.copy()
    y[50] = 250.0  # above 1.2 x span, a spike, two steep changes
    got = _one(y)
    # the spike test compares with the neighbours' mean (ioos_qc "average"), so the two
    # neighbours of a 220-unit spike are beyond the 40-unit threshold too
    assert got["out_of_range"] == 1 and got["spike"] == 3 and got["rate_of_change"] == 2


def test_channel_tests_two_channels_and_t_from():
    x = np.r_[np.full(100, 5.0), 30 + np.arange(100) % 7]
    t = np.r_[np.arange(100), np.arange(100)] * 60.0
    out = dq.channel_tests(t, x, np.zeros(200, np.int8), np.array([0, 100, 200]),
                           np.array([200.0, 200.0]), np.array([-4.0, -4.0]), np.array([240.0, 240.0]),
                           np.array([np.nan, np.nan]), t_from=89 * 60.0, flat_s=3600.0)
    assert out[0, 0] == 10 and out[0, 1] == 10  # only the last 10 readings counted, all flat
    assert out[1, 1] == 0


def test_falsification_pattern_detected_and_clean_flags_ignored():
    """NOx limit 50 mg/m3. Process at ~30 with excursions up to ~70 five times a day; each
    excursion's top (> 50) flagged M: the readings around every M episode are >= 40 (0.8 x
    limit). Unflagged readings >= 40 are rare (p0 ~ 0.04), so 5 of 5 episodes near the limit
    has binomial tail ~ (1 - 0.96^2)^5 ~ 1.6e-6 < 1e-3."""
    rng = np.random.default_rng(3)
    n = 1440
    x = 30 + rng.normal(0, 2, n)
    fcls = np.zeros(n, np.int8)
    for k in range(5):
        c = 100 + k * 280
        ramp = 40 * np.exp(-0.5 * ((np.arange(n) - c) / 12.0) ** 2)
        x += ramp
        fcls[np.abs(np.arange(n) - c) <= 12] = dq.FLAG_MASKED  # the top of the excursion
    got = _one(x, fcls, limit=50.0)
    assert got["episodes"] == 5 and got["episodes_near_limit"] == 5
    assert got["masked_above_limit"] > 0
    f = dq.falsification(got["episodes"], got["episodes_near_limit"], got["normal"],
                         got["normal_near_limit"])
    assert f.flagged and f.p_value < 1e-3
    # the same number of maintenance episodes at random times, process never near the limit
    y = 30 + rng.normal(0, 2, n)
    g = np.zeros(n, np.int8)
    for c in (200, 500, 800, 1100, 1300):
        g[c:c + 20] = dq.FLAG_MASKED
    got = _one(y, g, limit=50.0)
    assert got["episodes"] == 5 and got["episodes_near_limit"] == 0
    assert not dq.falsification(got["episodes"], 0, got["normal"], got["normal_near_limit"]).flagged


def test_masked_exceedance_when_flagged_values_are_above_the_limit():
    """A plant running close to its 50 mg/m3 NOx limit (unflagged readings often >= 40, so the
    episode-neighbour test has no power), whose exceedances are flagged M with their values
    kept. 1,440 readings: 1,340 unflagged (none above 50), 100 flagged, 80 of those > 50.
    With flags independent of the level each reading above the limit is flagged with
    p0 = 100/1440 = 0.069; all 80 of 80 flagged: tail 0.069^80 << 1e-3 -> reported."""
    rng = np.random.default_rng(5)
    n = 1440
    x = np.clip(44 + rng.normal(0, 2.5, n), 0, 49.9)
    fcls = np.zeros(n, np.int8)
    for k in range(4):
        c = 150 + k * 330
        fcls[c:c + 25] = dq.FLAG_MASKED
        x[c:c + 20] = 60 + rng.normal(0, 3, 20)  # the flagged exceedance
    got = _one(x, fcls, limit=50.0)
    assert got["masked"] == 100 and got["masked_above_limit"] == 80
    assert got["normal_above_limit"] == 0 and got["normal"] == 1340
    f = dq.masked_exceedance(got["masked_above_limit"], got["masked"],
                             got["normal_above_limit"], got["normal"])
    assert f.flagged and f.p_value < 1e-30 and f.test == "masked_above_limit"
    assert f.as_dict()["flagged_above_limit"] == 80
    # maintenance flags at random times on the same plant: readings above the limit are as
    # often flagged as any reading -> not reported
    y = 44 + rng.normal(0, 4, n)
    g = np.zeros(n, np.int8)
    g[rng.choice(n, 100, replace=False)] = dq.FLAG_MASKED
    got = _one(y, g, limit=50.0)
    assert got["normal_above_limit"] > 0
    assert not dq.masked_exceedance(got["masked_above_limit"], got["masked"],
                                    got["normal_above_limit"], got["normal"]).flagged


def test_falsification_boundaries():
    # K below min_episodes never flags, whatever the p-value
    assert not dq.falsification(2, 2, 1000, 0, min_episodes=3).flagged
    # near-limit readings common anyway: episodes near the limit are no evidence
    assert not dq.falsification(5, 4, 1000, 600).flagged


def test_peer_deviation_and_distance():
    daily = np.array([[10.0, 10, 10], [11, 9, 10], [10, 10, 11], [20, 25, 30]])
    nbs = [np.array([1, 2, 3]), np.array([0, 2, 3]), np.array([0, 1, 3]), np.array([0, 1, 2])]
    dev = dq.peer_deviation(daily, nbs, floor=1.0)
    assert dev[3] == pytest.approx([1.0, 1.5, 2.0])  # (20-10)/10, (25-10)/10, (30-10)/10
    assert np.all(np.abs(dev[:3]) < 0.2)
    # Hangzhou Xixi - Xiasha: about 25 km
    assert dq.haversine_km(30.2741, 120.0781, 30.3095, 120.3440) == pytest.approx(25.8, abs=0.5)
