"""Alert kinds, severities and the parameters of every alert rule (``[alerts]`` of ``envcal.toml``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envcal.trends import TrendModel

KINDS = ("out_of_tolerance", "out_of_control", "drift_trend", "check_overdue",
         "material_invalid", "data_quality", "peer_drift", "verification_due")
SEVERITIES = ("info", "warning", "critical")
STATES = ("open", "acknowledged", "resolved")
ACTOR = "envcal-alerts"
#: Buckets of the falsification window per channel (bounds its memory; see
#: :meth:`AlertEngine._falsify_window`).
FALSIFY_BUCKETS = 96
FALSIFY_COUNTS = ("episodes", "episodes_near_limit", "normal", "normal_near_limit",
                   "masked_above_limit", "masked", "normal_above_limit")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class AlertError(ValueError):
    """Bad alert configuration or an impossible transition."""


# ----------------------------------------------------------------------------- configuration
@dataclass
class AlertConfig:
    """Parameters of every alert rule (``[alerts]`` table of ``envcal.toml``; unknown keys are errors).

    Times in hours/days/minutes as named; fractions of the channel span unless said.
    """

    escalate_after_h: float = 4.0          # unacknowledged this long -> escalate [h]
    verification_due_days: float = 30.0    # instrument verification reminder lead time [d]
    history_days: float = 90.0             # check history re-read per evaluation [d]
    # the drift-trend model (envcal.trends.TrendModel holds the defaults)
    drift_horizon_days: float = TrendModel.horizon_days  # forecast crossing within [d]
    drift_history: int = TrendModel.history              # checks in the trend fit
    drift_min_points: int = TrendModel.min_points        # fewest checks for a trend
    drift_min_t: float = TrendModel.min_t                # |slope| / SE(slope) at least
    drift_reset_fraction: float = TrendModel.reset_fraction  # step > this × limit restarts
    overdue_grace: float = 0.1             # fraction of the interval allowed late
    dq_window_h: float = 24.0              # first data-quality window [h]
    dq_clear_h: float = 6.0                # clean hours before a data-quality alert resolves
    flat_minutes: float = 60.0             # stuck value at least this long [min]
    flat_tol_fraction: float = 1e-4        # "flat": range below this fraction of span
    range_min_count: int = 1               # readings outside the physical range
    range_low_fraction: float = -0.02      # default lower physical bound [fraction of span]
    range_high_fraction: float = 1.2       # default upper physical bound [fraction of span]
    spike_fraction: float = 0.2            # spike threshold [fraction of span]
    spike_min_count: int = 3
    roc_fraction_per_min: float = 0.3      # rate-of-change threshold [fraction of span / min]
    roc_min_count: int = 3
    gap_min_missing: int = 10              # missing messages (seq gaps) in the window
    no_data_minutes: float = 60.0          # no reading for this long at data time [min]
    #                                        (at least 3 x the analyzer's usual interval)
    falsify_limits: dict[str, float] = field(
        default_factory=lambda: {"SO2": 35.0, "NOx": 50.0, "dust": 10.0})  # [channel unit]
    falsify_near_fraction: float = 0.8
    check_settle_minutes: float = 30.0     # C/M readings this close to a QC check belong to it [min]
    falsify_context_minutes: float = 10.0
    falsify_min_episodes: int = 3
    falsify_alpha: float = 1e-3
    peer_radius_km: float = 30.0
    peer_min_neighbours: int = 2
    peer_days: int = 3
    peer_threshold: float = 0.3            # relative deviation from the neighbours' median
    peer_floor_fraction: float = 0.01      # smallest denominator [fraction of span]
    webhook_timeout_s: float = 2.0
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 0.5
    webhook_backoff_max_s: float = 300.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> AlertConfig:
        """Build from a mapping; an unknown key or a wrong type is an :class:`AlertError`."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise AlertError(f"[alerts]: unknown key(s) {unknown} (known: {', '.join(known)})")
        out = {}
        for k, v in data.items():
            default = getattr(cls(), k)
            if isinstance(default, dict):
                if not isinstance(v, dict) or not all(isinstance(x, (int, float)) for x in v.values()):
                    raise AlertError(f"[alerts] {k}: expected a table of numbers")
                out[k] = {str(a): float(x) for a, x in v.items()}
            elif isinstance(default, int) and not isinstance(default, bool):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise AlertError(f"[alerts] {k}: expected an integer, got {v!r}")
                out[k] = v
            else:
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise AlertError(f"[alerts] {k}: expected a number, got {v!r}")
                out[k] = float(v)
        return cls(**out)

    def trend_model(self) -> TrendModel:
        """The drift-trend model these settings define (used by alerts, app and reports)."""
        return TrendModel(history=self.drift_history, min_points=self.drift_min_points,
                          min_t=self.drift_min_t, horizon_days=self.drift_horizon_days,
                          reset_fraction=self.drift_reset_fraction)

    @classmethod
    def from_toml(cls, path: str | Path) -> AlertConfig:
        """The ``[alerts]`` table of a TOML file (defaults when the file or table is absent)."""
        p = Path(path)
        if not p.is_file():
            return cls()
        with p.open("rb") as fh:
            data = tomllib.load(fh)
        return cls.from_mapping(data.get("alerts", {}))
