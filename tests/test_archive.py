"""The NetCDF archive: compaction round trip, idempotence, crash recovery, late readings,
readers over hot + archived data, and CF compliance (IOOS compliance-checker)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import xarray as xr
from sqlmodel import Session, select

from envcal.archive import (
    FLAG_MEANINGS,
    archive_path,
    cf_standard_name,
    compact,
    open_period,
    read_file_rows,
    readings_frame,
    udunits,
)
from envcal.models import ArchiveFile, Reading
from envcal.registry import sync_registry

DAY = dt.date(2026, 11, 20)
T0 = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
ST = "ZJ-HZ-AQ01"
CHANNELS = [("HZ-AQ01-PM", "PM2.5"), ("HZ-AQ01-PM", "PM10"), ("HZ-AQ01-PM", "flow"),
            ("HZ-AQ01-GAS", "SO2"), ("HZ-AQ01-GAS", "NO2"), ("HZ-AQ01-GAS", "O3")]


def _rows(t0: dt.datetime, minutes: int, *, seed: int = 0) -> list[dict]:
    """Readings of station ZJ-HZ-AQ01 with flags, a null value, a QC check and seqs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(minutes):
        ts = t0 + dt.timedelta(minutes=i)
        for aid, analyte in CHANNELS:
            if analyte == "O3" and i % 7 == 3:
                continue  # a channel missing at some times
            r = {"analyzer_id": aid, "analyte": analyte, "ts": ts,
                 "value": float(np.round(rng.uniform(0, 100), 3)),
                 "flag": "NFMSDCTB"[i % 8] if i % 5 == 0 else "N", "seq": 1000 + i,
                 "check_id": None, "check_kind": None, "check_phase": None, "material": None,
                 "received_at": ts}
            if aid == "HZ-AQ01-GAS" and 10 <= i < 16:
                r.update(check_id="CK-20261120-SO2-span", check_kind="span",
                         check_phase="start" if i == 10 else ("end" if i == 15 else "run"),
                         material="LOT-SO2-001", flag="C")
            if aid == "HZ-AQ01-PM" and analyte == "PM10" and i == 2:
                r["value"] = None
            out.append(r)
    return out


def _insert(engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(Reading), rows)


def _hot_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(Reading)).scalar()


@pytest.fixture
def loaded(engine, registry):
    sync_registry(engine, registry)
    rows = _rows(T0, 120)
    _insert(engine, rows)
    return rows


def _frame_as_dicts(df):
    out = {}
    for r in df.itertuples(index=False):
        out[r.ts.to_pydatetime()] = r
    return out


def test_archive_compact_roundtrip_values_flags_times_checks(engine, registry, loaded, tmp_path):
    arch = tmp_path / "archive"
    rep = compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    assert [d.action for d in rep.days] == ["written"]
    assert rep.rows_deleted == len(loaded)
    assert _hot_count(engine) == 0
    path = archive_path(arch, ST, DAY)
    assert path == arch / ST / "2026" / f"{ST}_20261120.nc"
    with Session(engine) as s:
        af = s.exec(select(ArchiveFile)).one()
    assert (af.station_id, af.day, af.path) == (ST, DAY, f"{ST}/2026/{ST}_20261120.nc")
    assert af.n_values == len(loaded) and af.n_times == 120
    # every row back, equal, through the public reader
    for aid, analyte in CHANNELS:
        want = [r for r in loaded if r["analyzer_id"] == aid and r["analyte"] == analyte]
        got = readings_frame(engine, arch, aid, analyte, T0, T0 + dt.timedelta(days=1))
        assert len(got) == len(want)
        for w, g in zip(want, got.itertuples(index=False), strict=True):
            assert g.ts.to_pydatetime() == w["ts"]
            assert (math.isnan(g.value) if w["value"] is None else g.value == w["value"])
            assert g.flag == w["flag"] and g.seq == w["seq"]
            assert (g.check_id, g.check_kind, g.check_phase, g.material) == (
                w["check_id"], w["check_kind"], w["check_phase"], w["material"])
            assert g.qa_ok is pd.NA  # no qa_ok column in the hot store yet: not evaluated


def test_archive_file_cf_layout(engine, registry, loaded, tmp_path):
    arch = tmp_path / "archive"
    compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    path = archive_path(arch, ST, DAY)
    ds = xr.open_dataset(path, decode_times=False)
    assert ds.attrs["Conventions"] == "CF-1.8 ACDD-1.3"
    assert ds.attrs["featureType"] == "timeSeries"
    assert ds.attrs["institution"] == registry.stations[ST].operator
    assert "BAM-1020" in ds.attrs["source"] and ds.attrs["station_kind"] == "ambient_air"
    assert ds["station"].attrs["cf_role"] == "timeseries_id" and ds["station"].item() == ST
    assert ds["time"].attrs["units"] == "seconds since 1970-01-01 00:00:00 UTC"
    assert ds["time"].attrs["calendar"] == "standard"
    assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["units"] == "degrees_east"
    pm = ds["HZ_AQ01_PM__PM2_5"]
    assert pm.attrs["units"] == "ug m-3" and pm.attrs["analyte"] == "PM2.5"
    assert pm.attrs["standard_name"] == "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air"
    assert set(pm.encoding["coordinates"].split()) >= {"lat", "lon", "station"}
    anc = pm.attrs["ancillary_variables"].split()
    flag = ds[anc[0]]
    assert flag.attrs["flag_meanings"] == FLAG_MEANINGS and flag.encoding["dtype"] == np.int8
    assert list(flag.attrs["flag_values"]) == list(range(8))
    assert ds["HZ_AQ01_GAS__SO2"].attrs["standard_name"] == "mole_fraction_of_sulfur_dioxide_in_air"
    assert "CK-20261120-SO2-span" in list(ds["check_id"].values)
    ds.close()


def test_archive_compact_twice_changes_nothing(engine, registry, loaded, tmp_path):
    arch = tmp_path / "archive"
    compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    path = archive_path(arch, ST, DAY)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    rep = compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    assert rep.days == [] and rep.rows_deleted == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    with Session(engine) as s:
        assert len(s.exec(select(ArchiveFile)).all()) == 1
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary files left


def test_archive_crash_after_rename_verifies_and_deletes(engine, registry, loaded, tmp_path):
    arch = tmp_path / "archive"
    compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    path = archive_path(arch, ST, DAY)
    content = path.read_bytes()
    # simulate the crash: the file is in place, but SQL still has the rows and no ArchiveFile
    with engine.begin() as conn:
        conn.execute(sa.delete(ArchiveFile))
    _insert(engine, loaded)
    rep = compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    assert [d.action for d in rep.days] == ["existing_verified"]
    assert _hot_count(engine) == 0 and rep.rows_deleted == len(loaded)
    assert path.read_bytes() == content  # not rewritten
    with Session(engine) as s:
        assert s.exec(select(ArchiveFile)).one().n_values == len(loaded)


def test_archive_late_reading_merged_into_new_version(engine, registry, loaded, tmp_path):
    arch = tmp_path / "archive"
    compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    path = archive_path(arch, ST, DAY)
    late = _rows(T0 + dt.timedelta(hours=5), 3, seed=9)
    _insert(engine, late)
    rep = compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    assert [d.action for d in rep.days] == ["merged"]
    assert _hot_count(engine) == 0
    rows = read_file_rows(path)
    assert len(rows) == len(loaded) + len(late)
    with Session(engine) as s:
        af = s.exec(select(ArchiveFile)).one()
    assert af.n_values == len(loaded) + len(late) and af.n_times == 123
    got = readings_frame(engine, arch, "HZ-AQ01-PM", "PM2.5", T0 + dt.timedelta(hours=5),
                         T0 + dt.timedelta(hours=6))
    want = [r["value"] for r in late if r["analyte"] == "PM2.5"]
    assert got["value"].tolist() == want


def test_archive_open_period_spans_hot_and_archived(engine, registry, loaded, tmp_path):
    arch = tmp_path / "archive"
    compact(engine, arch, registry, before=DAY + dt.timedelta(days=1))
    hot = _rows(T0 + dt.timedelta(days=1), 30, seed=3)  # next day, still hot
    _insert(engine, hot)
    start, end = T0 + dt.timedelta(minutes=100), T0 + dt.timedelta(days=1, minutes=10)
    ds = open_period(engine, arch, ST, start, end)
    assert ds.sizes["time"] == 20 + 10
    t = ds["time"].values
    assert t[0] == np.datetime64("2026-11-20T01:40") and t[-1] == np.datetime64("2026-11-21T00:09")
    v = ds["HZ_AQ01_GAS__SO2"].values
    want_a = [r["value"] for r in loaded if r["analyte"] == "SO2"][100:]
    want_h = [r["value"] for r in hot if r["analyte"] == "SO2"][:10]
    assert v.tolist() == want_a + want_h
    # the same layout whether hot or archived
    only_hot = open_period(engine, arch, ST, T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=2))
    only_arch = open_period(engine, arch, ST, T0, T0 + dt.timedelta(days=1))
    assert set(only_hot.variables) == set(only_arch.variables) == set(ds.variables)
    for name in ds.variables:
        assert ds[name].dtype == only_hot[name].dtype == only_arch[name].dtype


def test_archive_open_period_empty(engine, registry, tmp_path):
    sync_registry(engine, registry)
    ds = open_period(engine, tmp_path, ST, T0, T0 + dt.timedelta(days=1))
    assert ds.sizes["time"] == 0 and ds["station"].item() == ST


def test_archive_open_day_not_compacted(engine, registry, tmp_path):
    sync_registry(engine, registry)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _insert(engine, _rows(now - dt.timedelta(minutes=1), 1))
    rep = compact(engine, tmp_path, registry, before=now.date() + dt.timedelta(days=5))
    assert rep.days == [] and _hot_count(engine) == 6


def test_archive_units_and_standard_names():
    assert udunits("mg/m3") == "mg m-3" and udunits("ug/m3") == "ug m-3"
    assert udunits("mg/L") == "mg L-1" and udunits("pH") == "1" and udunits("%") == "percent"
    assert udunits("m/s") == "m s-1" and udunits("degC") == "degC"
    assert cf_standard_name("SO2", "mg/m3") == "mass_concentration_of_sulfur_dioxide_in_air"
    assert cf_standard_name("SO2", "umol/mol") == "mole_fraction_of_sulfur_dioxide_in_air"
    assert cf_standard_name("O2", "%") is None  # mole_fraction_of_oxygen_in_air is not a CF name
    assert cf_standard_name("pH", "pH") is None


def test_archive_standard_names_exist_in_cf_table(registry):
    from compliance_checker.cf.util import StandardNameTable

    table = StandardNameTable()
    for a in registry.analyzers.values():
        for c in a.channels:
            sn = cf_standard_name(c.analyte, c.unit)
            if sn is not None:
                assert sn in table, (a.id, c.analyte, sn)


def test_archive_file_passes_cf_compliance_checker(sqlite_engine, registry, tmp_path):
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    sync_registry(sqlite_engine, registry)
    _insert(sqlite_engine, _rows(T0, 30))
    water = [{"analyzer_id": aid, "analyte": an, "ts": T0 + dt.timedelta(hours=h), "value": 7.1,
              "flag": "N", "seq": h, "received_at": T0}
             for h in range(3) for aid, an in [(a.id, c.analyte) for a in registry.analyzers.values()
                                               if registry.stations[a.station].kind != "ambient_air"
                                               for c in a.channels]]
    _insert(sqlite_engine, water)
    arch = tmp_path / "archive"
    rep = compact(sqlite_engine, arch, registry, before=DAY + dt.timedelta(days=1))
    assert not rep.errors and len(rep.days) >= 3
    CheckSuite().load_all_available_checkers()
    for d in rep.days:
        out = tmp_path / f"{d.station}.json"
        ComplianceChecker.run_checker(str(arch / d.path), ["cf:1.8"], 0, "normal",
                                      output_filename=str(out), output_format="json")
        result = json.loads(out.read_text())["cf:1.8"]
        high = result.get("high_priorities", [])
        failed = [h for h in high if h["value"][0] < h["value"][1]]
        assert failed == [], (d.station, failed)
        assert not result.get("errors"), result.get("errors")


def test_archive_cli_compact(sqlite_url, registry, tmp_path):
    from typer.testing import CliRunner

    from envcal.cli import app
    from envcal.db import init_db, make_engine

    eng = make_engine(sqlite_url)
    init_db(eng)
    sync_registry(eng, registry)
    _insert(eng, _rows(T0, 10))
    arch = tmp_path / "arch"
    args = ["archive", "compact", "--db", sqlite_url, "--archive", str(arch), "--before", "2026-11-21"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{ST} 2026-11-20: written" in res.output and "59 hot rows deleted" in res.output
    assert archive_path(arch, ST, DAY).is_file()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "0 station-days archived" in res.output
    res = CliRunner().invoke(app, [*args[:-1], "yesterday"])
    assert res.exit_code == 2


def test_archive_compact_sets_aside_unarchivable_rows_and_names_them(engine, registry, tmp_path):
    """Rows an older ingest let in (seq 2**63-1, a NUL in a check id, year 1600) no longer
    keep the day's good readings in the hot store: they move to dead letters, named by id."""
    sync_registry(engine, registry)
    nul = "CK\x1fx" if engine.dialect.name == "postgresql" else "CK\x00x"
    good = _rows(T0, 5)
    poison = [dict(good[0], ts=T0 + dt.timedelta(hours=1), seq=2**63 - 1),
              # PostgreSQL refuses NUL in text; another control character there
              dict(good[1], ts=T0 + dt.timedelta(hours=2), check_id=nul, check_kind="span",
                   check_phase="run"),
              dict(good[2], ts=dt.datetime(1600, 1, 1, tzinfo=dt.UTC))]
    _insert(engine, good + poison)
    with engine.connect() as conn:
        bad_ids = conn.execute(sa.select(Reading.id).where(
            (Reading.seq == 2**63 - 1) | (Reading.check_id == nul)
            | (Reading.ts < dt.datetime(1700, 1, 1, tzinfo=dt.UTC))).order_by(Reading.id)).scalars().all()
    rep = compact(engine, tmp_path / "archive", registry)
    assert rep.errors == [], rep.lines()
    assert _hot_count(engine) == 0
    text = "\n".join(rep.lines())
    for i in bad_ids:
        assert f"SET ASIDE reading id {i} " in text
    assert "seq 9223372036854775807" in text and "control character U+00" in text and "1678..2262" in text
    assert len(read_file_rows(archive_path(tmp_path / "archive", ST, DAY))) == len(good)
    with engine.connect() as conn:
        reasons = conn.execute(sa.text("select reason from dead_letter")).scalars().all()
    assert len(reasons) == 3 and all(r.startswith("compaction: hot-store reading id ") for r in reasons)
    assert compact(engine, tmp_path / "archive", registry).days == []  # nothing left behind


def test_archive_compact_deletes_exactly_its_rows_among_interleaved_ids(engine, registry, tmp_path):
    # ids of another station's rows (and of the next day) interleave with the archived ones:
    # long runs of consecutive ids are deleted as ranges, the rest one by one
    from envcal.archive import compact_day

    sync_registry(engine, registry)
    mine = _rows(T0, 40)
    other = [{**r, "analyzer_id": "HZ-AQ02-PM"} for r in mine if r["analyzer_id"] == "HZ-AQ01-PM"]
    later = [{**r, "ts": r["ts"] + dt.timedelta(days=1)} for r in mine[:30]]
    _insert(engine, mine[:200])              # a long run of this station-day
    for n, k in enumerate(range(200, len(mine), 3)):  # then short runs between foreign rows
        _insert(engine, mine[k:k + 3])
        _insert(engine, [other[n % len(other)] if n < 20 else later[n % 30]])
    _insert(engine, other[20:])
    before = _hot_count(engine)
    res = compact_day(engine, tmp_path / "archive", ST, DAY, registry)
    assert res.rows_deleted == len(mine)
    with engine.connect() as conn:
        left = conn.execute(sa.select(Reading.analyzer_id, Reading.ts)).all()
    assert len(left) == before - len(mine)
    assert all(a == "HZ-AQ02-PM" or ts.date() > DAY for a, ts in left)


def test_archive_compact_reports_progress_per_station_day(engine, registry, loaded, tmp_path):
    _insert(engine, [{**r, "ts": r["ts"] + dt.timedelta(days=1)} for r in loaded[:50]])
    seen = []
    rep = compact(engine, tmp_path / "archive", registry, before=DAY + dt.timedelta(days=2),
                  progress=lambda done, total, st, day: seen.append((done, total, st, day)))
    assert seen == [(0, 2, ST, DAY), (1, 2, ST, DAY + dt.timedelta(days=1))]
    assert len(rep.days) == 2
