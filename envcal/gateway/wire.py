"""What the gateway needs of the HJ 212 protocol layer, in one place.

The gateway never builds or parses frame text itself: decoding, answers, requests, code
tables and the per-connection frame splitter come from :mod:`envcal.protocols`; this module
only adapts their calls to the gateway.

References
----------
HJ 212-2017, clause 6.3 (Table 3, Flag), 6.6.3 (Table 7, QnRtn), Table 9 (CN 9011-9014).
HJ 212-2025 notes (beside the 2017 text): Flag version 2, CN 9015 heartbeats, SM4.
"""

from __future__ import annotations

from envcal.protocols import hj212, hj212_commands
from envcal.protocols.hj212_codes import ExeRtn, QnRtn, flag_version, must_encrypt, wants_answer
from envcal.protocols.hj212_stream import FrameSplitter, Skipped

__all__ = ["ExeRtn", "Frame", "FrameSplitter", "Hj212Error", "QnRtn", "Skipped", "answer",
           "answer_header", "decode", "flag_version", "must_encrypt", "peek_header", "request",
           "wants_answer"]

Hj212Error = hj212.Hj212Error
Frame = hj212.Frame
peek_header = hj212.peek_header


def decode(raw: bytes, *, key: bytes | None = None, crc: str = "hj212",
           encoding: str = "utf-8") -> Frame:
    """Decode one frame with the analyzer's options (SM4 key, CRC variant, text encoding).

    Raises
    ------
    Hj212Error
        With the decoder's reason.
    """
    return hj212.decode_frame(raw, key=key, crc=crc, encoding=encoding)


def answer(frame: Frame, cn: str, cp: str = "") -> bytes:
    """An answer to ``frame`` (9011 with ``cp="QnRtn=.."``, 9013, 9014) in the peer's version."""
    return hj212_commands.encode_answer(frame, cn, cp)


def answer_header(head: dict[str, str], cn: str, cp: str = "") -> bytes:
    """An answer addressed from :func:`peek_header` (for a frame that did not decode)."""
    try:
        flag = int(head.get("Flag", ""))
    except ValueError:
        flag = None
    return hj212_commands.encode_answer_to(head.get("QN"), head.get("PW", ""), head.get("MN", ""),
                                           flag_version(flag), cn, cp)


def request(cn: str, *, qn: str, st: str, pw: str, mn: str, ver: int, cp: str,
            key: bytes | None = None) -> bytes:
    """A request to a DAU (answer bit set) in the DAU's version; SM4 where 2025 requires it."""
    return hj212_commands.encode_request(cn, mn, pw, st, qn, cp, version=max(ver, 1), key=key)
