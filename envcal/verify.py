"""Check verification, as imported by the rest of envcal: see :mod:`envcal.checks`.

The names below live in :mod:`envcal.checks.verifier` (the service),
:mod:`envcal.checks.extract` (readings of a check), :mod:`envcal.checks.store` (the
``check_result`` table) and :mod:`envcal.checks.result` (the result schema).
"""

from collections.abc import Mapping
from typing import Any

from envcal.checks.core import Reference
from envcal.checks.extract import (
    CheckReadings,
    archived_checks,
    completeness,
    group_check_rows,
    load_check,
    material_segments,
    pending_checks,
    pending_summaries,
    summaries_in,
    summary_to_check,
)
from envcal.checks.result import RESULT_FIELDS, STORAGE_ONLY, CheckResult
from envcal.checks.store import list_results, store_results
from envcal.checks.verifier import ResultListener, Verifier, replay


def result_json(r: CheckResult | Mapping[str, Any]) -> dict[str, Any]:
    """A result as the JSON object of ``envcal results list`` and the results topic.

    A mapping must have exactly the fields of :class:`CheckResult` (plus, optionally, the
    storage-only columns ``id``, ``evaluated_at``, ``published_at``, ``needs_review``,
    which are left out); any other key is a ``TypeError``.
    """
    if not isinstance(r, CheckResult):
        r = CheckResult.from_mapping({k: v for k, v in r.items() if k not in STORAGE_ONLY})
    return r.to_json()


__all__ = ["RESULT_FIELDS", "CheckReadings", "CheckResult", "Reference", "ResultListener",
           "Verifier", "archived_checks", "completeness", "group_check_rows", "list_results",
           "load_check", "material_segments", "pending_checks", "pending_summaries", "replay",
           "result_json", "store_results", "summaries_in", "summary_to_check"]
