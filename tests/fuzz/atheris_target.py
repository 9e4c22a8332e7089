"""atheris (libFuzzer) target: ``python atheris_target.py json|hj212 -max_total_time=N``.

A crash is any exception other than the decoder's own error type; atheris then prints the
input and exits non-zero."""

from __future__ import annotations

import datetime as dt
import sys

import atheris
import numba  # noqa: F401 - imported (uninstrumented) before the decoders: only envcal is traced
import numpy  # noqa: F401

from envcal.protocols import hj212  # noqa: E402 - numba kernels must stay uninstrumented

with atheris.instrument_imports(include=["envcal.protocols.json_v1", "envcal.protocols.records"]):
    from envcal.protocols import json_v1
    from envcal.protocols.records import ProtocolError

# atheris' bytecode tracing breaks numba's compilation of the CRC kernel: instrument the
# pure-Python parts of the HJ 212 decoder one function at a time instead
for _name, _fn in list(vars(hj212).items()):
    if (callable(_fn) and getattr(_fn, "__module__", "") == hj212.__name__
            and hasattr(_fn, "__code__") and not _name.startswith("_crc")):
        setattr(hj212, _name, atheris.instrument_func(_fn))

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def json_target(data: bytes) -> None:
    try:
        json_v1.decode_readings(data, now=NOW)
    except ProtocolError as exc:
        if not str(exc).strip():
            raise AssertionError("rejection without a reason") from exc


def hj212_target(data: bytes) -> None:
    try:
        hj212.decode_frame(data)
    except hj212.Hj212Error as exc:
        if not str(exc).strip():
            raise AssertionError("rejection without a reason") from exc


if __name__ == "__main__":
    target = {"json": json_target, "hj212": hj212_target}[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
