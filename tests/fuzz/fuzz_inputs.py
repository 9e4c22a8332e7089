"""Seeded generators of hostile inputs for the fuzz suite: byte-level mutations of valid
seeds and structure-aware rewrites (random JSON values in valid shapes, HJ 212 frames with a
correct length and CRC around a damaged segment, TOML with random keys and types)."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CERT_DIR = ROOT / "reference_materials" / "samples"
STATIONS_TOML = ROOT / "stations" / "zhejiang.toml"

#: Longest any single input may take [s] (generous: CI machines are shared and slow).
PER_INPUT_S = 2.0

_INTERESTING = [
    b"", b"\x00", b"\xff\xfe", b"\xc3\x28", b"NaN", b"Infinity", b"-Infinity", b"1e309", b"-0",
    b"null", b"true", b"[]", b"{}", b"\"\"", b"9" * 40, b"\\u0000", b"\\ud800", b"&&", b";;", b"==",
    b"//", b"\r\n", b"##", b"9999", b"CP=&&", b"[[", b"]]", b"\"\"\"", b"'''", b"=", b"\n[x]\n",
]


def mutate(rng: random.Random, data: bytes, max_len: int = 70_000) -> bytes:
    """Apply 1-4 random byte-level mutations (flip, delete, insert, duplicate, splice)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # delete a run
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 2:  # insert random bytes
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:  # insert an interesting token
            b[pos:pos] = rng.choice(_INTERESTING)
        elif op == 4 and b:  # duplicate a run
            j = rng.randrange(len(b))
            b[pos:pos] = b[j:j + rng.randint(1, 64)]
        elif op == 5:  # truncate
            del b[pos:]
        elif op == 6 and b:  # replace a byte with an ASCII digit / letter
            b[rng.randrange(len(b))] = rng.choice(b"0123456789azAZ.-+:T")
        else:  # grow (sometimes past the size limits)
            b += bytes([rng.randrange(32, 127)]) * rng.choice((1, 100, 70_000))
    return bytes(b[:max_len])


def random_json(rng: random.Random, depth: int = 0):
    """A random JSON value (deeply nested, huge numbers, odd strings, wrong types)."""
    kind = rng.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 2**64, 10**400, rng.randint(-10**6, 10**6)])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324, rng.uniform(-1e6, 1e6)])
    if kind in (4, 5, 6):
        return rng.choice(["", "N", "x" * rng.randint(1, 300), "2026-11-27T08:00:00", "2026-11-27T08:00:00+08:00",
                           "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00Z", "SO2", "NOx", "\u0000", "\ud83d\ude00",
                           "span", "run", "end", "umol/mol", "mg/m3", "GBW", str(rng.random())])
    if kind in (7, 8):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["ts", "seq", "values", "flags", "check", "id", "kind", "x", ""]): random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}


def rewrite_json(rng: random.Random, obj):
    """A copy of ``obj`` with one field somewhere replaced, removed or added."""
    obj = json.loads(json.dumps(obj))
    containers = []

    def walk(o):
        if isinstance(o, (dict, list)) and (o or isinstance(o, dict)):
            containers.append(o)
            for v in (o.values() if isinstance(o, dict) else o):
                walk(v)

    walk(obj)
    target = rng.choice(containers) if containers else None
    if target is None:
        return random_json(rng)
    if isinstance(target, dict):
        op = rng.randrange(3)
        keys = list(target)
        if op == 0 and keys:
            target[rng.choice(keys)] = random_json(rng)
        elif op == 1 and keys:
            del target[rng.choice(keys)]
        else:
            target[rng.choice(["zz", "ts", "U", "k", "value", "unit", "extra", "SO2"])] = random_json(rng)
    else:
        target[rng.randrange(len(target))] = random_json(rng)
    return obj


# --------------------------------------------------------------------------- seeds
def json_seeds() -> list[bytes]:
    t = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC)
    one = {"ts": t.isoformat(), "seq": 1, "values": {"SO2": 35.2, "NOx": 81.0},
           "flags": {"SO2": "N", "NOx": "N"}}
    chk = dict(one, check={"id": "CK-1", "kind": "span", "material": "LOT-1", "phase": "run"})
    return [json.dumps(one).encode(), json.dumps([one, chk]).encode(),
            json.dumps({"ts": 1_795_000_000_000, "values": {"pH": 7.0}}).encode()]


def hj212_seeds() -> list[bytes]:
    from envcal.protocols import hj212

    t = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
    return [hj212.encode_frame(cn="2011", mn="33040000000001", data_time=t,
                               cp={"a21026-Rtd": 22.5, "a21026-Flag": "N", "a21002-Rtd": 40.1}),
            hj212.encode_frame(cn="2051", mn="33040000000001", data_time=t,
                               cp={"a21026-Avg": 1.5, "a21026-Min": 1.0, "a21026-Max": 2.0}),
            hj212.encode_frame(cn="9014", mn="33040000000001", cp={})]


def reframe(segment: bytes) -> bytes:
    """Wrap ``segment`` in a header with its true length and a correct CRC (so the decoder
    gets past the envelope into the data segment)."""
    from envcal.protocols.hj212 import crc16_hj212

    return b"##%04d" % (len(segment) % 10000) + segment + b"%04X\r\n" % crc16_hj212(segment)


def cert_seeds() -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(CERT_DIR.glob("*.json"))]


# --------------------------------------------------------------------------- the loop
@dataclass
class Tally:
    """How a batch of inputs went: accepted, rejected (with the module's error), the slowest."""

    accepted: int = 0
    rejected: int = 0
    known_bug: int = 0
    slowest_s: float = 0.0
    reasons: set = field(default_factory=set)

    @property
    def total(self) -> int:
        return self.accepted + self.rejected + self.known_bug


def run(inputs: Iterator, call: Callable, error: type[BaseException], reason: Callable[[BaseException], str],
        known: tuple[type[BaseException], ...] = ()) -> Tally:
    """Feed every input to ``call``; anything raised other than ``error`` (with a non-empty
    reason) fails the test with the input that caused it; so does an input slower than
    :data:`PER_INPUT_S`. ``known`` exceptions are counted in ``known_bug`` instead: a crash
    already pinned by its own strict-xfail regression test."""
    tally = Tally()
    for x in inputs:
        t0 = time.perf_counter()
        try:
            call(x)
        except error as exc:
            why = reason(exc)
            assert isinstance(why, str) and why.strip(), f"rejection without a reason for {x!r:.300}"
            tally.rejected += 1
            if len(tally.reasons) < 2000:
                tally.reasons.add(re.sub(r"\d+", "#", why)[:50])
        except known:
            tally.known_bug += 1
        except Exception as exc:  # noqa: BLE001 - this is the crash we are looking for
            raise AssertionError(f"{call.__name__} crashed with {exc.__class__.__name__}: {exc} "
                                 f"on input {x!r:.500}") from exc
        else:
            tally.accepted += 1
        took = time.perf_counter() - t0
        tally.slowest_s = max(tally.slowest_s, took)
        assert took < PER_INPUT_S, f"{call.__name__} took {took:.2f} s on input {x!r:.300}"
    return tally
