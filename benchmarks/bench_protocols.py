"""Wire formats: JSON v1 decoding against a pydantic model, HJ 212 frame decoding.

Ingest's target is ~9,000 messages/s on 2 cores, so decoding must cost a small fraction of
that budget (~110 µs per message in total).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

from benchmarks.common import alternate, best_of, row
from envcal.protocols import hj212, json_v1
from envcal.protocols.records import UTC8


def _payloads(n: int) -> list[bytes]:
    t0 = dt.datetime(2026, 11, 27, 8, 0, tzinfo=UTC8)
    out = []
    for i in range(n):
        obj = {"ts": (t0 + dt.timedelta(seconds=i)).isoformat(), "seq": i,
               "values": {"SO2": 35.2 + i % 7, "NOx": 81.0, "O2": 6.1, "dust": 4.2,
                          "flue_temp": 120.5},
               "flags": {"SO2": "N", "NOx": "N", "O2": "N", "dust": "N", "flue_temp": "N"}}
        if i % 10 == 0:
            obj["check"] = {"id": f"CK-{i}", "kind": "span", "phase": "run", "material": "LOT"}
        out.append(json.dumps(obj).encode())
    return out


def _pydantic_decoder():
    from typing import Annotated

    from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

    Flag = Literal["N", "F", "M", "S", "D", "C", "T", "B"]
    Finite = Annotated[float, Field(allow_inf_nan=False)]
    limit = dt.datetime(2027, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=10)

    def not_future(t):
        if isinstance(t, dt.datetime) and t > limit:
            raise ValueError("in the future")
        return t

    class Check(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        id: str
        kind: Literal["zero", "span", "std_sample", "membrane", "flow", "linearity"]
        phase: Literal["start", "run", "end"]
        material: str | None = None

    class Reading(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        ts: Annotated[AwareDatetime | int, AfterValidator(not_future)]
        seq: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
        values: dict[str, Finite | None]
        flags: dict[str, Flag] = {}
        check: Check | None = None

    ta = TypeAdapter(Reading | list[Reading])
    return ta.validate_json


def run(quick: bool) -> list[dict]:
    n = 5_000 if quick else 50_000
    payloads = _payloads(n)
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)

    def ours():
        for p in payloads:
            json_v1.decode_readings(p, now=now)

    validate = _pydantic_decoder()

    def base():
        for p in payloads:
            validate(p)

    ours()
    base()
    t = alternate({"envcal": ours, "pydantic": base})
    t_env, t_base = t["envcal"], t["pydantic"]
    rows = [row("json_v1_decode_vs_pydantic", t_env,
                "pydantic v2 TypeAdapter.validate_json (strict, extra=forbid, finite floats, "
                "aware or epoch ts not in the future, seq range; duplicate keys not refused)",
                t_base, envcal_per_s=n / t_env, baseline_per_s=n / t_base, n=n)]

    codes = {"a21026": "SO2", "a21002": "NOx", "a19001": "O2", "a34013": "dust",
             "a01012": "flue_temp"}
    t0 = dt.datetime(2026, 11, 27, 8, 0, tzinfo=UTC8)
    frames = []
    for i in range(n):
        cp: dict[str, object] = {}
        for j, code in enumerate(codes):
            cp[f"{code}-Rtd"] = round(10.0 + j + (i % 97) / 10, 2)
            cp[f"{code}-ZsRtd"] = round(12.0 + j, 2)
            cp[f"{code}-Flag"] = "N"
        frames.append(hj212.encode_frame(cn="2011", mn="33040000000001", cp=cp,
                                         qn=f"{t0:%Y%m%d%H%M%S}{i % 1000:03d}",
                                         data_time=t0 + dt.timedelta(seconds=i)))

    def decode_frames():
        for f in frames:
            hj212.frame_to_records(hj212.decode_frame(f), codes)

    def crc_bitwise():  # HJ 212-2017 Appendix A, bit by bit, as the standard writes it
        for f in frames:
            reg = 0xFFFF
            for b in f[6:-6]:
                reg = (reg >> 8) ^ b
                for _ in range(8):
                    c = reg & 1
                    reg >>= 1
                    if c:
                        reg ^= 0xA001

    def crc_table():
        for f in frames:
            hj212.crc16_hj212(f[6:-6])

    decode_frames()
    t_dec = best_of(decode_frames)
    t_crc, t_bit = best_of(crc_table), best_of(crc_bitwise, repeat=1)
    rows.append(row("hj212_decode_to_records", t_dec, None, None, envcal_per_s=n / t_dec, n=n,
                    frame_bytes=sum(map(len, frames)) / n))
    rows.append(row("hj212_crc_vs_bitwise_appendix_a", t_crc, "bitwise loop of Appendix A",
                    t_bit, envcal_per_s=n / t_crc, baseline_per_s=n / t_bit, n=n))
    return rows
