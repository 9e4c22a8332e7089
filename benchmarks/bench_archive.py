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
                    envcal_values_per_s=n_values / env_s)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
