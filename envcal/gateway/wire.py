"""What the gateway needs of the HJ 212 protocol layer, in one place.

The gateway never builds or parses frame text itself: decoding, answers, requests and the
per-connection frame splitter come from :mod:`envcal.protocols`; this module only adapts
their calls to the gateway (and holds the table 7 answer codes it chooses).

References
----------
HJ 212-2017, clause 6.3 (Table 3, Flag), 6.6.3 (Table 7, QnRtn), Table 9 (CN 9011-9014).
HJ 212-2025 notes (beside the 2017 text): Flag version 2, CN 9015 heartbeats.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from envcal.protocols import hj212
from envcal.protocols.records import UTC8

Hj212Error = hj212.Hj212Error
Frame = hj212.Frame

#: QnRtn codes of HJ 212-2017 Table 7 used by the gateway.
QNRTN_READY = 1
QNRTN_REFUSED = 2
QNRTN_PW = 3
QNRTN_MN = 4
QNRTN_CRC = 9
QNRTN_UNKNOWN = 100
#: Descriptions of Table 7 (QnRtn) and Table 6 (ExeRtn), for logs and replies.
QNRTN_TEXT = {1: "ready to execute", 2: "request refused", 3: "PW wrong", 4: "MN wrong",
              5: "ST wrong", 6: "Flag wrong", 7: "QN wrong", 8: "CN wrong", 9: "CRC wrong",
              100: "unknown error"}
EXERTN_TEXT = {1: "executed", 2: "failed, reason unknown", 3: "request condition wrong",
               4: "communication timeout", 5: "system busy", 6: "system fault", 100: "no data"}

_HEADER_ITEM = re.compile(rb"(?:^|;)(QN|ST|CN|PW|MN|Flag)=([^;&]{0,32})")


@dataclass(frozen=True, slots=True)
class Skipped:
    """Bytes of a TCP stream that are not a frame (garbage, a bad length field)."""

    raw: bytes
    reason: str


class BufferOverflow(Exception):
    """A connection's buffer exceeded its cap without yielding a frame."""


class Splitter:
    """Cuts one connection's byte stream into frames: ``##`` + 4-digit length, checked
    against the CRLF where the length says the frame ends; garbage skipped to the next ``##``.

    Parameters
    ----------
    max_buffer : int
        Bytes held while waiting for the rest of a frame [bytes].
    max_frame : int
        Largest whole frame [bytes]; a longer declared length is skipped.
    """

    def __init__(self, max_buffer: int, max_frame: int) -> None:
        self.max_buffer = max_buffer
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes | Skipped]:
        """Frames (``bytes``) and skipped pieces (:class:`Skipped`) completed by ``data``.

        Raises
        ------
        BufferOverflow
            More than ``max_buffer`` bytes are held without a complete frame.
        """
        buf = self._buf
        buf += data
        out: list[bytes | Skipped] = []
        while buf:
            i = buf.find(b"##")
            if i < 0:
                keep = 1 if buf.endswith(b"#") else 0
                if len(buf) > keep:
                    out.append(Skipped(bytes(buf[:len(buf) - keep]), "garbage outside a frame"))
                    del buf[:len(buf) - keep]
                break
            if i:
                out.append(Skipped(bytes(buf[:i]), "garbage outside a frame"))
                del buf[:i]
            if len(buf) < 6:
                break
            field = bytes(buf[2:6])
            if not (field.isdigit() and field.isascii()):
                out.append(Skipped(bytes(buf[:2]), f"bad length field {field!r}"))
                del buf[:2]
                continue
            total = 6 + int(field) + 6
            if total > self.max_frame:
                out.append(Skipped(bytes(buf[:6]), f"frame of {total} bytes exceeds the "
                                   f"{self.max_frame}-byte cap"))
                del buf[:2]
                continue
            if len(buf) < total:
                break
            if buf[total - 2:total] != b"\r\n":
                out.append(Skipped(bytes(buf[:2]), "no CRLF where the length field says the "
                                   "frame ends"))
                del buf[:2]
                continue
            out.append(bytes(buf[:total]))
            del buf[:total]
        if len(buf) > self.max_buffer:
            n = len(buf)
            buf.clear()
            raise BufferOverflow(f"{n} bytes buffered without a complete frame "
                                 f"(cap {self.max_buffer})")
        return out


def decode(raw: bytes, *, key: bytes | None = None) -> Frame:
    """Decode one frame (SM4 ``key`` of the analyzer when it encrypts CP).

    Raises
    ------
    Hj212Error
        With the decoder's reason.
    """
    if key is not None:
        raise Hj212Error("SM4-encrypted CP is not supported by this protocol layer")
    return hj212.decode_frame(raw)


def peek_header(raw: bytes) -> dict[str, str]:
    """QN, ST, CN, PW, MN and Flag of a frame that did not decode (to address the answer)."""
    return {k.decode(): v.decode("ascii", "replace") for k, v in _HEADER_ITEM.findall(raw[6:600])}


def version(flag: int | None) -> int:
    """Protocol version from Flag bits 2+: 0 HJ/T 212-2005 (or no Flag), 1 2017, 2 2025."""
    return 0 if flag is None else flag >> 2


def wants_answer(flag: int | None) -> bool:
    """Whether the sender asks for an answer (Flag bit 0: 2017's A, 2025's D)."""
    return flag is not None and bool(flag & 1)


def answer(cn: str, *, qn: str | None, pw: str | None, mn: str, ver: int, cp: str = "") -> bytes:
    """An answer frame (9011, 9012, 9013, 9014): ST=91, the peer's QN/PW/MN, Flag with the
    peer's version and no answer requested, ``CP=&&cp&&``."""
    return hj212.encode_frame(cn=cn, mn=mn, cp=cp, qn=qn, st="91", pw=pw or "",
                              flag=(ver << 2) if ver else None)


def request(cn: str, *, qn: str, st: str, pw: str, mn: str, ver: int, cp: str) -> bytes:
    """A request to a DAU with the answer bit set, in the DAU's version."""
    return hj212.encode_frame(cn=cn, mn=mn, cp=cp, qn=qn, st=st, pw=pw, flag=(max(ver, 1) << 2) | 1)


def local_time(t: dt.datetime, tz: dt.tzinfo = UTC8) -> str:
    """``YYYYMMDDhhmmss`` of an aware instant in the frames' local zone."""
    return t.astimezone(tz).strftime("%Y%m%d%H%M%S")


def make_qn(t: dt.datetime, tz: dt.tzinfo = UTC8) -> str:
    """A request id ``YYYYMMDDhhmmsszzz`` (local time, milliseconds)."""
    lt = t.astimezone(tz)
    return lt.strftime("%Y%m%d%H%M%S") + f"{lt.microsecond // 1000:03d}"
