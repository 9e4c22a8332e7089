"""Gateway refusals as dead letters: the JSON codec and ingest storing them (peer, raw bytes)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from envcal.dead_letters import (
    GATEWAY_TOPIC,
    GatewayDeadLetter,
    decode_gateway_dead_letter,
    encode_gateway_dead_letter,
)
from envcal.ingest import IngestCore


def test_gateway_dead_letter_roundtrip_any_bytes():
    d = GatewayDeadLetter(peer="10.0.0.7:40112", reason="bad CRC: frame says 0000, computed 1C80",
                          raw=bytes(range(256)), mn="33040000000001", analyzer_id="JX-PP01-CEMS",
                          received_at="2026-12-03T08:00:00+00:00")
    assert decode_gateway_dead_letter(encode_gateway_dead_letter(d)) == d


@pytest.mark.parametrize("payload, why", [
    (b"\xff", "not UTF-8 JSON"), (b"[]", "JSON object"),
    (json.dumps({"peer": "p", "reason": "r", "raw_b64": "!!"}).encode(), "not base64"),
    (json.dumps({"peer": "p", "reason": "r", "raw_b64": "", "x": 1}).encode(), "unknown key"),
    (json.dumps({"peer": 1, "reason": "r", "raw_b64": ""}).encode(), "peer must be a string"),
])
def test_gateway_dead_letter_strict(payload, why):
    with pytest.raises(ValueError, match=why):
        decode_gateway_dead_letter(payload)


def test_ingest_stores_gateway_refusal_with_peer(engine, registry):
    from envcal.registry import sync_registry

    sync_registry(engine, registry)
    core = IngestCore(engine, registry)
    raw = b"##0010garbage\r\n"
    ok = encode_gateway_dead_letter(GatewayDeadLetter(peer="10.0.0.7:40112", reason="unknown MN",
                                                      raw=raw, analyzer_id="JX-PP01-CEMS"))
    bad = b'{"peer": "x"}'
    r = core.ingest([(GATEWAY_TOPIC, ok), (GATEWAY_TOPIC, bad)])
    assert r.dead_letters == 2
    with engine.connect() as c:
        rows = c.execute(sa.text("select payload, reason, peer, analyzer_id from dead_letter order by id")).all()
    assert (rows[0].payload, rows[0].reason, rows[0].peer, rows[0].analyzer_id) == (
        raw, "gateway: unknown MN", "10.0.0.7:40112", "JX-PP01-CEMS")
    assert rows[1].payload == bad and rows[1].peer is None and "must be a string" in rows[1].reason
