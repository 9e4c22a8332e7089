"""SQLModel tables: the whole of envcal's stored state.

Conventions
-----------
- Every time column is :class:`envcal.sqltypes.UTCDateTime` (stored in UTC, returned aware).
- Natural unique keys make every write idempotent (a redelivered MQTT message or a
  replayed period inserts nothing new).
- JSON documents (evidence, details, raw certificates) are stored as text (``sa.JSON``).
- The schema is migrated by Alembic (``envcal/migrations``); ``tests/test_db.py`` fails
  when the tables here and the migrations disagree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from envcal.sqltypes import UTCDateTime


def utcnow() -> dt.datetime:
    """Current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def _ts(nullable: bool = False, index: bool = False, **kw) -> Any:
    return Field(sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index), **kw)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=nullable))


# --------------------------------------------------------------------------- registry
class Station(SQLModel, table=True):
    """A monitoring site (ambient air, flue-gas stack, river section, outfall)."""

    __tablename__ = "station"
    id: str = Field(primary_key=True, max_length=64)
    name: str
    kind: str = Field(max_length=32)  # ambient_air | flue_gas | surface_water | wastewater
    lat: float
    lon: float
    operator: str


class Analyzer(SQLModel, table=True):
    """One instrument at a station; ``rule_pack`` names the standard it is verified against."""

    __tablename__ = "analyzer"
    id: str = Field(primary_key=True, max_length=64)
    station_id: str = Field(foreign_key="station.id", index=True, max_length=64)
    model: str
    serial: str
    mn: str | None = Field(default=None, index=True, max_length=64)  # HJ 212 MN
    rule_pack: str = Field(max_length=64)
    protocol: str = Field(default="json", max_length=16)  # json | hj212 (what it publishes)


class Channel(SQLModel, table=True):
    """One measured quantity of an analyzer, with its unit and span (full scale)."""

    __tablename__ = "channel"
    __table_args__ = (sa.UniqueConstraint("analyzer_id", "analyte", name="uq_channel"),)
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(foreign_key="analyzer.id", index=True, max_length=64)
    analyte: str = Field(max_length=32)
    unit: str = Field(max_length=32)
    span: float
    hj212_code: str | None = Field(default=None, max_length=16)


# --------------------------------------------------------------------------- ingest
class Reading(SQLModel, table=True):
    """One value of one analyte at one time (the hot store; closed days go to NetCDF)."""

    __tablename__ = "reading"
    __table_args__ = (
        sa.UniqueConstraint("analyzer_id", "analyte", "ts", name="uq_reading"),
        sa.Index("ix_reading_check", "check_id"),
    )
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True))
    analyzer_id: str = Field(foreign_key="analyzer.id", max_length=64)
    analyte: str = Field(max_length=32)
    ts: dt.datetime = _ts()
    value: float | None = None
    flag: str = Field(default="N", max_length=2)
    seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger(), nullable=True))
    check_id: str | None = Field(default=None, max_length=128)
    check_kind: str | None = Field(default=None, max_length=16)
    check_phase: str | None = Field(default=None, max_length=8)
    material: str | None = Field(default=None, max_length=128)
    received_at: dt.datetime = _ts()
    #: quality assurance (envcal.alerts): False inside an out-of-control period, None not
    #: evaluated; written into the archive's ``{var}_qa`` flag variable on compaction.
    qa_ok: bool | None = Field(default=None, nullable=True)


class DeadLetter(SQLModel, table=True):
    """A message that could not be accepted, kept raw with the reason.

    Exactly once, like readings: ``delivery_key`` is the SHA-256 of (receiving MQTT
    client, packet id, topic, payload), the identity of one MQTT delivery. A broker
    redelivery (DUP flag) of a stored message inserts nothing; a first delivery always
    inserts (an older row with the same key, a reused packet id, gives its key up), so two
    distinct bad messages with the same bytes are two rows. NULL without a packet id (QoS 0,
    :meth:`envcal.ingest.IngestCore.ingest`): never collapsed.
    """

    __tablename__ = "dead_letter"
    __table_args__ = (sa.UniqueConstraint("delivery_key", name="uq_dead_letter_delivery"),)
    id: int | None = Field(default=None, primary_key=True)
    received_at: dt.datetime = _ts(index=True)
    topic: str
    payload: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    reason: str
    analyzer_id: str | None = Field(default=None, max_length=64)
    mqtt_mid: int | None = None
    delivery_key: str | None = Field(default=None, max_length=64)


class DataGap(SQLModel, table=True):
    """A gap in an analyzer's ``seq`` numbers (messages that never arrived)."""

    __tablename__ = "data_gap"
    __table_args__ = (sa.UniqueConstraint("analyzer_id", "seq_after", name="uq_data_gap"),)
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(foreign_key="analyzer.id", index=True, max_length=64)
    seq_before: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    seq_after: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    missing: int
    ts_before: dt.datetime | None = _ts(nullable=True)
    ts_after: dt.datetime | None = _ts(nullable=True)
    detected_at: dt.datetime = _ts()


class Hj212Frame(SQLModel, table=True):
    """An HJ 212 frame kept whole (commands other than data uploads, or for evidence)."""

    __tablename__ = "hj212_frame"
    __table_args__ = (sa.UniqueConstraint("sha256", name="uq_hj212_frame"),)
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str | None = Field(default=None, max_length=64, index=True)
    received_at: dt.datetime = _ts()
    qn: str | None = Field(default=None, max_length=32)
    cn: str = Field(max_length=8)
    mn: str | None = Field(default=None, max_length=64)
    raw: str
    sha256: str = Field(max_length=64)


class IngestLog(SQLModel, table=True):
    """One committed ingest batch: what arrived and what became of it."""

    __tablename__ = "ingest_log"
    id: int | None = Field(default=None, primary_key=True)
    committed_at: dt.datetime = _ts(index=True)
    worker: str = Field(max_length=128)
    messages: int
    rows: int
    duplicates: int
    dead_letters: int
    seconds: float


# --------------------------------------------------------------------------- certificates
class Attachment(SQLModel, table=True):
    """A certificate's PDF, stored content-addressed by its SHA-256."""

    __tablename__ = "attachment"
    sha256: str = Field(primary_key=True, max_length=64)
    filename: str
    size: int
    media_type: str = Field(default="application/pdf", max_length=64)
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    stored_at: dt.datetime = _ts()


class Certificate(SQLModel, table=True):
    """One version of a CRM certificate (a lot). A changed file supersedes; both are kept."""

    __tablename__ = "certificate"
    __table_args__ = (
        sa.UniqueConstraint("cert_id", "version", name="uq_certificate_version"),
    )
    pk: int | None = Field(default=None, primary_key=True)
    cert_id: str = Field(index=True, max_length=128)
    version: int = 1
    current: bool = True
    content_sha256: str = Field(max_length=64)
    crm_code: str = Field(max_length=64)
    name: str
    kind: str = Field(max_length=32)  # gas_cylinder | solution | membrane | zero_material
    producer: str
    lot: str = Field(max_length=64)
    matrix: str | None = None
    issued: dt.date
    expires: dt.date
    traceability: str | None = None
    attachment_sha256: str | None = Field(default=None, foreign_key="attachment.sha256", max_length=64)
    document: dict | None = _json()
    imported_at: dt.datetime = _ts()
    imported_by: str = Field(default="cli", max_length=128)
    superseded_at: dt.datetime | None = _ts(nullable=True)
    revoked_at: dt.datetime | None = _ts(nullable=True)
    revoked_reason: str | None = None
    revoked_by: str | None = None


class CertificateValue(SQLModel, table=True):
    """A certified value of one analyte: value, unit, expanded uncertainty U and coverage k."""

    __tablename__ = "certificate_value"
    __table_args__ = (sa.UniqueConstraint("certificate_pk", "analyte", name="uq_certificate_value"),)
    id: int | None = Field(default=None, primary_key=True)
    certificate_pk: int = Field(foreign_key="certificate.pk", index=True)
    analyte: str = Field(max_length=32)
    value: float
    unit: str = Field(max_length=32)
    U: float
    k: float


class InstrumentVerification(SQLModel, table=True):
    """A legal verification or calibration certificate of an analyzer (检定/校准证书)."""

    __tablename__ = "instrument_verification"
    __table_args__ = (sa.UniqueConstraint("analyzer_id", "cert_number", name="uq_instrument_verification"),)
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(foreign_key="analyzer.id", index=True, max_length=64)
    cert_number: str = Field(max_length=128)
    institute: str
    date: dt.date
    result: str = Field(max_length=16)  # qualified | not_qualified
    errors: dict | None = _json()
    valid_until: dt.date
    attachment_sha256: str | None = Field(default=None, foreign_key="attachment.sha256", max_length=64)
    recorded_at: dt.datetime = _ts()
    recorded_by: str = Field(default="cli", max_length=128)


class Finding(SQLModel, table=True):
    """Something staff must look at that is not (yet) an alert, e.g. results needing review
    after a lot was revoked. The alerts machinery raises alerts from these."""

    __tablename__ = "finding"
    id: int | None = Field(default=None, primary_key=True)
    created_at: dt.datetime = _ts(index=True)
    kind: str = Field(max_length=64)  # e.g. material_revoked
    object_type: str = Field(max_length=64)
    object_id: str = Field(max_length=128)
    analyzer_id: str | None = Field(default=None, max_length=64)
    details: dict | None = _json()
    resolved_at: dt.datetime | None = _ts(nullable=True)


class AuditLog(SQLModel, table=True):
    """Append-only audit trail with a SHA-256 hash chain (``envcal audit verify``)."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    ts: dt.datetime = _ts(index=True)
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    object_type: str = Field(max_length=64)
    object_id: str = Field(max_length=256)
    details: dict | None = _json()
    prev_hash: str = Field(max_length=64, unique=True)  # a fork of the chain cannot be stored
    hash: str = Field(max_length=64, unique=True)


# --------------------------------------------------------------------------- verification (issue 4)
class CheckResult(SQLModel, table=True):
    """The evaluation of one QC check of one channel, with every number and what it rests on.

    One row per (analyzer, analyte, check id): a replay writes the same row again, so a
    re-evaluation never duplicates. ``verdict`` is pass | warn | fail | invalid.
    """

    __tablename__ = "check_result"
    __table_args__ = (
        sa.UniqueConstraint("analyzer_id", "analyte", "check_id", name="uq_check_result"),
        sa.Index("ix_check_result_channel_end", "analyzer_id", "analyte", "kind", "end"),
        # the outbox timer's query: unpublished (NULL) rows stored in a time window
        sa.Index("ix_check_result_outbox", "published_at", "evaluated_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(foreign_key="analyzer.id", max_length=64)
    station_id: str = Field(max_length=64, index=True)
    analyte: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    check_id: str = Field(max_length=128)
    source: str = Field(default="readings", max_length=16)  # readings | summary
    start: dt.datetime = _ts()
    end: dt.datetime = _ts(index=True)
    unit: str = Field(max_length=32)
    span: float
    n: int = 0
    mean: float | None = None
    sd: float | None = None
    u_mean: float | None = None
    t90_s: float | None = None
    plateau_start: dt.datetime | None = _ts(nullable=True)
    plateau_end: dt.datetime | None = _ts(nullable=True)
    reference: float | None = None
    u_reference: float | None = None
    error_abs: float | None = None
    error_rel_pct: float | None = None
    error_fs_pct: float | None = None
    drift_fs_pct: float | None = None
    en: float | None = None
    bias_ok: bool | None = None
    verdict: str = Field(max_length=16, index=True)
    rule: str | None = Field(default=None, max_length=128)
    rule_status: str | None = Field(default=None, max_length=16)
    pack: str = Field(max_length=64)
    pack_version: str = Field(max_length=64)
    material: str | None = Field(default=None, max_length=128, index=True)
    certificate_pk: int | None = None
    molar_volume: float | None = None
    reason_en: str = ""
    reason_zh: str = ""
    device_verdict: str | None = Field(default=None, max_length=32)
    device_measured: float | None = None
    needs_review: bool = False
    details: dict | None = _json()
    evaluated_at: dt.datetime = _ts()
    # outbox (at-least-once MQTT publication, envcal.outbox): set after the broker's PUBACK;
    # NULL rows are published again by the analyzer owner's timer. Consumers de-duplicate
    # by ``id``.
    published_at: dt.datetime | None = _ts(nullable=True)


# --------------------------------------------------------------------------- archive
class ArchiveFile(SQLModel, table=True):
    """One CF NetCDF file of the archive: one station, one UTC day (``envcal.archive``).

    ``path`` is relative to the archive folder; ``sha256`` is the file's digest as written.
    A late reading merged into a closed day rewrites the file and updates this row.
    """

    __tablename__ = "archive_file"
    __table_args__ = (sa.UniqueConstraint("station_id", "day", name="uq_archive_file"),)
    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(foreign_key="station.id", index=True, max_length=64)
    day: dt.date
    path: str = Field(max_length=512)
    sha256: str = Field(max_length=64)
    n_values: int
    n_times: int
    created_at: dt.datetime = _ts()


# --------------------------------------------------------------------------- ingest: check summaries (issue 2)
class CheckSummaryRecord(SQLModel, table=True):
    """A device-computed QC check summary (``.../check`` topic JSON or HJ 212-2025 CN 2062).

    Kept as the device sent it; verification re-evaluates it with envcal's own rules and
    CRM values (``device_verdict`` is kept beside ours, never trusted).
    """

    __tablename__ = "check_summary"
    __table_args__ = (
        sa.UniqueConstraint("analyzer_id", "check_id", "analyte", name="uq_check_summary"),
    )
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(foreign_key="analyzer.id", index=True, max_length=64)
    check_id: str = Field(max_length=128)
    kind: str = Field(max_length=16)
    analyte: str = Field(max_length=32)
    start: dt.datetime = _ts()
    end: dt.datetime = _ts(index=True)
    material: str | None = Field(default=None, max_length=128)
    measured: float | None = None
    readings: list | None = _json()
    standard_value: float | None = None
    device_verdict: str | None = Field(default=None, max_length=32)
    received_at: dt.datetime = _ts()


# --------------------------------------------------------------------------- rule packs (issue 4)
class RuleConfirmation(SQLModel, table=True):
    """An administrator's confirmation of a rule-pack rule against the primary text.

    Bound to the SHA-256 of the rule's content: once the rule is edited in its TOML file
    the confirmation no longer applies (``envcal.rules`` overlays only matching rows).
    """

    __tablename__ = "rule_confirmation"
    __table_args__ = (
        sa.UniqueConstraint("pack", "rule_id", "rule_sha256", name="uq_rule_confirmation"),
    )
    id: int | None = Field(default=None, primary_key=True)
    pack: str = Field(max_length=64, index=True)
    rule_id: str = Field(max_length=128)
    rule_sha256: str = Field(max_length=64)
    pack_version: str = Field(max_length=64)
    citation: str
    confirmed_by: str = Field(max_length=128)
    confirmed_at: dt.datetime = _ts()


# --------------------------------------------------------------------------- users and UI (issue 7)
class User(SQLModel, table=True):
    """A local account of the Streamlit app (``envcal users add``); role is one of
    viewer | staff | lab | admin. ``password_hash`` is an argon2id hash (None: OIDC only)."""

    __tablename__ = "app_user"
    name: str = Field(primary_key=True, max_length=128)
    role: str = Field(max_length=16)
    password_hash: str | None = Field(default=None, max_length=256)
    created_at: dt.datetime = _ts()
    disabled: bool = False


class LoginAttempt(SQLModel, table=True):
    """One login attempt (success or failure), for lock-out after repeated failures."""

    __tablename__ = "login_attempt"
    __table_args__ = (sa.Index("ix_login_attempt_name_ts", "name", "ts"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    ts: dt.datetime = _ts()
    ok: bool


# --------------------------------------------------------------------------- alerts (issue 5)
class Alert(SQLModel, table=True):
    """An alert about one analyzer channel (``analyte`` None: the whole analyzer).

    ``state`` open | acknowledged | resolved. ``open_key`` is ``analyzer|analyte|kind`` while
    the alert is not resolved and NULL once resolved; its unique constraint makes "one
    unresolved alert per analyzer, channel and kind" a database guarantee (NULLs never
    collide, on SQLite and PostgreSQL alike).
    """

    __tablename__ = "alert"
    __table_args__ = (
        sa.UniqueConstraint("open_key", name="uq_alert_open_key"),
        sa.Index("ix_alert_channel_kind", "analyzer_id", "analyte", "kind"),
    )
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(max_length=64)
    station_id: str = Field(max_length=64, index=True)
    analyte: str | None = Field(default=None, max_length=32)
    kind: str = Field(max_length=32)
    severity: str = Field(max_length=16)  # info | warning | critical
    state: str = Field(max_length=16, index=True)  # open | acknowledged | resolved
    open_key: str | None = Field(default=None, max_length=160)
    opened_at: dt.datetime = _ts()
    updated_at: dt.datetime = _ts()
    resolved_at: dt.datetime | None = _ts(nullable=True)
    resolved_by: str | None = Field(default=None, max_length=128)
    acknowledged_at: dt.datetime | None = _ts(nullable=True)
    acknowledged_by: str | None = Field(default=None, max_length=128)
    escalated_at: dt.datetime | None = _ts(nullable=True)
    title_en: str = ""
    title_zh: str = ""
    evidence: dict | None = _json()
    result_ids: list | None = _json()
    trigger: str | None = Field(default=None, max_length=256)  # what opened it (replay guard)


class AlertEvent(SQLModel, table=True):
    """One transition of an alert: open, update, acknowledge, escalate, resolve."""

    __tablename__ = "alert_event"
    __table_args__ = (sa.Index("ix_alert_event_outbox", "published_at", "ts"),)
    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    ts: dt.datetime = _ts()
    data_ts: dt.datetime | None = _ts(nullable=True)  # data time of the evidence
    action: str = Field(max_length=16)
    actor: str = Field(max_length=128)
    state: str = Field(max_length=16)
    severity: str = Field(max_length=16)
    note: str | None = None
    evidence: dict | None = _json()
    # outbox (at-least-once MQTT publication, envcal.outbox): set after the broker's PUBACK;
    # consumers de-duplicate by the event id (``event_id`` of the payload).
    published_at: dt.datetime | None = _ts(nullable=True)


class OutOfControlPeriod(SQLModel, table=True):
    """An out-of-control period (40 CFR 75.24, 40 CFR 60 App. F §4.3, HJ 75-2017 失控时段).

    ``start``: end of the last passing check before the failure (for a ``consecutive``
    condition, the end of the check completing the run, as the standard says); ``end``: end
    of the next passing check after the failure (NULL while open). Readings of the channel
    inside (start, end] have ``Reading.qa_ok = False``.
    """

    __tablename__ = "out_of_control_period"
    __table_args__ = (
        sa.UniqueConstraint("analyzer_id", "analyte", "rule_id", "opened_by_result",
                            name="uq_out_of_control_period"),
    )
    id: int | None = Field(default=None, primary_key=True)
    analyzer_id: str = Field(foreign_key="analyzer.id", index=True, max_length=64)
    analyte: str = Field(max_length=32)
    rule_id: str = Field(max_length=128)
    start: dt.datetime = _ts()
    end: dt.datetime | None = _ts(nullable=True)
    opened_by_result: int
    closed_by_result: int | None = None
    start_result: int | None = None  # the last passing check (None: none known)
    source: str = ""
    evidence: dict | None = _json()
    updated_at: dt.datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    """One POST of an alert event to the webhook, with its retries."""

    __tablename__ = "webhook_delivery"
    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    url: str
    payload: dict | None = _json()
    state: str = Field(default="pending", max_length=16, index=True)  # pending | delivered | failed
    attempts: int = 0
    last_error: str | None = None
    next_retry_at: dt.datetime | None = _ts(nullable=True)
    created_at: dt.datetime = _ts()
    delivered_at: dt.datetime | None = _ts(nullable=True)


# --------------------------------------------------------------------------- worker groups (issue 8)
class WorkerHeartbeat(SQLModel, table=True):
    """A live ingest worker of a shared-subscription group (``envcal ingest --group``).

    Renewed by the worker's pipeline timer; workers seen within the lease time are the
    live members over which analyzers are spread (:mod:`envcal.ownership`).
    """

    __tablename__ = "worker_heartbeat"
    worker: str = Field(primary_key=True, max_length=128)
    group_name: str = Field(max_length=128, index=True)
    started_at: dt.datetime = _ts()
    seen_at: dt.datetime = _ts()


class AnalyzerLease(SQLModel, table=True):
    """Which worker of a group verifies and alerts for an analyzer, until when.

    One row per analyzer; taken over atomically only when expired or by its owner
    (``UPDATE ... WHERE owner = me OR lease_until < now``), see :mod:`envcal.ownership`.
    """

    __tablename__ = "analyzer_lease"
    analyzer_id: str = Field(primary_key=True, max_length=64)
    owner: str = Field(default="", max_length=128)
    lease_until: dt.datetime = _ts()
    acquired_at: dt.datetime | None = _ts(nullable=True)
