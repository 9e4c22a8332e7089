"""MQTT ingest: analyzer messages -> validated rows in the hot store, bad input -> dead letters.

Data flow (one direction)::

    broker --on_message (enqueue only)--> queue --worker thread--> decode + validate
        --> one transaction per batch (readings, dead letters, data gaps, frames,
            check summaries, ingest log) --> PUBACK in receive order --> on_commit hooks

A message is acknowledged only after its rows are committed (QoS 1, manual ack), so a
crash loses nothing; natural unique keys make a redelivery insert nothing new. Bad input
never stops the service: the raw payload, topic and reason go to ``dead_letter`` and the
message is acknowledged.

Topics (DESIGN.md section 4): ``envcal/{station}/{analyzer}/data`` (JSON v1 readings),
``.../hj212`` (one HJ 212 frame), ``.../check`` (check summary JSON), ``.../status``
(``online`` / ``offline``; kept in memory only, see :attr:`IngestService.status`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.dead_letters import delivery_key, store_dead_letters
from envcal.protocols import json_v1
from envcal.protocols.records import CHECK_KINDS, CHECK_PHASES, ProtocolError
from envcal.registry import AnalyzerSpec, Registry

log = logging.getLogger("envcal.ingest")

#: Largest accepted payload [bytes]; larger messages are dead-lettered.
MAX_PAYLOAD = 64 * 1024
#: Readings further in the future than this are rejected.
MAX_FUTURE = dt.timedelta(minutes=10)
#: Topic kinds the service subscribes to (``envcal/+/+/{kind}``).
TOPIC_KINDS = ("data", "hj212", "check", "status")
#: Default MQTT session expiry [s]: queued messages survive a week of downtime.
SESSION_EXPIRY_S = 7 * 24 * 3600

OnCommit = Callable[[list[tuple[str, str]], list[int]], None]

_READING_COLS = ("analyzer_id", "analyte", "ts", "value", "flag", "seq", "check_id",
                 "check_kind", "check_phase", "material", "received_at")
# column length limits of the reading table (PostgreSQL enforces them; SQLite does not)
_MAXLEN = {"check_id": 128, "material": 128, "flag": 2}


class Rejected(Exception):
    """A message that is dead-lettered; ``str(exc)`` is the reason."""


def topics(group: str | None = None) -> list[str]:
    """The subscription filters of the ingest service.

    Parameters
    ----------
    group : str, optional
        MQTT v5 shared-subscription group; filters become ``$share/{group}/envcal/+/+/data``
        and so on, so several workers share the load.

    Returns
    -------
    list of str
    """
    base = [f"envcal/+/+/{k}" for k in TOPIC_KINDS]
    if group:
        if "/" in group or "+" in group or "#" in group:
            raise ValueError(f"invalid shared-subscription group name {group!r}")
        return [f"$share/{group}/{t}" for t in base]
    return base


@dataclass(slots=True)
class Message:
    """One received MQTT message waiting for the worker."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 0
    generation: int = 0  # connection the message arrived on (acks never cross a reconnect)
    dup: bool = False  # MQTT DUP flag: a redelivery by the broker (envcal.dead_letters)


class _Parsed:
    """What one message contributes to a batch (a plain slotted class: one per message)."""

    __slots__ = ("msg", "analyzer_id", "readings", "seqs", "frames", "summaries", "ended", "dead")

    def __init__(self, msg: Message, analyzer_id: str | None = None) -> None:
        self.msg = msg
        self.analyzer_id = analyzer_id
        self.readings: list[tuple] = []  # in _READING_COLS order
        self.seqs: list[tuple[int, dt.datetime]] = []
        self.frames: list[dict] = []
        self.summaries: list[dict] = []
        self.ended: list[tuple[str, str]] = []
        self.dead: dict | None = None


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one committed batch did."""

    messages: int
    rows: int
    duplicates: int
    dead_letters: int
    gaps: int
    summary_ids: tuple[int, ...]
    ended_checks: tuple[tuple[str, str], ...]
    seconds: float


def sqlite_utc_text(value: dt.datetime) -> str:
    """An aware datetime as the UTC text SQLAlchemy stores in SQLite (``UTCDateTime``).

    Parameters
    ----------
    value : datetime.datetime
        Timezone-aware.

    Returns
    -------
    str
        ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, the format of SQLAlchemy's SQLite ``DATETIME``
        (so unique keys and comparisons agree with rows written through the ORM).

    Raises
    ------
    ValueError
        A naive datetime (as :class:`envcal.db.UTCDateTime` does).
    """
    tz = value.tzinfo
    if tz is not dt.UTC:
        if tz is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: envcal stores only timezone-aware times")
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise ValueError(f"unsupported database dialect {dialect!r}")
    return insert


class IngestCore:
    """Decode, validate and store messages (no MQTT here: bytes and topics in, rows out).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        A migrated database with the registry synced (:func:`envcal.registry.sync_registry`).
    registry : Registry
        Stations and analyzers; a message from an analyzer not in it is dead-lettered.
    worker : str
        Name written to ``ingest_log.worker``.
    max_payload : int
        Largest accepted payload [bytes].
    max_future : datetime.timedelta
        Readings stamped later than now + ``max_future`` are dead-lettered.
    detect_gaps : bool
        Record ``seq`` gaps as ``data_gap`` rows. Only meaningful when this worker sees every
        message of an analyzer, i.e. not in a shared-subscription group.
    """

    def __init__(self, engine: Engine, registry: Registry, *, worker: str = "envcal-ingest",
                 max_payload: int = MAX_PAYLOAD, max_future: dt.timedelta = MAX_FUTURE,
                 detect_gaps: bool = True) -> None:
        from envcal import models

        self.engine = engine
        self.registry = registry
        self.worker = worker
        self.max_payload = max_payload
        self.max_future = max_future
        self.detect_gaps = detect_gaps
        self.status: dict[str, tuple[str, dt.datetime]] = {}
        self._insert = _insert(engine.dialect.name)
        self._t_reading = models.Reading.__table__
        self._t_dead = models.DeadLetter.__table__
        self._t_gap = models.DataGap.__table__
        self._t_frame = models.Hj212Frame.__table__
        self._t_summary = models.CheckSummaryRecord.__table__
        self._t_log = models.IngestLog.__table__
        self._prepare_reading_insert()
        self._channels = {a.id: {c.analyte for c in a.channels} for a in registry.analyzers.values()}
        self._codes = {a.id: {c.code: c.analyte for c in a.channels if c.code}
                       for a in registry.analyzers.values()}
        self._topics: dict[str, tuple[AnalyzerSpec, str]] = {}
        self.last_seq: dict[str, tuple[int, dt.datetime | None]] = {}
        self._seed_seq()

    # ------------------------------------------------------------------ state
    def _seed_seq(self) -> None:
        """Last seq per analyzer from the hot store (so a restart does not invent gaps)."""
        r = self._t_reading
        with self.engine.connect() as conn:
            sub = (sa.select(r.c.analyzer_id, sa.func.max(r.c.seq).label("mx"))
                   .where(r.c.seq.is_not(None)).group_by(r.c.analyzer_id).subquery())
            rows = conn.execute(
                sa.select(sub.c.analyzer_id, sub.c.mx, sa.func.max(r.c.ts))
                .join(r, sa.and_(r.c.analyzer_id == sub.c.analyzer_id, r.c.seq == sub.c.mx))
                .group_by(sub.c.analyzer_id, sub.c.mx)).all()
            g = self._t_gap
            gaps = conn.execute(sa.select(g.c.analyzer_id, sa.func.max(g.c.seq_after), sa.func.max(g.c.ts_after))
                                .group_by(g.c.analyzer_id)).all()
        for aid, seq, ts in rows:
            self.last_seq[aid] = (int(seq), ts)
        for aid, seq, ts in gaps:
            if seq is not None and (aid not in self.last_seq or self.last_seq[aid][0] < seq):
                self.last_seq[aid] = (int(seq), ts)

    def _prepare_reading_insert(self) -> None:
        """The hot path: one multi-row ``INSERT ... VALUES (...), ... ON CONFLICT DO NOTHING``.

        The statement is the one SQLAlchemy renders for ``dialects.<db>.insert(reading)
        .on_conflict_do_nothing()``, with the VALUES group repeated per row; parameters go
        through the columns' own SQLAlchemy bind processors (so times are stored exactly as
        the ORM stores them) but skip SQLAlchemy's per-row parameter machinery, which cost
        more than the database work (see benchmarks/bench_ingest.py).
        """
        d = self.engine.dialect
        t = self._t_reading
        one = (self._insert(t).values({c: sa.bindparam(c) for c in _READING_COLS})
               .on_conflict_do_nothing())
        if d.name != "sqlite":
            one = one.returning(t.c.id)
        sql = str(one.compile(dialect=d, compile_kwargs={"render_postcompile": True}))
        head, _, rest = sql.partition(" VALUES ")
        depth, end = 0, 0
        for i, ch in enumerate(rest):  # the first parenthesised group is the row
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                end = i + 1
                break
        group, tail = rest[:end], rest[end:]
        if d.paramstyle in ("pyformat", "format"):
            positional = re.sub(r"%\(\w+\)s", "%s", group)  # keeps the ::TYPE casts
        elif d.paramstyle == "qmark":
            positional = group
        else:  # pragma: no cover - SQLite (qmark) and psycopg (pyformat) only
            raise ValueError(f"unsupported DBAPI paramstyle {d.paramstyle!r}")
        self._sql_head, self._sql_group, self._sql_tail = head + " VALUES ", positional, tail
        # SQLite: one prepared single-row statement run by executemany (the sqlite3 module
        # keeps it compiled; its rowcount is the number of rows inserted). PostgreSQL: one
        # multi-row statement whose RETURNING rows count the new ones.
        self._executemany = d.name == "sqlite"
        self._sql_one = head + " VALUES " + positional + tail
        procs = [t.c[c].type.dialect_impl(d).bind_processor(d) for c in _READING_COLS]
        # SQLite stores times as text: format them in C, to the very string SQLAlchemy's
        # processors make (tests/test_ingest.py proves equality for any aware datetime)
        self._ts_proc = sqlite_utc_text if d.name == "sqlite" else procs[2] or (lambda v: v)
        self._value_proc = procs[3] or (lambda v: v)
        self._other_procs = [(i, f) for i, f in enumerate(procs)
                             if f is not None and i not in (2, 3, 10)]
        # SQLite allows 32766 bound values per statement, PostgreSQL 65535
        self._chunk = 32000 // len(_READING_COLS) if d.name == "sqlite" else 65000 // len(_READING_COLS)

    def _insert_readings(self, conn: sa.Connection, rows: Sequence[tuple]) -> int:
        """Insert reading tuples (``_READING_COLS`` order); return how many were new."""
        out: list = []
        ts_proc = self._ts_proc
        v_proc = self._value_proc
        others = self._other_procs
        seen_in = seen_out = None
        many = self._executemany
        add = out.append if many else out.extend
        for r in rows:
            if others:
                r = list(r)
                for i, f in others:
                    r[i] = f(r[i])
            rec = r[10]
            if rec is not seen_in:  # one received_at per batch: convert it once
                seen_in, seen_out = rec, ts_proc(rec)
            add((r[0], r[1], ts_proc(r[2]), v_proc(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], seen_out))
        if many:
            return conn.exec_driver_sql(self._sql_one, out).rowcount
        sql = self._sql_head + ", ".join([self._sql_group] * len(rows)) + self._sql_tail
        return len(conn.exec_driver_sql(sql, tuple(out)).all())

    # ------------------------------------------------------------------ parsing
    def parse(self, msg: Message, now: dt.datetime) -> _Parsed:
        """Decode and validate one message; a bad one comes back as a dead letter."""
        p = _Parsed(msg)
        try:
            self._parse(msg, p, now)
        except (Rejected, ProtocolError) as exc:
            return self._dead(msg, p.analyzer_id, str(exc) or exc.__class__.__name__, now)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the service
            log.exception("unexpected error decoding %s", msg.topic)
            return self._dead(msg, p.analyzer_id, f"internal error while decoding: "
                              f"{exc.__class__.__name__}: {exc}", now)
        return p

    def _dead(self, msg: Message, analyzer_id: str | None, reason: str, now: dt.datetime) -> _Parsed:
        p = _Parsed(msg, analyzer_id)
        p.dead = {"received_at": now, "topic": msg.topic[:1024], "payload": bytes(msg.payload),
                  "reason": reason, "analyzer_id": analyzer_id, "mqtt_mid": msg.mid or None,
                  "delivery_key": delivery_key(self.worker, msg.mid, msg.topic, msg.payload)}
        return p

    def _analyzer(self, msg: Message, p: _Parsed) -> tuple[AnalyzerSpec, str]:
        hit = self._topics.get(msg.topic)
        if hit is not None:  # a topic that passed the checks below before (registry is fixed)
            p.analyzer_id = hit[0].id
            return hit
        parts = msg.topic.split("/")
        if len(parts) != 4 or parts[0] != "envcal" or parts[3] not in TOPIC_KINDS:
            raise Rejected(f"unexpected topic {msg.topic!r} (want envcal/{{station}}/{{analyzer}}/"
                           f"{{{'|'.join(TOPIC_KINDS)}}})")
        _, station, aid, kind = parts
        p.analyzer_id = aid[:64]  # named in the dead letter even when unknown
        a = self.registry.analyzers.get(aid)
        if a is None:
            raise Rejected(f"unknown analyzer {aid!r} (not in the station registry)")
        if a.station != station:
            raise Rejected(f"analyzer {aid!r} belongs to station {a.station!r}, "
                           f"not {station!r} as the topic says")
        self._topics[msg.topic] = (a, kind)  # at most 4 valid topics per registered analyzer
        return a, kind

    def _parse(self, msg: Message, p: _Parsed, now: dt.datetime) -> None:
        if len(msg.payload) > self.max_payload:
            # name the analyzer where the topic allows, but never decode an oversized payload
            try:
                self._analyzer(msg, p)
            except Rejected:
                pass
            raise Rejected(f"oversized payload: {len(msg.payload)} bytes > {self.max_payload} bytes")
        a, kind = self._analyzer(msg, p)
        if kind == "data":
            recs = json_v1.decode_readings(msg.payload, now=now, max_future=self.max_future)
            self._readings(a, recs, p, now)
        elif kind == "hj212":
            self._hj212(a, msg, p, now)
        elif kind == "check":
            s = json_v1.decode_check_summary(msg.payload)
            self._summaries(a, [s], p, now)
        else:
            self._status(a, msg, now)

    def _readings(self, a: AnalyzerSpec, recs: Sequence, p: _Parsed, now: dt.datetime) -> None:
        channels = self._channels[a.id]
        limit = now + self.max_future
        rows = p.readings
        aid = a.id
        for rec in recs:
            ts = rec.ts
            if ts.tzinfo is None:
                raise Rejected(f"timestamp {ts.isoformat()} has no UTC offset")
            if ts > limit:
                raise Rejected(f"timestamp {ts.isoformat()} is more than {self.max_future} in the future "
                               f"(received {now.isoformat()})")
            chk = rec.check
            if chk is not None:
                if chk.kind not in CHECK_KINDS or chk.phase not in CHECK_PHASES:
                    raise Rejected(f"invalid check block kind={chk.kind!r} phase={chk.phase!r}")
                if not chk.id or len(chk.id) > _MAXLEN["check_id"]:
                    raise Rejected(f"check id must be 1..{_MAXLEN['check_id']} characters")
                if chk.material and len(chk.material) > _MAXLEN["material"]:
                    raise Rejected(f"material longer than {_MAXLEN['material']} characters")
                cid, ckind, cphase, mat = chk.id, chk.kind, chk.phase, chk.material or None
                if cphase == "end" and (aid, cid) not in p.ended:
                    p.ended.append((aid, cid))
            else:
                cid = ckind = cphase = mat = None
            flags = rec.flags
            seq = rec.seq
            if not rec.values:
                raise Rejected("reading has no values")
            for analyte, value in rec.values.items():
                if analyte not in channels:
                    raise Rejected(f"unknown analyte {analyte!r} for analyzer {aid!r} "
                                   f"(channels: {', '.join(sorted(channels))})")
                flag = flags.get(analyte, "N") if flags else "N"
                if len(flag) > _MAXLEN["flag"]:
                    raise Rejected(f"invalid data flag {flag!r} for {analyte}")
                # positional, in _READING_COLS order
                rows.append((aid, analyte, ts, value, flag, seq, cid, ckind, cphase, mat, now))
            if seq is not None:
                p.seqs.append((seq, ts))

    def _hj212(self, a: AnalyzerSpec, msg: Message, p: _Parsed, now: dt.datetime) -> None:
        from envcal.protocols import hj212

        frame = hj212.decode_frame(msg.payload)
        if a.mn is None:
            raise Rejected(f"analyzer {a.id!r} has no HJ 212 MN in the registry")
        if frame.mn != a.mn:
            raise Rejected(f"HJ 212 MN {frame.mn!r} does not match analyzer {a.id!r} (MN {a.mn!r})")
        if a.pw is not None and frame.pw != a.pw:
            raise Rejected(f"HJ 212 access password (PW) does not match analyzer {a.id!r}")
        raw = frame.raw if isinstance(frame.raw, str) else bytes(frame.raw).decode("utf-8", "replace")
        p.frames.append({"analyzer_id": a.id, "received_at": now, "qn": frame.qn, "cn": str(frame.cn),
                         "mn": frame.mn, "raw": raw,
                         "sha256": hashlib.sha256(bytes(msg.payload)).hexdigest()})
        codes = self._codes[a.id]
        if frame.cn in hj212.DATA_CNS:
            self._readings(a, hj212.frame_to_records(frame, codes), p, now)
        elif frame.cn == hj212.CHECK_CN:
            self._summaries(a, hj212.frame_to_check_summary(frame, codes), p, now)

    def _summaries(self, a: AnalyzerSpec, sums: Iterable, p: _Parsed, now: dt.datetime) -> None:
        channels = self._channels[a.id]
        for s in sums:
            if s.analyte not in channels:
                raise Rejected(f"unknown analyte {s.analyte!r} for analyzer {a.id!r} "
                               f"(channels: {', '.join(sorted(channels))})")
            if s.kind not in CHECK_KINDS:
                raise Rejected(f"invalid check kind {s.kind!r} (one of {', '.join(CHECK_KINDS)})")
            if not s.id or len(s.id) > _MAXLEN["check_id"]:
                raise Rejected(f"check id must be 1..{_MAXLEN['check_id']} characters")
            if s.material and len(s.material) > _MAXLEN["material"]:
                raise Rejected(f"material longer than {_MAXLEN['material']} characters")
            for t in (s.start, s.end):
                if t.tzinfo is None:
                    raise Rejected(f"check time {t.isoformat()} has no UTC offset")
            if s.end > now + self.max_future:
                raise Rejected(f"check end {s.end.isoformat()} is more than {self.max_future} in the future")
            if s.end < s.start:
                raise Rejected(f"check ends ({s.end.isoformat()}) before it starts ({s.start.isoformat()})")
            verdict = None if s.device_verdict is None else str(s.device_verdict)[:32]
            p.summaries.append({"analyzer_id": a.id, "check_id": s.id, "kind": s.kind,
                                "analyte": s.analyte, "start": s.start, "end": s.end,
                                "material": s.material or None, "measured": s.measured,
                                "readings": list(s.readings), "standard_value": s.standard_value,
                                "device_verdict": verdict, "received_at": now})

    def _status(self, a: AnalyzerSpec, msg: Message, now: dt.datetime) -> None:
        try:
            text = bytes(msg.payload).decode("utf-8").strip().lower()
        except UnicodeDecodeError:
            raise Rejected("status payload is not UTF-8") from None
        if text not in ("online", "offline"):
            raise Rejected(f"status must be 'online' or 'offline', got {text[:40]!r}")
        self.status[a.id] = (text, now)

    # ------------------------------------------------------------------ storing
    def _gaps(self, parsed: Sequence[_Parsed], now: dt.datetime):
        """Data gaps of this batch and the new last-seq state (applied after commit)."""
        state: dict[str, tuple[int, dt.datetime | None]] = {}
        gaps: list[dict] = []
        if not self.detect_gaps:
            return gaps, state
        last = self.last_seq
        for p in parsed:
            if not p.seqs:
                continue
            aid = p.analyzer_id
            prev = state.get(aid) or last.get(aid)
            for seq, ts in p.seqs:
                if prev is None:
                    prev = (seq, ts)
                elif seq > prev[0]:
                    if seq > prev[0] + 1:
                        gaps.append({"analyzer_id": aid, "seq_before": prev[0], "seq_after": seq,
                                     "missing": seq - prev[0] - 1, "ts_before": prev[1],
                                     "ts_after": ts, "detected_at": now})
                    prev = (seq, ts)
                elif prev[1] is not None and ts > prev[1] and seq < prev[0]:
                    # newer data with a smaller seq: the device restarted its counter
                    log.info("analyzer %s restarted its seq counter (%d after %d)", aid, seq, prev[0])
                    prev = (seq, ts)
                # else: a duplicate or redelivery, not a gap
            state[aid] = prev
        return gaps, state

    def commit(self, parsed: Sequence[_Parsed], now: dt.datetime | None = None) -> CommitResult:
        """Store one batch in one transaction.

        Parameters
        ----------
        parsed : sequence of _Parsed
            Output of :meth:`parse`, in receive order.
        now : datetime, optional
            Commit time (UTC) for the ingest log and data gaps.

        Returns
        -------
        CommitResult
        """
        t0 = time.perf_counter()
        now = now or dt.datetime.now(dt.UTC)
        readings: list[dict] = []
        dead, frames, summaries, ended = [], [], [], []
        for p in parsed:
            if p.dead is not None:
                dead.append(p.dead)
                continue
            readings.extend(p.readings)
            frames.extend(p.frames)
            summaries.extend(p.summaries)
            for e in p.ended:
                if e not in ended:
                    ended.append(e)
        gaps, state = self._gaps(parsed, now)
        ins = self._insert
        inserted = n_dead = 0
        summary_ids: list[int] = []
        with self.engine.begin() as conn:
            for i in range(0, len(readings), self._chunk):
                inserted += self._insert_readings(conn, readings[i:i + self._chunk])
            if dead:  # exactly once per MQTT delivery (envcal.dead_letters)
                n_dead = store_dead_letters(conn, ins, self._t_dead, dead,
                                            [p.msg.dup for p in parsed if p.dead is not None])
            if gaps:
                conn.execute(ins(self._t_gap).on_conflict_do_nothing(), gaps)
            if frames:
                conn.execute(ins(self._t_frame).on_conflict_do_nothing(), frames)
            if summaries:
                res = conn.execute(ins(self._t_summary).on_conflict_do_nothing()
                                   .returning(self._t_summary.c.id), summaries)
                summary_ids = [r[0] for r in res]
            seconds = time.perf_counter() - t0
            conn.execute(sa.insert(self._t_log), [{
                "committed_at": now, "worker": self.worker[:128], "messages": len(parsed),
                "rows": inserted, "duplicates": len(readings) - inserted,
                "dead_letters": n_dead, "seconds": seconds}])
        self.last_seq.update(state)
        return CommitResult(len(parsed), inserted, len(readings) - inserted, n_dead, len(gaps),
                            tuple(summary_ids), tuple(ended), time.perf_counter() - t0)

    def ingest(self, messages: Iterable[Message | tuple[str, bytes]]) -> CommitResult:
        """Parse and store messages synchronously (one transaction; no MQTT involved).

        Parameters
        ----------
        messages : iterable of Message or (topic, payload)

        Returns
        -------
        CommitResult
        """
        now = dt.datetime.now(dt.UTC)
        msgs = [m if isinstance(m, Message) else Message(m[0], m[1]) for m in messages]
        return self.commit([self.parse(m, now) for m in msgs], now)


#: How often the ingest worker returns the C allocator's free memory to the OS [s].
TRIM_EVERY_S = 60.0
_LIBC: object = None


def release_free_heap() -> bool:
    """Return free memory of the C allocator to the operating system (glibc ``malloc_trim``).

    glibc keeps memory that Python and SQLite freed in its arenas; under a steady stream of
    messages an ingest process's RSS then creeps up for tens of minutes before it levels
    off (measured: +17 MB of free arena memory, while the Python heap stayed flat). Trimming
    every :data:`TRIM_EVERY_S` keeps RSS level. Elsewhere (musl, macOS) it does nothing.

    Returns
    -------
    bool
        True when glibc's ``malloc_trim`` was called.
    """
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


def _is_transient(exc: BaseException) -> bool:
    """Database errors worth retrying (connection lost, locked), as opposed to bad rows."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError))


class IngestService:
    """The MQTT ingest service: subscribe, validate, store, acknowledge after commit.

    Parameters
    ----------
    broker_url : str
        ``mqtt://host:port``.
    db_url : str or Engine
        Database URL (migrated, registry synced) or an existing engine.
    registry : Registry
        Stations and analyzers.
    client_id : str, default "envcal-ingest"
        Fixed MQTT client id: the broker keeps its persistent session (queued messages)
        across restarts of the service.
    group : str, optional
        Shared-subscription group (``$share/{group}/...``) for several workers (seq-gap
        detection is off then: no worker sees a whole stream).
    batch_size : int, default 500
        Messages per transaction at most.
    batch_seconds : float, default 0.2
        Longest wait [s] for a batch to fill before it is committed anyway.
    receive_maximum : int, optional
        MQTT v5 Receive Maximum (unacknowledged QoS 1 messages the broker may send);
        default ``2 * batch_size`` so one batch fills while the previous one commits.
    on_commit : callable or list of callables, optional
        ``f(ended_checks, summary_ids)`` after each commit: ``ended_checks`` is a list of
        ``(analyzer_id, check_id)`` whose ``phase == "end"`` reading arrived, ``summary_ids``
        the ids of new ``check_summary`` rows. More hooks can be appended to
        :attr:`on_commit` before :meth:`start`.
    session_expiry : int, default one week
        MQTT session expiry interval [s].
    max_payload : int, default 65536
        Largest accepted payload [bytes].
    username, password : str, optional
        MQTT credentials (see :mod:`envcal.mqtt_security`); the password is never logged.
    ca_file : str, optional
        PEM CA bundle trusted for an ``mqtts://`` broker (default: the system's CAs).
    """

    def __init__(self, broker_url: str, db_url: str | Engine, registry: Registry, *,
                 client_id: str = "envcal-ingest", group: str | None = None,
                 batch_size: int = 500, batch_seconds: float = 0.2,
                 receive_maximum: int | None = None,
                 on_commit: OnCommit | Sequence[OnCommit] | None = None,
                 session_expiry: int = SESSION_EXPIRY_S, max_payload: int = MAX_PAYLOAD,
                 keepalive: int = 30, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None) -> None:
        from envcal.broker import parse_broker_url
        from envcal.db import make_engine

        if batch_size < 1 or batch_seconds <= 0:
            raise ValueError("batch_size must be >= 1 and batch_seconds > 0")
        self.host, self.port, self.tls = parse_broker_url(broker_url)
        self.broker_url = broker_url
        self._own_engine = not isinstance(db_url, Engine)
        self.engine = make_engine(db_url) if self._own_engine else db_url
        self.registry = registry
        self.client_id = client_id
        self.group = group
        self.topics = topics(group)
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.receive_maximum = min(65535, receive_maximum or 2 * batch_size)
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.username = username
        self._password = password
        self.ca_file = ca_file
        if on_commit is None:
            self.on_commit: list[OnCommit] = []
        elif callable(on_commit):
            self.on_commit = [on_commit]
        else:
            self.on_commit = list(on_commit)
        worker = client_id + (f"@{group}" if group else "")
        # in a shared group each worker sees only part of an analyzer's stream: its seq
        # numbers are not contiguous there, so gaps are not detected per worker
        self.core = IngestCore(self.engine, registry, worker=worker, max_payload=max_payload,
                               detect_gaps=group is None)
        self.ready = threading.Event()  # set when subscribed
        self.connected = threading.Event()
        self.totals = {"messages": 0, "rows": 0, "duplicates": 0, "dead_letters": 0, "gaps": 0,
                       "batches": 0}
        self._q: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._gen = 0
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._worker: threading.Thread | None = None
        self._client = None
        self.error: BaseException | None = None

    @property
    def status(self) -> dict[str, tuple[str, dt.datetime]]:
        """Last ``online``/``offline`` status per analyzer (in memory only)."""
        return self.core.status

    # ------------------------------------------------------------------ MQTT callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self.broker_url, reason_code)
            return
        self._gen += 1
        log.info("connected to %s (session present: %s)", self.broker_url, flags.session_present)
        self.connected.set()
        from paho.mqtt.subscribeoptions import SubscribeOptions

        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("subscription refused: %s", ", ".join(bad))
            return
        self.ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from %s (%s); reconnecting", self.broker_url, reason_code)

    def _on_message(self, client, userdata, m) -> None:
        # enqueue only: the worker decodes, stores and acknowledges
        self._q.put(Message(m.topic, m.payload, m.mid, m.qos, self._gen, bool(m.dup)))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> IngestService:
        """Connect (in the background, retrying with back-off) and start the worker."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from envcal.mqtt_client import BufferedClient

        c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        if self.tls:
            c.tls_set(ca_certs=self.ca_file)
        if self.username is not None:
            c.username_pw_set(self.username, self._password)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = self.receive_maximum
        c.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=False,
                        properties=props)
        self._client = c
        self._worker = threading.Thread(target=self._work, name="envcal-ingest-worker", daemon=True)
        self._worker.start()
        c.loop_start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch (commit, ack), then disconnect. Safe to call twice."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
        c = self._client
        if c is not None:
            c.disconnect()
            c.loop_stop()
            self._client = None
        if self._own_engine:
            self.engine.dispose()
        self._stopped.set()

    def run(self) -> None:
        """Start and block until :meth:`stop` is called (e.g. from a signal handler)."""
        self.start()
        self._stop.wait()
        self.stop()

    def __enter__(self) -> IngestService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ worker
    def _next_batch(self) -> list[Message]:
        q = self._q
        try:
            first = q.get(timeout=0.05)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_seconds
        size = self.batch_size
        while len(batch) < size:
            try:
                batch.append(q.get_nowait())
                continue
            except queue.Empty:
                pass
            if self._stop.is_set():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(q.get(timeout=min(remaining, 0.05)))
            except queue.Empty:
                pass
        return batch

    def _work(self) -> None:
        trim_at = time.monotonic() + TRIM_EVERY_S
        while True:
            stopping = self._stop.is_set()
            if time.monotonic() >= trim_at:  # a long-running service: give freed heap back
                release_free_heap()
                trim_at = time.monotonic() + TRIM_EVERY_S
            batch = self._next_batch()
            if batch:
                try:
                    self._handle(batch)
                except Exception as exc:  # noqa: BLE001 - keep serving; unacked messages come back
                    log.exception("batch of %d messages not stored; they stay unacknowledged", len(batch))
                    self.error = exc
            elif stopping:
                return

    def _handle(self, batch: list[Message]) -> None:
        now = dt.datetime.now(dt.UTC)
        core = self.core
        parsed = [core.parse(m, now) for m in batch]
        results = self._commit(parsed, now)
        if results is None:
            return  # stopping while the database is unreachable: leave them unacked
        c = self._client
        gen = self._gen
        if c is not None:  # one write for the batch; never ack across a reconnect
            c.ack_many([(m.mid, m.qos) for m in batch if m.qos and m.generation == gen])
        for r in results:
            t = self.totals
            t["messages"] += r.messages
            t["rows"] += r.rows
            t["duplicates"] += r.duplicates
            t["dead_letters"] += r.dead_letters
            t["gaps"] += r.gaps
            t["batches"] += 1
            if self.on_commit:
                ended, ids = list(r.ended_checks), list(r.summary_ids)
                for hook in self.on_commit:
                    try:
                        hook(ended, ids)
                    except Exception:  # noqa: BLE001 - a hook must not stop ingest
                        log.exception("on_commit hook %r failed", hook)

    def _commit(self, parsed: list[_Parsed], now: dt.datetime) -> list[CommitResult] | None:
        """Commit a batch, retrying while the database is unreachable; rows the database
        rejects send their message to the dead-letter table instead of blocking the rest."""
        delay = 0.5
        while True:
            try:
                return [self.core.commit(parsed, now)]
            except Exception as exc:  # noqa: BLE001
                if not _is_transient(exc):
                    break
                if self._stop.is_set() and delay > 4:
                    log.error("database unreachable while stopping; %d messages stay unacknowledged",
                              len(parsed))
                    return None
                log.warning("database error (%s); retrying in %.1f s", exc.__class__.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        # a row the database refused: store message by message to find the culprit(s)
        out: list[CommitResult] = []
        for p in parsed:
            try:
                out.append(self.core.commit([p], now))
            except Exception as exc:  # noqa: BLE001
                if _is_transient(exc):
                    raise
                reason = f"storage rejected the message: {exc.__class__.__name__}: {str(exc)[:500]}"
                out.append(self.core.commit([self.core._dead(p.msg, p.analyzer_id, reason, now)], now))
        return out

