"""Archive-wide verification replay on Dask: the same results as :func:`envcal.verify.replay`.

What runs where:

1. **On Dask, in parallel** — reading the archive: per station,
   ``xarray.open_mfdataset(..., parallel=True, chunks={})`` opens the day files on the
   workers; a per-file ``preprocess`` keeps only the readings that belong to a QC check
   (a few percent of an archive), with each file's ``check_entry`` table resolved to the
   check id, kind, phase and material per reading.
2. **In this process, single writer, in time order** — what needs SQL (certificates, the
   previous result of the same kind for a drift, rule packs, storage) and the judgement:
   :meth:`envcal.checks.verifier.Verifier.evaluate_and_store`, the code of the live path,
   which runs the batch kernel (:func:`envcal.kernels.evaluate_checks`, verdict stage on)
   once per generation of checks. The statistics are computed once, there.

References
----------
xarray ``open_mfdataset`` and ``apply_ufunc`` (dask="parallelized"); Dask distributed
``LocalCluster``. DESIGN.md section 6.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from envcal.archive import CHECK_FIELDS, _fetch_hot, archive_path
from envcal.checks.extract import CheckReadings, group_check_rows, summaries_in
from envcal.checks.result import CheckResult
from envcal.checks.verifier import Verifier

log = logging.getLogger("envcal.replay_dask")

#: Same margin as :func:`envcal.verify.archived_checks`: checks that began before the period.
MARGIN = dt.timedelta(hours=6)
_SEP = "\x1f"

Progress = Callable[[str, int, int], None]


@contextlib.contextmanager
def dask_client(scheduler: Any = "local", *, n_workers: int = 2) -> Iterator[Any]:
    """A Dask distributed client for ``scheduler``.

    Parameters
    ----------
    scheduler : "local", str or distributed.Client
        ``"local"``: a ``LocalCluster(n_workers, threads_per_worker=1, processes=False)``
        for the duration; an address (``tcp://host:8786``): connect to that scheduler;
        a Client: use it as is.
    n_workers : int, default 2
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler in (None, "", "local"):
        with (LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=False,
                           dashboard_address=None) as cluster, Client(cluster) as client):
            yield client
        return
    with Client(str(scheduler)) as client:
        yield client


# ----------------------------------------------------------------------------- archive
def _as_utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: give times with an offset")
    return t.astimezone(dt.UTC)


def _key(aid: str, analyte: str) -> str:
    return f"{aid}{_SEP}{analyte}"


def _checks_only(ds: xr.Dataset, channels: tuple[str, ...], s_us: int, e_us: int) -> xr.Dataset:
    """``open_mfdataset`` preprocess: one archive file -> its QC-check readings in [s, e).

    Output: dim ``time`` (int64 µs since the epoch: times where some channel is in a
    check), per channel ``v{sep}{analyzer}{sep}{analyte}`` (float64, NaN: none) and
    ``c{sep}...`` (object: ``id{sep}kind{sep}phase{sep}material``, None: not in a check),
    for every channel in ``channels`` so all files share the same variables.
    """
    tv = np.asarray(ds["time"].values)
    if np.issubdtype(tv.dtype, np.datetime64):
        t_us = tv.astype("datetime64[us]").astype(np.int64)
    else:
        t_us = np.round(tv.astype(np.float64) * 1e6).astype(np.int64)
    table = [np.asarray(ds[n].values, dtype=object).reshape(-1)
             for n in ("check_id", "check_kind", "check_phase", "check_material")]
    keys = np.array([None] + [_SEP.join("" if x is None else str(x) for x in row)
                              for row in list(zip(*table, strict=True))[1:]], dtype=object)
    in_period = (t_us >= s_us) & (t_us < e_us)
    vals: dict[str, np.ndarray] = {}
    chks: dict[str, np.ndarray] = {}
    for var in ds.data_vars.values():
        if var.attrs.get("envcal_role") != "data":
            continue
        k = _key(var.attrs["analyzer_id"], var.attrs["analyte"])
        if k not in channels:
            continue
        roles = {ds[a].attrs.get("envcal_role"): a for a in var.attrs["ancillary_variables"].split()}
        flag = np.asarray(ds[roles["flag"]].values).astype(np.int8)
        ci = np.asarray(ds[roles["check_index"]].values).astype(np.int64)
        c = np.full(len(t_us), None, dtype=object)
        sel = (flag >= 0) & (ci > 0) & in_period
        c[sel] = keys[ci[sel]]
        vals[k] = np.asarray(var.values, dtype=np.float64)
        chks[k] = c
    any_check = np.zeros(len(t_us), dtype=bool)
    for c in chks.values():
        any_check |= c != None  # noqa: E711 - elementwise on an object array
    idx = np.nonzero(any_check)[0]
    out = {}
    for k in channels:
        if k in vals:
            out["v" + _SEP + k] = ("time", vals[k][idx])
            out["c" + _SEP + k] = ("time", chks[k][idx])
        else:
            out["v" + _SEP + k] = ("time", np.full(len(idx), np.nan))
            out["c" + _SEP + k] = ("time", np.full(len(idx), None, dtype=object))
    return xr.Dataset(out, coords={"time": t_us[idx]})


def station_files(archive_dir: str | Path, station: str, start: dt.datetime,
                  end: dt.datetime) -> list[Path]:
    """The archive files of ``station`` covering [start, end) that exist."""
    start, end = _as_utc(start), _as_utc(end)
    d, last = start.date(), (end - dt.timedelta(microseconds=1)).date()
    out = []
    while d <= last:
        p = archive_path(archive_dir, station, d)
        if p.exists():
            out.append(p)
        d += dt.timedelta(days=1)
    return out


def open_station_checks(files: list[Path], channels: tuple[str, ...], start: dt.datetime,
                        end: dt.datetime) -> xr.Dataset:
    """A station's QC-check readings in [start, end) from its archive files, lazily (Dask).

    Returns
    -------
    xarray.Dataset
        The layout of :func:`_checks_only`, chunked one file per chunk along ``time``.
    """
    s_us, e_us = (int((_as_utc(t) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
                  for t in (start, end))
    return xr.open_mfdataset(
        [str(f) for f in files], engine="netcdf4", combine="nested", concat_dim="time",
        preprocess=partial(_checks_only, channels=channels, s_us=s_us, e_us=e_us),
        # files are opened one after another: HDF5 (under netCDF4) is not thread-safe, and
        # opening them in the workers' threads crashed the process (segfault seen in CI);
        # the chunks are then read through Dask with xarray's HDF5 lock
        parallel=False, chunks={}, mask_and_scale=False, decode_times=False, cache=False,
        data_vars="all", coords="minimal", compat="override", join="outer")


def _rows_from_dataset(ds: xr.Dataset) -> pd.DataFrame:
    """Loaded :func:`open_station_checks` output -> archive rows (analyzer, analyte, t_us, ...)."""
    parts = []
    t_us = np.asarray(ds["time"].values, dtype=np.int64) if "time" in ds.coords else np.empty(0, np.int64)
    for name in ds.data_vars:
        if not name.startswith("c" + _SEP):
            continue
        k = name[2:]
        aid, analyte = k.split(_SEP)
        c = np.asarray(ds[name].values, dtype=object)
        sel = np.nonzero([isinstance(x, str) for x in c])[0]  # None, or NaN after concat
        if not len(sel):
            continue
        fields = np.array([s.split(_SEP) for s in c[sel]], dtype=object).reshape(len(sel), 4)
        part = {"analyzer": aid, "analyte": analyte, "t_us": t_us[sel],
                "value": np.asarray(ds["v" + _SEP + k].values, dtype=np.float64)[sel]}
        for i, col in enumerate(CHECK_FIELDS):
            part[col] = [x or None for x in fields[:, i]]
        parts.append(pd.DataFrame(part))
    if not parts:
        return pd.DataFrame({c: [] for c in ("analyzer", "analyte", "t_us", "value", *CHECK_FIELDS)})
    return pd.concat(parts, ignore_index=True)


def _s(x: Any) -> str | None:
    """A string field, or None (pandas turns None into NaN in object columns)."""
    return x if isinstance(x, str) and x else None


def _checks_from_rows(archived: pd.DataFrame, hot: pd.DataFrame, analyzers: Iterable[str]
                      ) -> list[CheckReadings]:
    """Archived check rows, replaced by hot rows on the same (analyzer, analyte, time)
    (as :func:`envcal.archive.readings_frame` does), grouped into checks."""
    if len(hot):
        hot_keys = pd.MultiIndex.from_frame(hot[["analyzer", "analyte", "t_us"]])
        if len(archived):
            a_keys = pd.MultiIndex.from_frame(archived[["analyzer", "analyte", "t_us"]])
            archived = archived[~a_keys.isin(hot_keys)]
        hot = hot[hot["check_id"].notna()]
        archived = pd.concat([archived, hot[list(archived.columns)]], ignore_index=True)
    out = []
    for aid in analyzers:
        df = archived[archived["analyzer"] == aid]
        if not len(df):
            continue
        ts = pd.to_datetime(df["t_us"].to_numpy(np.int64), unit="us", utc=True)
        rows = [(ck, t.to_pydatetime(), an, None if v != v else float(v), _s(kind), _s(phase), _s(mat))
                for ck, t, an, v, kind, phase, mat in zip(
                    df["check_id"], ts, df["analyte"], df["value"], df["check_kind"],
                    df["check_phase"], df["material"], strict=True)]
        out.extend(group_check_rows(aid, rows))
    return out


# ----------------------------------------------------------------------------- replay
@dataclass
class DaskReplay:
    """What :func:`replay_dask_report` did."""

    results: list[CheckResult]
    checks: int
    files: int


def replay_dask_report(verifier: Verifier, archive_dir: str | Path | None, start: dt.datetime,
                       end: dt.datetime, scheduler: Any = "local", *,
                       analyzer_ids: Iterable[str] | None = None,
                       progress: Progress | None = None, batch: int = 2000) -> DaskReplay:
    """:func:`replay_dask` with what it read (files, checks)."""
    import dask

    start, end = _as_utc(start), _as_utc(end)
    wanted = set(analyzer_ids) if analyzer_ids is not None else None
    reg = verifier.registry
    t0, t1 = start - MARGIN, end + MARGIN
    by_station: dict[str, list[str]] = {}
    for a in reg.analyzers.values():
        if wanted is None or a.id in wanted:
            by_station.setdefault(a.station, []).append(a.id)
    with dask_client(scheduler) as client:
        loaded: dict[str, xr.Dataset] = {}
        n_files = 0
        todo = {}
        for station in by_station:
            files = station_files(archive_dir, station, t0, t1) if archive_dir is not None else []
            if files:
                todo[station] = files
        with dask.config.set(scheduler=client):
            for i, (station, files) in enumerate(todo.items(), 1):
                aids = by_station[station]
                channels = tuple(_key(aid, c.analyte) for aid in aids for c in reg.analyzers[aid].channels)
                # the files are opened and reduced in parallel on the cluster (parallel=True)
                with open_station_checks(files, channels, t0, t1) as ds:
                    loaded[station] = ds.load()
                n_files += len(files)
                if progress:
                    progress("reading archive (dask)", i, len(todo))
        checks: list[CheckReadings] = []
        with verifier.engine.connect() as conn:
            for station, aids in by_station.items():
                archived = (_rows_from_dataset(loaded[station]) if station in loaded
                            else _rows_from_dataset(xr.Dataset()))
                hot = _fetch_hot(conn, station, t0, t1)
                if wanted is not None:
                    hot = hot[hot["analyzer"].isin(aids)]
                for c in _checks_from_rows(archived, hot, aids):
                    if start <= c.ts[-1].astype("datetime64[us]").astype(dt.datetime).replace(
                            tzinfo=dt.UTC) < end:
                        checks.append(c)
        checks += [c for c in summaries_in(verifier.engine, start, end)
                   if wanted is None or c.analyzer_id in wanted]
        checks.sort(key=lambda c: (c.ts[-1], c.check_id))
    results: list[CheckResult] = []
    for i in range(0, len(checks), batch):
        results.extend(verifier.evaluate_and_store(checks[i:i + batch]))
        if progress:
            progress("evaluating and storing", min(i + batch, len(checks)), len(checks))
    return DaskReplay(results, len(checks), n_files)


def replay_dask(verifier: Verifier, archive_dir: str | Path | None, start: dt.datetime,
                end: dt.datetime, scheduler: Any = "local", *,
                analyzer_ids: Iterable[str] | None = None,
                progress: Progress | None = None) -> list[dict[str, Any]]:
    """Re-evaluate every check that ended in [start, end), reading the archive on Dask.

    Stores the same results as :func:`envcal.verify.replay` (compared in the tests): the
    archive is read on a Dask cluster; certificates, previous results, rule packs, the
    batch kernel and storage stay with one writer in time order.

    Parameters
    ----------
    verifier : Verifier
    archive_dir : str or Path or None
        NetCDF archive root (None: hot store only).
    start, end : datetime
        Timezone-aware period [start, end).
    scheduler : "local", address or distributed.Client, default "local"
        ``"local"``: a 2-worker in-process ``LocalCluster``; else a scheduler address.
    analyzer_ids : iterable of str, optional
        Limit to these analyzers.
    progress : callable, optional
        ``f(phase, done, total)``.

    Returns
    -------
    list of CheckResult
        The results (as stored).

    References
    ----------
    DESIGN.md section 6 (Dask); see :mod:`envcal.verify` for the standards applied.
    """
    return replay_dask_report(verifier, archive_dir, start, end, scheduler,
                              analyzer_ids=analyzer_ids, progress=progress).results
