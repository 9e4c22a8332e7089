"""JSON v1 readings and check summaries: contract examples, rejections, properties."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envcal.protocols.json_v1 import (
    MAX_PAYLOAD,
    decode_check_summary,
    decode_readings,
    decode_readings_reference,
    encode_check_summary,
    encode_readings,
)
from envcal.protocols.records import (
    CHECK_KINDS,
    CHECK_PHASES,
    UTC8,
    CheckBlock,
    CheckSummary,
    ProtocolError,
    ReadingRecord,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
DESIGN_EXAMPLE = (b'{"ts": "2026-11-27T08:00:00+08:00", "seq": 1042,'
                  b' "values": {"SO2": 35.2, "NOx": 81.0}, "flags": {"SO2": "N", "NOx": "N"},'
                  b' "check": {"id": "CK-20261127-0800-SO2-span", "kind": "span",'
                  b' "material": "LOT-ID", "phase": "run"}}')


def dec(obj, **kw) -> list[ReadingRecord]:
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return decode_readings(payload, now=kw.pop("now", NOW), **kw)


def why(obj, **kw) -> str:
    with pytest.raises(ProtocolError) as info:
        dec(obj, **kw)
    return str(info.value)


# ----------------------------------------------------------------------------- readings
def test_decode_readings_design_example():
    (r,) = dec(DESIGN_EXAMPLE)
    assert r.ts == dt.datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    assert r.ts.tzinfo == UTC
    assert r.seq == 1042
    assert r.values == {"SO2": 35.2, "NOx": 81.0}
    assert r.flags == {"SO2": "N", "NOx": "N"}
    assert r.check == CheckBlock(id="CK-20261127-0800-SO2-span", kind="span", phase="run",
                                 material="LOT-ID")


def test_decode_readings_epoch_ms_and_offset_give_same_utc():
    ms = int(dt.datetime(2026, 11, 27, 0, 0, 0, 250000, tzinfo=UTC).timestamp() * 1000)
    a = dec({"ts": ms, "values": {"SO2": 1}})[0].ts
    b = dec({"ts": "2026-11-27T08:00:00.250+08:00", "values": {"SO2": 1}})[0].ts
    c = dec({"ts": "2026-11-27T00:00:00.250Z", "values": {"SO2": 1}})[0].ts
    assert a == b == c == dt.datetime(2026, 11, 27, 0, 0, 0, 250000, tzinfo=UTC)
    assert a.utcoffset() == b.utcoffset() == dt.timedelta(0)


def test_decode_readings_list_defaults():
    recs = dec([{"ts": 0, "values": {"SO2": 1, "NOx": None}, "flags": {"NOx": "D"}},
                {"ts": 1000, "seq": 0, "values": {"O2": 20.9}}])
    assert [r.ts for r in recs] == [dt.datetime(1970, 1, 1, tzinfo=UTC),
                                   dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)]
    assert recs[0].values == {"SO2": 1.0, "NOx": None}
    assert type(recs[0].values["SO2"]) is float
    assert recs[0].flags == {"SO2": "N", "NOx": "D"}
    assert recs[0].seq is None and recs[0].check is None
    assert recs[1].seq == 0 and recs[1].flags == {"O2": "N"}


def test_decode_readings_check_without_material():
    (r,) = dec({"ts": 0, "values": {"SO2": 0.1},
                "check": {"id": "CK-1", "kind": "zero", "phase": "start"}})
    assert r.check == CheckBlock(id="CK-1", kind="zero", phase="start", material=None)


def test_decode_readings_future_limit():
    ok = NOW + dt.timedelta(minutes=9)
    assert dec({"ts": ok.isoformat(), "values": {"a": 1}})[0].ts == ok
    msg = why({"ts": (NOW + dt.timedelta(minutes=11)).isoformat(), "values": {"a": 1}})
    assert "item 0: field 'ts'" in msg and "600 s in the future" in msg
    # a bigger allowance accepts it
    far = NOW + dt.timedelta(hours=1)
    assert dec({"ts": far.isoformat(), "values": {"a": 1}},
               max_future=dt.timedelta(hours=2))[0].ts == far


def test_decode_readings_oversized():
    payload = b'{"ts": 0, "values": {"a": 1}, "x": "' + b"y" * MAX_PAYLOAD + b'"}'
    with pytest.raises(ProtocolError, match="payload too large"):
        decode_readings(payload, now=NOW)


_OK = {"ts": 0, "values": {"SO2": 1.0}}


@pytest.mark.parametrize("payload, expected", [
    ({**_OK, "extra": 1}, "item 0: unknown key 'extra'"),
    ({"values": {"a": 1}}, "item 0: missing field 'ts'"),
    ({"ts": 0}, "item 0: missing field 'values'"),
    ({"ts": "2026-11-27T08:00:00", "values": {"a": 1}}, "without UTC offset"),
    ({"ts": "yesterday", "values": {"a": 1}}, "not an ISO 8601 timestamp"),
    ({"ts": 1.5, "values": {"a": 1}}, "epoch milliseconds must be an integer"),
    ({"ts": -1, "values": {"a": 1}}, "must be >= 0"),
    ({"ts": 10**20, "values": {"a": 1}}, "out of range"),
    ({"ts": True, "values": {"a": 1}}, "field 'ts'"),
    ({"ts": 0, "seq": -1, "values": {"a": 1}}, "field 'seq'"),
    ({"ts": 0, "seq": 1.0, "values": {"a": 1}}, "field 'seq': expected an integer"),
    ({"ts": 0, "seq": True, "values": {"a": 1}}, "field 'seq'"),
    ({"ts": 0, "seq": 2**63, "values": {"a": 1}}, "out of range"),
    ({"ts": 0, "values": {}}, "field 'values': empty"),
    ({"ts": 0, "values": [1]}, "field 'values': expected an object"),
    ({"ts": 0, "values": {"a": True}}, "field 'values.a': expected a number or null, got a boolean"),
    ({"ts": 0, "values": {"a": "1.0"}}, "field 'values.a'"),
    ({"ts": 0, "values": {"": 1}}, "empty analyte name"),
    ({"ts": 0, "values": {"a": 1}, "flags": {"a": "X"}}, "field 'flags.a': 'X' is not an HJ 212"),
    ({"ts": 0, "values": {"a": 1}, "flags": {"b": "N"}}, "field 'flags.b'"),
    ({"ts": 0, "values": {"a": 1}, "flags": ["N"]}, "field 'flags'"),
    ({**_OK, "check": {"id": "c", "kind": "bogus", "phase": "run"}}, "check'.kind"),
    ({**_OK, "check": {"id": "c", "kind": "span", "phase": "middle"}}, "check'.phase"),
    ({**_OK, "check": {"id": "c", "kind": ["span"], "phase": "run"}}, "check'.kind"),
    ({**_OK, "check": {"id": "c", "kind": "span", "phase": {"a": 1}}}, "check'.phase"),
    ({**_OK, "check": {"kind": "span", "phase": "run"}}, "missing field 'id'"),
    ({**_OK, "check": {"id": "", "kind": "span", "phase": "run"}}, "must not be empty"),
    ({**_OK, "check": {"id": "c", "kind": "span", "phase": "run", "lot": "x"}}, "unknown key 'lot'"),
    ({**_OK, "check": {"id": "c", "kind": "span", "phase": "run", "material": 5}}, "material"),
    ({**_OK, "check": "span"}, "field 'check': expected an object"),
    ([], "empty list"),
    (5, "expected a reading object or a list"),
    ([_OK, _OK, {**_OK, "values": {"a": None}, "flags": {"a": "Q"}}], "item 2: field 'flags.a'"),
    ([_OK, 7], "item 1: expected an object"),
    (b'{"ts": 0, "values": {"a": NaN}}', "NaN"),
    (b'{"ts": 0, "values": {"a": Infinity}}', "Infinity"),
    (b'{"ts": 0, "values": {"a": -Infinity}}', "Infinity"),
    (b'{"ts": 0, "values": {"a": 1e999}}', "out of range"),
    (b'{"ts": 0, "values": {"a": 1}, "ts": 5}', "duplicate key 'ts'"),
    (b'{"ts": 0, "values": {"a": 1}', "invalid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"\xef\xbb\xbf{\"ts\": 0, \"values\": {\"a\": 1}}", "invalid JSON"),
    (b"", "empty payload"),
])
def test_decode_readings_rejects(payload, expected):
    assert expected in why(payload)


# ----------------------------------------------------------------------------- summaries
SUMMARY = {"id": "CK-20261127-0800-CODcr-std", "kind": "std_sample", "analyte": "CODcr",
           "start": "2026-11-27T08:00:00+08:00", "end": 1795744800000,
           "material": "GBW(E)080001-L01", "measured": 51.2, "readings": [51.0, 51.4, 51.2],
           "standard_value": 50.0, "verdict": "pass"}


def test_decode_check_summary_full():
    s = decode_check_summary(json.dumps(SUMMARY).encode())
    assert s == CheckSummary(
        id="CK-20261127-0800-CODcr-std", kind="std_sample", analyte="CODcr",
        start=dt.datetime(2026, 11, 27, 0, 0, tzinfo=UTC),
        end=dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=1795744800000),
        material="GBW(E)080001-L01", measured=51.2, readings=(51.0, 51.4, 51.2),
        standard_value=50.0, device_verdict="pass")


def test_decode_check_summary_optional_fields_absent():
    d = {k: v for k, v in SUMMARY.items() if k not in ("standard_value", "verdict")}
    d.update(material=None, measured=None, readings=[])
    s = decode_check_summary(json.dumps(d).encode())
    assert s.standard_value is None and s.device_verdict is None
    assert s.material is None and s.measured is None and s.readings == ()


@pytest.mark.parametrize("change, expected", [
    ({"extra": 1}, "unknown key 'extra'"),
    ({"measured": "51"}, "field 'measured'"),
    ({"readings": [1, None]}, "readings[1]"),
    ({"readings": 5}, "field 'readings': expected a list"),
    ({"kind": "drift"}, "field 'kind'"),
    ({"end": "2026-11-27T07:00:00+08:00"}, "is before start"),
    ({"start": "2026-11-27T08:00:00"}, "without UTC offset"),
    ({"id": ""}, "field 'id': must not be empty"),
    ({"verdict": 1}, "field 'verdict'"),
])
def test_decode_check_summary_rejects(change, expected):
    with pytest.raises(ProtocolError) as info:
        decode_check_summary(json.dumps({**SUMMARY, **change}).encode())
    assert expected in str(info.value)


@pytest.mark.parametrize("missing", ["id", "kind", "analyte", "start", "end", "material",
                                     "measured", "readings"])
def test_decode_check_summary_missing_field(missing):
    d = {k: v for k, v in SUMMARY.items() if k != missing}
    with pytest.raises(ProtocolError, match=f"missing field '{missing}'"):
        decode_check_summary(json.dumps(d).encode())


def test_decode_check_summary_not_an_object():
    with pytest.raises(ProtocolError, match="expected an object"):
        decode_check_summary(b"[1, 2]")


# ----------------------------------------------------------------------------- encode
def test_encode_readings_writes_local_offset():
    r = ReadingRecord(ts=dt.datetime(2026, 11, 27, 0, 0, tzinfo=UTC), values={"SO2": 35.2},
                      flags={}, seq=3)
    (obj,) = json.loads(encode_readings([r]))
    assert obj == {"ts": "2026-11-27T08:00:00+08:00", "seq": 3, "values": {"SO2": 35.2},
                   "flags": {"SO2": "N"}}
    (obj,) = json.loads(encode_readings([r], tz=UTC))
    assert obj["ts"] == "2026-11-27T00:00:00+00:00"


@pytest.mark.parametrize("rec, expected", [
    (ReadingRecord(ts=dt.datetime(2026, 1, 1), values={"a": 1.0}), "naive"),
    (ReadingRecord(ts=NOW, values={"a": float("nan")}), "cannot be written"),
    (ReadingRecord(ts=NOW, values={"a": 1.0}, flags={"a": "Z"}), "not an HJ 212"),
    (ReadingRecord(ts=NOW, values={}), "empty"),
])
def test_encode_readings_rejects(rec, expected):
    with pytest.raises(ProtocolError, match=expected):
        encode_readings([rec])


# ----------------------------------------------------------------------------- properties
names = st.text("abcSO2NOxPM.5-_ 二氧化硫\u00e9\"\\/", min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
times = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.just(UTC))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
checks = st.one_of(st.none(), st.builds(
    CheckBlock, id=names, kind=st.sampled_from(CHECK_KINDS), phase=st.sampled_from(CHECK_PHASES),
    material=st.one_of(st.none(), st.text(max_size=20))))


@st.composite
def readings(draw) -> ReadingRecord:
    values = draw(st.dictionaries(names, st.one_of(st.none(), finite), min_size=1, max_size=6))
    flags = {k: draw(st.sampled_from("NFMSDCTB")) for k in values}
    return ReadingRecord(ts=draw(times), values=values, flags=flags,
                         seq=draw(st.one_of(st.none(), st.integers(0, 2**63 - 1))),
                         check=draw(checks))


@settings(max_examples=120, deadline=None)
@given(st.lists(readings(), min_size=1, max_size=4), offsets)
def test_readings_round_trip(recs, tz):
    out = decode_readings(encode_readings(recs, tz=tz), now=dt.datetime(2100, 1, 2, tzinfo=UTC))
    assert out == recs
    assert all(r.ts.utcoffset() == dt.timedelta(0) for r in out)


@settings(max_examples=150, deadline=None)
@given(st.builds(CheckSummary, id=names, kind=st.sampled_from(CHECK_KINDS), analyte=names,
                 start=times, end=st.just(dt.datetime(2100, 1, 2, tzinfo=UTC)),
                 material=st.one_of(st.none(), st.text(max_size=20)),
                 measured=st.one_of(st.none(), finite),
                 readings=st.lists(finite, max_size=10).map(tuple),
                 standard_value=st.one_of(st.none(), finite),
                 device_verdict=st.one_of(st.none(), st.text(max_size=10))), offsets)
def test_check_summary_round_trip(s, tz):
    assert decode_check_summary(encode_check_summary(s, tz=tz)) == s


@settings(max_examples=400, deadline=1000)
@given(st.binary(max_size=400))
def test_decode_random_bytes_only_protocol_error(data):
    for fn in (lambda b: decode_readings(b, now=NOW), decode_check_summary):
        try:
            fn(data)
        except ProtocolError:
            pass


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(
                                ["ts", "seq", "values", "flags", "check", "id", "kind", "phase",
                                 "material", "SO2", "N", "x"]), inner, max_size=5)),
    max_leaves=20)


@settings(max_examples=250, deadline=1000)
@given(json_values)
def test_decode_random_json_only_protocol_error(obj):
    payload = json.dumps(obj).encode()  # may contain NaN/Infinity: rejected too
    for fn in (lambda b: decode_readings(b, now=NOW), decode_check_summary):
        try:
            fn(payload)
        except ProtocolError:
            pass


_PATHS = [("ts",), ("seq",), ("values",), ("values", "SO2"), ("values", "NOx"), ("flags",),
          ("flags", "SO2"), ("check",), ("check", "id"), ("check", "kind"), ("check", "phase"),
          ("check", "material"), ("extra",)]


@settings(max_examples=400, deadline=1000)
@given(path=st.sampled_from(_PATHS), new=json_values)
def test_decode_one_field_replaced_only_protocol_error(path, new):
    # a valid reading with exactly one field replaced by an arbitrary JSON value
    obj = json.loads(DESIGN_EXAMPLE)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    try:
        recs = decode_readings(json.dumps(obj).encode(), now=NOW)
    except ProtocolError:
        return
    assert len(recs) == 1 and recs[0].ts.tzinfo == UTC


@settings(max_examples=300, deadline=1000)
@given(key=st.sampled_from(sorted(SUMMARY) + ["extra"]), new=json_values)
def test_decode_check_summary_one_field_replaced_only_protocol_error(key, new):
    try:
        s = decode_check_summary(json.dumps({**SUMMARY, key: new}).encode())
    except ProtocolError:
        return
    assert isinstance(s, CheckSummary) and s.start <= s.end


def test_utc8_is_china_standard_time():
    assert UTC8.utcoffset(None) == dt.timedelta(hours=8)


def _outcome(fn, payload: bytes):
    try:
        return fn(payload, now=NOW)
    except ProtocolError as exc:
        return f"error: {exc}"


@settings(max_examples=400, deadline=1000)
@given(path=st.sampled_from(_PATHS), new=json_values, as_list=st.booleans())
def test_decode_readings_fast_path_agrees_with_reference(path, new, as_list):
    obj = json.loads(DESIGN_EXAMPLE)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    payload = json.dumps([obj, obj] if as_list else obj).encode()
    assert _outcome(decode_readings, payload) == _outcome(decode_readings_reference, payload)


@pytest.mark.parametrize("payload", [
    b'{"ts": 0, "values": {"a": 1, "a": 2}}',
    b'{"ts": 0, "values": {"a": 1}, "flags": {"a": "N", "a": "D"}}',
    b'{"ts": 0, "values": {"a": 1}, "check": {"id": "x", "id": "y", "kind": "span", "phase": "run"}}',
    b'{"ts": 0, "values": {"a": 1}, "check": {"id": ":", "kind": "span", "phase": "run"}, "ts": 1}',
    b'{"ts": "2026-11-27T08:00:00+08:00", "ts": "2026-11-27T08:00:01+08:00", "values": {"a": 1}}',
    b'[{"ts": 0, "values": {"a": 1}}, {"ts": 0, "seq": 1, "seq": 2, "values": {"a": 1}}]',
])
def test_decode_readings_refuses_every_duplicate_key(payload):
    assert "duplicate key" in why(payload)


def test_decode_readings_fast_path_matches_reference_on_design_example():
    assert decode_readings(DESIGN_EXAMPLE, now=NOW) == decode_readings_reference(DESIGN_EXAMPLE, now=NOW)


@pytest.mark.parametrize("ts", ["2026-11-27T08:00:00.1234567+08:00", "2026-11-27t08:00:00z",
                                "2026-11-27 08:00:00+08:00", "2026-11-27T08:00:60+08:00",
                                "2026-11-27T08:00:00+0800", "0001-01-01T00:00:00+01:00",
                                "2026-11-27T24:00:00+08:00", "2026-11-27T08:00:00,5+08:00"])
def test_decode_readings_fast_path_agrees_on_edge_timestamps(ts):
    payload = json.dumps({"ts": ts, "values": {"a": 1}}).encode()
    assert _outcome(decode_readings, payload) == _outcome(decode_readings_reference, payload)
