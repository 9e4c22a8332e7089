"""``envcal hj212 decode`` / ``envcal hj212 encode``: HJ 212 frames on the command line."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import typer

from envcal.protocols.hj212 import (
    CRC_VARIANTS,
    ENCODINGS,
    Frame,
    Hj212Error,
    decode_frame,
    encode_frame,
)
from envcal.protocols.records import ProtocolError

hj212_app = typer.Typer(no_args_is_help=True, help="HJ 212 frames (decode / encode).")


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
        (``{"a21026-Rtd": 22.25}``), ``flags`` (``{"a21026": "N"}``); and only when they
        apply: ``pnum``/``pno``, ``rf`` (true), ``encrypted`` (true), ``quirks`` (names).
    """
    out = {
        "qn": frame.qn, "st": frame.st, "cn": frame.cn, "pw": frame.pw, "mn": frame.mn,
        "flag": frame.flag,
        "data_time": frame.data_time.isoformat() if frame.data_time is not None else None,
        "values": frame.values, "flags": frame.flags,
    }
    if frame.pnum is not None:
        out["pnum"], out["pno"] = frame.pnum, frame.pno
    if frame.rf:
        out["rf"] = True
    if frame.encrypted:
        out["encrypted"] = True
    if frame.quirks:
        out["quirks"] = list(frame.quirks)
    return out


def _key(secrets: Path | None, analyzer: str | None) -> bytes | None:
    """The SM4 key of ``analyzer`` from the secrets file (option, else ENVCAL_HJ212_SECRETS)."""
    from envcal.registry import SECRETS_ENV, RegistryError, load_hj212_keys

    path = secrets or (Path(os.environ[SECRETS_ENV]) if os.environ.get(SECRETS_ENV) else None)
    if analyzer is None:
        if secrets is not None:
            raise ValueError("--secrets needs --analyzer (whose key to use)")
        return None
    if path is None:
        raise ValueError(f"--analyzer needs --secrets FILE (or {SECRETS_ENV})")
    try:
        keys = load_hj212_keys(path)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    if analyzer not in keys:
        raise ValueError(f"{path}: no SM4 key for analyzer {analyzer!r}")
    return keys[analyzer]


@hj212_app.command("decode")
def decode(
    utc_offset: float = typer.Option(8.0, "--utc-offset",
                                     help="Offset of the frame's local times [h] (default 8)"),
    fields: bool = typer.Option(False, "--fields", help="Also print the other CP fields"),
    crc: str = typer.Option("hj212", "--crc", help="CRC variant: hj212, or modbus to also accept "
                            "CRC-16/MODBUS"),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text: utf-8, or gbk to also accept GBK"),
    secrets: Path = typer.Option(None, "--secrets", help="HJ 212 secrets file with SM4 keys "
                                 "(default: ENVCAL_HJ212_SECRETS)"),
    analyzer: str = typer.Option(None, "--analyzer", help="Analyzer whose SM4 key decrypts CP"),
) -> None:
    """Read frames on stdin (one per line), print one JSON object per frame.

    One frame: as JSON, or exit 2 with the reason on stderr. Several: one line each, the
    frame or {"error": reason}; exit 2 when any was refused.
    """
    if crc not in CRC_VARIANTS or encoding not in ENCODINGS:
        typer.echo(f"envcal hj212 decode: --crc must be one of {', '.join(CRC_VARIANTS)}, "
                   f"--encoding one of {', '.join(ENCODINGS)}", err=True)
        raise typer.Exit(2)
    try:
        key = _key(secrets, analyzer)
    except ValueError as exc:
        typer.echo(f"envcal hj212 decode: {exc}", err=True)
        raise typer.Exit(2) from None
    # a shell `echo` adds a bare newline; the frame's own CRLF is optional for the decoder
    lines = [ln.rstrip(b"\r") for ln in sys.stdin.buffer.read().split(b"\n")]
    lines = [ln for ln in lines if ln.strip()] or [b""]
    tz = _tz(utc_offset)
    refused = 0
    for data in lines:
        try:
            frame = decode_frame(data, tz=tz, key=key, crc=crc, encoding=encoding)
        except ProtocolError as exc:
            refused += 1
            if len(lines) == 1:
                typer.echo(f"invalid HJ 212 frame: {exc}", err=True)
                raise typer.Exit(2) from None
            typer.echo(json.dumps({"error": str(exc)}, ensure_ascii=False))
            continue
        out = frame_json(frame)
        if fields:
            out["fields"] = frame.fields
        typer.echo(json.dumps(out, ensure_ascii=False))
    if refused:
        typer.echo(f"{refused} of {len(lines)} frames refused", err=True)
        raise typer.Exit(2)


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
