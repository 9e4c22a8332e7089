"""Checks: from the readings of a QC check to a stored, explained result.

- :mod:`envcal.checks.result`: :class:`CheckResult`, the one schema of a result;
- :mod:`envcal.checks.core`: :func:`evaluate` / :func:`evaluate_many`, the pure judgement;
- :mod:`envcal.checks.extract`: the readings of a check from the hot store, the archive
  and device summaries;
- :mod:`envcal.checks.store`: the ``check_result`` table;
- :mod:`envcal.checks.verifier`: :class:`Verifier`, which gathers inputs, calls the core,
  stores and notifies; :func:`replay`.

Only :mod:`~envcal.checks.result` and :mod:`~envcal.checks.core` are imported here: they
need no database.
"""

from envcal.checks.core import Case, ChannelReadings, Reference, evaluate, evaluate_many
from envcal.checks.result import RESULT_FIELDS, CheckResult

__all__ = ["RESULT_FIELDS", "Case", "ChannelReadings", "CheckResult", "Reference", "evaluate",
           "evaluate_many"]
