"""HJ 212 answers and commands: the frames a platform (and a DAU) sends in reply or on request.

Answers (9011 request answer, 9012 execution result, 9013 notification answer, 9014 data
answer) carry ST=91, the QN, PW and MN of the frame they answer, and a Flag with the
*peer's* version and no answer requested. Commands (1011/1012 clock, 2051/2061/2031 history,
3020 device information, 3011 zero/span calibration, 3024 standard-sample check...) carry a
fresh QN, the device's ST, PW and MN and a Flag asking for an answer; the builders here
return the ``(cn, cp)`` pair for :func:`encode_request`.

Pure functions: bytes out, no I/O.

References
----------
HJ 212-2017, clause 6.1 (request / answer / result), clause 6.5 (command flows), Tables 6
and 7 (ExeRtn, QnRtn), Table 9, Appendix C Tables C.1-C.4 (time), C.14 and C.48 (data
answer 9014, ST=91, Flag=4), C.20-C.22 (history with BeginTime/EndTime), C.30 (3011),
C.41 (3020). HJ 212-2025, Table 12 (9015 heartbeat answered by 9013; 1013; 1014 key
exchange; 3024), Table C.18 (9014 with Flag=8), clause 6.4.4 (encrypted commands).
"""

from __future__ import annotations

import datetime as dt

from envcal.protocols.hj212 import Frame, Hj212Error, encode_frame
from envcal.protocols.hj212_codes import (
    ST_SYSTEM,
    VERSION_2017,
    VERSION_2025,
    ExeRtn,
    QnRtn,
    flag_for,
    must_encrypt,
)
from envcal.protocols.records import UTC8

__all__ = [
    "answer_9011",
    "cmd_calibrate",
    "cmd_device_info",
    "cmd_get_time",
    "cmd_history",
    "cmd_new_key",
    "cmd_set_time",
    "cmd_std_check",
    "data_answer_9014",
    "encode_answer",
    "encode_answer_to",
    "encode_request",
    "heartbeat_9015",
    "local14",
    "new_qn",
    "notify_9013",
    "result_9012",
]

#: History commands and the BeginTime/EndTime they take.
HISTORY_CNS = ("2031", "2051", "2061", "2062")


def local14(t: dt.datetime, tz: dt.tzinfo = UTC8) -> str:
    """An aware instant as ``YYYYMMDDhhmmss`` in the frame's local time.

    Parameters
    ----------
    t : datetime.datetime
        Timezone-aware.
    tz : datetime.tzinfo, optional
        The frame's local zone (default UTC+08:00).

    Returns
    -------
    str

    References
    ----------
    HJ 212-2017, Table 4 (SystemTime, BeginTime, EndTime, DataTime: N14).
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise Hj212Error("naive datetime (timezone required)")
    return t.astimezone(tz).strftime("%Y%m%d%H%M%S")


def new_qn(now: dt.datetime, tz: dt.tzinfo = UTC8) -> str:
    """A request id: ``YYYYMMDDhhmmsszzz`` (local time, milliseconds).

    Parameters
    ----------
    now : datetime.datetime
        Timezone-aware instant of the request.
    tz : datetime.tzinfo, optional
        The frame's local zone.

    Returns
    -------
    str
        17 digits.

    References
    ----------
    HJ 212-2017, Table 3 (QN).
    """
    return local14(now, tz) + f"{now.microsecond // 1000:03d}"


def _answer_version(version: int | None, frame: Frame) -> int:
    v = frame.version if version is None else version
    return v if v in (VERSION_2017, VERSION_2025) else VERSION_2017


def encode_answer(frame: Frame, cn: str, cp: str = "", *, version: int | None = None) -> bytes:
    """An answer to ``frame``: ST=91, the frame's QN, PW and MN, no answer requested.

    Parameters
    ----------
    frame : Frame
        The frame answered.
    cn : str
        9011, 9012, 9013 or 9014.
    cp : str, optional
        The data area (``QnRtn=1``; empty for 9013/9014: ``CP=&&&&``).
    version : int, optional
        Flag version of the answer; default the frame's own (a 2005 frame, without Flag,
        gets a 2017 Flag).

    Returns
    -------
    bytes
        One frame with CRLF.

    References
    ----------
    HJ 212-2017, Appendix C Tables C.1 (9011/9012), C.4 (9013), C.14 and C.48 (9014, ST=91,
    Flag=4); HJ 212-2025, Table C.18 (9014, Flag=8).
    """
    return encode_answer_to(frame.qn, frame.pw or "", frame.mn or "", _answer_version(version, frame),
                            cn, cp)


def encode_answer_to(qn: str | None, pw: str, mn: str, version: int, cn: str, cp: str = "") -> bytes:
    """An answer built from header fields alone (for a frame that could not be decoded).

    Parameters
    ----------
    qn, pw, mn : str
        Of the frame answered (see :func:`envcal.protocols.hj212.peek_header`).
    version : int
        Flag version of the peer (1 or 2; anything else answers as 2017).
    cn, cp : str
        9011 with ``QnRtn=9`` for a CRC error, for example.

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2017, Table 7 (QnRtn 9: CRC error) and Appendix C Table C.1.
    """
    v = version if version in (VERSION_2017, VERSION_2025) else VERSION_2017
    return encode_frame(cn=cn, mn=mn, qn=qn, st=ST_SYSTEM, pw=pw, flag=flag_for(v, ack=False), cp=cp)


def answer_9011(frame: Frame, code: QnRtn, *, version: int | None = None) -> bytes:
    """Request answer (CN 9011, ``QnRtn``) to a command or request.

    Parameters
    ----------
    frame : Frame
        The request.
    code : QnRtn
        Table 7 code (1 = ready to execute, 3 = PW error, 9 = CRC error, ...).
    version : int, optional
        Flag version (default: the request's).

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2017, clause 6.6.3 (Table 7), Appendix C Table C.1.
    """
    return encode_answer(frame, "9011", f"QnRtn={int(QnRtn(code))}", version=version)


def result_9012(frame: Frame, code: ExeRtn, *, version: int | None = None) -> bytes:
    """Execution result (CN 9012, ``ExeRtn``) of a command.

    Parameters
    ----------
    frame : Frame
        The command executed.
    code : ExeRtn
        Table 6 code (1 = success, 100 = no data, ...).
    version : int, optional
        Flag version (default: the command's).

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2017, clause 6.6.2 (Table 6), Appendix C Table C.1.
    """
    return encode_answer(frame, "9012", f"ExeRtn={int(ExeRtn(code))}", version=version)


def notify_9013(frame: Frame, *, version: int | None = None) -> bytes:
    """Notification answer (CN 9013): to 1013, 9015 heartbeats, 1001, 1014.

    Parameters
    ----------
    frame : Frame
    version : int, optional

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2017, Appendix C Table C.4; HJ 212-2025, Table 12 (9015 answered by 9013).
    """
    return encode_answer(frame, "9013", version=version)


def data_answer_9014(frame: Frame, *, version: int | None = None) -> bytes:
    """Data answer (CN 9014): ST=91, the frame's QN/PW/MN, ``CP=&&&&``.

    Parameters
    ----------
    frame : Frame
        The data upload (one packet of a split upload is answered on its own).
    version : int, optional

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2017, Appendix C Tables C.14, C.48, C.50; HJ 212-2025, Table C.18.
    """
    return encode_answer(frame, "9014", version=version)


def encode_request(cn: str, mn: str, pw: str, st: str, qn: str, cp: str = "", *,
                   version: int = VERSION_2017, key: bytes | None = None,
                   ack: bool = True) -> bytes:
    """A command or request frame (Flag asks for an answer).

    Parameters
    ----------
    cn, mn, pw, st, qn : str
        Command code, device MN, access password, the device's system code, request id.
    cp : str, optional
        Data area text (see the ``cmd_*`` builders).
    version : int, optional
        1 (HJ 212-2017, Flag 5) or 2 (HJ 212-2025, Flag 9).
    key : bytes, optional
        SM4 key; the CP is encrypted when the version is 2025 and the command is one that
        HJ 212-2025 clause 6.4.4 encrypts.
    ack : bool, optional
        Ask for an answer (default).

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2017, clause 6.1, Appendix C; HJ 212-2025, clause 6.4.4.
    """
    use_key = key if key is not None and version == VERSION_2025 and must_encrypt(cn) else None
    return encode_frame(cn=cn, mn=mn, qn=qn, st=st, pw=pw, flag=flag_for(version, ack=ack),
                        cp=cp, key=use_key)


def heartbeat_9015(mn: str, pw: str, st: str, qn: str) -> bytes:
    """A DAU heartbeat (CN 9015, HJ 212-2025; answered with 9013).

    Parameters
    ----------
    mn, pw, st, qn : str

    Returns
    -------
    bytes

    References
    ----------
    HJ 212-2025, Table 12 and Appendix C Table C.54.
    """
    return encode_frame(cn="9015", mn=mn, qn=qn, st=st, pw=pw,
                        flag=flag_for(VERSION_2025, ack=True), cp="")


def _polid(polid: str | None) -> str:
    return f"PolId={polid}" if polid else ""


def cmd_get_time(polid: str | None = None) -> tuple[str, str]:
    """Get the device time (CN 1011; with ``PolId`` the instrument's, else the DAU's).

    References
    ----------
    HJ 212-2017, Appendix C Table C.2.
    """
    return "1011", _polid(polid)


def cmd_set_time(t: dt.datetime, polid: str | None = None, tz: dt.tzinfo = UTC8) -> tuple[str, str]:
    """Set the device time (CN 1012, ``SystemTime`` in the frame's local time).

    Parameters
    ----------
    t : datetime.datetime
        Aware instant.
    polid : str, optional
        Pollutant code of the instrument; None sets the DAU's clock.
    tz : datetime.tzinfo, optional

    References
    ----------
    HJ 212-2017, Appendix C Table C.3.
    """
    st = f"SystemTime={local14(t, tz)}"
    return "1012", f"{_polid(polid)};{st}" if polid else st


def cmd_history(cn: str, begin: dt.datetime, end: dt.datetime, tz: dt.tzinfo = UTC8) -> tuple[str, str]:
    """Ask for history (CN 2031 day, 2051 minute, 2061 hour, 2062 standard-sample checks).

    Parameters
    ----------
    cn : str
    begin, end : datetime.datetime
        Aware instants, ``begin <= end``; written as ``BeginTime``/``EndTime``.
    tz : datetime.tzinfo, optional

    References
    ----------
    HJ 212-2017, Appendix C Tables C.20-C.22; HJ 212-2025 Table C.60 (2062).
    """
    if cn not in HISTORY_CNS:
        raise Hj212Error(f"CN {cn} is not a history command (one of {', '.join(HISTORY_CNS)})")
    if end < begin:
        raise Hj212Error(f"history EndTime {end.isoformat()} is before BeginTime {begin.isoformat()}")
    return cn, f"BeginTime={local14(begin, tz)};EndTime={local14(end, tz)}"


def cmd_device_info(info_id: str, polid: str | None = None, begin: dt.datetime | None = None,
                    end: dt.datetime | None = None, tz: dt.tzinfo = UTC8) -> tuple[str, str]:
    """Get device information (CN 3020: logs, state, parameters by ``InfoId``).

    References
    ----------
    HJ 212-2017, Appendix C Tables C.41, C.43, C.45.
    """
    items = [_polid(polid)] if polid else []
    items.append(f"InfoId={info_id}")
    if begin is not None and end is not None:
        items += [f"BeginTime={local14(begin, tz)}", f"EndTime={local14(end, tz)}"]
    return "3020", ";".join(items)


def cmd_calibrate(polid: str) -> tuple[str, str]:
    """Start a zero / span calibration of one instrument (CN 3011).

    References
    ----------
    HJ 212-2017, Appendix C Table C.30.
    """
    return "3011", _polid(polid)


def cmd_std_check(polid: str) -> tuple[str, str]:
    """Start a standard-sample check of one instrument (CN 3024, HJ 212-2025).

    References
    ----------
    HJ 212-2025, Table 12 and Appendix C Table C.61.
    """
    return "3024", _polid(polid)


def cmd_new_key(key: bytes, created: dt.datetime, tz: dt.tzinfo = UTC8) -> tuple[str, str]:
    """Send a DAU its new SM4 key (CN 1014, HJ 212-2025; the frame itself must be encrypted).

    Parameters
    ----------
    key : bytes
        The new 16-byte key, written as 32 hex digits in ``NewSK``.
    created : datetime.datetime
        Aware creation time (``SKCreateTime``).
    tz : datetime.tzinfo, optional

    References
    ----------
    HJ 212-2025, Table 12 and Appendix C Tables C.7/C.8; clauses 6.4.3 and 6.4.4.
    """
    if len(key) != 16:
        raise Hj212Error(f"SM4 key must be 16 bytes, got {len(key)}")
    return "1014", f"SKCreateTime={local14(created, tz)};NewSK={key.hex().upper()}"
