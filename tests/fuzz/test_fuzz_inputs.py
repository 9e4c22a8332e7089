"""Bad input at scale: 100,000 generated inputs over the JSON v1 and HJ 212 decoders, the
certificate validator and the registry loader (45,000 + 45,000 + 8,000 + 2,000 from seeded
generators, plus hypothesis-driven cases on top). No crash, no hang (each input under
``PER_INPUT_S``), and every rejected input carries a non-empty reason of the module's own
error type."""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
from pathlib import Path

import pytest
from fuzz_inputs import (
    PER_INPUT_S,
    STATIONS_TOML,
    cert_seeds,
    hj212_seeds,
    json_seeds,
    mutate,
    random_json,
    reframe,
    rewrite_json,
    run,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envcal.certificates import CertificateError, validate_certificate
from envcal.protocols import hj212, json_v1
from envcal.protocols.records import ProtocolError
from envcal.registry import RegistryError, load_registry

N_JSON, N_HJ212, N_CERT, N_REGISTRY = 45_000, 45_000, 8_000, 2_000
#: Errors other than the module's own that a run tolerates (none: the one this suite found,
#: pint's tokenizer error for "u (x", is now refused by envcal.units.parse_unit).
KNOWN: tuple[type[BaseException], ...] = ()
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)

pytestmark = pytest.mark.slow


def test_fuzz_budget_is_100k():
    assert N_JSON + N_HJ212 + N_CERT + N_REGISTRY == 100_000
    assert PER_INPUT_S <= 2.0


# --------------------------------------------------------------------------- JSON v1
def _json_inputs(n: int, seed: int = 8):
    rng = random.Random(seed)
    seeds = json_seeds()
    objs = [json.loads(s) for s in seeds]
    for i in range(n):
        k = i % 4
        if k == 0:
            yield mutate(rng, rng.choice(seeds))
        elif k == 1:
            yield json.dumps(rewrite_json(rng, rng.choice(objs))).encode()
        elif k == 2:
            yield json.dumps(random_json(rng)).encode()
        else:  # valid JSON text with a broken byte sequence somewhere
            yield mutate(rng, json.dumps(rewrite_json(rng, rng.choice(objs))).encode())


def decode_readings(payload: bytes):
    return json_v1.decode_readings(payload, now=NOW)


def test_json_v1_fuzz_45k_seeded():
    tally = run(_json_inputs(N_JSON), decode_readings, ProtocolError, str)
    assert tally.total == N_JSON
    assert tally.rejected > N_JSON // 2 and tally.accepted > 0  # the generator reaches both sides
    assert len(tally.reasons) > 20, sorted(tally.reasons)  # many distinct reasons, not one catch-all


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                        st.sampled_from(["ts", "seq", "values", "flags", "check", "x"]) | st.text(max_size=5),
                        kids, max_size=5), max_leaves=20))
def test_json_v1_hypothesis_structures(obj):
    try:
        text = json.dumps(obj).encode()
    except ValueError:
        return
    run(iter([text]), decode_readings, ProtocolError, str)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_json_v1_hypothesis_bytes(data):
    run(iter([data]), decode_readings, ProtocolError, str)


# --------------------------------------------------------------------------- HJ 212
def _hj212_inputs(n: int, seed: int = 212):
    rng = random.Random(seed)
    frames = hj212_seeds()
    segments = [f[6:-6] for f in frames]
    for i in range(n):
        if i % 2:
            yield mutate(rng, rng.choice(frames), max_len=5000)
        else:  # envelope intact (true length, correct CRC), data segment damaged
            yield reframe(mutate(rng, rng.choice(segments), max_len=1100))


def test_hj212_fuzz_45k_seeded():
    tally = run(_hj212_inputs(N_HJ212), hj212.decode_frame, hj212.Hj212Error, str)
    assert tally.total == N_HJ212
    assert tally.rejected > N_HJ212 // 2 and tally.accepted > 0
    assert len(tally.reasons) > 10, sorted(tally.reasons)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1200))
def test_hj212_hypothesis_segments(seg):
    run(iter([reframe(seg), b"##" + seg]), hj212.decode_frame, hj212.Hj212Error, str)


# --------------------------------------------------------------------------- found bugs
def test_unit_unbalanced_parenthesis_rejected(tmp_path):
    # found by this suite: pint's tokenizer error used to escape parse_unit
    doc = cert_seeds()[0]
    doc["values"][0]["unit"] = "u (x"
    with pytest.raises(CertificateError, match="unit"):
        validate_certificate(json.dumps(doc).encode())
    path = tmp_path / "r.toml"
    path.write_bytes(STATIONS_TOML.read_bytes().replace(b'unit = "ug/m3"', b'unit = "u (x"', 1))
    with pytest.raises(RegistryError, match="unit"):
        load_registry(path)


# --------------------------------------------------------------------------- certificates
def _cert_reason(exc: CertificateError) -> str:
    assert exc.problems and all(isinstance(p, str) and p.strip() for p in exc.problems), exc.problems
    return str(exc)


def _cert_inputs(n: int, seed: int = 33):
    rng = random.Random(seed)
    docs = cert_seeds()
    for i in range(n):
        doc = rng.choice(docs)
        if i % 3 == 0:
            yield mutate(rng, json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"), max_len=20_000)
        else:
            d = rewrite_json(rng, doc)
            if i % 3 == 2:
                d = rewrite_json(rng, d)
            yield json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")


def validate(raw: bytes):
    return validate_certificate(raw)


def test_certificate_fuzz_8k_seeded():
    tally = run(_cert_inputs(N_CERT), validate, CertificateError, _cert_reason, KNOWN)
    assert tally.total == N_CERT
    assert tally.rejected > N_CERT // 2 and tally.accepted > 0


# --------------------------------------------------------------------------- registry
def _registry_inputs(n: int, seed: int = 7):
    rng = random.Random(seed)
    text = STATIONS_TOML.read_bytes()
    lines = text.split(b"\n")
    tokens = [b"1", b"-1e999", b"nan", b"\"\"", b"\"x\"", b"[]", b"{}", b"true", b"\"umol/mol\"",
              b"\"ZJ-NB-PP02\"", b"\"NOPE\"", b"0.0", b"[ { analyte = \"SO2\", unit = \"m\", span = -1 } ]"]
    for i in range(n):
        if i % 2:
            yield mutate(rng, text, max_len=200_000)
        else:  # line-level: drop, duplicate or re-value one line (keeps most TOML valid)
            ls = list(lines)
            j = rng.randrange(len(ls))
            op = rng.randrange(3)
            if op == 0:
                del ls[j]
            elif op == 1:
                ls.insert(j, ls[rng.randrange(len(ls))])
            elif b"=" in ls[j]:
                ls[j] = ls[j].split(b"=")[0] + b"= " + rng.choice(tokens)
            else:
                ls[j] = rng.choice([b"bogus = 1", b"[[stations]]", b"[[analyzers]]", b"[x]"])
            yield b"\n".join(ls)


def test_registry_fuzz_2k_seeded():
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "registry.toml"

        def load(raw: bytes):
            path.write_bytes(raw)
            return load_registry(path)

        tally = run(_registry_inputs(N_REGISTRY), load, RegistryError, str, KNOWN)
    assert tally.total == N_REGISTRY
    assert tally.rejected > N_REGISTRY // 4 and tally.accepted > 0
