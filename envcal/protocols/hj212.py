"""HJ 212-2017 frames (and the 2005 and 2025 variants): decode, encode, map to records.

A frame is ``##`` + 4-digit data-segment length (bytes of the UTF-8 segment) + data segment
+ 4 hex digits of CRC + ``<CR><LF>``::

    ##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\\r\\n

The data segment is ``QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;PNUM=..;PNO=..;CP=&&...&&``
(2005 frames have no QN and no Flag). Inside CP, items are separated by ``;`` (between
pollutants) and ``,`` (between values of one pollutant); ``//...//`` log texts (``-Info``)
may contain either separator and are kept whole. Times in frames are local time (China
Standard Time by default, parameter ``tz``); decoded times are UTC.

Every rejection is an :class:`Hj212Error` (a :class:`ProtocolError`) saying why: bad header,
bad length (declared vs found), bad CRC (frame vs computed), missing or empty field, bad
number, non-UTF-8, truncated, encrypted without a key.

Real devices bend the standard. A frame with a correct CRC is accepted, and the bend named
in :attr:`Frame.quirks` (see :data:`QUIRKS`), when its ``DataTime`` has milliseconds, its data
segment is longer than 1024 bytes, or its Flag says "split" without PNUM/PNO. Two more bends
are accepted only when asked for (per analyzer in the registry): the CRC-16/MODBUS variant
(``crc="modbus"``) and GBK text (``encoding="gbk"``).

References
----------
HJ 212-2017, clauses 6.3 (packet and data-segment structure, Tables 2-4), 6.6.4 (Table 8
data flags), 6.6.5 (Table 9 command codes), Appendix A (CRC16), Appendix C (examples).
HJ/T 212-2005 (frames without QN/Flag). HJ 212-2025, Table 3 (Flag version 2, ``RF``),
clause 6.4 (SM4-encrypted CP), CN 2062 (automatic standard-sample check data:
``-SampleRd``, ``-StandardValue``, ``-ResultType``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from numba import njit

from envcal.protocols import sm4
from envcal.protocols.hj212_codes import FLAG_ACK, FLAG_SPLIT, VERSION_2025, VERSIONS
from envcal.protocols.records import UTC8, CheckSummary, ProtocolError, ReadingRecord

__all__ = [
    "CHECK_CN",
    "DATA_CNS",
    "CRC_VARIANTS",
    "ENCODINGS",
    "MAX_SEGMENT",
    "QUIRKS",
    "Frame",
    "Hj212Error",
    "crc16_hj212",
    "crc16_modbus",
    "decode_frame",
    "encode_frame",
    "peek_header",
    "frame_to_check_summary",
    "frame_to_records",
]

UTC = dt.UTC
#: Largest data segment [bytes] (HJ 212-2017 Table 2); longer ones are a quirk.
MAX_SEGMENT = 1024
#: Largest length a 4-digit length field can state [bytes].
MAX_LENGTH_FIELD = 9999
#: Quirks: bends of the standard accepted (with a correct CRC) and reported by name.
QUIRKS = {
    "datetime_ms": "DataTime with milliseconds (17 digits)",
    "long_segment": f"data segment longer than {MAX_SEGMENT} bytes",
    "split_flag_without_pnum": "Flag says split (bit 1) but the frame has no PNUM/PNO",
}
#: CRC variants a device may use (``modbus`` only when its registry entry says so).
CRC_VARIANTS = ("hj212", "modbus")
#: Text encodings a device may use (``gbk`` only when its registry entry says so).
ENCODINGS = ("utf-8", "gbk")
#: CNs whose pollutant values become readings: real-time, minute, hour, day data.
DATA_CNS = frozenset({"2011", "2051", "2061", "2031"})
#: HJ 212-2025 automatic standard-sample check data.
CHECK_CN = "2062"
#: Which value suffix is "the" reading for each data CN.
VALUE_SUFFIX = {"2011": "Rtd", "2051": "Avg", "2061": "Avg", "2031": "Avg"}

_HEADER_KEYS = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO", "RF")
_REQUIRED_HEADER = ("ST", "CN", "PW", "MN")
#: Suffixes whose values must be numbers (an empty value means "no number": None).
NUMERIC_SUFFIXES = frozenset({
    "Rtd", "Min", "Avg", "Max", "ZsRtd", "ZsMin", "ZsAvg", "ZsMax", "Cou", "ZsCou",
    "Data", "DayData", "NightData", "RS", "RT", "SampleRd", "StandardValue",
})
#: Suffixes kept as text in ``Frame.fields``.
TEXT_SUFFIXES = frozenset({"EFlag", "SampleTime", "Info", "SN", "ResultType"})
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SPLIT = re.compile(r"[;,]")
_FLAG_CHARS = re.compile(r"[A-Z0-9]")
_DIGITS14 = re.compile(r"\d{14}")
_DIGITS17 = re.compile(r"\d{17}")


class Hj212Error(ProtocolError):
    """An HJ 212 frame that cannot be decoded or encoded; the message says why."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded HJ 212 frame.

    ``values`` holds the numeric CP fields (``{"a21026-Rtd": 22.25, ...}``; None where the
    device sent an empty value), ``flags`` the data flags by pollutant code (from
    ``xxx-Flag``), ``fields`` every other CP item as text (``a21026-SampleTime``, ``PolId``,
    ``i11001-Info``...; a repeated key gets ``#2``, ``#3`` appended), ``raw`` the frame text.
    ``data_time`` is ``DataTime`` converted to UTC; ``tz`` is the zone the frame's local
    times are in (the ``tz`` given to :func:`decode_frame`), used for ``xxx-SampleTime``.

    ``version`` is the standard named by the Flag (0 = HJ/T 212-2005 or no Flag, 1 = 2017,
    2 = 2025); ``rf`` is True for a 2025 resend (``RF=1``); ``quirks`` names the accepted
    bends (keys of :data:`QUIRKS`); ``encrypted`` says the CP was SM4-encrypted, and then
    ``plaintext`` is the decrypted frame (``##`` + length + plaintext segment + CRC +
    CRLF). ``digest`` is the SHA-256 (hex) of the frame in canonical form (plaintext,
    without ``RF=1``, upper-case HJ 212 CRC, CRLF): a resend and its original have the same
    digest, and for a plain frame sent as the standard writes it, it is the SHA-256 of the
    bytes received.
    """

    qn: str | None
    st: str | None
    cn: str
    pw: str | None
    mn: str | None
    flag: int | None
    pnum: int | None
    pno: int | None
    data_time: dt.datetime | None
    values: dict[str, float | None]
    flags: dict[str, str]
    fields: dict[str, str]
    raw: str
    tz: dt.tzinfo = UTC8  # zone of the local times in the frame (DataTime, SampleTime, ...)
    version: int = 1
    rf: bool = False
    quirks: tuple[str, ...] = ()
    encrypted: bool = False
    plaintext: bytes | None = None
    digest: str = ""

    @property
    def ack_requested(self) -> bool:
        """The sender asks for an answer (Flag bit 0)."""
        return self.flag is not None and bool(self.flag & FLAG_ACK)

    @property
    def split(self) -> bool:
        """The Flag says the frame is one packet of a split upload (bit 1)."""
        return self.flag is not None and bool(self.flag & FLAG_SPLIT)


# ---------------------------------------------------------------------------------------------
# CRC
# ---------------------------------------------------------------------------------------------
def _crc_table() -> tuple[int, ...]:
    table = []
    for b in range(256):
        r = b
        for _ in range(8):
            r = (r >> 1) ^ 0xA001 if r & 1 else r >> 1
        table.append(r)
    return tuple(table)


_CRC_TABLE = _crc_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, dtype=np.int64)


@njit(cache=True)
def _crc16_kernel(buf: np.ndarray, table: np.ndarray) -> int:  # pragma: no cover - compiled
    crc = 0xFFFF
    for i in range(buf.shape[0]):
        crc = (crc >> 8) ^ buf[i]
        crc = (crc >> 8) ^ table[crc & 0xFF]
    return crc


def crc16_hj212(data: bytes) -> int:
    """CRC16 of an HJ 212 data segment (not CRC-16/MODBUS).

    Register 0xFFFF; for each byte ``crc = (crc >> 8) ^ byte``, then 8 right shifts, each
    XORed with the polynomial 0xA001 when the bit shifted out is 1. Computed with a
    256-entry table (the 8 shifts depend only on the low byte after the XOR), in a numba
    kernel (a pure-Python loop costs ~0.3 µs per byte, too slow for ingest).

    Parameters
    ----------
    data : bytes
        The data segment (between the length and the CRC).

    Returns
    -------
    int
        0..0xFFFF; written in frames as 4 hex digits. ``crc16_hj212(b"123456789") == 0x2F80``.

    References
    ----------
    HJ 212-2017, Appendix A (CRC16_Checkout and its worked example, CRC 1C80).
    """
    if len(data) < 24:  # the kernel call costs more than a short loop
        crc = 0xFFFF
        table = _CRC_TABLE
        for b in data:
            crc = (crc >> 8) ^ b
            crc = (crc >> 8) ^ table[crc & 0xFF]
        return crc
    return int(_crc16_kernel(np.frombuffer(data, dtype=np.uint8), _CRC_TABLE_NP))


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS, the variant some devices send instead of the HJ 212 CRC.

    Register 0xFFFF; for each byte ``crc ^= byte`` (into the whole register), then 8 right
    shifts with the polynomial 0xA001. ``crc16_modbus(b"123456789") == 0x4B37``.

    Parameters
    ----------
    data : bytes
        The data segment.

    Returns
    -------
    int
        0..0xFFFF.

    References
    ----------
    Modbus over serial line V1.02, clause 6.2.2 (CRC); HJ 212-2017 Appendix A (the HJ 212
    variant differs: the byte is XORed into the low byte after a shift).
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------
def _parse_time(text: str, what: str, tz: dt.tzinfo, quirks: list[str] | None = None) -> dt.datetime:
    ms = 0
    if quirks is not None and len(text) == 17 and _DIGITS17.fullmatch(text):
        ms = int(text[14:])
        quirks.append("datetime_ms")
    elif not _DIGITS14.fullmatch(text):
        raise Hj212Error(f"bad time in {what}: {text[:32]!r} (expected YYYYMMDDhhmmss)")
    try:
        t = dt.datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
                        int(text[10:12]), int(text[12:14]), ms * 1000, tzinfo=tz)
        return t.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Hj212Error(f"bad time in {what}: {text!r} (no such date or time)") from None


def _parse_number(text: str, key: str) -> float | None:
    if not text:
        return None
    if not _NUMBER.fullmatch(text):
        raise Hj212Error(f"bad number in {key}: {text[:32]!r}")
    v = float(text)
    if not math.isfinite(v):
        raise Hj212Error(f"bad number in {key}: {text[:32]!r} (out of range)")
    return v


def _split_cp(cp: str) -> list[str]:
    """CP items; ``//...//`` texts are kept whole even if they contain ``;`` or ``,``."""
    if "//" not in cp:
        return _SPLIT.split(cp)
    items: list[str] = []
    i, n, start = 0, len(cp), 0
    while i < n:
        c = cp[i]
        if c == "=" and cp.startswith("//", i + 1):
            end = cp.find("//", i + 3)
            if end < 0:
                raise Hj212Error(f"unterminated //...// text in CP item {cp[start:start + 32]!r}")
            i = end + 2
            continue
        if c in ";,":
            items.append(cp[start:i])
            start = i + 1
        i += 1
    items.append(cp[start:])
    return items


def _int_field(name: str, text: str, lo: int, hi: int) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 9:
        raise Hj212Error(f"bad number in {name}: {text[:32]!r}")
    v = int(text)
    if not lo <= v <= hi:
        raise Hj212Error(f"bad number in {name}: {v} out of range {lo}..{hi}")
    return v


def decode_frame(data: bytes, *, tz: dt.tzinfo = UTC8, key: bytes | None = None,
                 crc: str = "hj212", encoding: str = "utf-8") -> Frame:
    """Decode one HJ 212 frame (HJ/T 212-2005, HJ 212-2017 or HJ 212-2025).

    Parameters
    ----------
    data : bytes
        ``##`` + length + data segment + CRC, with or without the trailing ``\\r\\n``.
    tz : datetime.tzinfo, optional
        Time zone of the times in the frame (default UTC+08:00).
    key : bytes, optional
        The device's 16-byte SM4 key: an encrypted CP is decrypted with it (and refused
        without it). A plain CP is accepted either way.
    crc : {"hj212", "modbus"}, optional
        ``"modbus"`` also accepts the CRC-16/MODBUS variant (opt-in per analyzer).
    encoding : {"utf-8", "gbk"}, optional
        ``"gbk"`` also accepts a GBK-encoded segment (opt-in per analyzer; UTF-8 is tried
        first).

    Returns
    -------
    Frame
        Header fields, CP values/flags/fields, ``data_time`` in UTC, version, RF, quirks.

    Raises
    ------
    Hj212Error
        With the reason: bad header, bad length (declared vs found), truncated, non-UTF-8,
        bad CRC (frame vs computed), missing, empty or unknown field, bad number, bad time,
        malformed CP, unknown Flag version, RF other than 1, encrypted CP without a key.

    References
    ----------
    HJ 212-2017, clause 6.3 (Tables 2, 3 and 4), Appendix A (CRC), clause 6.6.4 (Table 8).
    HJ 212-2025, Table 3 (Flag, RF), clause 6.4.2 and Appendix A.2 (SM4: CRC over the
    plaintext; the length field counts either the plaintext or the transmitted segment).
    """
    if crc not in CRC_VARIANTS:
        raise ValueError(f"unknown CRC variant {crc!r} (one of {', '.join(CRC_VARIANTS)})")
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (one of {', '.join(ENCODINGS)})")
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise Hj212Error(f"frame must be bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) < 2:
        raise Hj212Error(f"truncated frame: {len(data)} bytes")
    if data[:2] != b"##":
        raise Hj212Error(f"bad header: frame must start with '##', found {data[:2]!r}")
    if len(data) < 6:
        raise Hj212Error(f"truncated frame: {len(data)} bytes, no complete length field")
    len_field = data[2:6]
    if not (len_field.isdigit() and len_field.isascii()):
        raise Hj212Error(f"bad length field: {len_field!r} is not 4 decimal digits")
    n = int(len_field)
    body = data[6:]
    has_crlf = body.endswith(b"\r\n")
    if has_crlf:
        body = body[:-2]
    elif body.endswith((b"\r", b"\n")):
        raise Hj212Error("bad trailer: frame ends with a lone CR or LF (expected CRLF or nothing)")
    found = len(body) - 4  # bytes between the length field and the CRC
    seg_bytes = body[:max(found, 0)]
    enc_at = seg_bytes.find(b"CP=&&{0")
    encrypted = enc_at >= 0 and sm4.looks_encrypted(seg_bytes[enc_at + 5:enc_at + 8].decode("latin-1"))
    if found != n and not encrypted:
        if not has_crlf and found < n:
            raise Hj212Error(f"truncated frame: length field says {n} bytes of data segment, "
                             f"only {max(len(body), 0)} bytes follow (segment + 4 CRC digits)")
        raise Hj212Error(f"bad length: length field says {n} bytes, data segment has "
                         f"{max(found, 0)} bytes")
    crc_text = body[found:] if found >= 0 else body
    try:
        crc_str = crc_text.decode("ascii")
        crc_found = int(crc_str, 16)
        if len(crc_str) != 4 or not all(c in "0123456789abcdefABCDEF" for c in crc_str):
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise Hj212Error(f"bad CRC field: {crc_text!r} is not 4 hex digits") from None
    plaintext = None
    if encrypted:
        seg_bytes = _decrypt_segment(seg_bytes, enc_at, key)
        if n not in (found, len(seg_bytes)):
            raise Hj212Error(f"bad length: length field says {n} bytes, encrypted data segment "
                             f"has {found} bytes, its plaintext {len(seg_bytes)}")
        plaintext = b"##%04d" % len(seg_bytes) + seg_bytes + crc_text + b"\r\n"
    crc_calc = crc16_hj212(seg_bytes)
    if crc_found != crc_calc and not (crc == "modbus" and crc_found == crc16_modbus(seg_bytes)):
        hint = " (over the decrypted CP: wrong SM4 key?)" if encrypted else ""
        raise Hj212Error(f"bad CRC: frame says {crc_str}, computed {crc_calc:04X}{hint}")
    try:
        seg = seg_bytes.decode("utf-8")
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if encoding != "gbk":
            raise Hj212Error(f"non-UTF-8 data segment: invalid byte at offset {exc.start}") from None
        try:
            seg = seg_bytes.decode("gbk")
            raw = data.decode("gbk")
        except UnicodeDecodeError as exc2:
            raise Hj212Error(f"data segment neither UTF-8 nor GBK: invalid byte at offset "
                             f"{exc2.start}") from None
    quirks: list[str] = []
    if len(seg_bytes) > MAX_SEGMENT:
        quirks.append("long_segment")
    return _decode_segment(seg, raw, tz, quirks, seg_bytes, crc_calc, plaintext)


def _digest(seg_bytes: bytes, crc_calc: int, rf: bool) -> str:
    """SHA-256 of the canonical frame: without ``RF=1``, upper-case HJ 212 CRC, CRLF."""
    if rf:
        at = seg_bytes.find(b"CP=&&")
        seg_bytes = _RF_ITEM.sub(b"", seg_bytes[:at], count=1) + seg_bytes[at:]
        crc_calc = crc16_hj212(seg_bytes)
    return hashlib.sha256(b"##%04d%s%04X\r\n" % (len(seg_bytes), seg_bytes, crc_calc)).hexdigest()


_RF_ITEM = re.compile(rb"(?<![^;,])RF=1[;,]")
_PEEK = re.compile(rb"(?:^|[;,])(QN|ST|CN|PW|MN|Flag)=([0-9A-Za-z]{1,32})(?=[;,])")


def peek_header(data: bytes) -> dict[str, str]:
    """Header fields of a frame that may be invalid (no CRC or length check), best effort.

    For answering or dead-lettering a refused frame: its QN, PW, MN, CN, ST and Flag as far
    as they can be read from the text before ``CP=``.

    Parameters
    ----------
    data : bytes
        A frame as cut from the stream.

    Returns
    -------
    dict of str to str
        The fields found (first occurrence of each); ``{}`` when none.

    References
    ----------
    HJ 212-2017, Table 3 (data segment header fields).
    """
    head = bytes(data[6:]).split(b"CP=", 1)[0] if len(data) > 6 else b""
    out: dict[str, str] = {}
    for m in _PEEK.finditer(head):
        out.setdefault(m.group(1).decode("ascii"), m.group(2).decode("ascii"))
    return out


def _decrypt_segment(seg_bytes: bytes, at: int, key: bytes | None) -> bytes:
    """The plaintext segment of an SM4-encrypted one (``at``: offset of ``CP=&&{``)."""
    if key is None:
        raise Hj212Error("encrypted CP (SM4) but no key for this device (keys come from the "
                         "HJ 212 secrets file)")
    if not seg_bytes.endswith(b"&&") or len(seg_bytes) < at + 7:
        raise Hj212Error("bad CP: data area does not end with '&&'")
    try:
        area = sm4.decrypt_area(seg_bytes[at + 5:-2].decode("utf-8"), key)
    except UnicodeDecodeError as exc:
        raise Hj212Error(f"non-UTF-8 encrypted data area: invalid byte at offset {exc.start}") from None
    except sm4.Sm4Error as exc:
        raise Hj212Error(str(exc)) from None
    return seg_bytes[:at + 5] + area + b"&&"


def _decode_segment(seg: str, raw: str, tz: dt.tzinfo, quirks: list[str], seg_bytes: bytes,
                    crc_calc: int, plaintext: bytes | None) -> Frame:
    # the data segment: header fields, then CP=&&...&& (always last)
    pos = seg.find("CP=&&")
    if pos < 0:
        if "CP=" in seg:
            raise Hj212Error("bad CP: must be CP=&&...&&")
        raise Hj212Error("missing field CP")
    if not seg.endswith("&&") or len(seg) < pos + 7:
        raise Hj212Error("bad CP: data area does not end with '&&'")
    cp = seg[pos + 5:-2]
    head = seg[:pos]
    if head and head[-1] not in ";,":
        raise Hj212Error(f"bad header: no ';' before CP (header {head[-32:]!r})")

    header: dict[str, str] = {}
    for item in _SPLIT.split(head[:-1]) if head else ():
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise Hj212Error(f"bad header field {item[:32]!r}: no '='")
        if key not in _HEADER_KEYS:
            raise Hj212Error(f"unknown header field {key[:32]!r}")
        if key in header:
            raise Hj212Error(f"duplicate header field {key}")
        value = value.strip()
        if not value:
            raise Hj212Error(f"empty header item {key!r}")
        header[key] = value
    for key in _REQUIRED_HEADER:
        if key not in header:
            raise Hj212Error(f"missing field {key}")
    cn = header["CN"]
    if not (cn.isdigit() and cn.isascii() and len(cn) <= 4):
        raise Hj212Error(f"bad number in CN: {cn[:32]!r}")
    st = header["ST"]
    if not (st.isdigit() and st.isascii() and len(st) <= 3):
        raise Hj212Error(f"bad number in ST: {st[:32]!r}")
    flag = _int_field("Flag", header["Flag"], 0, 255) if "Flag" in header else None
    version = 0 if flag is None else flag >> 2
    if version not in VERSIONS:
        raise Hj212Error(f"bad Flag: {flag} names version {version} (known: 1 = HJ 212-2017, "
                         f"Flag 4-7; 2 = HJ 212-2025, Flag 8-11)")
    pnum = _int_field("PNUM", header["PNUM"], 1, 999_999_999) if "PNUM" in header else None
    pno = _int_field("PNO", header["PNO"], 1, 999_999_999) if "PNO" in header else None
    if (pnum is None) != (pno is None):
        raise Hj212Error("missing field PNO (PNUM without PNO)" if pno is None
                         else "missing field PNUM (PNO without PNUM)")
    if flag is not None and flag & FLAG_SPLIT and pnum is None:
        quirks.append("split_flag_without_pnum")
    if pnum is not None and pno is not None and pno > pnum:
        raise Hj212Error(f"bad PNO: packet {pno} of {pnum}")
    rf = "RF" in header
    if rf:
        if header["RF"] != "1":
            raise Hj212Error(f"bad RF: {header['RF'][:8]!r} (only RF=1 is defined)")
        if version != VERSION_2025:
            raise Hj212Error(f"unknown header field 'RF' in a Flag version {version} frame "
                             "(RF is HJ 212-2025, Flag 8-11)")

    values: dict[str, float | None] = {}
    flags: dict[str, str] = {}
    fields: dict[str, str] = {}
    data_time = None
    spaces = " " in cp or "\t" in cp  # strip only when there is something to strip
    number = _NUMBER.fullmatch
    for item in _split_cp(cp) if cp else ():
        key, eq, value = item.partition("=")
        if spaces:
            if not item or item.isspace():
                continue
            key = key.strip()
            if not value.startswith("//"):  # //log text// is kept verbatim
                value = value.strip()
        elif not item:
            continue
        if not eq:
            raise Hj212Error(f"bad CP item {item[:32]!r}: no '='")
        if not key:
            raise Hj212Error(f"bad CP item {item[:32]!r}: empty field name")
        code, dash, suffix = key.rpartition("-")
        if dash and code:
            if suffix == "Flag":
                if code in flags:
                    raise Hj212Error(f"duplicate CP field {key}")
                if not _FLAG_CHARS.fullmatch(value):
                    raise Hj212Error(f"bad flag in {key}: {value[:32]!r} (one character A-Z/0-9)")
                flags[code] = value
                continue
            if suffix in NUMERIC_SUFFIXES:
                if key in values:
                    raise Hj212Error(f"duplicate CP field {key}")
                if value and number(value):
                    v = float(value)
                    if v - v == 0.0:  # finite
                        values[key] = v
                        continue
                values[key] = _parse_number(value, key)  # None for "", else raises why
                continue
            if suffix not in TEXT_SUFFIXES and value and number(value):
                if key in values:
                    raise Hj212Error(f"duplicate CP field {key}")
                values[key] = _parse_number(value, key)
                continue
        elif key == "DataTime":
            if data_time is not None:
                raise Hj212Error("duplicate CP field DataTime")
            data_time = _parse_time(value, "DataTime", tz, quirks)
            continue
        if key in fields:
            k = 2
            while f"{key}#{k}" in fields:
                k += 1
            key = f"{key}#{k}"
        fields[key] = value
    return Frame(qn=header.get("QN"), st=st, cn=cn, pw=header.get("PW"), mn=header.get("MN"),
                 flag=flag, pnum=pnum, pno=pno, data_time=data_time, values=values,
                 flags=flags, fields=fields, raw=raw, tz=tz, version=version, rf=rf,
                 quirks=tuple(quirks), encrypted=plaintext is not None, plaintext=plaintext,
                 digest=_digest(seg_bytes, crc_calc, rf))


# ---------------------------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------------------------
def _fmt_value(key: str, v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        raise Hj212Error(f"cannot encode {key}: bool is not a number")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise Hj212Error(f"cannot encode {key}: {v!r} is not finite")
        text = format(Decimal(repr(v)), "f")  # shortest round-trip digits, no exponent
        return text
    text = str(v)
    if any(c in text for c in ";,&=") and not (text.startswith("//") and text.endswith("//")):
        raise Hj212Error(f"cannot encode {key}: value {text[:32]!r} contains ; , & or =")
    return text


def _local14(t: dt.datetime, tz: dt.tzinfo, what: str) -> str:
    if t.tzinfo is None or t.utcoffset() is None:
        raise Hj212Error(f"{what}: naive datetime (timezone required)")
    return t.astimezone(tz).strftime("%Y%m%d%H%M%S")


def encode_frame(*, cn: str, mn: str, cp: Mapping[str, str | float | None] | str,
                 qn: str | None = None, st: str = "22", pw: str = "123456",
                 flag: int | None = 5, data_time: dt.datetime | None = None,
                 tz: dt.tzinfo = UTC8, crc_upper: bool = True,
                 pnum: int | None = None, pno: int | None = None, rf: bool = False,
                 key: bytes | None = None, length: str = "transmitted") -> bytes:
    """Build one HJ 212 frame.

    Parameters
    ----------
    cn, mn, st, pw : str
        Command code, device id, system code, password.
    cp : mapping or str
        CP items ``{"a21026-Rtd": 22.25, "a21026-Flag": "N"}`` (floats written with their
        shortest round-trip digits and no exponent; None as an empty value; items of one
        pollutant joined by ``,``, pollutants by ``;``), or the data area text itself.
    qn : str, optional
        Request id (``YYYYMMDDhhmmsszzz``); None omits QN (HJ/T 212-2005 style).
    flag : int, optional
        Flag byte (default 5: 2017 version, answer required); None omits it (2005 style).
    data_time : datetime.datetime, optional
        Aware instant written as ``DataTime`` (local time in ``tz``, whole seconds) first in
        CP, unless ``cp`` already has ``DataTime``.
    tz : datetime.tzinfo, optional
        Local time zone of the frame (default UTC+08:00).
    crc_upper : bool, optional
        Write the CRC in upper-case hex (default) or lower case.
    pnum, pno : int, optional
        Packet count and number of a split frame.
    rf : bool, optional
        Write ``RF=1`` (an HJ 212-2025 resend) after PNO.
    key : bytes, optional
        16-byte SM4 key: the CP data area is encrypted (the CRC stays that of the plaintext).
    length : {"transmitted", "plaintext"}, optional
        What the length field of an encrypted frame counts: the segment as sent (default)
        or its plaintext (as the standard's Appendix A.2 examples do).

    Returns
    -------
    bytes
        ``##`` + length + segment + CRC + ``\\r\\n``.

    Raises
    ------
    Hj212Error
        Segment longer than 1024 bytes, a non-finite number, a value containing a
        separator, a naive ``data_time``, a bad SM4 key.

    References
    ----------
    HJ 212-2017, clause 6.3 and Appendix A. HJ 212-2025, Table 3 (RF), clause 6.4.2 and
    Appendix A.2 (encryption).
    """
    sm4_key = key
    if isinstance(cp, str):
        area = cp
        if data_time is not None and "DataTime=" not in cp:
            dtxt = "DataTime=" + _local14(data_time, tz, "data_time")
            area = f"{dtxt};{cp}" if cp else dtxt
    else:
        groups: dict[str, list[str]] = {}
        if data_time is not None and "DataTime" not in cp:
            groups["DataTime"] = ["DataTime=" + _local14(data_time, tz, "data_time")]
        for key, v in cp.items():
            if not key or any(c in key for c in ";,&="):
                raise Hj212Error(f"cannot encode CP field name {key!r}")
            code = key.rpartition("-")[0] or key
            groups.setdefault(code, []).append(f"{key}={_fmt_value(key, v)}")
        area = ";".join(",".join(g) for g in groups.values())
    parts = []
    if qn is not None:
        parts.append(f"QN={qn}")
    parts += [f"ST={st}", f"CN={cn}", f"PW={pw}", f"MN={mn}"]
    if flag is not None:
        parts.append(f"Flag={int(flag)}")
    if pnum is not None:
        parts.append(f"PNUM={int(pnum)}")
    if pno is not None:
        parts.append(f"PNO={int(pno)}")
    if rf:
        parts.append("RF=1")
    parts.append(f"CP=&&{area}&&")
    seg = ";".join(parts).encode("utf-8")
    if len(seg) > MAX_SEGMENT:
        raise Hj212Error(f"segment too long: {len(seg)} bytes, at most {MAX_SEGMENT}")
    crc = crc16_hj212(seg)
    crc_text = f"{crc:04X}" if crc_upper else f"{crc:04x}"
    n = len(seg)
    if sm4_key is not None:
        if length not in ("transmitted", "plaintext"):
            raise ValueError(f"length must be 'transmitted' or 'plaintext', not {length!r}")
        try:
            enc = sm4.encrypt_area(area.encode("utf-8"), sm4_key)
        except sm4.Sm4Error as exc:
            raise Hj212Error(str(exc)) from None
        head = seg[:len(seg) - len(area.encode("utf-8")) - 2]
        seg = head + enc.encode("utf-8") + b"&&"
        if length == "transmitted":
            n = len(seg)
        if n > MAX_LENGTH_FIELD:
            raise Hj212Error(f"segment too long: {n} bytes encrypted, at most {MAX_LENGTH_FIELD}")
    return b"##%04d" % n + seg + crc_text.encode("ascii") + b"\r\n"


# ---------------------------------------------------------------------------------------------
# frames -> records
# ---------------------------------------------------------------------------------------------
def _unknown(codes: list[str], code_to_analyte: Mapping[str, str], mn: str | None) -> None:
    missing = sorted({c for c in codes if c not in code_to_analyte})
    if missing:
        raise ProtocolError(f"unknown pollutant code(s) {', '.join(missing)} for MN {mn} "
                            "(not in the analyzer's channels)")


def frame_to_records(frame: Frame, code_to_analyte: Mapping[str, str], *,
                     seq: int | None = None) -> list[ReadingRecord]:
    """Readings carried by a data frame (CN 2011, 2051, 2061, 2031).

    Parameters
    ----------
    frame : Frame
        A decoded frame.
    code_to_analyte : mapping
        Pollutant code -> analyte name (the analyzer's channels in the registry).
    seq : int, optional
        Sequence number attached to every returned record.

    Returns
    -------
    list of ReadingRecord
        Empty for other CNs (ingest stores those as frames). One record per distinct time:
        ``DataTime``, or a pollutant's own ``xxx-SampleTime`` which overrides it (water
        analyzers), ordered by time. Values are ``-Rtd`` for CN 2011 and ``-Avg`` for the
        others; flags from ``xxx-Flag`` (``"N"`` when absent).

    Raises
    ------
    ProtocolError
        A data frame without ``DataTime``, a pollutant code not in ``code_to_analyte`` (all
        unknown codes named), two codes mapped to one analyte, a bad ``SampleTime``.

    References
    ----------
    HJ 212-2017, Table 4 (``DataTime``, ``xxx-SampleTime``, ``xxx-Rtd``/``-Avg``/``-Flag``),
    Table 9 (command codes), Appendix C Tables C.19-C.24 (examples).
    """
    suffix = VALUE_SUFFIX.get(frame.cn)
    if suffix is None:
        return []
    if frame.data_time is None:
        raise ProtocolError(f"missing field DataTime in CN {frame.cn} data frame")
    tail = "-" + suffix
    codes = [k[: -len(tail)] for k in frame.values if k.endswith(tail)]
    if not codes:
        return []
    _unknown(codes, code_to_analyte, frame.mn)
    by_time: dict[dt.datetime, ReadingRecord] = {}
    seen: dict[str, str] = {}
    for code in codes:
        analyte = code_to_analyte[code]
        if analyte in seen:
            raise ProtocolError(f"pollutant codes {seen[analyte]} and {code} both map to "
                                f"analyte {analyte}")
        seen[analyte] = code
        st = frame.fields.get(code + "-SampleTime")
        ts = _parse_time(st, f"{code}-SampleTime", frame.tz) if st else frame.data_time
        rec = by_time.get(ts)
        if rec is None:
            rec = by_time[ts] = ReadingRecord(ts=ts, values={}, flags={}, seq=seq)
        rec.values[analyte] = frame.values[code + tail]
        rec.flags[analyte] = frame.flags.get(code, "N")
    return [by_time[t] for t in sorted(by_time)]


def frame_to_check_summary(frame: Frame, code_to_analyte: Mapping[str, str]) -> list[CheckSummary]:
    """Check summaries of an HJ 212-2025 CN 2062 automatic standard-sample check frame.

    Parameters
    ----------
    frame : Frame
        A decoded frame; other CNs give ``[]``.
    code_to_analyte : mapping
        Pollutant code -> analyte name.

    Returns
    -------
    list of CheckSummary
        One per pollutant carrying ``-SampleRd``: ``kind="std_sample"``, ``measured`` =
        ``-SampleRd`` (also the single element of ``readings``), ``standard_value`` =
        ``-StandardValue``, ``device_verdict`` = ``-ResultType`` text; ``start``/``end`` from
        ``BeginTime``/``EndTime`` when present, else ``-SampleTime`` or ``DataTime``;
        ``material`` None (the frame names no CRM lot); ``id`` =
        ``"HJ212-{MN}-{local DataTime}-{code}"``; ``extra`` keeps MN, QN, the code, the data
        flag and every other field of that pollutant.

    Raises
    ------
    ProtocolError
        No ``DataTime``, unknown pollutant codes, a pollutant with ``-StandardValue`` or
        ``-ResultType`` but no ``-SampleRd``.

    References
    ----------
    HJ 212-2025, CN 2062 (automatic standard-sample check data); DESIGN.md section 4.
    """
    if frame.cn != CHECK_CN:
        return []
    if frame.data_time is None:
        raise ProtocolError("missing field DataTime in CN 2062 check frame")
    codes: list[str] = []
    for key in list(frame.values) + list(frame.fields):
        code, _, suffix = key.partition("#")[0].rpartition("-")
        if suffix in ("SampleRd", "StandardValue", "ResultType") and code not in codes:
            codes.append(code)
    _unknown(codes, code_to_analyte, frame.mn)
    offset = frame.tz
    local_dt = frame.data_time.astimezone(offset).strftime("%Y%m%d%H%M%S")
    begin = frame.fields.get("BeginTime")
    end = frame.fields.get("EndTime")
    out = []
    for code in codes:
        if code + "-SampleRd" not in frame.values:
            raise ProtocolError(f"missing field {code}-SampleRd in CN 2062 check frame")
        measured = frame.values[code + "-SampleRd"]
        st = frame.fields.get(code + "-SampleTime")
        t_default = _parse_time(st, f"{code}-SampleTime", offset) if st else frame.data_time
        t0 = _parse_time(begin, "BeginTime", offset) if begin else t_default
        t1 = _parse_time(end, "EndTime", offset) if end else t_default
        if t1 < t0:
            raise ProtocolError(f"EndTime {end} is before BeginTime {begin}")
        extra: dict[str, object] = {"mn": frame.mn, "qn": frame.qn, "code": code,
                                    "flag": frame.flags.get(code)}
        prefix = code + "-"
        for k, v in frame.values.items():
            if k.startswith(prefix) and k[len(prefix):] not in ("SampleRd", "StandardValue"):
                extra[k] = v
        for k, v in frame.fields.items():
            if k.startswith(prefix) and k[len(prefix):] != "ResultType":
                extra[k] = v
        out.append(CheckSummary(
            id=f"HJ212-{frame.mn}-{local_dt}-{code}", kind="std_sample",
            analyte=code_to_analyte[code], start=t0, end=t1, material=None,
            measured=measured, readings=(measured,) if measured is not None else (),
            standard_value=frame.values.get(code + "-StandardValue"),
            device_verdict=frame.fields.get(code + "-ResultType"), extra=extra))
    return out
