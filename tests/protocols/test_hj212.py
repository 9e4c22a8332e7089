"""HJ 212 frames: the standard's worked examples, rejections with their reasons, properties."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envcal.protocols.hj212 import (
    CHECK_CN,
    DATA_CNS,
    Frame,
    Hj212Error,
    crc16_hj212,
    decode_frame,
    encode_frame,
    frame_to_check_summary,
    frame_to_records,
)
from envcal.protocols.records import UTC8, CheckSummary, ProtocolError

UTC = dt.UTC

# HJ 212-2017 Appendix A worked example (the PDF text breaks the line after "Flag=5").
APPENDIX_A_SEGMENT = (b"QN=20160801085857223;ST=32;CN=1062;PW=100000;"
                      b"MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&")
APPENDIX_A_FRAME = b"##0101" + APPENDIX_A_SEGMENT + b"1C80\r\n"

CODES = {"a21026": "SO2", "a21002": "NOx", "a19001": "O2", "w01018": "CODcr",
         "w01001": "pH", "w00000": "water_flow", "w21003": "NH3-N"}


def wrap(segment: bytes | str, *, crc: int | None = None, length: int | None = None,
         crlf: bool = True) -> bytes:
    """A frame around ``segment`` with the right (or a given) length and CRC."""
    seg = segment.encode("utf-8") if isinstance(segment, str) else segment
    n = len(seg) if length is None else length
    c = crc16_hj212(seg) if crc is None else crc
    return b"##%04d" % n + seg + b"%04X" % c + (b"\r\n" if crlf else b"")


def reason(data: bytes) -> str:
    with pytest.raises(Hj212Error) as info:
        decode_frame(data)
    return str(info.value)


# ----------------------------------------------------------------------------- CRC
def test_crc16_check_value_123456789():
    assert crc16_hj212(b"123456789") == 0x2F80


def test_crc16_appendix_a_example():
    assert len(APPENDIX_A_SEGMENT) == 101
    assert crc16_hj212(APPENDIX_A_SEGMENT) == 0x1C80


def test_crc16_matches_bitwise_definition():
    def bitwise(data: bytes) -> int:
        reg = 0xFFFF
        for b in data:
            reg = (reg >> 8) ^ b
            for _ in range(8):
                check = reg & 1
                reg >>= 1
                if check:
                    reg ^= 0xA001
        return reg

    for data in (b"", b"\x00", b"\xff" * 7, APPENDIX_A_SEGMENT, bytes(range(256))):
        assert crc16_hj212(data) == bitwise(data)


def test_crc16_is_not_modbus():
    # CRC-16/MODBUS of "123456789" is 0x4B37; the HJ 212 variant differs
    assert crc16_hj212(b"123456789") != 0x4B37


# ----------------------------------------------------------------------------- examples
def test_decode_frame_appendix_a_example():
    f = decode_frame(APPENDIX_A_FRAME)
    assert (f.qn, f.st, f.cn, f.pw, f.mn, f.flag) == (
        "20160801085857223", "32", "1062", "100000", "010000A8900016F000169DC0", 5)
    assert f.pnum is None and f.pno is None and f.data_time is None
    assert f.fields == {"RtdInterval": "30"}
    assert f.values == {} and f.flags == {}
    assert f.raw == APPENDIX_A_FRAME.decode()


def test_decode_frame_lowercase_crc_and_no_crlf():
    f = decode_frame(APPENDIX_A_FRAME[:-6] + b"1c80")
    assert f.cn == "1062"


def test_decode_frame_appendix_c_realtime_water_sample_time():
    # Table C.19 real-time upload; the PDF drops the "w" of "w01018-Rtd" and ends with "…".
    seg = ("QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
           "CP=&&DataTime=20160801085857;w01001-Rtd=7.1,w01001-Flag=N;"
           "w01018-SampleTime=20160801070000,w01018-Rtd=2.2,w01018-Flag=N,w01018-EFlag=A01&&")
    f = decode_frame(wrap(seg))
    assert f.data_time == dt.datetime(2016, 8, 1, 0, 58, 57, tzinfo=UTC)
    assert f.values == {"w01001-Rtd": 7.1, "w01018-Rtd": 2.2}
    assert f.flags == {"w01001": "N", "w01018": "N"}
    assert f.fields == {"w01018-SampleTime": "20160801070000", "w01018-EFlag": "A01"}
    recs = frame_to_records(f, CODES, seq=7)
    # SampleTime (07:00 local) overrides DataTime for COD: two records, ordered by time
    assert [r.ts for r in recs] == [dt.datetime(2016, 7, 31, 23, 0, tzinfo=UTC),
                                    dt.datetime(2016, 8, 1, 0, 58, 57, tzinfo=UTC)]
    assert recs[0].values == {"CODcr": 2.2} and recs[1].values == {"pH": 7.1}
    assert recs[0].flags == {"CODcr": "N"} and all(r.seq == 7 for r in recs)


def test_decode_frame_appendix_c_minute_data_to_records():
    # Table C.20 minute data (CN 2051): -Avg values become readings, -Cou/-Min/-Max stay in values
    seg = ("QN=20160801085857534;ST=32;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=4;"
           "CP=&&DataTime=20160801084000;w00000-Cou=10.5,w00000-Min=16.4,w00000-Avg=17.5,"
           "w00000-Max=20.1,w00000-Flag=N;w01001-Min=7.1,w01001-Avg=7.5,w01001-Max=7.8,"
           "w01001-Flag=N;w01018-Cou=10.5,w01018-Min=40.1,w01018-Avg=40.1,w01018-Max=40.1,"
           "w01018-Flag=D&&")
    f = decode_frame(wrap(seg))
    assert f.values["w00000-Cou"] == 10.5 and f.values["w01001-Max"] == 7.8
    (rec,) = frame_to_records(f, CODES)
    assert rec.ts == dt.datetime(2016, 8, 1, 0, 40, tzinfo=UTC)
    assert rec.values == {"water_flow": 17.5, "pH": 7.5, "CODcr": 40.1}
    assert rec.flags == {"water_flow": "N", "pH": "N", "CODcr": "D"}
    assert rec.seq is None


@pytest.mark.parametrize("cn", sorted(DATA_CNS))
def test_frame_to_records_value_suffix_per_cn(cn):
    t = dt.datetime(2026, 1, 15, 8, 0, tzinfo=UTC8)
    f = decode_frame(encode_frame(cn=cn, mn="33040000000001", data_time=t,
                                  cp={"a21026-Rtd": 1.0, "a21026-Avg": 2.0}))
    (rec,) = frame_to_records(f, CODES)
    assert rec.values == {"SO2": 1.0 if cn == "2011" else 2.0}
    assert rec.flags == {"SO2": "N"}  # no -Flag: normal
    assert rec.ts == t


def test_decode_frame_log_text_keeps_separators_and_counts_utf8_bytes():
    # Table C.40: logs sit between // and may be Chinese (3 bytes per character in UTF-8)
    seg = ("QN=20160801085857223;ST=32;CN=3020;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
           "CP=&&DataTime=20100301145000;PolId=w01018;i11001-Info=//清洗管路;阀门,泵//&&")
    data = wrap(seg)
    assert int(data[2:6]) == len(seg.encode("utf-8")) > len(seg)
    f = decode_frame(data)
    assert f.fields == {"PolId": "w01018", "i11001-Info": "//清洗管路;阀门,泵//"}
    assert frame_to_records(f, CODES) == []  # CN 3020 is not data


def test_decode_frame_2005_style_without_qn_and_flag():
    seg = "ST=32;CN=2011;PW=123456;MN=88888880000001;CP=&&DataTime=20040516020111;w01018-Rtd=20.5&&"
    f = decode_frame(wrap(seg))
    assert f.qn is None and f.flag is None and f.mn == "88888880000001"
    (rec,) = frame_to_records(f, CODES)
    assert rec.values == {"CODcr": 20.5}
    assert rec.ts == dt.datetime(2004, 5, 15, 18, 1, 11, tzinfo=UTC)


def test_decode_frame_empty_cp_and_comma_in_header():
    f = decode_frame(wrap("QN=20160801085857534,ST=32;CN=2031;PW=123456;MN=0100;Flag=4;CP=&&&&"))
    assert f.st == "32" and f.values == {} and f.fields == {}


def test_decode_frame_tz_parameter():
    seg = "ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=20260101000000;a21026-Rtd=1&&"
    assert decode_frame(wrap(seg), tz=UTC).data_time == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert decode_frame(wrap(seg)).data_time == dt.datetime(2025, 12, 31, 16, tzinfo=UTC)


def test_decode_frame_empty_value_is_none():
    f = decode_frame(wrap("ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=20260101000000;a21026-Rtd=,a21026-Flag=D&&"))
    assert f.values == {"a21026-Rtd": None}
    (rec,) = frame_to_records(f, CODES)
    assert rec.values == {"SO2": None} and rec.flags == {"SO2": "D"}


def test_decode_frame_split_packet_fields():
    f = decode_frame(encode_frame(cn="2011", mn="1", flag=7, pnum=3, pno=2, cp="a21026-Rtd=1"))
    assert (f.flag, f.pnum, f.pno) == (7, 3, 2)


# ----------------------------------------------------------------------------- rejections
def test_decode_frame_rejects_wrong_crc_with_both_values():
    msg = reason(APPENDIX_A_FRAME.replace(b"1C80", b"1C81"))
    assert "bad CRC" in msg and "1C81" in msg and "1C80" in msg


def test_decode_frame_rejects_corrupted_byte_by_crc():
    msg = reason(APPENDIX_A_FRAME.replace(b"RtdInterval=30", b"RtdInterval=31"))
    assert "bad CRC" in msg


@pytest.mark.parametrize("declared", [100, 102, 50])
def test_decode_frame_rejects_wrong_length(declared):
    msg = reason(wrap(APPENDIX_A_SEGMENT, length=declared))
    assert "bad length" in msg and str(declared) in msg and "101" in msg


def test_decode_frame_rejects_every_truncation():
    for cut in range(len(APPENDIX_A_FRAME) - 2):  # -2: without the CRLF it is still valid
        msg = reason(APPENDIX_A_FRAME[:cut])
        assert "truncated" in msg or "bad header" in msg or "bad length field" in msg, (cut, msg)
    assert "truncated" in reason(APPENDIX_A_FRAME[:50])


@pytest.mark.parametrize("data, why", [
    (b"#0101QN=1", "bad header"),
    (b"$$0101" + APPENDIX_A_SEGMENT + b"1C80\r\n", "bad header"),
    (b"##01a1" + APPENDIX_A_SEGMENT + b"1C80\r\n", "bad length field"),
    (b"##1025" + b"x" * 1025 + b"0000\r\n", "bad CRC"),
    (b"##0101" + APPENDIX_A_SEGMENT + b"1CXZ\r\n", "bad CRC field"),
    (b"##0101" + APPENDIX_A_SEGMENT + b"1C80\r\nextra", "bad length"),
    (b"##0101" + APPENDIX_A_SEGMENT + b"1C80\n", "bad trailer"),
    (b"##0101" + APPENDIX_A_SEGMENT + b"1C80\r", "bad trailer"),
])
def test_decode_frame_rejects_framing(data, why):
    assert why in reason(data)


def test_decode_frame_rejects_long_segment_declared_short():
    seg = "ST=22;CN=2011;PW=1;MN=1;CP=&&" + "a=1;" * 300 + "&&"
    assert "bad length: length field says 1000" in reason(wrap(seg, length=1000))
    with pytest.raises(Hj212Error, match="segment too long"):
        encode_frame(cn="2011", mn="1", cp="a=1;" * 300)


def test_decode_frame_rejects_non_utf8():
    seg = b"ST=22;CN=3020;PW=1;MN=1;CP=&&i11001-Info=//\xff\xfe//&&"
    assert "non-UTF-8" in reason(wrap(seg))


@pytest.mark.parametrize("segment, why", [
    ("ST=22;PW=1;MN=1;CP=&&a21026-Rtd=1&&", "missing field CN"),
    ("ST=22;CN=2011;PW=1;CP=&&a21026-Rtd=1&&", "missing field MN"),
    ("CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1&&", "missing field ST"),
    ("ST=22;CN=2011;PW=1;MN=1", "missing field CP"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=a21026-Rtd=1", "bad CP"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1", "bad CP"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1.2.3&&", "bad number in a21026-Rtd: '1.2.3'"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=nan&&", "bad number in a21026-Rtd"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1e999&&", "bad number in a21026-Rtd"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=x;CP=&&&&", "bad number in Flag: 'x'"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=256;CP=&&&&", "bad number in Flag"),
    ("ST=22;CN=20x1;PW=1;MN=1;CP=&&&&", "bad number in CN"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=7;PNUM=2;CP=&&&&", "missing field PNO"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=7;PNO=2;CP=&&&&", "missing field PNUM"),
    ("ST=22;CN=2011;PW=;MN=1;CP=&&&&", "empty header item 'PW'"),
    ("ST=22;CN=2011;PW=1;MN=;CP=&&&&", "empty header item 'MN'"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=12;CP=&&&&", "bad Flag: 12 names version 3"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=9;RF=0;CP=&&&&", "bad RF"),
    ("ST=22;CN=2011;PW=1;MN=1;Flag=5;RF=1;CP=&&&&", "unknown header field 'RF'"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=202601010000001;a21026-Rtd=1&&", "bad time in DataTime"),
    ("ST=22;CN=2011;PW=1;MN=1;XX=1;CP=&&&&", "unknown header field 'XX'"),
    ("ST=22;CN=2011;CN=2011;PW=1;MN=1;CP=&&&&", "duplicate header field CN"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=2026013100000;a21026-Rtd=1&&", "bad time in DataTime"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=20260231000000;a21026-Rtd=1&&", "no such date"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1;a21026-Rtd=2&&", "duplicate CP field a21026-Rtd"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Flag=NN&&", "bad flag in a21026-Flag"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Flag=n&&", "bad flag in a21026-Flag"),
    ("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd&&", "no '='"),
    ("ST=22;CN=3020;PW=1;MN=1;CP=&&i11001-Info=//open&&", "unterminated"),
])
def test_decode_frame_rejects_content(segment, why):
    assert why in reason(wrap(segment))


def test_frame_to_records_unknown_codes_named():
    f = decode_frame(wrap("ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=20260101000000;"
                          "a21026-Rtd=1;a99999-Rtd=2;a88888-Rtd=3&&"))
    with pytest.raises(ProtocolError, match="a88888, a99999"):
        frame_to_records(f, CODES)


def test_frame_to_records_needs_data_time():
    f = decode_frame(wrap("ST=22;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1&&"))
    with pytest.raises(ProtocolError, match="missing field DataTime"):
        frame_to_records(f, CODES)


def test_frame_to_records_other_cn_is_empty():
    assert frame_to_records(decode_frame(APPENDIX_A_FRAME), CODES) == []
    assert frame_to_check_summary(decode_frame(APPENDIX_A_FRAME), CODES) == []


def test_frame_to_records_two_codes_one_analyte_rejected():
    f = decode_frame(wrap("ST=22;CN=2011;PW=1;MN=1;CP=&&DataTime=20260101000000;"
                          "a21026-Rtd=1;a21027-Rtd=2&&"))
    with pytest.raises(ProtocolError, match="both map to analyte SO2"):
        frame_to_records(f, {"a21026": "SO2", "a21027": "SO2"})


# ----------------------------------------------------------------------------- CN 2062
def test_frame_to_check_summary_cn_2062():
    seg = ("QN=20260115100000000;ST=32;CN=2062;PW=123456;MN=33060000000003;Flag=5;"
           "CP=&&DataTime=20260115100000;w01018-SampleRd=51.2,w01018-StandardValue=50.0,"
           "w01018-ResultType=1,w01018-Flag=N;w21003-SampleRd=0.93,w21003-StandardValue=1.00,"
           "w21003-ResultType=0,w21003-SampleTime=20260115094500&&")
    f = decode_frame(wrap(seg))
    assert f.cn == CHECK_CN
    assert frame_to_records(f, CODES) == []
    cod, nh3 = frame_to_check_summary(f, CODES)
    assert isinstance(cod, CheckSummary)
    assert (cod.kind, cod.analyte, cod.measured, cod.standard_value, cod.device_verdict) == (
        "std_sample", "CODcr", 51.2, 50.0, "1")
    assert cod.readings == (51.2,) and cod.material is None
    assert cod.start == cod.end == dt.datetime(2026, 1, 15, 2, 0, tzinfo=UTC)
    assert cod.id == "HJ212-33060000000003-20260115100000-w01018"
    assert cod.extra["flag"] == "N" and cod.extra["mn"] == "33060000000003"
    assert (nh3.analyte, nh3.measured, nh3.standard_value, nh3.device_verdict) == (
        "NH3-N", 0.93, 1.0, "0")
    assert nh3.start == dt.datetime(2026, 1, 15, 1, 45, tzinfo=UTC)  # its SampleTime


def test_frame_to_check_summary_missing_sample_rd():
    f = decode_frame(wrap("ST=32;CN=2062;PW=1;MN=1;CP=&&DataTime=20260115100000;"
                          "w01018-StandardValue=50.0&&"))
    with pytest.raises(ProtocolError, match="missing field w01018-SampleRd"):
        frame_to_check_summary(f, CODES)


# ----------------------------------------------------------------------------- encode
def test_encode_frame_appendix_a_byte_for_byte():
    out = encode_frame(qn="20160801085857223", st="32", cn="1062", pw="100000",
                       mn="010000A8900016F000169DC0", flag=5, cp={"RtdInterval": 30})
    assert out == APPENDIX_A_FRAME
    assert encode_frame(qn="20160801085857223", st="32", cn="1062", pw="100000",
                        mn="010000A8900016F000169DC0", cp="RtdInterval=30",
                        crc_upper=False) == APPENDIX_A_FRAME.replace(b"1C80", b"1c80")


def test_encode_frame_groups_pollutant_items():
    out = encode_frame(cn="2011", mn="1", flag=None,
                       cp={"a21026-Rtd": 1.5, "a21026-Flag": "N", "a21002-Rtd": 2})
    assert b"CP=&&a21026-Rtd=1.5,a21026-Flag=N;a21002-Rtd=2&&" in out
    assert b";Flag=" not in out and b"QN=" not in out


@pytest.mark.parametrize("cp, why", [
    ({"a21026-Rtd": float("nan")}, "not finite"),
    ({"a21026-Rtd": True}, "bool"),
    ({"a21026-Rtd": "1;2"}, "contains"),
    ({"a;b": 1}, "field name"),
])
def test_encode_frame_rejects_bad_values(cp, why):
    with pytest.raises(Hj212Error, match=why):
        encode_frame(cn="2011", mn="1", cp=cp)


def test_encode_frame_rejects_naive_data_time():
    with pytest.raises(Hj212Error, match="naive"):
        encode_frame(cn="2011", mn="1", cp={}, data_time=dt.datetime(2026, 1, 1))


# ----------------------------------------------------------------------------- properties
codes = st.builds(lambda p, n: f"{p}{n:05d}", st.sampled_from("aw"), st.integers(0, 99999))
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) > 1e-9)
flag_chars = st.sampled_from("NFMSDCTB")
times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31),
                     timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=0))
offsets = st.integers(-12 * 4, 14 * 4).map(lambda q: dt.timezone(dt.timedelta(minutes=15 * q)))


@settings(max_examples=200, deadline=None)
@given(cn=st.sampled_from(sorted(DATA_CNS)), mn=st.text("0123456789ABCDEF", min_size=14, max_size=24),
       vals=st.dictionaries(codes, st.one_of(st.none(), finite), min_size=1, max_size=12),
       flag_map=st.dictionaries(codes, flag_chars, max_size=12),
       qn=st.one_of(st.none(), st.integers(10**16, 10**17 - 1).map(str)),
       flag=st.one_of(st.none(), st.sampled_from([4, 5])), t=times, tz=offsets,
       upper=st.booleans(), crlf=st.booleans())
def test_encode_decode_round_trip(cn, mn, vals, flag_map, qn, flag, t, tz, upper, crlf):
    suffix = "Rtd" if cn == "2011" else "Avg"
    cp: dict = {}
    for code, v in vals.items():
        cp[f"{code}-{suffix}"] = v
        if code in flag_map:
            cp[f"{code}-Flag"] = flag_map[code]
    data = encode_frame(cn=cn, mn=mn, cp=cp, qn=qn, flag=flag, data_time=t, tz=tz,
                        crc_upper=upper)
    if not crlf:
        data = data[:-2]
    f = decode_frame(data, tz=tz)
    assert isinstance(f, Frame)
    assert (f.cn, f.mn, f.qn, f.flag, f.st, f.pw) == (cn, mn, qn, flag, "22", "123456")
    assert f.data_time == t
    assert f.values == {f"{c}-{suffix}": v for c, v in vals.items()}
    assert f.flags == {c: fl for c, fl in flag_map.items() if c in vals}
    mapping = {c: f"an_{c}" for c in vals}
    (rec,) = frame_to_records(f, mapping)
    assert rec.ts == t
    assert rec.values == {f"an_{c}": v for c, v in vals.items()}
    assert rec.flags == {f"an_{c}": flag_map.get(c, "N") for c in vals}


@settings(max_examples=500, deadline=1000)
@given(st.binary(max_size=1200))
def test_decode_frame_random_bytes_only_hj212error(data):
    try:
        decode_frame(data)
    except Hj212Error:
        pass


@settings(max_examples=500, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="=;,&-/#QNSTCPWMFlagRtdDataTime0123456789.aw 清", max_size=300))
def test_decode_frame_random_segment_with_valid_crc_only_hj212error(text):
    # valid framing and CRC, so the segment parser itself is exercised
    for seg in (text, "ST=22;CN=2011;PW=1;MN=1;CP=&&" + text + "&&"):
        try:
            f = decode_frame(wrap(seg))
        except Hj212Error:
            continue
        try:
            frame_to_records(f, {})
            frame_to_check_summary(f, {})
        except ProtocolError:
            pass


@settings(max_examples=300, deadline=1000)
@given(pos=st.integers(0, len(APPENDIX_A_FRAME) - 1), byte=st.integers(0, 255))
def test_decode_frame_single_byte_mutation_detected_or_harmless(pos, byte):
    data = bytearray(APPENDIX_A_FRAME)
    data[pos] = byte
    try:
        f = decode_frame(bytes(data))
    except Hj212Error:
        return
    # the only harmless changes: the CRC's letter case
    assert f.fields == {"RtdInterval": "30"}
