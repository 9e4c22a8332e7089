"""Alerts: detection rules, out-of-control periods, the state machine and dispatch.

- :mod:`envcal.alerts.config`: kinds, severities, :class:`AlertConfig` (``[alerts]``);
- :mod:`envcal.alerts.periods`: out-of-control periods of the rule packs' conditions;
- :mod:`envcal.alerts.engine`: :class:`AlertEngine` (every alert kind, see its module);
- :mod:`envcal.alerts.staff`: acknowledge / resolve with a note, queries;
- :mod:`envcal.alerts.common`: the alert JSON, its dedup key, the desired state.
"""

from envcal.alerts.common import Desired, alert_json, open_key
from envcal.alerts.config import (
    ACTOR,
    FALSIFY_BUCKETS,
    FALSIFY_COUNTS,
    KINDS,
    SEVERITIES,
    STATES,
    AlertConfig,
    AlertError,
)
from envcal.alerts.engine import AlertEngine
from envcal.alerts.periods import condition_periods, ooc_periods_kernel
from envcal.alerts.staff import (
    acknowledge,
    alert_counts,
    list_alerts,
    list_periods,
    resolve,
    staff_actions,
)

__all__ = ["ACTOR", "FALSIFY_BUCKETS", "FALSIFY_COUNTS", "KINDS", "SEVERITIES", "STATES",
           "AlertConfig", "AlertEngine", "AlertError", "Desired", "acknowledge", "alert_counts",
           "alert_json", "condition_periods", "list_alerts", "list_periods", "ooc_periods_kernel",
           "open_key", "resolve", "staff_actions"]
