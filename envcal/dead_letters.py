"""Dead letters exactly once: the identity of one MQTT delivery, and the insert that uses it.

A message that cannot be accepted is stored raw in ``dead_letter`` and acknowledged. If the
worker dies after the commit and before the PUBACK, the broker sends the message again when
the session resumes — with the same packet identifier and the DUP flag set (MQTT 5.0
§3.3.1.1, §4.4). Readings absorb such a redelivery by their natural key; a dead letter has
none, so it gets one: ``delivery_key = sha256(receiving client, packet id, topic, payload)``.

- A redelivery (DUP = 1) whose key is stored inserts nothing (``ON CONFLICT DO NOTHING``).
- A first delivery (DUP = 0) always inserts. Packet ids are reused once acknowledged, so
  an older row may hold the same key (same client, bytes and, 65535 messages later, the same
  packet id); it gives its key up first (set to NULL). Two distinct bad messages with the
  same bytes are therefore always two rows.
- Without a packet id (QoS 0, :meth:`envcal.ingest.IngestCore.ingest`) the key is NULL and
  never collides.

Bounded storage: a dead letter keeps the first :data:`PAYLOAD_PREFIX` bytes of the payload
plus the whole payload's size and SHA-256 (``payload_size``, ``payload_sha256``), so a
flood of oversized messages cannot fill the database while each message stays identifiable.

Retained messages: a broker hands a retained message to every new subscription (RETAIN
flag set, MQTT 5.0 §3.3.1.3), i.e. at every reconnect of a clean session or subscribe. A
retained delivery whose topic and payload hash are already dead-lettered inserts nothing.

Limitation: a broker that hands an unacknowledged message of an *expired* session to
another member of a shared-subscription group (MQTT 5.0 §4.8.2 allows it; Mosquitto keeps
it in the session) uses another client and packet id: that copy is a second row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

#: Bytes of a dead letter's payload kept in the table [bytes].
PAYLOAD_PREFIX = 4096


def bounded_payload(payload: bytes, limit: int = PAYLOAD_PREFIX) -> dict:
    """The stored form of a dead letter's payload: a prefix, the size and the SHA-256.

    Parameters
    ----------
    payload : bytes
        The whole received payload.
    limit : int, default PAYLOAD_PREFIX
        Bytes kept [bytes].

    Returns
    -------
    dict
        ``payload`` (at most ``limit`` bytes), ``payload_size`` [bytes], ``payload_sha256``.

    References
    ----------
    FIPS 180-4 (SHA-256).
    """
    b = bytes(payload)
    return {"payload": b[:limit], "payload_size": len(b),
            "payload_sha256": hashlib.sha256(b).hexdigest()}


def delivery_key(receiver: str, mid: int | None, topic: str, payload: bytes) -> str | None:
    """The identity of one MQTT delivery (None without a packet id).

    Parameters
    ----------
    receiver : str
        The receiving MQTT client (its session), e.g. ``client_id@group``.
    mid : int or None
        MQTT packet identifier (0 or None: QoS 0, no identity).
    topic : str
    payload : bytes

    Returns
    -------
    str or None
        64 hex digits.

    References
    ----------
    OASIS MQTT Version 5.0, §2.2.1 (packet identifier), §3.3.1.1 (DUP flag), §4.4
    (message delivery retry).
    """
    if not mid:
        return None
    h = hashlib.sha256()
    for part in (receiver.encode(), str(int(mid)).encode(), topic.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(bytes(payload))
    return h.hexdigest()


def store_dead_letters(conn: sa.Connection, insert, table: sa.Table, rows: Sequence[dict],
                       redelivered: Sequence[bool], retained: Sequence[bool] | None = None) -> int:
    """Insert dead-letter rows exactly once per MQTT delivery.

    Parameters
    ----------
    conn : Connection
        Inside the batch's transaction.
    insert : callable
        The dialect's ``insert`` (``sqlalchemy.dialects.<db>.insert``).
    table : Table
        ``dead_letter``.
    rows : sequence of dict
        Column values, ``delivery_key`` included (may be None).
    redelivered : sequence of bool
        The MQTT DUP flag of each row's message.
    retained : sequence of bool, optional
        The MQTT RETAIN flag of each row's message: such a row is skipped when a dead letter
        with the same topic and payload hash exists.

    Notes
    -----
    ``payload`` is stored bounded (:func:`bounded_payload`) unless the row already carries
    ``payload_sha256`` (then it is taken as already bounded).

    Returns
    -------
    int
        Rows inserted.
    """
    rows = [dict(r) for r in rows]
    for r in rows:
        if r.get("payload_sha256") is None:
            r.update(bounded_payload(r["payload"]))
    if retained is not None and any(retained):
        keep = []
        for r, dup, ret in zip(rows, redelivered, retained, strict=True):
            if ret and conn.execute(sa.select(table.c.id).where(
                    table.c.payload_sha256 == r["payload_sha256"], table.c.topic == r["topic"])
                    .limit(1)).first() is not None:
                continue  # this retained message is dead-lettered already
            keep.append((r, dup))
        rows = [r for r, _ in keep]
        redelivered = [d for _, d in keep]
    # a first delivery: an older row with the same key was a different message (reused
    # packet id); within one batch too, the key stays with the last first delivery
    seen: set[str] = set()
    for r, dup in zip(reversed(rows), reversed(redelivered), strict=True):
        k = r.get("delivery_key")
        if k is not None and not dup:
            if k in seen:
                r["delivery_key"] = None
            seen.add(k)
    first = sorted({r["delivery_key"] for r, dup in zip(rows, redelivered, strict=True)
                    if not dup and r.get("delivery_key") is not None})
    if first:
        conn.execute(table.update().where(table.c.delivery_key.in_(first)).values(delivery_key=None))
    stmt = insert(table).on_conflict_do_nothing(index_elements=["delivery_key"]).returning(table.c.id)
    n = 0
    for r in rows:  # dead letters are rare: one statement each, RETURNING counts them
        n += conn.execute(stmt, r).first() is not None
    return n


# --------------------------------------------------------------------------- gateway refusals
#: Topic on which ``envcal gateway`` hands its refusals (bad CRC, unknown MN, wrong PW, ...)
#: to ingest, which stores them as dead letters (the gateway has no database of its own).
GATEWAY_TOPIC = "envcal/gateway/deadletter"
_GATEWAY_KEYS = frozenset({"peer", "reason", "raw_b64", "mn", "analyzer_id", "received_at"})


@dataclass(frozen=True, slots=True)
class GatewayDeadLetter:
    """One refusal of the HJ 212 gateway: the raw bytes, who sent them and why."""

    peer: str
    reason: str
    raw: bytes
    mn: str | None = None
    analyzer_id: str | None = None
    received_at: str | None = None  # ISO 8601 UTC, as the gateway saw it


def encode_gateway_dead_letter(d: GatewayDeadLetter) -> bytes:
    """The JSON payload of a gateway refusal on :data:`GATEWAY_TOPIC`.

    Parameters
    ----------
    d : GatewayDeadLetter

    Returns
    -------
    bytes
        ``{"peer", "reason", "raw_b64", "mn", "analyzer_id", "received_at"}`` as UTF-8 JSON
        (the raw bytes base64-encoded: they may be anything a TCP peer sent).
    """
    return json.dumps({"peer": d.peer, "reason": d.reason,
                       "raw_b64": base64.b64encode(d.raw).decode("ascii"), "mn": d.mn,
                       "analyzer_id": d.analyzer_id, "received_at": d.received_at},
                      ensure_ascii=False).encode("utf-8")


def decode_gateway_dead_letter(payload: bytes) -> GatewayDeadLetter:
    """Parse a payload written by :func:`encode_gateway_dead_letter` (strictly).

    Raises
    ------
    ValueError
        Not JSON, not an object, unknown or missing keys, bad base64, wrong types.
    """
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"gateway dead letter is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("gateway dead letter must be a JSON object")
    unknown = set(obj) - _GATEWAY_KEYS
    if unknown:
        raise ValueError(f"gateway dead letter: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("peer", "reason", "raw_b64"):
        if not isinstance(obj.get(key), str):
            raise ValueError(f"gateway dead letter: {key} must be a string")
    for key in ("mn", "analyzer_id", "received_at"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"gateway dead letter: {key} must be a string or null")
    try:
        raw = base64.b64decode(obj["raw_b64"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("gateway dead letter: raw_b64 is not base64") from None
    return GatewayDeadLetter(peer=obj["peer"][:128], reason=obj["reason"], raw=raw,
                             mn=obj.get("mn"), analyzer_id=(obj.get("analyzer_id") or None),
                             received_at=obj.get("received_at"))
