"""SQLModel tables: the whole of envcal's stored state.

Conventions
-----------
- Every time column is :class:`envcal.db.UTCDateTime` (stored in UTC, returned aware).
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

from envcal.db import UTCDateTime


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


class DeadLetter(SQLModel, table=True):
    """A message that could not be accepted, kept raw with the reason."""

    __tablename__ = "dead_letter"
    id: int | None = Field(default=None, primary_key=True)
    received_at: dt.datetime = _ts(index=True)
    topic: str
    payload: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    reason: str
    analyzer_id: str | None = Field(default=None, max_length=64)
    mqtt_mid: int | None = None


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
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)
