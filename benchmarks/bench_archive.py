"""``compact_day``: one UTC day of 200 analyzers x 5 channels x 1-minute data (1.44 M values)
compacted from SQLite into CF NetCDF, against ``xarray.Dataset.to_netcdf`` of the same
datasets already in memory.

envcal does more than the baseline (one SQL query per station-day into numpy, building the
layout, writing, re-reading and comparing every value, rename, deleting the rows in SQL),
so a speedup below 1 is expected: it is the price of the checked, crash-safe move.
The 200 analyzers sit at 20 stations (10 each), so 20 files are written.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import row

DAY = dt.date(2026, 1, 5)
ANALYTES = [("SO2", "mg/m3"), ("NOx", "mg/m3"), ("O2", "%"), ("dust", "mg/m3"), ("flue_temp", "degC")]


def _registry(n_stations: int, per_station: int):
    from envcal.registry import AnalyzerSpec, ChannelSpec, Registry, StationSpec

    reg = Registry()
    for s in range(n_stations):
        sid = f"BENCH-ST{s:02d}"
        reg.stations[sid] = StationSpec(id=sid, name=f"bench station {s}", kind="flue_gas",
                                        lat=30.0 + s / 100, lon=120.0 + s / 100, operator="bench")
        for a in range(per_station):
            aid = f"B{s:02d}-CEMS{a:02d}"
            reg.analyzers[aid] = AnalyzerSpec(
                id=aid, station=sid, model="CEMS-2000", serial=f"SN{s:02d}{a:02d}", rule_pack="hj75_2017",
                channels=[ChannelSpec(analyte=n, unit=u, span=100.0) for n, u in ANALYTES])
    return reg


def _fill(engine, reg, minutes: int) -> int:
    t0 = np.datetime64(DAY.isoformat(), "us")
    stamps = [str(t0 + np.timedelta64(i, "m")).replace("T", " ") + ("" if "." in str(t0) else ".000000")
              for i in range(minutes)]
    rng = np.random.default_rng(0)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        n = 0
        for aid, a in reg.analyzers.items():
            vals = np.round(rng.uniform(0, 100, (len(a.channels), minutes)), 3)
            batch = [(aid, c.analyte, stamps[i], float(vals[j, i]), "N" if i % 97 else "C", i, stamps[i])
                     for j, c in enumerate(a.channels) for i in range(minutes)]
            cur.executemany("INSERT INTO reading (analyzer_id, analyte, ts, value, flag, seq, received_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
            n += len(batch)
        raw.commit()
    finally:
        raw.close()
    return n


def _hand_written(db: Path, reg, out: Path) -> None:
    """What a user writes by hand: pandas reads each station-day, pivots it into one
    Dataset (values and flag codes per channel, CF time), ``to_netcdf``."""
    import sqlite3

    import pandas as pd
    import xarray as xr

    from envcal.archive import FLAG_LETTERS

    codes = {c: i for i, c in enumerate(FLAG_LETTERS)}
    t0 = DAY.isoformat()
    t1 = (DAY + dt.timedelta(days=1)).isoformat()
    out.mkdir(exist_ok=True)
    con = sqlite3.connect(db)
    try:
        for sid in reg.stations:
            df = pd.read_sql_query(
                "SELECT r.analyzer_id, r.analyte, r.ts, r.value, r.flag, r.seq FROM reading r "
                "JOIN analyzer a ON a.id = r.analyzer_id WHERE a.station_id = ? AND r.ts >= ? "
                "AND r.ts < ?", con, params=(sid, t0, t1))
            df["ts"] = pd.to_datetime(df["ts"])
            df["flag"] = df["flag"].map(codes).astype("int8")
            wide = df.pivot(index="ts", columns=["analyzer_id", "analyte"], values=["value", "flag"])
            time_s = (wide.index.to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6)
            data = {}
            for aid, analyte in wide["value"].columns:
                name = f"{aid}__{analyte}".replace("-", "_").replace(".", "_")
                data[name] = ("time", wide["value"][(aid, analyte)].to_numpy(np.float64),
                              {"analyzer_id": aid, "analyte": analyte})
                data[name + "_flag"] = ("time", wide["flag"][(aid, analyte)].fillna(-1).to_numpy(np.int8))
            ds = xr.Dataset(data, coords={"time": ("time", time_s, {
                "units": "seconds since 1970-01-01 00:00:00 UTC"})})
            ds.to_netcdf(out / f"{sid}.nc", engine="netcdf4", format="NETCDF4")
    finally:
        con.close()


def _vs_hand_written(tmp: Path, reg, n_values: int, rounds: int) -> dict:
    """compact() on a fresh copy of the database against the hand-written export (same run)."""
    import envcal.archive as arc
    from envcal.db import make_engine

    src = tmp / "bench.db"
    t_env, t_hand, size = [], [], 0
    for k in range(rounds):
        for kind in (("hand", "envcal") if k % 2 == 0 else ("envcal", "hand")):
            db = tmp / f"{kind}{k}.db"
            shutil.copy(src, db)
            if kind == "hand":
                c0 = time.perf_counter()
                _hand_written(db, reg, tmp / f"hand{k}")
                t_hand.append(time.perf_counter() - c0)
                continue
            engine = make_engine(f"sqlite:///{db}")
            c0 = time.perf_counter()
            report = arc.compact(engine, tmp / f"archive{k}", reg, before=DAY + dt.timedelta(days=1))
            t_env.append(time.perf_counter() - c0)
            engine.dispose()
            assert not report.errors and report.rows_deleted == n_values, report.lines()[-1]
            size = sum(p.stat().st_size for p in (tmp / f"archive{k}").rglob("*.nc"))
    hand_size = sum(p.stat().st_size for p in (tmp / "hand0").glob("*.nc"))
    e, b = min(t_env), min(t_hand)
    return row("compact_day_vs_hand_written", e,
               "pandas read_sql_query + pivot + xarray Dataset + to_netcdf (no check, no delete)", b,
               values=n_values, bytes=size, envcal_mb_per_s=size / 1e6 / e,
               baseline_mb_per_s=hand_size / 1e6 / b, envcal_values_per_s=n_values / e,
               baseline_values_per_s=n_values / b, rounds=rounds,
               envcal_includes="SQL fetch, CF layout, write, re-read + compare, fsync, rename, "
                               "ArchiveFile row, delete of the rows")


def run(quick: bool = False) -> list[dict]:
    import envcal.archive as arc
    from envcal.db import init_db, make_engine
    from envcal.registry import sync_registry

    n_st, per = (4, 5) if quick else (20, 10)
    minutes = 1440
    tmp = Path(tempfile.mkdtemp(prefix="envcal-bench-archive-"))
    try:
        engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
        init_db(engine)
        reg = _registry(n_st, per)
        sync_registry(engine, reg)
        n_values = _fill(engine, reg, minutes)
        engine.dispose()
        import xarray as xr

        # xarray's one-time imports (dask, distributed probes) outside the timings
        xr.Dataset({"x": ("t", np.zeros(2))}).to_netcdf(tmp / "warm.nc", engine="netcdf4")
        hand_row = _vs_hand_written(tmp, reg, n_values, 2 if quick else 3)
        engine = make_engine(f"sqlite:///{tmp / 'bench.db'}")
        # baseline: the same datasets, already in memory, written by xarray
        t0 = dt.datetime.combine(DAY, dt.time(), dt.UTC)
        datasets = []
        with engine.connect() as conn:
            for sid in reg.stations:
                rows = arc._fetch_hot(conn, sid, t0, t0 + dt.timedelta(days=1))
                datasets.append(arc._for_disk(arc._build_dataset(rows, arc._meta(conn, sid, reg), "bench")))
        (tmp / "base").mkdir()
        b0 = time.perf_counter()
        for i, ds in enumerate(datasets):
            ds.to_netcdf(tmp / "base" / f"{i}.nc", engine="netcdf4", format="NETCDF4")
        base_s = time.perf_counter() - b0
        del datasets
        c0 = time.perf_counter()
        report = arc.compact(engine, tmp / "archive", reg, before=DAY + dt.timedelta(days=1))
        env_s = time.perf_counter() - c0
        assert not report.errors, report.lines()[-1]
        assert report.rows_deleted == n_values, (report.rows_deleted, n_values)
        size = sum(p.stat().st_size for p in (tmp / "archive").rglob("*.nc"))
        engine.dispose()
        return [row("compact_day", env_s, "xarray.Dataset.to_netcdf (in memory, no SQL, no check)",
                    base_s, values=n_values, files=len(report.days), bytes=size,
                    envcal_mb_per_s=size / 1e6 / env_s, baseline_mb_per_s=size / 1e6 / base_s,
                    envcal_values_per_s=n_values / env_s), hand_row]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
