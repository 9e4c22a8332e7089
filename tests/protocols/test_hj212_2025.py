"""HJ 212-2025 and real-device bends: Flag versions, RF, quirks, SM4 (Appendix A.2), opt-ins,
the code tables, and the answers and commands the platform sends."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from envcal.protocols import hj212_codes as codes
from envcal.protocols import sm4
from envcal.protocols.hj212 import (
    QUIRKS,
    Hj212Error,
    crc16_hj212,
    crc16_modbus,
    decode_frame,
    encode_frame,
    frame_to_check_summary,
)
from envcal.protocols.hj212_commands import (
    answer_9011,
    cmd_calibrate,
    cmd_device_info,
    cmd_get_time,
    cmd_history,
    cmd_set_time,
    cmd_std_check,
    data_answer_9014,
    encode_request,
    heartbeat_9015,
    new_qn,
    notify_9013,
    result_9012,
)
from envcal.protocols.records import UTC8

UTC = dt.UTC
KEY = bytes([0x30] * 16)  # "密钥使用16个0x30" (HJ 212-2025 Appendix A.2)
MN = "010000A8900016F000169DC0"

# HJ 212-2025 Appendix A.1 (CRC example, Flag=9)
A1 = b"##0087QN=20240601085857223;ST=32;CN=1011;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&&&2200"
# Appendix A.2, example 2: 208 plaintext characters = 13 whole SM4 groups
A2_HEAD = "QN=20240520210700000;ST=31;CN=2051;PW=123456;MN=010000A8900016F000169DC0;Flag=9;CP=&&"
A2_AREA = ("DataTime=20240520210600;a01011-Min=1.35,a01011-Avg=1.35,a01011-Max=1.35,a01011-Flag=N;"
           "a01012-Min=9.3,a01012-Avg=9.3,a01012-Max=9.3,a01012-Flag=N;a01014-Min=3.20,"
           "a01014-Avg=3.211,a01014-Max=3.212,a01014-Flag=N")
A2_CIPHER = bytes.fromhex(
    "E43E159ACFAB242CB53155FB8B9281A1A242577ABFAED881BE88B72D69FC55ED1A80119FAAC8B3CD33D285CC"
    "76F57F2CA7F88B9573C6647E0F07E24609BD6B63EB20C5B9784F28E71D2F4994FF61D9E1C2B3075592B4D1E0"
    "9C4D8BB27BE97B559E3DA6643781A6F477769DEEB009B10DFFF3426922725D607DC4480F0CAC5F70DB2587B1"
    "24BCB281592721D6E4BC180A97E5E111499CBE822E31C8D7761553543AA24207C290997BBDE64F9266BC5F52"
    "9A172E381C1D898CA1A0D771A914A7B2D7467C70B94F1D4A7B0350A48DBF8B41")
# Appendix A.2, example 4: 147 characters = 9 groups + 3 characters left in plaintext
A4_AREA = ("DataTime=20240520210600;a01011-Min=1.35,a01011-Avg=1.35,a01011-Max=1.35,a01011-Flag=N;"
           "a01014-Min=3.20,a01014-Avg=3.20,a01014-Max=3.20,a01014-Flag=N")
A4_CIPHER = bytes.fromhex(
    "E43E159ACFAB242CB53155FB8B9281A1A242577ABFAED881BE88B72D69FC55ED1A80119FAAC8B3CD33D285CC"
    "76F57F2CA7F88B9573C6647E0F07E24609BD6B63EB20C5B9784F28E71D2F4994FF61D9E13B391A1D2A454B65"
    "388D5D9435DBF021528C7BF9755EF16518710C0CAC0ADEF9C5156CD0A5A17674AC0ED2ABC40023E9EF701285"
    "54B82438E91ADCE98A0D03A4")

FIELD_FRAMES = Path("/work/shared/hj212/field_frames.json")


def wrap(segment: str | bytes, *, crc=crc16_hj212, length: int | None = None) -> bytes:
    seg = segment.encode("utf-8") if isinstance(segment, str) else segment
    n = len(seg) if length is None else length
    return b"##%04d" % n + seg + b"%04X" % crc(seg) + b"\r\n"


def hexform(data: bytes) -> str:
    return "{" + ",".join(f"0x{b:02X}" for b in data) + "}"


# ----------------------------------------------------------------------------- Flag / version
def test_flag_table_versions_and_bits():
    assert [codes.flag_for(1, ack=a, split=s) for s in (False, True) for a in (False, True)] == [4, 5, 6, 7]
    assert [codes.flag_for(2, ack=a, split=s) for s in (False, True) for a in (False, True)] == [8, 9, 10, 11]
    assert codes.flag_version(9) == 2 and codes.flag_version(5) == 1 and codes.flag_version(None) == 0
    assert codes.wants_answer(9) and not codes.wants_answer(8) and not codes.wants_answer(None)
    with pytest.raises(ValueError):
        codes.flag_for(3, ack=True)


def test_decode_2025_appendix_a1_crc_example():
    f = decode_frame(A1)
    assert (f.version, f.flag, f.ack_requested, f.split, f.rf) == (2, 9, True, False, False)
    assert f.cn == "1011" and f.quirks == () and not f.encrypted


@pytest.mark.parametrize("flag, version, ack, split", [(4, 1, False, False), (5, 1, True, False),
                                                       (8, 2, False, False), (11, 2, True, True)])
def test_decode_flag_bits(flag, version, ack, split):
    f = decode_frame(encode_frame(cn="2011", mn="1", flag=flag, cp="a21026-Rtd=1",
                                  pnum=2 if split else None, pno=1 if split else None))
    assert (f.version, f.ack_requested, f.split) == (version, ack, split)


def test_decode_2005_frame_has_version_0():
    f = decode_frame(wrap("ST=32;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1&&"))
    assert f.version == 0 and not f.ack_requested


# ----------------------------------------------------------------------------- RF
def test_rf_resend_same_digest_as_original():
    kw = dict(cn="2011", mn=MN, qn="20260115080000000", flag=9, data_time=dt.datetime(2026, 1, 15, tzinfo=UTC8),
              cp={"a21026-Rtd": 1.5})
    orig, resent = encode_frame(**kw), encode_frame(**kw, rf=True)
    assert b";RF=1;CP=&&" in resent
    fo, fr = decode_frame(orig), decode_frame(resent)
    assert not fo.rf and fr.rf
    assert fo.digest == fr.digest == hashlib.sha256(orig).hexdigest()
    assert fr.values == fo.values


# ----------------------------------------------------------------------------- quirks
def test_quirk_datetime_milliseconds():
    f = decode_frame(wrap("QN=1;ST=22;CN=2011;PW=1;MN=1;Flag=5;CP=&&DataTime=20260115080000123;a21026-Rtd=1&&"))
    assert f.quirks == ("datetime_ms",)
    assert f.data_time == dt.datetime(2026, 1, 15, 0, 0, 0, 123000, tzinfo=UTC)


def test_quirk_long_segment_accepted_with_correct_crc():
    cp = ";".join(f"a{i:05d}-Rtd={i}" for i in range(80))
    seg = f"QN=1;ST=22;CN=2011;PW=1;MN=1;Flag=5;CP=&&DataTime=20260115080000;{cp}&&"
    assert len(seg) > 1024
    f = decode_frame(wrap(seg))
    assert f.quirks == ("long_segment",) and len(f.values) == 80
    bad = wrap(seg)[:-6] + b"0000\r\n"
    with pytest.raises(Hj212Error, match="bad CRC"):
        decode_frame(bad)


def test_quirk_split_flag_without_pnum():
    f = decode_frame(wrap("ST=22;CN=2011;PW=1;MN=1;Flag=7;CP=&&a21026-Rtd=1&&"))
    assert f.quirks == ("split_flag_without_pnum",) and f.pnum is None


def test_quirk_names_documented():
    assert set(QUIRKS) == {"datetime_ms", "long_segment", "split_flag_without_pnum"}


# ----------------------------------------------------------------------------- opt-ins
def test_crc16_modbus_check_value():
    assert crc16_modbus(b"123456789") == 0x4B37


def test_modbus_crc_only_when_opted_in():
    data = wrap("QN=1;ST=22;CN=2011;PW=1;MN=1;Flag=5;CP=&&a21026-Rtd=1&&", crc=crc16_modbus)
    with pytest.raises(Hj212Error, match="bad CRC"):
        decode_frame(data)
    assert decode_frame(data, crc="modbus").values == {"a21026-Rtd": 1.0}
    # the standard CRC is still accepted for such a device
    assert decode_frame(wrap("ST=22;CN=2011;PW=1;MN=1;CP=&&&&"), crc="modbus").cn == "2011"


def test_gbk_only_when_opted_in():
    seg = "ST=22;CN=3020;PW=1;MN=1;CP=&&i11001-Info=//清洗管路//&&".encode("gbk")
    with pytest.raises(Hj212Error, match="non-UTF-8"):
        decode_frame(wrap(seg))
    f = decode_frame(wrap(seg), encoding="gbk")
    assert f.fields["i11001-Info"] == "//清洗管路//"


def test_decode_rejects_unknown_options():
    with pytest.raises(ValueError):
        decode_frame(A1, crc="ccitt")
    with pytest.raises(ValueError):
        decode_frame(A1, encoding="latin-1")


# ----------------------------------------------------------------------------- SM4
def test_sm4_appendix_a2_example_2_ciphertext():
    assert sm4.encrypt_area(A2_AREA.encode(), KEY) == hexform(A2_CIPHER)
    assert sm4.decrypt_area(hexform(A2_CIPHER), KEY) == A2_AREA.encode()


def test_sm4_appendix_a2_example_4_plaintext_rest():
    # 147 characters: 144 encrypted, "g=N" stays plaintext after the braces
    assert sm4.encrypt_area(A4_AREA.encode(), KEY) == hexform(A4_CIPHER) + "g=N"
    assert sm4.decrypt_area(hexform(A4_CIPHER) + "g=N", KEY) == A4_AREA.encode()
    # the other reading: the plaintext rest printed as hex inside the braces
    assert sm4.decrypt_area(hexform(A4_CIPHER + b"g=N"), KEY) == A4_AREA.encode()


def test_sm4_gb_t_32907_vector_through_cryptography():
    k = bytes.fromhex("0123456789abcdeffedcba9876543210")
    assert sm4.encrypt_area(k, k) == hexform(bytes.fromhex("681edf34d206965e86b3e94f536e4246"))


def test_decode_appendix_a2_frame_both_length_conventions():
    plain_seg = (A2_HEAD + A2_AREA + "&&").encode()
    assert len(plain_seg) == 295 and crc16_hj212(plain_seg) == 0x2200
    enc_seg = (A2_HEAD + hexform(A2_CIPHER) + "&&").encode()
    for n in (295, len(enc_seg)):  # the standard's example states the plaintext length
        data = b"##%04d" % n + enc_seg + b"2200\r\n"
        f = decode_frame(data, key=KEY)
        assert f.encrypted and f.cn == "2051" and f.version == 2
        assert f.values["a01014-Avg"] == 3.211 and f.flags["a01012"] == "N"
        assert f.plaintext == b"##0295" + plain_seg + b"2200\r\n"
        assert f.digest == hashlib.sha256(f.plaintext).hexdigest()
    with pytest.raises(Hj212Error, match="bad length"):
        decode_frame(b"##0300" + enc_seg + b"2200\r\n", key=KEY)


def test_decode_appendix_a2_example_4_as_printed():
    seg = (A2_HEAD + hexform(A4_CIPHER) + "g=N&&").encode()
    f = decode_frame(b"##0234" + seg + b"B541\r\n", key=KEY)
    assert f.values["a01014-Max"] == 3.2


def test_decode_encrypted_without_key_or_wrong_key():
    data = b"##0295" + (A2_HEAD + hexform(A2_CIPHER) + "&&").encode() + b"2200\r\n"
    with pytest.raises(Hj212Error, match="no key"):
        decode_frame(data)
    with pytest.raises(Hj212Error, match="wrong SM4 key"):
        decode_frame(data, key=b"1" * 16)


def test_encode_encrypted_round_trip_and_plain_with_key():
    t = dt.datetime(2026, 1, 15, 8, tzinfo=UTC8)
    for length in ("transmitted", "plaintext"):
        data = encode_frame(cn="2011", mn=MN, flag=9, data_time=t, key=KEY, length=length,
                            cp={"a21026-Rtd": 12.5, "a21026-Flag": "N"})
        assert b"CP=&&{0x" in data
        f = decode_frame(data, key=KEY)
        assert f.values == {"a21026-Rtd": 12.5} and f.data_time == t
    # a device with a key may still send a plain frame (encryption is "宜" on private links)
    assert decode_frame(A1, key=KEY).cn == "1011"


def test_sm4_rejects_bad_key_and_bad_hex():
    with pytest.raises(sm4.Sm4Error, match="16 bytes"):
        sm4.encrypt_area(b"x" * 16, b"short")
    with pytest.raises(sm4.Sm4Error, match="0xNN"):
        sm4.decrypt_area("{0xZZ}", KEY)
    with pytest.raises(sm4.Sm4Error, match="closing"):
        sm4.decrypt_area("{0x01,0x02", KEY)


# ----------------------------------------------------------------------------- CN 2062 path
def test_cn_2062_2025_frame_becomes_check_summary():
    data = encode_frame(cn="2062", mn=MN, flag=9, st="32", key=KEY,
                        cp="DataTime=20260115100000;w01018-SampleRd=51.2,w01018-StandardValue=50.0,"
                           "w01018-ResultType=1")
    (s,) = frame_to_check_summary(decode_frame(data, key=KEY), {"w01018": "CODcr"})
    assert (s.kind, s.analyte, s.measured, s.standard_value) == ("std_sample", "CODcr", 51.2, 50.0)


# ----------------------------------------------------------------------------- answers
def _upload(flag: int) -> bytes:
    return encode_frame(cn="2011", mn=MN, qn="20260115080000123", st="32", pw="654321", flag=flag,
                        cp="DataTime=20260115080000;w01018-Rtd=1")


@pytest.mark.parametrize("flag, answer_flag", [(5, 4), (7, 4), (9, 8), (11, 8)])
def test_data_answer_9014_in_peers_version(flag, answer_flag):
    a = decode_frame(data_answer_9014(decode_frame(_upload(flag))))
    assert (a.cn, a.st, a.qn, a.pw, a.mn, a.flag) == ("9014", "91", "20260115080000123", "654321", MN,
                                                      answer_flag)
    assert a.raw.endswith("CP=&&&&" + a.raw[-6:])


def test_data_answer_9014_matches_appendix_c48():
    up = ("QN=20160801085857534;ST=32;CN=2061;PW=123456;MN=010000A8900016F000169DC0;Flag=5;"
          "CP=&&DataTime=20160801080000;w01018-Avg=40.1&&")
    want = b"QN=20160801085857534;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&"
    assert data_answer_9014(decode_frame(wrap(up))) == wrap(want)


def test_answers_9011_9012_9013():
    req = decode_frame(wrap("QN=20160801085857223;ST=32;CN=1000;PW=123456;MN=010000A8900016F000169DC0;"
                            "Flag=5;CP=&&OverTime=5;ReCount=3&&"))
    assert answer_9011(req, codes.QnRtn.READY) == wrap(
        b"QN=20160801085857223;ST=91;CN=9011;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&QnRtn=1&&")
    assert result_9012(req, codes.ExeRtn.SUCCESS) == wrap(
        b"QN=20160801085857223;ST=91;CN=9012;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&ExeRtn=1&&")
    n = decode_frame(notify_9013(req))
    assert (n.cn, n.st, n.flag, n.fields) == ("9013", "91", 4, {})
    assert decode_frame(answer_9011(req, codes.QnRtn.PW_ERROR)).fields == {"QnRtn": "3"}
    assert decode_frame(answer_9011(req, codes.QnRtn.CRC_ERROR, version=2)).flag == 8


def test_answer_to_2005_frame_gets_2017_flag():
    f = decode_frame(wrap("ST=32;CN=2011;PW=1;MN=1;CP=&&a21026-Rtd=1&&"))
    assert decode_frame(data_answer_9014(f)).flag == 4


def test_heartbeat_9015_and_answer():
    hb = decode_frame(heartbeat_9015(MN, "123456", "32", "20260115080000000"))
    assert (hb.cn, hb.version, hb.ack_requested) == ("9015", 2, True)
    assert decode_frame(notify_9013(hb)).flag == 8


# ----------------------------------------------------------------------------- commands
def test_commands_cp_texts():
    t0 = dt.datetime(2016, 8, 1, 0, 40, tzinfo=UTC)
    assert cmd_get_time("w01018") == ("1011", "PolId=w01018")
    assert cmd_get_time() == ("1011", "")
    assert cmd_set_time(dt.datetime(2016, 8, 1, 0, 58, 57, tzinfo=UTC), "w01018") == (
        "1012", "PolId=w01018;SystemTime=20160801085857")
    assert cmd_history("2051", t0, t0) == ("2051", "BeginTime=20160801084000;EndTime=20160801084000")
    assert cmd_calibrate("w01018") == ("3011", "PolId=w01018")
    assert cmd_std_check("w01018") == ("3024", "PolId=w01018")
    assert cmd_device_info("i11001", "w01018", t0, t0)[1] == (
        "PolId=w01018;InfoId=i11001;BeginTime=20160801084000;EndTime=20160801084000")
    with pytest.raises(Hj212Error, match="before BeginTime"):
        cmd_history("2061", t0, t0 - dt.timedelta(hours=1))
    with pytest.raises(Hj212Error, match="not a history"):
        cmd_history("2011", t0, t0)


def test_encode_request_matches_appendix_c30():
    cn, cp = cmd_calibrate("w01018")
    data = encode_request(cn, MN, "123456", "32", "20160801085857223", cp)
    assert data == wrap(b"QN=20160801085857223;ST=32;CN=3011;PW=123456;MN=010000A8900016F000169DC0;"
                        b"Flag=5;CP=&&PolId=w01018&&")
    assert decode_frame(encode_request(cn, MN, "123456", "32", "1", cp, version=2)).flag == 9


def test_encode_request_encrypts_only_listed_2025_commands():
    t0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    cn, cp = cmd_history("2061", t0, t0 + dt.timedelta(hours=5))
    enc = encode_request(cn, MN, "123456", "32", "1", cp, version=2, key=KEY)
    assert b"{0x" in enc and decode_frame(enc, key=KEY).fields["BeginTime"] == "20260101080000"
    plain17 = encode_request(cn, MN, "123456", "32", "1", cp, version=1, key=KEY)
    assert b"{0x" not in plain17
    cn, cp = cmd_calibrate("w01018")
    assert b"{0x" not in encode_request(cn, MN, "123456", "32", "1", cp, version=2, key=KEY)
    assert codes.must_encrypt("2011") and codes.must_encrypt("3020") and not codes.must_encrypt("9014")


def test_new_qn_local_milliseconds():
    assert new_qn(dt.datetime(2016, 8, 1, 0, 58, 57, 223456, tzinfo=UTC)) == "20160801085857223"


def test_code_tables_one_place():
    assert codes.ST_SYSTEM == "91" and codes.ST["32"] == "surface water pollution source"
    assert {"9015", "2062", "3024", "1014", "1001", "1002"} <= set(codes.CN)
    assert codes.QnRtn.CRC_ERROR == 9 and codes.ExeRtn.NO_DATA == 100
    assert (codes.DEFAULT_TIMEOUT_S, codes.DEFAULT_RETRIES) == (10.0, 3)
    assert codes.DATA_FLAGS["C"] == "calibration"


# ----------------------------------------------------------------------------- field frames
@pytest.mark.skipif(not FIELD_FRAMES.exists(), reason="shared field frames not available")
def test_field_frames_all_decode():
    frames = json.loads(FIELD_FRAMES.read_text(encoding="utf-8"))
    assert len(frames) == 400
    seen = set()
    for item in frames:
        f = decode_frame(item["frame"].encode("utf-8"))
        seen.add((f.cn, f.st, f.flag))
    # the platform in these logs answered 9014 with the data's ST (21), not 91, and Flag=5
    assert ("9014", "21", 5) in seen and ("2011", "21", 5) in seen


def test_peek_header_and_answer_to_refused_frame():
    from envcal.protocols.hj212 import peek_header
    from envcal.protocols.hj212_commands import encode_answer_to

    bad = _upload(9)[:-6] + b"0000\r\n"  # wrong CRC
    with pytest.raises(Hj212Error):
        decode_frame(bad)
    h = peek_header(bad)
    assert h == {"QN": "20260115080000123", "ST": "32", "CN": "2011", "PW": "654321", "MN": MN, "Flag": "9"}
    a = decode_frame(encode_answer_to(h["QN"], h["PW"], h["MN"], codes.flag_version(int(h["Flag"])),
                                      "9011", f"QnRtn={codes.QnRtn.CRC_ERROR:d}"))
    assert (a.cn, a.st, a.qn, a.flag, a.fields) == ("9011", "91", h["QN"], 8, {"QnRtn": "9"})
    assert peek_header(b"garbage") == {} and peek_header(b"##0010;MN=;CP=&&") == {}


@pytest.mark.parametrize("cn, cp, fields", [
    ("1001", "i23005-Info=DL0001;i23006-Info=CPU12AB;i23007-Info=00-1A-2B-3C-4D-5E",
     {"i23005-Info": "DL0001", "i23006-Info": "CPU12AB", "i23007-Info": "00-1A-2B-3C-4D-5E"}),
    ("1002", "i23005-Info=010000A8900016F000169DC0", {"i23005-Info": "010000A8900016F000169DC0"}),
    ("1014", "SKCreateTime=20260115080000", {"SKCreateTime": "20260115080000"}),
])
def test_2025_admission_and_key_frames_decode(cn, cp, fields):
    # 1001 hardware ids / 1002 MN assignment / 1014 key request: decoded and reported
    f = decode_frame(encode_frame(cn=cn, mn=MN, flag=9, cp=cp, key=KEY if cn == "1014" else None), key=KEY)
    assert (f.cn, f.version, f.fields) == (cn, 2, fields)
    assert f.encrypted == (cn == "1014" and len(cp) >= 16)
    assert cn in codes.CN
