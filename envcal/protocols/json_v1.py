"""JSON v1 wire format: analyzer readings and device check summaries (DESIGN.md section 4).

Readings are decoded by msgspec into typed structs (:class:`_Reading`: the shape and types
of the contract, unknown keys forbidden); the value rules a type cannot say (timestamp with
an offset and not in the future, ``seq`` range, flags only for analytes with a value,
non-empty names) are the shared helpers below. msgspec neither refuses duplicate keys nor
names a reason in our words, so: a payload without backslashes whose ``"`` count equals
twice the strings it decoded to provably had no duplicate key; anything else, and every
payload the fast path refuses, goes through :func:`decode_readings_reference`, the
hand-written decoder whose :class:`ProtocolError` names the item index, the field and the
reason. Both paths give the same records or the same error (a property test pins it).

Reading (one object or a list of them)::

    {"ts": "2026-11-27T08:00:00+08:00", "seq": 1042,
     "values": {"SO2": 35.2, "NOx": 81.0}, "flags": {"SO2": "N", "NOx": "N"},
     "check": {"id": "CK-...", "kind": "span", "material": "LOT-ID", "phase": "run"}}

Check summary::

    {"id", "kind", "analyte", "start", "end", "material", "measured", "readings": [...],
     "standard_value"?, "verdict"?}
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from typing import Literal

import msgspec

from envcal.protocols.records import (
    CHECK_KINDS,
    CHECK_PHASES,
    DATA_FLAGS,
    UTC8,
    CheckBlock,
    CheckSummary,
    ProtocolError,
    ReadingRecord,
)

__all__ = [
    "MAX_PAYLOAD",
    "decode_check_summary",
    "decode_readings",
    "decode_readings_reference",
    "encode_check_summary",
    "encode_readings",
    "parse_timestamp",
]

#: Largest accepted payload [bytes] (larger ones are dead-lettered by ingest).
MAX_PAYLOAD = 64 * 1024
#: Largest accepted ``seq`` (fits a signed 64-bit SQL integer).
MAX_SEQ = 2**63 - 1

UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_READING_KEYS = frozenset({"ts", "seq", "values", "flags", "check"})
_CHECK_KEYS = frozenset({"id", "kind", "phase", "material"})
_SUMMARY_REQUIRED = ("id", "kind", "analyte", "start", "end", "material", "measured", "readings")
_SUMMARY_KEYS = frozenset(_SUMMARY_REQUIRED) | {"standard_value", "verdict"}
_KINDS = frozenset(CHECK_KINDS)
_PHASES = frozenset(CHECK_PHASES)
_FLAGS = frozenset(DATA_FLAGS)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _reject_constant(name: str) -> float:
    raise ProtocolError(f"invalid JSON: {name} is not a number in JSON")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ProtocolError(f"invalid JSON: duplicate key {k!r}")
            seen.add(k)
    return d


# built once: json.loads(..., **kw) would build a new decoder for every message
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
# the fast path: C-built dicts, then a count proves there was no duplicate key (below)
_FAST = json.JSONDecoder(parse_constant=_reject_constant)
_KEY_TOKEN = re.compile(r'"\s*:')


def _count_keys(obj: object) -> int:
    # the decoder builds plain dicts and lists only; recurse into containers alone (hot path)
    if type(obj) is dict:
        n = len(obj)
        items = obj.values()
    elif type(obj) is list:
        n = 0
        items = obj
    else:
        return 0
    for v in items:
        tv = type(v)
        if tv is dict or tv is list:
            n += _count_keys(v)
    return n


def _decode(text: str) -> object:
    """Parse with C-built dicts; a duplicate key would leave fewer keys in the result than
    key tokens (``"`` then ``:``) in the text, so equal counts prove there was none.
    Otherwise (a duplicate, or ``":`` inside a string value) parse again with the checking
    hook, which names the duplicate."""
    obj = _FAST.decode(text)
    if _count_keys(obj) == len(_KEY_TOKEN.findall(text)):
        return obj
    return _DECODER.decode(text)


def _loads(payload: bytes | bytearray | memoryview | str) -> object:
    if isinstance(payload, str):
        text = payload
        size = len(payload.encode("utf-8", "surrogatepass"))
    else:
        if isinstance(payload, memoryview):
            payload = payload.tobytes()
        if not isinstance(payload, (bytes, bytearray)):
            raise ProtocolError(f"payload must be bytes, not {type(payload).__name__}")
        size = len(payload)
        text = None
    if size > MAX_PAYLOAD:
        raise ProtocolError(f"payload too large: {size} bytes > {MAX_PAYLOAD} bytes")
    if size == 0:
        raise ProtocolError("empty payload")
    try:
        if text is None:
            text = payload.decode("utf-8")  # RFC 8259 section 8.1: JSON on the wire is UTF-8
        return _decode(text)
    except ProtocolError:
        raise
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. int too large to convert, deep nesting
        raise ProtocolError(f"invalid JSON: {exc.__class__.__name__}: {exc}") from None


def parse_timestamp(value: object, where: str) -> dt.datetime:
    """A wire timestamp as an aware UTC datetime.

    Parameters
    ----------
    value : str or int
        ISO 8601 text **with** a UTC offset (``2026-11-27T08:00:00+08:00`` or ``...Z``), or
        epoch milliseconds [ms] as an integer.
    where : str
        What to name in the error message, e.g. ``"item 3: field 'ts'"``.

    Returns
    -------
    datetime.datetime
        The instant, ``tzinfo=UTC``.

    Raises
    ------
    ProtocolError
        Naive or malformed text, a non-integer epoch, a bool, or an out-of-range instant.

    References
    ----------
    ISO 8601-1:2019, clause 5.4 (date and time of day with UTC offset).
    """
    t = _instant(value)
    if type(t) is str:
        raise ProtocolError(f"{where}: {t}")
    return t


def _instant(value: object) -> dt.datetime | str:
    """:func:`parse_timestamp` without the location: the UTC instant, or the reason why not."""
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            return f"not an ISO 8601 timestamp: {value[:64]!r}"
        if t.tzinfo is None or t.utcoffset() is None:
            return f"timestamp without UTC offset: {value[:64]!r} (write e.g. +08:00 or Z)"
        try:
            return t.astimezone(UTC)
        except (OverflowError, ValueError):
            return f"timestamp out of range: {value[:64]!r}"
    if type(value) is int:
        if value < 0:
            return f"epoch milliseconds must be >= 0, got {value}"
        try:
            return _EPOCH + dt.timedelta(milliseconds=value)
        except OverflowError:
            return f"epoch milliseconds out of range: {value}"
    if isinstance(value, float):
        return f"epoch milliseconds must be an integer, got {value!r}"
    return f"expected ISO 8601 text or epoch milliseconds, got {_typename(value)}"


def _typename(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _number(v: object, where: str, *, nullable: bool = True) -> float | None:
    t = type(v)
    if t is float:
        if not math.isfinite(v):  # 1e999 parses as inf
            raise ProtocolError(f"{where}: number out of range: {v!r}")
        return v
    if t is int:
        try:
            return float(v)
        except OverflowError:
            raise ProtocolError(f"{where}: number out of range") from None
    if v is None and nullable:
        return None
    raise ProtocolError(f"{where}: expected a number{' or null' if nullable else ''}, "
                        f"got {_typename(v)}")


def _text(v: object, where: str, *, nullable: bool = False, empty: bool = False) -> str | None:
    if isinstance(v, str):
        if not v and not empty:
            raise ProtocolError(f"{where}: must not be empty")
        return v
    if v is None and nullable:
        return None
    raise ProtocolError(f"{where}: expected a string{' or null' if nullable else ''}, "
                        f"got {_typename(v)}")


# ---------------------------------------------------------------------------------------------
# readings
# ---------------------------------------------------------------------------------------------
def _check_block(c: object, where: str) -> CheckBlock:
    if type(c) is not dict:
        raise ProtocolError(f"{where}: expected an object, got {_typename(c)}")
    extra = c.keys() - _CHECK_KEYS
    if extra:
        raise ProtocolError(f"{where}: unknown key {sorted(extra)[0]!r} "
                            f"(allowed: id, kind, phase, material)")
    for k in ("id", "kind", "phase"):
        if k not in c:
            raise ProtocolError(f"{where}: missing field {k!r}")
    cid = _text(c["id"], f"{where}.id")
    kind = c["kind"]
    if type(kind) is not str or kind not in _KINDS:
        raise ProtocolError(f"{where}.kind: {kind!r} is not one of {', '.join(CHECK_KINDS)}")
    phase = c["phase"]
    if type(phase) is not str or phase not in _PHASES:
        raise ProtocolError(f"{where}.phase: {phase!r} is not one of {', '.join(CHECK_PHASES)}")
    material = _text(c.get("material"), f"{where}.material", nullable=True, empty=True)
    return CheckBlock(id=cid, kind=kind, phase=phase, material=material)


# value rules shared by the fast path and the reference decoder (one home each)
def _timestamp(raw: object, i: int, limit: dt.datetime, max_future: dt.timedelta) -> dt.datetime:
    ts = _instant(raw)
    if type(ts) is str:
        raise ProtocolError(f"item {i}: field 'ts': {ts}")
    if ts > limit:
        raise ProtocolError(f"item {i}: field 'ts': {ts.isoformat()} is more than "
                            f"{max_future.total_seconds():g} s in the future")
    return ts


def _seq_in_range(seq: int, i: int) -> None:
    if seq < 0 or seq > MAX_SEQ:
        raise ProtocolError(f"item {i}: field 'seq': {seq} is out of range 0..2**63-1")


def _values_named(values: dict, i: int) -> None:
    if not values:
        raise ProtocolError(f"item {i}: field 'values': empty (no analytes)")
    if "" in values:
        raise ProtocolError(f"item {i}: field 'values': empty analyte name")


def _flag_has_value(name: str, values: dict, i: int) -> None:
    if name not in values:
        raise ProtocolError(f"item {i}: field 'flags.{name}': flag for an analyte "
                            "that has no value in 'values'")


def _all_flags(flags: dict[str, str], values: dict) -> dict[str, str]:
    """A flag for every analyte: ``"N"`` where the device sent none."""
    if len(flags) == len(values):
        return flags
    out = dict.fromkeys(values, "N")
    out.update(flags)
    return out


_UNSET = msgspec.UNSET


class _Check(msgspec.Struct, forbid_unknown_fields=True):
    """The ``check`` block's shape and types (DESIGN.md section 4)."""

    id: str
    kind: Literal[CHECK_KINDS]  # type: ignore[valid-type]
    phase: Literal[CHECK_PHASES]  # type: ignore[valid-type]
    material: str | None | msgspec.UnsetType = _UNSET


class _Reading(msgspec.Struct, forbid_unknown_fields=True):
    """A reading's shape and types; UNSET marks a key that was absent (for the key count)."""

    ts: str | int  # parsed by parse_timestamp, the one home of the timestamp rule
    values: dict[str, float | None]
    seq: int | None | msgspec.UnsetType = _UNSET
    flags: dict[str, Literal[tuple(DATA_FLAGS)]] | None | msgspec.UnsetType = _UNSET  # type: ignore[valid-type]
    check: _Check | None | msgspec.UnsetType = _UNSET


_TYPED = msgspec.json.Decoder(_Reading | list[_Reading])


def _strings(r: _Reading) -> int:
    """How many JSON strings (keys and string values) ``r`` was decoded from."""
    n = 2 + len(r.values) + (type(r.ts) is str)
    if r.seq is not _UNSET:
        n += 1
    f = r.flags
    if f is not _UNSET:
        n += 1 + (2 * len(f) if f is not None else 0)
    c = r.check
    if c is not _UNSET:
        n += 1
        if c is not None:
            n += 6
            if c.material is not _UNSET:
                n += 1 + (type(c.material) is str)
    return n


def _record(r: _Reading, i: int, limit: dt.datetime, max_future: dt.timedelta) -> ReadingRecord:
    ts = _timestamp(r.ts, i, limit, max_future)
    seq = r.seq
    if seq is _UNSET:
        seq = None
    elif seq is not None:
        _seq_in_range(seq, i)
    values = r.values
    _values_named(values, i)
    f = r.flags
    if f is _UNSET or f is None:
        flags = dict.fromkeys(values, "N")
    else:
        if not f.keys() <= values.keys():
            raise ProtocolError("flag without a value")  # the reference decoder words it
        flags = _all_flags(f, values)
    c = r.check
    check = None
    if c is not _UNSET and c is not None:
        if not c.id:
            raise ProtocolError("empty check id")  # the reference decoder words it
        check = CheckBlock(c.id, c.kind, c.phase, None if c.material is _UNSET else c.material)
    return ReadingRecord(ts, values, flags, seq, check)  # positional: the hot path


def _fast(payload: bytes, limit: dt.datetime, max_future: dt.timedelta) -> list[ReadingRecord] | None:
    """The typed decode, or None where only the reference decoder can answer (see module)."""
    if b"\\" in payload:
        return None
    try:
        data = _TYPED.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    items = data if type(data) is list else [data]
    if not items or payload.count(b'"') != 2 * sum(map(_strings, items)):
        return None
    try:
        return [_record(r, i, limit, max_future) for i, r in enumerate(items)]
    except ProtocolError:
        return None


def _reading(obj: object, i: int, limit: dt.datetime, max_future: dt.timedelta) -> ReadingRecord:
    if type(obj) is not dict:
        raise ProtocolError(f"item {i}: expected an object, got {_typename(obj)}")
    if not obj.keys() <= _READING_KEYS:
        extra = sorted(obj.keys() - _READING_KEYS)[0]
        raise ProtocolError(f"item {i}: unknown key {extra!r} "
                            "(allowed: ts, seq, values, flags, check)")
    try:
        ts_raw = obj["ts"]
    except KeyError:
        raise ProtocolError(f"item {i}: missing field 'ts'") from None
    ts = _timestamp(ts_raw, i, limit, max_future)

    seq = obj.get("seq")
    if seq is not None:
        if type(seq) is not int:
            raise ProtocolError(f"item {i}: field 'seq': expected an integer, got {_typename(seq)}")
        _seq_in_range(seq, i)

    try:
        raw_values = obj["values"]
    except KeyError:
        raise ProtocolError(f"item {i}: missing field 'values'") from None
    if type(raw_values) is not dict:
        raise ProtocolError(f"item {i}: field 'values': expected an object, "
                            f"got {_typename(raw_values)}")
    _values_named(raw_values, i)
    values: dict[str, float | None] = {}
    for name, v in raw_values.items():
        t = type(v)
        if t is float and math.isfinite(v):
            values[name] = v
        else:
            values[name] = _number(v, f"item {i}: field 'values.{name}'")

    raw_flags = obj.get("flags")
    if raw_flags is None:
        flags = dict.fromkeys(values, "N")
    else:
        if type(raw_flags) is not dict:
            raise ProtocolError(f"item {i}: field 'flags': expected an object, "
                                f"got {_typename(raw_flags)}")
        for name, f in raw_flags.items():
            _flag_has_value(name, values, i)
            if type(f) is not str or f not in _FLAGS:
                raise ProtocolError(f"item {i}: field 'flags.{name}': {f!r} is not an HJ 212 "
                                    "data flag (N F M S D C T B)")
        flags = _all_flags(raw_flags, values)

    check = obj.get("check")
    if check is not None:
        check = _check_block(check, f"item {i}: field 'check'")
    return ReadingRecord(ts=ts, values=values, flags=flags, seq=seq, check=check)


def decode_readings(payload: bytes, *, now: dt.datetime | None = None,
                    max_future: dt.timedelta = dt.timedelta(minutes=10)) -> list[ReadingRecord]:
    """Decode a JSON v1 readings payload (one object or a list of them).

    Parameters
    ----------
    payload : bytes
        UTF-8 JSON, at most :data:`MAX_PAYLOAD` [bytes].
    now : datetime.datetime, optional
        Aware "current" instant for the future-timestamp check; default: the clock (UTC).
    max_future : datetime.timedelta, optional
        How far [s] a timestamp may lie after ``now`` (clock skew allowance); default 10 min.

    Returns
    -------
    list of ReadingRecord
        In payload order; ``ts`` in UTC; ``flags`` has an entry for every analyte in
        ``values`` (``"N"`` where the device sent none); ``values`` are floats or None.

    Raises
    ------
    ProtocolError
        Oversized, not UTF-8 JSON, NaN/Infinity, duplicate keys, unknown keys, a naive or
        future timestamp, a bool or non-finite value, a flag outside HJ 212-2017 Table 8, a
        flag for an analyte without a value, a malformed check block. The message names the
        item index and field.

    References
    ----------
    DESIGN.md section 4 (reading contract); HJ 212-2017, clause 6.6.4, Table 8 (data flags);
    RFC 8259 (JSON).
    """
    if now is None:
        now = dt.datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if type(payload) is bytes and 0 < len(payload) <= MAX_PAYLOAD:
        records = _fast(payload, now + max_future, max_future)
        if records is not None:
            return records
    return decode_readings_reference(payload, now=now, max_future=max_future)


def decode_readings_reference(payload: bytes, *, now: dt.datetime | None = None,
                              max_future: dt.timedelta = dt.timedelta(minutes=10)
                              ) -> list[ReadingRecord]:
    """:func:`decode_readings` by hand validation alone: same records, same errors, slower.

    :func:`decode_readings` calls it for every payload its typed fast path cannot accept
    (so each :class:`ProtocolError` reason is written once, here).

    Parameters
    ----------
    payload : bytes
        UTF-8 JSON, at most :data:`MAX_PAYLOAD` [bytes].
    now : datetime.datetime, optional
        Aware "current" instant; default: the clock (UTC).
    max_future : datetime.timedelta, optional
        Allowed clock skew [s]; default 10 min.

    Returns
    -------
    list of ReadingRecord

    Raises
    ------
    ProtocolError
        As :func:`decode_readings`.

    References
    ----------
    DESIGN.md section 4; HJ 212-2017, clause 6.6.4, Table 8; RFC 8259.
    """
    data = _loads(payload)
    if now is None:
        now = dt.datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    limit = now + max_future
    if type(data) is dict:
        return [_reading(data, 0, limit, max_future)]
    if type(data) is list:
        if not data:
            raise ProtocolError("empty list: no readings")
        return [_reading(obj, i, limit, max_future) for i, obj in enumerate(data)]
    raise ProtocolError(f"expected a reading object or a list of them, got {_typename(data)}")


def _iso(t: dt.datetime, tz: dt.tzinfo, where: str) -> str:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ProtocolError(f"{where}: naive datetime (timezone required)")
    return t.astimezone(tz).isoformat()


def _num_out(v: object, where: str) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProtocolError(f"{where}: expected a number or None, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ProtocolError(f"{where}: {v!r} cannot be written as JSON")
    return float(v)


def encode_readings(records: Iterable[ReadingRecord], *, tz: dt.tzinfo = UTC8) -> bytes:
    """Encode readings as a JSON v1 list (the inverse of :func:`decode_readings`).

    Parameters
    ----------
    records : iterable of ReadingRecord
        Aware timestamps; finite values or None; flags from HJ 212-2017 Table 8.
    tz : datetime.tzinfo, optional
        Offset written into ``ts`` (default UTC+08:00, as Chinese devices send).

    Returns
    -------
    bytes
        UTF-8 JSON list; flags written for every analyte.

    Raises
    ------
    ProtocolError
        A naive timestamp, a non-finite or non-numeric value, an unknown flag, or an empty
        ``values``.

    References
    ----------
    DESIGN.md section 4; HJ 212-2017, clause 6.6.4, Table 8.
    """
    out = []
    for i, r in enumerate(records):
        if not r.values:
            raise ProtocolError(f"item {i}: values: empty")
        values = {k: _num_out(v, f"item {i}: values.{k}") for k, v in r.values.items()}
        flags = dict.fromkeys(values, "N")
        for k, f in (r.flags or {}).items():
            if k not in values:
                raise ProtocolError(f"item {i}: flags.{k}: analyte has no value")
            if not isinstance(f, str) or f not in _FLAGS:
                raise ProtocolError(f"item {i}: flags.{k}: {f!r} is not an HJ 212 data flag")
            flags[k] = f
        obj: dict[str, object] = {"ts": _iso(r.ts, tz, f"item {i}: ts")}
        if r.seq is not None:
            obj["seq"] = int(r.seq)
        obj["values"] = values
        obj["flags"] = flags
        if r.check is not None:
            c = r.check
            block: dict[str, object] = {"id": c.id, "kind": c.kind, "phase": c.phase}
            if c.material is not None:
                block["material"] = c.material
            obj["check"] = block
        out.append(obj)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# check summaries
# ---------------------------------------------------------------------------------------------
def decode_check_summary(payload: bytes) -> CheckSummary:
    """Decode a device-computed QC check summary (``envcal/{station}/{analyzer}/check``).

    Parameters
    ----------
    payload : bytes
        UTF-8 JSON object with ``id, kind, analyte, start, end, material, measured,
        readings`` and optionally ``standard_value`` (device's reference value) and
        ``verdict`` (device's verdict text). Times are ISO 8601 with offset or epoch [ms].

    Returns
    -------
    CheckSummary
        ``start``/``end`` in UTC, ``readings`` as a tuple of floats, the verdict in
        ``device_verdict`` (kept beside envcal's own verdict, never trusted).

    Raises
    ------
    ProtocolError
        Missing or unknown keys, wrong types, non-finite numbers, ``end`` before ``start``,
        an unknown ``kind``, oversized payload.

    References
    ----------
    DESIGN.md section 4 (check summary); HJ 212-2025 CN 2062 (automatic standard-sample
    check data) for the device verdict it mirrors.
    """
    d = _loads(payload)
    if type(d) is not dict:
        raise ProtocolError(f"check summary: expected an object, got {_typename(d)}")
    extra = d.keys() - _SUMMARY_KEYS
    if extra:
        raise ProtocolError(f"check summary: unknown key {sorted(extra)[0]!r}")
    for k in _SUMMARY_REQUIRED:
        if k not in d:
            raise ProtocolError(f"check summary: missing field {k!r}")
    where = "check summary: field"
    cid = _text(d["id"], f"{where} 'id'")
    kind = d["kind"]
    if type(kind) is not str or kind not in _KINDS:
        raise ProtocolError(f"{where} 'kind': {kind!r} is not one of {', '.join(CHECK_KINDS)}")
    analyte = _text(d["analyte"], f"{where} 'analyte'")
    start = parse_timestamp(d["start"], f"{where} 'start'")
    end = parse_timestamp(d["end"], f"{where} 'end'")
    if end < start:
        raise ProtocolError(f"{where} 'end': {end.isoformat()} is before start {start.isoformat()}")
    material = _text(d["material"], f"{where} 'material'", nullable=True, empty=True)
    measured = _number(d["measured"], f"{where} 'measured'")
    raw = d["readings"]
    if type(raw) is not list:
        raise ProtocolError(f"{where} 'readings': expected a list, got {_typename(raw)}")
    readings = tuple(_number(v, f"{where} 'readings[{j}]'", nullable=False)
                     for j, v in enumerate(raw))
    standard_value = _number(d.get("standard_value"), f"{where} 'standard_value'")
    verdict = _text(d.get("verdict"), f"{where} 'verdict'", nullable=True, empty=True)
    return CheckSummary(id=cid, kind=kind, analyte=analyte, start=start, end=end,
                        material=material, measured=measured, readings=readings,
                        standard_value=standard_value, device_verdict=verdict)


def encode_check_summary(s: CheckSummary, *, tz: dt.tzinfo = UTC8) -> bytes:
    """Encode a check summary as JSON (the inverse of :func:`decode_check_summary`).

    Parameters
    ----------
    s : CheckSummary
        Aware ``start``/``end``. ``extra`` is not transmitted (the wire format is strict).
    tz : datetime.tzinfo, optional
        Offset written into ``start``/``end`` (default UTC+08:00).

    Returns
    -------
    bytes
        UTF-8 JSON object; ``standard_value`` and ``verdict`` only when not None.

    References
    ----------
    DESIGN.md section 4 (check summary).
    """
    obj: dict[str, object] = {
        "id": s.id, "kind": s.kind, "analyte": s.analyte,
        "start": _iso(s.start, tz, "start"), "end": _iso(s.end, tz, "end"),
        "material": s.material, "measured": _num_out(s.measured, "measured"),
        "readings": [_num_out(v, f"readings[{j}]") for j, v in enumerate(s.readings)],
    }
    if s.standard_value is not None:
        obj["standard_value"] = _num_out(s.standard_value, "standard_value")
    if s.device_verdict is not None:
        obj["verdict"] = s.device_verdict
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
