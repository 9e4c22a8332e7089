"""``envcal hj212 decode`` / ``envcal hj212 encode``: HJ 212 frames on the command line."""

from __future__ import annotations

import datetime as dt
import json
import sys

import typer

from envcal.protocols.hj212 import Frame, Hj212Error, decode_frame, encode_frame
from envcal.protocols.records import ProtocolError

hj212_app = typer.Typer(no_args_is_help=True, help="HJ 212-2017 frames (decode / encode).")


def _tz(hours: float) -> dt.tzinfo:
    return dt.timezone(dt.timedelta(hours=hours))


def frame_json(frame: Frame) -> dict:
    """The JSON view printed by ``envcal hj212 decode``.

    Parameters
    ----------
    frame : Frame
        A decoded frame.

    Returns
    -------
    dict
        ``qn, st, cn, pw, mn, flag, data_time`` (ISO 8601 UTC or None), ``values``
        (``{"a21026-Rtd": 22.25}``), ``flags`` (``{"a21026": "N"}``).
    """
    return {
        "qn": frame.qn, "st": frame.st, "cn": frame.cn, "pw": frame.pw, "mn": frame.mn,
        "flag": frame.flag,
        "data_time": frame.data_time.isoformat() if frame.data_time is not None else None,
        "values": frame.values, "flags": frame.flags,
    }


@hj212_app.command("decode")
def decode(
    utc_offset: float = typer.Option(8.0, "--utc-offset",
                                     help="Offset of the frame's local times [h] (default 8)"),
    fields: bool = typer.Option(False, "--fields", help="Also print the other CP fields"),
) -> None:
    """Read one frame on stdin, print it as JSON; exit 2 with the reason if it is invalid."""
    data = sys.stdin.buffer.read()
    # a shell `echo` adds a bare newline; the frame's own CRLF is optional for the decoder
    data = data.rstrip(b"\r\n")
    try:
        frame = decode_frame(data, tz=_tz(utc_offset))
    except ProtocolError as exc:
        typer.echo(f"invalid HJ 212 frame: {exc}", err=True)
        raise typer.Exit(2) from None
    out = frame_json(frame)
    if fields:
        out["fields"] = frame.fields
    typer.echo(json.dumps(out, ensure_ascii=False))


@hj212_app.command("encode")
def encode(
    cn: str = typer.Option(..., "--cn", help="Command code, e.g. 2011"),
    mn: str = typer.Option(..., "--mn", help="Device id (MN)"),
    cp: str = typer.Option("", "--cp", help="CP data area text, e.g. 'a21026-Rtd=22.2,a21026-Flag=N'"),
    data_time: str | None = typer.Option(None, "--data-time",
                                         help="ISO 8601 instant with offset, written as DataTime"),
    qn: str | None = typer.Option(None, "--qn"),
    st: str = typer.Option("22", "--st"),
    pw: str = typer.Option("123456", "--pw"),
    flag: int | None = typer.Option(5, "--flag"),
    utc_offset: float = typer.Option(8.0, "--utc-offset", help="Offset of local times [h]"),
) -> None:
    """Print one frame (with CRC and CRLF) built from the options; exit 2 if impossible."""
    try:
        t = None
        if data_time is not None:
            t = dt.datetime.fromisoformat(data_time)
            if t.tzinfo is None:
                raise Hj212Error(f"--data-time needs a UTC offset: {data_time!r}")
        frame = encode_frame(cn=cn, mn=mn, cp=cp, qn=qn, st=st, pw=pw, flag=flag,
                             data_time=t, tz=_tz(utc_offset))
    except (ProtocolError, ValueError) as exc:
        typer.echo(f"cannot encode: {exc}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.buffer.write(frame)
    sys.stdout.buffer.flush()


def register(app: typer.Typer) -> None:
    """Add the ``hj212`` command group to the ``envcal`` app."""
    app.add_typer(hj212_app, name="hj212")
