"""Archive-wide replay on Dask writes the same results as the single-process replay."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from envcal.archive import compact
from envcal.certificates import import_certificate
from envcal.models import CheckSummaryRecord, Reading
from envcal.registry import sync_registry
from envcal.replay_dask import replay_dask, replay_dask_report
from envcal.verify import Verifier, list_results, replay

SAMPLES = Path(__file__).resolve().parents[1] / "reference_materials" / "samples"
SO2_LOT = "GBW(E)080123-2026-017"
NH3N_LOT = "GBW(E)082034-2026-061"
T0 = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)
PERIOD = (dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))


def _readings(analyzer, check_id, kind, material, by_analyte, t0, step_s=20, noise_rows=5):
    """Readings of one check (several analytes share times), with plain readings around it."""
    rows = []
    n = len(next(iter(by_analyte.values())))
    for i in range(-noise_rows, n + noise_rows):
        t = t0 + dt.timedelta(seconds=step_s * i)
        in_check = 0 <= i < n
        for analyte, values in by_analyte.items():
            v = float(values[i]) if in_check else 42.0
            rows.append(Reading(analyzer_id=analyzer, analyte=analyte, ts=t, value=v,
                                flag="C" if in_check else "N",
                                check_id=check_id if in_check else None,
                                check_kind=kind if in_check else None,
                                check_phase=("end" if i == n - 1 else "run") if in_check else None,
                                material=material if in_check else None, received_at=t))
    return rows


def _step(final, n_rise=6, n_plateau=14, noise=0.2, seed=1):
    rng = np.random.default_rng(seed)
    rise = [final * (1 - np.exp(-(i + 1) / 1.5)) for i in range(n_rise)]
    return rise + [final + noise * rng.standard_normal() for _ in range(n_plateau)]


@pytest.fixture
def archived_world(engine, registry, tmp_path):
    """Checks over five days on several stations, most compacted into NetCDF, one still hot,
    one device summary; verified live once."""
    sync_registry(engine, registry)
    for f in sorted(SAMPLES.glob("*.json")):
        import_certificate(engine, f)
    rows = []
    for d in range(5):
        t = T0 + dt.timedelta(days=d)
        rows += _readings("NB-PP02-CEMS", f"CK-S{d}", "span", SO2_LOT,
                          {"SO2": _step(161.0 + 2 * d, seed=d)}, t)
        rows += _readings("NB-PP02-CEMS", f"CK-Z{d}", "zero", "",
                          {"SO2": _step(0.5 + 0.3 * d, seed=10 + d), "NOx": _step(1.0, seed=20 + d)},
                          t + dt.timedelta(hours=2))
        rows += _readings("SX-WW01-WQ", f"CK-W{d}", "std_sample", NH3N_LOT,
                          {"NH3-N": _step(2.0 + 0.08 * d, noise=0.01, seed=30 + d)}, t + dt.timedelta(hours=3))
    # an unsettled check (no plateau -> invalid), crossing midnight into the next day
    rows += _readings("NB-PP02-CEMS", "CK-NOISY", "span", SO2_LOT,
                      {"SO2": list(np.linspace(0, 180, 20))}, T0 + dt.timedelta(days=2, hours=22, minutes=55))
    with Session(engine) as s:
        s.add_all(rows)
        s.add(CheckSummaryRecord(analyzer_id="SX-WW01-WQ", check_id="HJ212-CK-9", kind="std_sample",
                                 analyte="NH3-N", start=T0, end=T0 + dt.timedelta(minutes=40),
                                 material=NH3N_LOT, measured=2.25, readings=None, standard_value=2.2,
                                 device_verdict="qualified", received_at=T0))
        s.commit()
    v = Verifier(engine, registry)
    v.verify_pending()
    report = compact(engine, tmp_path / "archive", registry, before=dt.date(2026, 11, 24))
    assert report.rows_deleted > 0 and not report.errors
    return engine, registry, v, tmp_path / "archive"


def _without_ids(rows):
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def test_replay_dask_same_results_as_single_process(archived_world):
    engine, registry, v, archive = archived_world
    live = list_results(engine)
    single = replay(v, archive, *PERIOD)
    after_single = list_results(engine)
    assert after_single == live and len(single) == len(live) >= 16
    with engine.begin() as conn:  # the Dask replay must write them all again
        conn.execute(sa.text("delete from check_result"))
    phases = []
    rep = replay_dask_report(v, archive, *PERIOD, progress=lambda p, d, n: phases.append((p, d, n)))
    got, want = _without_ids(list_results(engine)), _without_ids(after_single)
    diffs = [(w["check_id"], k, g[k], w[k]) for g, w in zip(got, want, strict=False) for k in w if g[k] != w[k]]
    assert diffs == [] and len(got) == len(want)
    assert rep.files > 0 and len(rep.results) == len(single) and rep.checks <= len(single)
    assert {"invalid", "pass"} <= {r["verdict"] for r in rep.results}
    assert phases[-1] == ("evaluating and storing", rep.checks, rep.checks)
    # the noisy check had no plateau (judged once, by the batch kernel of the live path)
    noisy = next(r for r in rep.results if r["check_id"] == "CK-NOISY")
    assert noisy["verdict"] == "invalid" and noisy["plateau_start"] is None


def test_replay_dask_analyzer_filter_and_hot_only(archived_world):
    engine, registry, v, archive = archived_world
    only = replay_dask(v, archive, *PERIOD, analyzer_ids=["SX-WW01-WQ"])
    assert {r["analyzer"] for r in only} == {"SX-WW01-WQ"}
    assert len(only) == len(replay(v, archive, *PERIOD, analyzer_ids=["SX-WW01-WQ"]))
    hot_only = replay_dask(v, None, *PERIOD)  # no archive: only what is still in SQL
    assert {r["check_id"] for r in hot_only} == {r["check_id"] for r in replay(v, None, *PERIOD)}


def test_cli_verify_replay_dask_local(archived_world):
    import json

    from typer.testing import CliRunner

    from envcal.cli import app

    engine, registry, v, archive = archived_world
    if engine.dialect.name != "sqlite":
        pytest.skip("the CLI wiring is storage-independent; parity is covered above")
    before = _without_ids(list_results(engine))
    url = engine.url.render_as_string(hide_password=False)
    res = CliRunner().invoke(app, ["verify", "replay", "--from", "2026-11-01T00:00+00:00", "--to",
                                   "2026-12-01T00:00+00:00", "--db", url, "--archive", str(archive),
                                   "--stations", "stations", "--dask", "local", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert len(out) == len(before) and _without_ids(list_results(engine)) == before
