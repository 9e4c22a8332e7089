"""One result schema for storage, MQTT and JSON: a misspelt field is an error."""

from __future__ import annotations

import datetime as dt

import pytest

from envcal.checks.result import RESULT_FIELDS, STORAGE_ONLY, CheckResult
from envcal.models import CheckResult as CheckResultRow
from envcal.verify import result_json, store_results

T = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
BASE = {"analyzer": "HZ-AQ01-GAS", "station": "ZJ-HZ-AQ01", "analyte": "O3", "kind": "span",
        "check_id": "CK-1", "start": T, "end": T + dt.timedelta(minutes=5), "unit": "umol/mol",
        "span": 0.5, "verdict": "pass", "pack": "cfr40_58a", "pack_version": "x"}


def test_result_misspelt_field_is_an_error_not_none():
    with pytest.raises(TypeError):
        CheckResult(**BASE, verdcit="fail")
    r = CheckResult(**BASE)
    with pytest.raises(KeyError):
        r["eror_fs_pct"]
    with pytest.raises(AttributeError):
        r.eror_fs_pct = 1.0
    with pytest.raises(TypeError):  # the JSON of a mapping: a typo is no silent null
        result_json(BASE | {"eror_fs_pct": 1.0})


def test_result_unknown_verdict_kind_or_naive_time_refused():
    for bad in ({"verdict": "ok"}, {"kind": "spam"}, {"end": T.replace(tzinfo=None)}):
        with pytest.raises(ValueError):
            CheckResult(**(BASE | bad))


def test_result_one_schema_for_table_and_json():
    cols = {c.name for c in CheckResultRow.__table__.columns}
    fields = {"analyzer_id" if f == "analyzer" else "station_id" if f == "station" else f
              for f in RESULT_FIELDS}
    assert cols == fields | STORAGE_ONLY
    assert list(CheckResult(**BASE).to_json()) == list(RESULT_FIELDS)


def test_result_store_and_list_round_trip(sqlite_engine, registry):
    from envcal.registry import sync_registry
    from envcal.verify import list_results

    sync_registry(sqlite_engine, registry)
    r = CheckResult(**BASE, mean=0.41, error_fs_pct=float("nan"), details={"a": 1})
    store_results(sqlite_engine, [r])
    (got,) = list_results(sqlite_engine)
    assert {k: got[k] for k in RESULT_FIELDS} == r.replace(error_fs_pct=None).to_json()
    with pytest.raises(TypeError):
        store_results(sqlite_engine, [BASE | {"verdcit": "x"}])
