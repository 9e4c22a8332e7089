"""What one reading must satisfy to be stored in the NetCDF archive (a pure module).

Ingest refuses (dead-letters) a reading outside these limits, and compaction sets aside a
hot-store row outside them instead of failing the whole station-day: both use this module,
so what the hot store accepts is exactly what the archive can hold.

- time: the archive builds its time axis as ``datetime64[ns]`` (xarray), which spans
  1677-09-21 .. 2262-04-11; whole years inside that range are allowed.
- ``seq``: stored as float64 (CF-1.8 has no int64 type), exact up to 2**53.
- texts (check id, kind, phase, material): NetCDF-4 strings, joined internally with the
  unit separator; control characters (NUL included) are refused.
- data flags: the archive's flag variable holds the HJ 212-2017 Table 8 flags only
  (:data:`envcal.protocols.records.DATA_FLAGS`).

References
----------
CF Conventions 1.8, section 2.2 (data types); NumPy ``datetime64`` ranges; Unidata NetCDF-4
string type (NUL-terminated C strings).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from envcal.protocols.records import DATA_FLAGS

#: Earliest reading time the archive holds (inclusive) [UTC].
TS_MIN = dt.datetime(1678, 1, 1, tzinfo=dt.UTC)
#: Latest reading time the archive holds (exclusive) [UTC].
TS_MAX = dt.datetime(2262, 1, 1, tzinfo=dt.UTC)
#: The same bounds in microseconds since 1970-01-01 UTC.
TS_MIN_US = int((TS_MIN - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 1_000_000
TS_MAX_US = int((TS_MAX - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 1_000_000
#: Largest ``seq`` the archive stores exactly (float64 mantissa).
SEQ_MAX = 2**53
#: Characters never allowed in an archived text (C0 controls and DEL).
TEXT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


def flag_problem(analyte: str, flag: str) -> str | None:
    """Why ``flag`` cannot be archived for ``analyte``, or None.

    Parameters
    ----------
    analyte : str
    flag : str

    Returns
    -------
    str or None

    References
    ----------
    HJ 212-2017 clause 6.6.4, Table 8.
    """
    if flag in DATA_FLAGS:
        return None
    return (f"data flag {flag[:8]!r} of {analyte} is not an HJ 212-2017 Table 8 flag "
            f"({' '.join(DATA_FLAGS)})")


def text_problem(name: str, value: str | None) -> str | None:
    """Why ``value`` cannot be an archived text, or None.

    Parameters
    ----------
    name : str
        Field name for the message (e.g. ``"check id"``).
    value : str or None

    Returns
    -------
    str or None

    References
    ----------
    Unidata NetCDF-4 string type.
    """
    if value is None:
        return None
    m = TEXT_FORBIDDEN.search(value)
    if m is not None:
        return f"{name} contains the control character U+{ord(m.group()):04X}"
    return None


def reading_problem(ts: dt.datetime, seq: int | None, texts: Iterable[tuple[str, str | None]] = ()
                    ) -> str | None:
    """Why a reading cannot be archived, or None when it can.

    Parameters
    ----------
    ts : datetime.datetime
        Reading time, timezone-aware.
    seq : int or None
        Message sequence number.
    texts : iterable of (name, value)
        Text fields (check id, kind, phase, material).

    Returns
    -------
    str or None
        One sentence naming the field and the limit.

    References
    ----------
    CF Conventions 1.8, section 2.2; NumPy ``datetime64[ns]`` range.
    """
    if not TS_MIN <= ts < TS_MAX:
        return (f"timestamp {ts.isoformat()} is outside the archive's range "
                f"{TS_MIN.date()} .. {TS_MAX.date()}")
    if seq is not None and not 0 <= seq <= SEQ_MAX:
        return f"seq {seq} is outside the archive's range 0..2**53"
    for name, value in texts:
        p = text_problem(name, value)
        if p is not None:
            return p
    return None
