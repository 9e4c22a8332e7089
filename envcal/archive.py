"""The archive: closed days of the SQL hot store as CF NetCDF files, and readers for any period.

One file per station and UTC day, ``{archive}/{station}/{YYYY}/{station}_{YYYYMMDD}.nc``
(NetCDF-4, CF-1.8 ``featureType = "timeSeries"``, single-station layout of CF appendix H.2.3):

``time(time)``
    ``seconds since 1970-01-01 00:00:00 UTC`` as float64 (CF-1.8 has no int64 type; a
    double holds whole seconds exactly and milliseconds to well under a microsecond), the
    union of all timestamps of the station that day.
``station``, ``lat``, ``lon``
    scalars; ``station`` has ``cf_role = "timeseries_id"``.
``{analyzer}__{analyte}(time)``
    one float64 data variable per analyzer channel (non-alphanumerics of the ids become
    ``_`` so names stay CF-clean; the exact ids are in the ``analyzer_id`` and ``analyte``
    attributes, which the readers use). UDUNITS ``units``, CF ``standard_name`` where one
    fits the channel's unit, ``_FillValue = NaN``, ``ancillary_variables``.
``{var}_flag(time)`` (byte)
    the HJ 212-2017 data flag as a CF flag variable (``flag_values`` 0..7,
    ``flag_meanings`` ``normal stopped ... communication_fault``); ``-1`` = no reading at
    that time. A reading with no number has a flag and a NaN value.
``{var}_qa(time)`` (byte)
    ``not_evaluated quality_assured not_quality_assured`` (out-of-control periods). Fed from
    a ``Reading.qa_ok`` column when one exists, else all ``not_evaluated``.
``{analyzer}__seq(time)`` and ``{analyzer}__check_index(time)``
    the message ``seq`` (float64, exact to 2**53, NaN = none) and the QC check the reading belonged to, per analyzer (one MQTT
    message = one seq and one check block); should an analyzer's channels ever disagree at a
    time, that analyzer gets per-channel ``{var}_seq``/``{var}_check_index`` instead, so
    nothing is lost. ``check_index`` points into the ``check_entry`` table:
    ``check_id``, ``check_kind``, ``check_phase``, ``check_material`` (strings; entry 0 is
    "no check"), so verification replay re-finds checks by id. Empty strings read back as
    ``None``.

Compaction writes a temporary file in the same folder, re-opens it with xarray and compares
every value, flag, time and count with the SQL rows, ``os.replace``-s it onto the final name,
records :class:`envcal.models.ArchiveFile` and deletes the rows in the same transaction.
Running it twice changes nothing; a file already present (crash after the rename) is checked
and the rows deleted; late readings for an archived day are merged into a new version.

References
----------
CF Conventions 1.8, sections 3.1 (units), 3.3 (standard_name), 3.5 (flags), 9 and
appendix H.2.3 (single time series); ACDD 1.3; HJ 212-2017 Table 8 (data flags).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
import xarray as xr
from sqlalchemy.engine import Connection, Engine

import envcal
from envcal.analytes import ANALYTES
from envcal.archive_limits import SEQ_MAX, TS_MAX_US, TS_MIN_US, text_problem
from envcal.models import Analyzer, ArchiveFile, Channel, Reading, Station
from envcal.protocols.records import DATA_FLAGS

#: HJ 212-2017 Table 8 flags in the order of their CF ``flag_values`` (0..7).
FLAG_LETTERS = "".join(DATA_FLAGS)
FLAG_MEANINGS = "normal stopped maintenance manual fault calibration over_range communication_fault"
QA_MEANINGS = "not_evaluated quality_assured not_quality_assured"
TIME_UNITS = "seconds since 1970-01-01 00:00:00 UTC"
SEQ_FILL = np.iinfo(np.int64).min  # in row frames; on disk seq is float64 with NaN
BYTE_FILL = np.int8(-1)
CHECK_FILL = np.int32(-1)
CHECK_FIELDS = ("check_id", "check_kind", "check_phase", "material")
KEY = ["analyzer", "analyte", "t_us"]
ROW_COLUMNS = ["analyzer", "analyte", "t_us", "value", "flag", "seq", "qa", *CHECK_FIELDS, "id"]

_FLAG_CODE = {c: i for i, c in enumerate(FLAG_LETTERS)}
_DELETE_CHUNK = 10_000
#: a run of at least this many consecutive row ids is deleted as one id range; ranges per
#: statement stay far below SQLite's expression depth limit (1000)
_MIN_RUN, _RANGE_CHUNK = 8, 200

#: UDUNITS spellings of the unit strings used in registries.
_UDUNITS = {
    "%": "percent", "mg/m3": "mg m-3", "ug/m3": "ug m-3", "µg/m3": "ug m-3", "mg/L": "mg L-1",
    "ug/L": "ug L-1", "pH": "1", "m/s": "m s-1", "L/min": "L min-1", "L/s": "L s-1",
    "m3/h": "m3 h-1", "m3/s": "m3 s-1", "umol/mol": "umol mol-1", "ppm": "umol mol-1",
    "ppb": "nmol mol-1", "nmol/mol": "nmol mol-1", "degC": "degC", "K": "K", "Pa": "Pa",
    "kPa": "kPa", "hPa": "hPa", "NTU": "1",
}
#: CF standard names for gases reported as mole fraction (the analyte table lists mass
#: concentrations); only names present in the CF standard name table.
_MOLE_FRACTION_NAMES = {
    "SO2": "mole_fraction_of_sulfur_dioxide_in_air",
    "NO2": "mole_fraction_of_nitrogen_dioxide_in_air",
    "NO": "mole_fraction_of_nitrogen_monoxide_in_air",
    "O3": "mole_fraction_of_ozone_in_air",
    "CO": "mole_fraction_of_carbon_monoxide_in_air",
}
#: Names in :mod:`envcal.analytes` that are not in the CF standard name table (v93): CF has
#: NOx only "expressed_as_nitrogen" (HJ/EPA report it as NO2), no mole fraction of oxygen,
#: and no mass concentration of ammonium (ammonia nitrogen, NH3-N) in water.
_NOT_CF_NAMES = {"mass_concentration_of_nox_expressed_as_nitrogen_dioxide_in_air",
                 "mole_fraction_of_oxygen_in_air", "mass_concentration_of_ammonium_in_sea_water"}


class ArchiveError(RuntimeError):
    """An archive file that cannot be written, read or verified; the message says why."""


# --------------------------------------------------------------------------- metadata
@dataclass
class _Meta:
    """What the file says about the station, its analyzers and channel units."""

    station: str
    name: str = ""
    kind: str = ""
    lat: float = float("nan")
    lon: float = float("nan")
    operator: str = ""
    analyzers: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (model, serial)
    units: dict[tuple[str, str], str] = field(default_factory=dict)  # (analyzer, analyte) -> unit


def _meta(conn: Connection, station: str, registry=None) -> _Meta:
    if registry is not None and station in registry.stations:
        st = registry.stations[station]
        m = _Meta(station, st.name, st.kind, st.lat, st.lon, st.operator)
        for a in registry.analyzers.values():
            if a.station == station:
                m.analyzers[a.id] = (a.model, a.serial)
                for c in a.channels:
                    m.units[(a.id, c.analyte)] = c.unit
        return m
    t = Station.__table__.c
    st = conn.execute(sa.select(t.name, t.kind, t.lat, t.lon, t.operator).where(t.id == station)).first()
    if st is None:
        raise ArchiveError(f"unknown station {station!r}")
    m = _Meta(station, st.name, st.kind, st.lat, st.lon, st.operator)
    for aid, model, serial in conn.execute(
            sa.select(Analyzer.id, Analyzer.model, Analyzer.serial).where(Analyzer.station_id == station)):
        m.analyzers[aid] = (model, serial)
    for aid, analyte, unit in conn.execute(
            sa.select(Channel.analyzer_id, Channel.analyte, Channel.unit)
            .join(Analyzer, Analyzer.id == Channel.analyzer_id).where(Analyzer.station_id == station)):
        m.units[(aid, analyte)] = unit
    return m


def udunits(unit: str) -> str:
    """UDUNITS-2 spelling of a registry unit string (``mg/m3`` -> ``mg m-3``, ``pH`` -> ``1``).

    Parameters
    ----------
    unit : str
        Unit as written in the registry.

    Returns
    -------
    str
        A string UDUNITS-2 (and so CF ``units``) understands.

    References
    ----------
    CF Conventions 1.8, section 3.1.
    """
    u = unit.strip()
    if u in _UDUNITS:
        return _UDUNITS[u]
    u = re.sub(r"/([A-Za-zµ]+)(\d?)", lambda m: f" {m.group(1)}-{m.group(2) or '1'}", u)
    return u.replace("µ", "u")


def cf_standard_name(analyte: str, unit: str) -> str | None:
    """CF standard name for a channel, or None when CF has none that fits its unit.

    The analyte table gives mass concentrations; a gas channel in mole fraction
    (``umol/mol``) gets the ``mole_fraction_of_...`` name instead, and a name whose canonical
    units do not match the channel's unit is dropped (an inconsistent standard name is worse
    than none).

    References
    ----------
    CF Conventions 1.8, section 3.3; CF standard name table.
    """
    from envcal.units import UnitError, is_mass_concentration, is_mole_fraction, parse_unit

    a = ANALYTES.get(analyte)
    try:
        u = parse_unit(unit)
    except UnitError:
        return None
    if is_mole_fraction(u) and unit.strip() not in ("pH", "NTU"):
        return _MOLE_FRACTION_NAMES.get(analyte)
    name = a.standard_name if a else None
    if name is None or name in _NOT_CF_NAMES:
        return None
    if name.startswith("mass_concentration_of_") and not is_mass_concentration(u):
        return None
    if name.startswith("mole_fraction_of_"):
        return None
    if name.endswith("temperature") and u.dimensionality != parse_unit("K").dimensionality:
        return None
    if name.endswith("pressure") and u.dimensionality != parse_unit("Pa").dimensionality:
        return None
    return name


def _clean(s: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", s)
    return s if s[:1].isalpha() else "v_" + s


# --------------------------------------------------------------------------- rows
def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "analyzer": pd.Series([], dtype=object), "analyte": pd.Series([], dtype=object),
        "t_us": pd.Series([], dtype=np.int64), "value": pd.Series([], dtype=np.float64),
        "flag": pd.Series([], dtype=np.int8), "seq": pd.Series([], dtype=np.int64),
        "qa": pd.Series([], dtype=np.int8),
        **{c: pd.Series([], dtype=object) for c in CHECK_FIELDS},
        "id": pd.Series([], dtype=np.int64)})


def _has_qa_column() -> bool:
    return "qa_ok" in Reading.__table__.c


def _fetch_hot(conn: Connection, station: str, t0: dt.datetime, t1: dt.datetime,
               analyzer: str | None = None, analyte: str | None = None,
               keep_bad_flags: bool = False) -> pd.DataFrame:
    """Hot-store rows of a station in [t0, t1): one query, columns into numpy (an unknown
    flag raises, or with ``keep_bad_flags`` is kept as code -1 for :func:`unarchivable`)."""
    r = Reading.__table__.c
    if conn.dialect.name == "sqlite":
        ts_col = sa.type_coerce(r.ts, sa.String)
    else:
        ts_col = sa.cast(sa.func.round(sa.extract("epoch", r.ts) * 1_000_000), sa.BigInteger)
    cols = [r.id, r.analyzer_id, r.analyte, ts_col, r.value, r.flag, r.seq,
            r.check_id, r.check_kind, r.check_phase, r.material]
    qa = _has_qa_column()
    if qa:
        cols.append(r.qa_ok)
    q = (sa.select(*cols).join(Analyzer.__table__, Analyzer.__table__.c.id == r.analyzer_id)
         .where(Analyzer.__table__.c.station_id == station, r.ts >= t0, r.ts < t1))
    if analyzer is not None:
        q = q.where(r.analyzer_id == analyzer)
    if analyte is not None:
        q = q.where(r.analyte == analyte)
    res = conn.execute(q)
    try:  # the DBAPI cursor's plain tuples: no per-row processing (the columns need none)
        rows = res.cursor.fetchall()
    finally:
        res.close()
    if not rows:
        return _empty_rows()
    c = list(zip(*rows, strict=True))
    n = len(rows)
    if conn.dialect.name == "sqlite":
        t_us = np.array(c[3], dtype="datetime64[us]").astype(np.int64)
    else:
        t_us = np.array(c[3], dtype=np.int64)
    flags = np.array(c[5], dtype=object)
    codes = np.fromiter((_FLAG_CODE.get(f, -1) for f in flags), dtype=np.int8, count=n)
    if (codes < 0).any() and not keep_bad_flags:
        bad = sorted({str(f) for f in flags[codes < 0]})
        raise ArchiveError(f"station {station}: unknown HJ 212 data flag(s) {bad} in the hot store")
    seq = np.array([SEQ_FILL if s is None else s for s in c[6]], dtype=np.int64)
    if qa:
        qa_arr = np.array([0 if v is None else (1 if v else 2) for v in c[11]], dtype=np.int8)
    else:
        qa_arr = np.zeros(n, dtype=np.int8)
    df = pd.DataFrame({
        "analyzer": np.array(c[1], dtype=object), "analyte": np.array(c[2], dtype=object),
        "t_us": t_us, "value": np.array([np.nan if v is None else v for v in c[4]], dtype=np.float64),
        "flag": codes, "seq": seq, "qa": qa_arr,
        **{name: _norm_str(np.array(c[7 + i], dtype=object)) for i, name in enumerate(CHECK_FIELDS)},
        "id": np.array(c[0], dtype=np.int64)})
    return df


def unarchivable(rows: pd.DataFrame) -> dict[int, str]:
    """Rows the archive cannot hold (:mod:`envcal.archive_limits`), by position, with why.

    Parameters
    ----------
    rows : pandas.DataFrame
        Hot-store rows (:data:`ROW_COLUMNS`; unknown flags as code -1).

    Returns
    -------
    dict of int to str
        Row position -> reason; empty when every row can be archived.

    References
    ----------
    CF Conventions 1.8, section 2.2; HJ 212-2017 Table 8 (data flags).
    """
    out: dict[int, str] = {}
    t_us = rows["t_us"].to_numpy(np.int64)
    for i in np.nonzero((t_us < TS_MIN_US) | (t_us >= TS_MAX_US))[0]:
        out[int(i)] = "timestamp outside the archive's range 1678..2262"
    seq = rows["seq"].to_numpy(np.int64)
    for i in np.nonzero((seq != SEQ_FILL) & ((seq < 0) | (seq > SEQ_MAX)))[0]:
        out.setdefault(int(i), f"seq {int(seq[i])} is outside the archive's range 0..2**53")
    for i in np.nonzero(rows["flag"].to_numpy(np.int8) < 0)[0]:
        out.setdefault(int(i), "data flag is not an HJ 212-2017 Table 8 flag")
    for col in CHECK_FIELDS:
        vals = rows[col].to_numpy(dtype=object)
        bad = {v for v in set(vals) if isinstance(v, str) and text_problem(col, v)}
        for i in np.nonzero([v in bad for v in vals])[0] if bad else ():
            out.setdefault(int(i), text_problem(col, vals[i]))
    return out


def _norm_str(a: np.ndarray) -> np.ndarray:
    """Empty strings and None are the same thing in the archive (None)."""
    out = a.astype(object, copy=True)
    out[(out == "") | pd.isna(out)] = None
    return out


def _merge(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union of rows; on the same (analyzer, analyte, time) the ``new`` row wins."""
    if len(old) == 0:
        return new.reset_index(drop=True)
    if len(new) == 0:
        return old.reset_index(drop=True)
    both = pd.concat([old, new], ignore_index=True)
    return both.drop_duplicates(KEY, keep="last").reset_index(drop=True)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    order = np.lexsort((df["t_us"].to_numpy(), df["analyte"].to_numpy().astype(str),
                        df["analyzer"].to_numpy().astype(str)))
    return df.iloc[order].reset_index(drop=True)


def rows_differences(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """What differs between two row sets (ignoring order and hot-store ids); empty if equal."""
    if len(a) != len(b):
        return [f"row count {len(a)} != {len(b)}"]
    a, b = _sorted(a), _sorted(b)
    out = []
    for col in ("analyzer", "analyte", "t_us", "flag", "seq", "qa"):
        if not np.array_equal(a[col].to_numpy(), b[col].to_numpy()):
            out.append(col)
    if not np.array_equal(a["value"].to_numpy(), b["value"].to_numpy(), equal_nan=True):
        out.append("value")
    for col in CHECK_FIELDS:
        if not np.array_equal(_norm_str(a[col].to_numpy()), _norm_str(b[col].to_numpy())):
            out.append(col)
    return out


# --------------------------------------------------------------------------- dataset
class _Vars(dict):
    """Variables collected before one ``xr.Dataset`` is built (assigning variables one by one
    to a Dataset costs O(n) each)."""

    def __init__(self):
        super().__init__()
        self.coord_vars: dict[str, xr.Variable] = {}
        self._enc: dict[str, dict] = {}

    def enc(self, name: str, encoding: dict) -> None:
        self._enc[name] = encoding

    def dataset(self, attrs: dict) -> xr.Dataset:
        data_vars = {k: xr.Variable(*v, encoding=self._enc.get(k)) for k, v in self.items()}
        coords = {k: xr.Variable(*v) for k, v in self.coord_vars.items()}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _build_dataset(rows: pd.DataFrame, meta: _Meta, history: str) -> xr.Dataset:
    """Rows -> the archive layout (in memory; raw fill values, encodings set for disk)."""
    n = len(rows)
    t_us = rows["t_us"].to_numpy(np.int64)
    times = np.unique(t_us)
    tidx = np.searchsorted(times, t_us)
    nt = len(times)
    a_codes, a_uniq = pd.factorize(rows["analyzer"].to_numpy(), sort=True)
    b_codes, b_uniq = pd.factorize(rows["analyte"].to_numpy(), sort=True)
    comb = a_codes.astype(np.int64) * max(len(b_uniq), 1) + b_codes
    chans, ch = np.unique(comb, return_inverse=True)
    nch = len(chans)
    if n and len(np.unique(ch.astype(np.int64) * max(nt, 1) + tidx)) != n:
        raise ArchiveError("duplicate (analyzer, analyte, time) rows")

    V = np.full((nch, nt), np.nan)
    V[ch, tidx] = rows["value"].to_numpy(np.float64)
    F = np.full((nch, nt), BYTE_FILL, dtype=np.int8)
    F[ch, tidx] = rows["flag"].to_numpy(np.int8)
    Q = np.full((nch, nt), BYTE_FILL, dtype=np.int8)
    Q[ch, tidx] = rows["qa"].to_numpy(np.int8)
    S = np.full((nch, nt), SEQ_FILL, dtype=np.int64)
    S[ch, tidx] = rows["seq"].to_numpy(np.int64)
    # check table: entry 0 = no check
    C = np.full((nch, nt), CHECK_FILL, dtype=np.int32)
    C[ch, tidx] = 0
    table: list[tuple] = [("", "", "", "")]
    chk = rows[list(CHECK_FIELDS)].to_numpy(dtype=object)
    has = np.nonzero(~pd.isna(chk).all(axis=1))[0]
    if len(has):
        keys = ["\x1f".join("" if v is None or v is np.nan else str(v) for v in chk[i]) for i in has]
        codes, uniq = pd.factorize(np.array(keys, dtype=object))
        table += [tuple(k.split("\x1f")) for k in uniq]
        C[ch[has], tidx[has]] = codes.astype(np.int32) + 1

    ds = _Vars()
    ds.coord_vars["time"] = ("time", (times * 1000).astype("datetime64[ns]"),
                         {"standard_name": "time", "long_name": "time of the reading (UTC)", "axis": "T"})
    ds.coord_vars["station"] = ((), np.array(meta.station, dtype=object),
                            {"cf_role": "timeseries_id", "long_name": "station identifier"})
    ds.coord_vars["lat"] = ((), np.float64(meta.lat), {"standard_name": "latitude", "units": "degrees_north",
                                                   "long_name": "station latitude"})
    ds.coord_vars["lon"] = ((), np.float64(meta.lon), {"standard_name": "longitude", "units": "degrees_east",
                                                  "long_name": "station longitude"})
    ds["check_id"] = ("check_entry", np.array([t[0] for t in table], dtype=object),
                      {"long_name": "QC check identifier", "envcal_role": "check_table"})
    ds["check_kind"] = ("check_entry", np.array([t[1] for t in table], dtype=object),
                        {"long_name": "QC check kind (zero span std_sample membrane flow linearity)",
                         "envcal_role": "check_table"})
    ds["check_phase"] = ("check_entry", np.array([t[2] for t in table], dtype=object),
                         {"long_name": "QC check phase (start run end)", "envcal_role": "check_table"})
    ds["check_material"] = ("check_entry", np.array([t[3] for t in table], dtype=object),
                            {"long_name": "reference material lot used by the check",
                             "envcal_role": "check_table"})

    used: set[str] = set(ds) | set(ds.coord_vars)

    def unique_name(base: str) -> str:
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    a_of_ch = chans // max(len(b_uniq), 1)
    b_of_ch = chans % max(len(b_uniq), 1)
    for ai in np.unique(a_of_ch):
        aid = str(a_uniq[ai])
        rows_i = np.nonzero(a_of_ch == ai)[0]
        present = F[rows_i] >= 0
        shared = True
        seq_a = np.full(nt, SEQ_FILL, dtype=np.int64)
        chk_a = np.full(nt, CHECK_FILL, dtype=np.int32)
        for arr, out, fill in ((S, seq_a, SEQ_FILL), (C, chk_a, CHECK_FILL)):
            sub = arr[rows_i]
            hi = np.where(present, sub, np.iinfo(sub.dtype).min).max(axis=0)
            lo = np.where(present, sub, np.iinfo(sub.dtype).max).min(axis=0)
            anyp = present.any(axis=0)
            if not np.array_equal(hi[anyp], lo[anyp]):
                shared = False
            out[:] = np.where(anyp, hi, fill)
        model, serial = meta.analyzers.get(aid, ("", ""))
        if shared:
            seq_name = unique_name(f"{_clean(aid)}__seq")
            chk_name = unique_name(f"{_clean(aid)}__check_index")
            _add_seq_check(ds, seq_name, chk_name, seq_a, chk_a, aid, None)
        for r in rows_i:
            analyte = str(b_uniq[b_of_ch[r]])
            v = unique_name(f"{_clean(aid)}__{_clean(analyte)}")
            fname, qname = unique_name(f"{v}_flag"), unique_name(f"{v}_qa")
            if not shared:
                seq_name, chk_name = unique_name(f"{v}_seq"), unique_name(f"{v}_check_index")
                _add_seq_check(ds, seq_name, chk_name, S[r], C[r], aid, analyte)
            unit = meta.units.get((aid, analyte))
            a = ANALYTES.get(analyte)
            attrs = {"long_name": f"{a.long_name if a else analyte} ({aid})",
                     "analyzer_id": aid, "analyte": analyte, "envcal_role": "data"}
            if unit is not None:
                attrs["units"] = udunits(unit)
                attrs["registry_unit"] = unit
                sn = cf_standard_name(analyte, unit)
                if sn:
                    attrs["standard_name"] = sn
            if model:
                attrs["source"] = f"{model} s/n {serial}"
            attrs["ancillary_variables"] = f"{fname} {qname} {seq_name} {chk_name}"
            ds[v] = ("time", V[r], attrs)
            ds.enc(v, {"_FillValue": np.nan})
            ds[fname] = ("time", F[r], {
                "long_name": f"HJ 212-2017 data flag of {v}", "standard_name": "status_flag",
                "flag_values": np.arange(len(FLAG_LETTERS), dtype=np.int8),
                "flag_meanings": FLAG_MEANINGS, "hj212_flags": FLAG_LETTERS,
                "comment": "-1 (fill): no reading at this time", "envcal_role": "flag"})
            ds.enc(fname, {"_FillValue": BYTE_FILL})
            ds[qname] = ("time", Q[r], {
                "long_name": f"quality assurance of {v} (out-of-control periods)",
                "standard_name": "quality_flag",
                "flag_values": np.arange(3, dtype=np.int8), "flag_meanings": QA_MEANINGS,
                "envcal_role": "qa"})
            ds.enc(qname, {"_FillValue": BYTE_FILL})

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sources = "; ".join(f"{aid}: {m} s/n {s}" for aid, (m, s) in sorted(meta.analyzers.items()))
    attrs = {
        "Conventions": "CF-1.8 ACDD-1.3",
        "featureType": "timeSeries",
        "title": f"envcal archive: station {meta.station} ({meta.name})",
        "summary": "Raw readings of environmental monitoring analyzers with HJ 212 data flags, "
                   "QC check references and quality-assurance flags, as received by envcal.",
        "institution": meta.operator,
        "source": sources,
        "history": f"{now.isoformat()} {history} (envcal {envcal.__version__})",
        "date_created": now.isoformat(),
        "envcal_version": envcal.__version__,
        "station_id": meta.station,
        "station_name": meta.name,
        "station_kind": meta.kind,
        "geospatial_lat_min": float(meta.lat), "geospatial_lat_max": float(meta.lat),
        "geospatial_lon_min": float(meta.lon), "geospatial_lon_max": float(meta.lon),
    }
    if nt:
        attrs["time_coverage_start"] = str(np.datetime64(int(times[0]), "us")) + "Z"
        attrs["time_coverage_end"] = str(np.datetime64(int(times[-1]), "us")) + "Z"
    return ds.dataset(attrs)


def _add_seq_check(ds, seq_name, chk_name, seq, chk, aid, analyte) -> None:
    of = aid if analyte is None else f"{aid} {analyte}"
    seq = np.where(seq == SEQ_FILL, np.nan, seq.astype(np.float64))
    ds[seq_name] = ("time", seq, {"long_name": f"message sequence number of {of}", "envcal_role": "seq"})
    ds.enc(seq_name, {"_FillValue": np.nan})
    ds[chk_name] = ("time", chk, {
        "long_name": f"QC check of {of}: index into the check_entry variables",
        "comment": "0: reading outside any QC check; -1 (fill): no reading",
        "envcal_role": "check_index"})
    ds.enc(chk_name, {"_FillValue": CHECK_FILL})


def _for_disk(ds: xr.Dataset) -> xr.Dataset:
    """Replace the datetime64 time by CF numbers in exactly ``TIME_UNITS``."""
    t_us = ds["time"].values.astype("datetime64[us]").astype(np.int64)
    num = t_us / 1e6
    attrs = dict(ds["time"].attrs, units=TIME_UNITS, calendar="standard")
    out = ds.assign_coords(time=("time", num, attrs))
    out["time"].encoding = {"_FillValue": None, "dtype": "float64"}
    return out


def _dataset_to_rows(ds: xr.Dataset) -> pd.DataFrame:
    """The archive layout (raw, ``mask_and_scale=False``) -> rows."""
    tv = ds["time"].values
    if np.issubdtype(tv.dtype, np.datetime64):
        t_us = tv.astype("datetime64[us]").astype(np.int64)
    else:
        units = ds["time"].attrs.get("units", "")
        if not units.startswith("seconds since 1970-01-01"):
            raise ArchiveError(f"unexpected time units {units!r}")
        t_us = (tv.astype(np.int64) * 1_000_000 if np.issubdtype(tv.dtype, np.integer)
                else np.round(tv.astype(np.float64) * 1e6).astype(np.int64))
    table = [_norm_str(np.asarray(ds[n].values, dtype=object).reshape(-1))
             for n in ("check_id", "check_kind", "check_phase", "check_material")]
    parts = []
    for name, var in ds.data_vars.items():
        if var.attrs.get("envcal_role") != "data":
            continue
        roles = {ds[a].attrs.get("envcal_role"): a for a in var.attrs["ancillary_variables"].split()}
        flag = ds[roles["flag"]].values.astype(np.int8)
        idx = np.nonzero(flag >= 0)[0]
        ci = ds[roles["check_index"]].values[idx].astype(np.int64)
        if (ci < 0).any():
            raise ArchiveError(f"{name}: reading without a check index")
        part = {"analyzer": np.full(len(idx), var.attrs["analyzer_id"], dtype=object),
                "analyte": np.full(len(idx), var.attrs["analyte"], dtype=object),
                "t_us": t_us[idx], "value": var.values[idx].astype(np.float64),
                "flag": flag[idx], "seq": _seq_ints(ds[roles["seq"]].values[idx]),
                "qa": ds[roles["qa"]].values[idx].astype(np.int8)}
        for col, tab in zip(CHECK_FIELDS, table, strict=True):
            part[col] = tab[ci]
        part["id"] = np.full(len(idx), -1, dtype=np.int64)
        parts.append(pd.DataFrame(part))
    if not parts:
        return _empty_rows()
    return pd.concat(parts, ignore_index=True)


def _seq_ints(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    return np.where(np.isnan(a), SEQ_FILL, np.nan_to_num(a)).astype(np.int64)


def read_file_rows(path: str | Path) -> pd.DataFrame:
    """All readings stored in one archive file, as rows (see :data:`ROW_COLUMNS`)."""
    try:
        with xr.open_dataset(path, engine="netcdf4", mask_and_scale=False, decode_times=False,
                             cache=False) as ds:
            return _dataset_to_rows(ds.load())
    except (OSError, KeyError, ValueError) as exc:
        raise ArchiveError(f"{path}: cannot read archive file: {exc}") from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_verified(rows: pd.DataFrame, meta: _Meta, target: Path) -> None:
    """Write to a temporary name, re-open with xarray and compare, then rename."""
    ds = _for_disk(_build_dataset(rows, meta, "envcal archive compact"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        diff = rows_differences(read_file_rows(tmp), rows)
        if diff:
            raise ArchiveError(f"{target}: re-read file differs from the rows in: {', '.join(diff)}")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- compaction
def archive_path(archive_dir: str | Path, station: str, day: dt.date) -> Path:
    """``{archive}/{station}/{YYYY}/{station}_{YYYYMMDD}.nc``."""
    return Path(archive_dir) / station / f"{day:%Y}" / f"{station}_{day:%Y%m%d}.nc"


@dataclass
class DayResult:
    """What compaction did with one station-day."""

    station: str
    day: dt.date
    action: str  # written | merged | existing_verified | error
    rows_deleted: int = 0
    n_values: int = 0
    n_times: int = 0
    path: str = ""
    error: str = ""
    #: hot-store rows the archive cannot hold, moved to the dead-letter table: "id N: why"
    set_aside: list[str] = field(default_factory=list)


@dataclass
class CompactReport:
    """The outcome of one :func:`compact` run."""

    days: list[DayResult] = field(default_factory=list)

    @property
    def rows_deleted(self) -> int:
        return sum(d.rows_deleted for d in self.days)

    @property
    def errors(self) -> list[DayResult]:
        return [d for d in self.days if d.action == "error"]

    def lines(self) -> list[str]:
        out = []
        for d in self.days:
            if d.action == "error":
                out.append(f"{d.station} {d.day}: ERROR {d.error}")
            else:
                out.append(f"{d.station} {d.day}: {d.action} {d.path} ({d.n_values} values, "
                           f"{d.n_times} times; {d.rows_deleted} hot rows deleted)")
            out += [f"{d.station} {d.day}: SET ASIDE reading {why} (moved to dead letters)"
                    for why in d.set_aside]
        out.append(f"{len(self.days) - len(self.errors)} station-days archived, "
                   f"{self.rows_deleted} hot rows deleted, {len(self.errors)} errors")
        return out


def _open_days(conn: Connection, cutoff: dt.datetime, station: str | None) -> list[tuple[str, dt.date]]:
    r, a = Reading.__table__.c, Analyzer.__table__.c
    if conn.dialect.name == "sqlite":
        day = sa.type_coerce(sa.func.substr(r.ts, 1, 10), sa.String)
    else:
        day = sa.cast(sa.func.timezone("UTC", r.ts), sa.Date)
    q = (sa.select(a.station_id, day).select_from(Reading.__table__.join(Analyzer.__table__, a.id == r.analyzer_id))
         .where(r.ts < cutoff).distinct())
    if station is not None:
        q = q.where(a.station_id == station)
    out = set()
    for st, d in conn.execute(q):
        out.add((st, d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)[:10])))
    return sorted(out)


def _record_and_delete(engine: Engine, station: str, day: dt.date, rel: str, sha: str,
                       n_values: int, n_times: int, ids: np.ndarray) -> None:
    t = ArchiveFile.__table__
    with engine.begin() as conn:
        values = {"path": rel, "sha256": sha, "n_values": n_values, "n_times": n_times,
                  "created_at": dt.datetime.now(dt.UTC)}
        res = conn.execute(t.update().where(t.c.station_id == station, t.c.day == day).values(**values))
        if res.rowcount == 0:
            conn.execute(t.insert().values(station_id=station, day=day, **values))
        r = Reading.__table__
        ids = np.unique(ids)
        # runs of consecutive ids (every integer of [lo, hi] is an archived row): one range
        # each; the rest by explicit id lists
        cut = np.flatnonzero(np.diff(ids) != 1) + 1
        starts, ends = np.r_[0, cut], np.r_[cut, len(ids)]
        long_run = (ends - starts) >= _MIN_RUN
        ranges = [(int(ids[a]), int(ids[b - 1])) for a, b in zip(starts[long_run], ends[long_run], strict=True)]
        for i in range(0, len(ranges), _RANGE_CHUNK):
            conn.execute(r.delete().where(sa.or_(*(r.c.id.between(lo, hi)
                                                   for lo, hi in ranges[i:i + _RANGE_CHUNK]))))
        rest = ids[np.repeat(~long_run, ends - starts)]
        for i in range(0, len(rest), _DELETE_CHUNK):
            chunk = [int(x) for x in rest[i:i + _DELETE_CHUNK]]
            conn.execute(r.delete().where(r.c.id.in_(chunk)))


def _set_aside(engine: Engine, rows: pd.DataFrame, reasons: list[str]) -> list[str]:
    """Move hot-store rows the archive cannot hold to the dead-letter table (one transaction).

    Returns one ``"id N (analyzer analyte): why"`` per row.
    """
    import json

    from envcal.dead_letters import store_dead_letters
    from envcal.models import DeadLetter

    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = dt.datetime.now(dt.UTC)
    out, dead = [], []
    for (_, r), why in zip(rows.iterrows(), reasons, strict=True):
        desc = f"id {int(r['id'])} ({r['analyzer']} {r['analyte']})"
        out.append(f"{desc}: {why}")
        body = {"id": int(r["id"]), "analyzer_id": r["analyzer"], "analyte": r["analyte"],
                "t_us": int(r["t_us"]), "value": None if np.isnan(r["value"]) else float(r["value"]),
                "flag_code": int(r["flag"]), "seq": None if r["seq"] == SEQ_FILL else int(r["seq"]),
                **{c: r[c] for c in CHECK_FIELDS}}
        dead.append({"received_at": now, "topic": "envcal archive compact",
                     "payload": json.dumps(body, ensure_ascii=True).encode(),
                     "reason": f"compaction: hot-store reading {desc} cannot be archived: {why}",
                     "analyzer_id": r["analyzer"], "mqtt_mid": None, "delivery_key": None})
    t = Reading.__table__
    with engine.begin() as conn:
        store_dead_letters(conn, insert, DeadLetter.__table__, dead, [False] * len(dead))
        conn.execute(t.delete().where(t.c.id.in_([int(x) for x in rows["id"]])))
    return out


def compact_day(engine: Engine, archive_dir: str | Path, station: str, day: dt.date,
                registry=None) -> DayResult:
    """Move one station-day from the hot store into its archive file.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    archive_dir : str or Path
        Archive root folder.
    station : str
        Station id.
    day : datetime.date
        UTC day.
    registry : envcal.registry.Registry, optional
        Source of station/analyzer metadata; the database's registry tables otherwise.

    Returns
    -------
    DayResult

    Raises
    ------
    ArchiveError
        If the rows cannot be written or the written file does not read back equal.
    """
    t0 = dt.datetime.combine(day, dt.time(), dt.UTC)
    t1 = t0 + dt.timedelta(days=1)
    target = archive_path(archive_dir, station, day)
    rel = target.relative_to(Path(archive_dir)).as_posix()
    with engine.connect() as conn:
        hot = _fetch_hot(conn, station, t0, t1, keep_bad_flags=True)
        meta = _meta(conn, station, registry)
    res = DayResult(station, day, "written", path=rel)
    bad = unarchivable(hot)
    if bad:  # one bad row must not keep the day's good rows in the hot store forever
        res.set_aside = _set_aside(engine, hot.iloc[sorted(bad)], [bad[i] for i in sorted(bad)])
        hot = hot.drop(index=hot.index[sorted(bad)]).reset_index(drop=True)
    if len(hot) == 0:
        res.action = "set_aside" if res.set_aside else "nothing"
        return res
    if target.exists():
        old = read_file_rows(target)
        combined = _merge(old, hot)
        if not rows_differences(combined, old):
            res.action = "existing_verified"  # crash after rename: the file holds the rows
        else:
            res.action = "merged"
            _write_verified(combined, meta, target)
    else:
        combined = hot
        _write_verified(combined, meta, target)
    res.n_values = len(combined)
    res.n_times = len(np.unique(combined["t_us"].to_numpy()))
    _record_and_delete(engine, station, day, rel, _sha256(target), res.n_values, res.n_times,
                       hot["id"].to_numpy())
    res.rows_deleted = len(hot)
    return res


def compact(engine: Engine, archive_dir: str | Path, registry_or_none=None, *,
            before: dt.date | None = None, station: str | None = None,
            progress: Callable[[int, int, str, dt.date], None] | None = None) -> CompactReport:
    """Move closed days from the SQL hot store into CF NetCDF files, one per station and day.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The hot store.
    archive_dir : str or Path
        Archive root; files go to ``{archive}/{station}/{YYYY}/{station}_{YYYYMMDD}.nc``.
    registry_or_none : envcal.registry.Registry or None
        Station/analyzer metadata for the file attributes; the database's registry tables
        when None.
    before : datetime.date, optional
        Compact UTC days strictly before this date (never later than today: the current
        UTC day is open and is not compacted).
    station : str, optional
        Only this station.
    progress : callable, optional
        ``progress(done, total, station, day)`` before each station-day (for a progress line).

    Returns
    -------
    CompactReport
        One :class:`DayResult` per station-day; a day that fails is reported as an error
        (its rows stay in the hot store) and the others proceed.

    References
    ----------
    CF Conventions 1.8, chapter 9 and appendix H.2.3.
    """
    today = dt.datetime.now(dt.UTC).date()
    cut_day = min(before, today) if before is not None else today
    cutoff = dt.datetime.combine(cut_day, dt.time(), dt.UTC)
    with engine.connect() as conn:
        days = _open_days(conn, cutoff, station)
    report = CompactReport()
    for i, (st, day) in enumerate(days):
        if progress is not None:
            progress(i, len(days), st, day)
        try:
            report.days.append(compact_day(engine, archive_dir, st, day, registry_or_none))
        except Exception as exc:  # noqa: BLE001 - one bad day must not stop the others
            report.days.append(DayResult(st, day, "error", path=archive_path(archive_dir, st, day)
                                         .relative_to(Path(archive_dir)).as_posix(),
                                         error=f"{exc.__class__.__name__}: {exc}"))
    return report


# --------------------------------------------------------------------------- readers
def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: give times with an offset")
    return t.astimezone(dt.UTC)


def _days(start: dt.datetime, end: dt.datetime) -> Iterable[dt.date]:
    d, last = start.date(), (end - dt.timedelta(microseconds=1)).date()
    while d <= last:
        yield d
        d += dt.timedelta(days=1)


def _period_rows(engine: Engine, archive_dir: str | Path | None, station: str, start: dt.datetime,
                 end: dt.datetime, analyzer: str | None = None, analyte: str | None = None,
                 ) -> tuple[pd.DataFrame, _Meta]:
    start, end = _utc(start), _utc(end)
    s_us = int((start - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
    e_us = int((end - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
    parts = []
    if archive_dir is not None and end > start:
        for day in _days(start, end):
            p = archive_path(archive_dir, station, day)
            if p.exists():
                df = read_file_rows(p)
                m = (df["t_us"] >= s_us) & (df["t_us"] < e_us)
                if analyzer is not None:
                    m &= df["analyzer"] == analyzer
                if analyte is not None:
                    m &= df["analyte"] == analyte
                parts.append(df[m])
    with engine.connect() as conn:
        meta = _meta(conn, station)
        hot = _fetch_hot(conn, station, start, end, analyzer, analyte)
    archived = pd.concat(parts, ignore_index=True) if parts else _empty_rows()
    return _merge(archived, hot), meta


def open_period(engine: Engine, archive_dir: str | Path | None, station: str,
                start: dt.datetime, end: dt.datetime) -> xr.Dataset:
    """All readings of a station in [start, end), hot, archived or both, as one Dataset.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        The hot store.
    archive_dir : str or Path or None
        Archive root (None: hot store only).
    station : str
        Station id.
    start, end : datetime.datetime
        Timezone-aware period bounds [start, end).

    Returns
    -------
    xarray.Dataset
        The archive file layout (see the module docstring) with ``time`` decoded to
        ``datetime64[ns]`` (UTC); flag variables hold ``-1`` where there is no reading.
        A hot row replaces an archived row with the same analyzer, analyte and time.

    References
    ----------
    CF Conventions 1.8, appendix H.2.3.
    """
    rows, meta = _period_rows(engine, archive_dir, station, start, end)
    return _build_dataset(rows, meta, "envcal archive open_period")


def readings_frame(engine: Engine, archive_dir: str | Path | None, analyzer: str, analyte: str,
                   start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """One channel's readings in [start, end), hot and archived, as a table sorted by time.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    archive_dir : str or Path or None
        Archive root (None: hot store only).
    analyzer, analyte : str
        The channel.
    start, end : datetime.datetime
        Timezone-aware period bounds [start, end).

    Returns
    -------
    pandas.DataFrame
        Columns ``ts`` (datetime64[ns, UTC]), ``value`` [channel unit] (NaN: no number),
        ``flag`` (HJ 212 letter), ``seq`` (Int64, <NA> when absent), ``check_id``,
        ``check_kind``, ``check_phase``, ``material`` (str or None), ``qa_ok`` (boolean,
        <NA> = not evaluated).

    References
    ----------
    HJ 212-2017 Table 8 (flags).
    """
    with engine.connect() as conn:
        st = conn.execute(sa.select(Analyzer.station_id).where(Analyzer.id == analyzer)).scalar()
    if st is None:
        raise ArchiveError(f"unknown analyzer {analyzer!r}")
    rows, _ = _period_rows(engine, archive_dir, st, start, end, analyzer, analyte)
    rows = rows.sort_values("t_us", kind="stable").reset_index(drop=True)
    seq = rows["seq"].to_numpy(np.int64)
    qa = rows["qa"].to_numpy(np.int8)
    out = pd.DataFrame({
        "ts": pd.to_datetime(rows["t_us"].to_numpy(np.int64), unit="us", utc=True).as_unit("ns"),
        "value": rows["value"].to_numpy(np.float64),
        "flag": np.array(list(FLAG_LETTERS), dtype=object)[rows["flag"].to_numpy(np.int64)]
        if len(rows) else np.array([], dtype=object),
        "seq": pd.arrays.IntegerArray(np.where(seq == SEQ_FILL, 0, seq), seq == SEQ_FILL),
        **{c: _norm_str(rows[c].to_numpy(dtype=object)) for c in CHECK_FIELDS},
        "qa_ok": pd.array([None if q == 0 else bool(q == 1) for q in qa], dtype="boolean"),
    })
    for c in CHECK_FIELDS:  # keep None (pandas 3 would infer a str dtype with NaN)
        out[c] = pd.Series(_norm_str(rows[c].to_numpy(dtype=object)), dtype=object)
    return out
