"""Instrument verification records (检定/校准证书) and the verification coverage rate.

Besides the CRMs used in routine checks, every analyzer is periodically verified or
calibrated by a metrology institute. A record holds the analyzer, the certificate number,
the institute, the date, the result (``qualified`` / ``not_qualified`` with the errors
found), the date it is valid until, and optionally the PDF (stored content-addressed, same
checks as CRM attachments).

Verification coverage rate (the Overview's headline; policy target >= 96 %)::

    rate(t) = N_verified(t) / N_total

``N_total`` is the number of analyzers in the registry. An analyzer counts as verified at
time t when BOTH

1. it has an instrument verification record with ``result == "qualified"`` and
   ``date <= t.date() <= valid_until`` (a missing, expired, not-yet-valid or "not qualified"
   record fails this), AND
2. every routine QC check its rule pack requires is up to date: for each required
   ``(kind, frequency)`` the last check of that kind ended at ``t_last`` with
   ``t - frequency <= t_last <= t``. Required kinds come from ``required_checks``
   (analyzer id -> list of (kind, timedelta)) and the last check times from ``last_check``
   (a callable ``(analyzer_id, kind) -> datetime | None``). When either is not given,
   condition 2 is taken as satisfied and reported as ``"not evaluated"``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal import audit
from envcal.certificates import CertificateError, read_pdf, store_attachment
from envcal.models import Analyzer, InstrumentVerification, utcnow

#: Policy target of the verification coverage rate.
TARGET_RATE = 0.96
RESULTS = ("qualified", "not_qualified")


class VerificationRecordError(CertificateError):
    """An instrument verification record was refused; ``problems`` lists every reason."""


@dataclass(frozen=True)
class RecordOutcome:
    """What :func:`add_verification_record` did (``created`` or ``unchanged``) and the row id."""

    status: Literal["created", "unchanged"]
    id: int
    analyzer_id: str
    cert_number: str


def _as_date(v: dt.date | str, name: str, problems: list[str]) -> dt.date | None:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError:
        problems.append(f"{name}: {v!r} is not a date (YYYY-MM-DD)")
        return None


def add_verification_record(engine: Engine, analyzer_id: str, number: str, institute: str,
                            date: dt.date | str, result: str, valid_until: dt.date | str, *,
                            errors: Mapping[str, Any] | str | None = None,
                            pdf: Path | bytes | None = None, actor: str = "cli",
                            max_bytes: int | None = None) -> RecordOutcome:
    """Record an analyzer's legal verification / calibration certificate (one transaction).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    analyzer_id : str
        Analyzer (must be in the database: sync the registry first).
    number : str
        Certificate number (证书编号); unique per analyzer.
    institute : str
        Metrology institute that issued it.
    date : date or str
        Date of verification (YYYY-MM-DD).
    result : {"qualified", "not_qualified"}
    valid_until : date or str
        Last day the verification is valid (>= ``date``).
    errors : dict or JSON str, optional
        Errors found, e.g. ``{"SO2": {"indication_error_pct_fs": 1.2}}``.
    pdf : Path or bytes, optional
        The certificate PDF (size limit and PDF checks as for CRM attachments).
    actor : str, default "cli"

    Returns
    -------
    RecordOutcome
        ``unchanged`` when the identical record exists.

    Raises
    ------
    VerificationRecordError
        Every problem found; nothing stored. Also when the number exists with other content.

    References
    ----------
    JJF 1033 / JJG series (legal verification of measuring instruments, PRC Metrology Law).
    """
    problems: list[str] = []
    if not number or not str(number).strip():
        problems.append("number: required")
    if not institute or not str(institute).strip():
        problems.append("institute: required")
    if result not in RESULTS:
        problems.append(f"result: {result!r} is not one of {', '.join(RESULTS)}")
    d0 = _as_date(date, "date", problems)
    d1 = _as_date(valid_until, "valid_until", problems)
    if d0 and d1 and d1 < d0:
        problems.append(f"valid_until: {d1} is before the verification date {d0}")
    if isinstance(errors, str):
        try:
            errors = json.loads(errors)
        except json.JSONDecodeError as exc:
            problems.append(f"errors: not valid JSON: {exc}")
            errors = None
    if errors is not None and not isinstance(errors, Mapping):
        problems.append("errors: must be a JSON object")
        errors = None
    doc = None
    if pdf is not None:
        doc, p = read_pdf(pdf, None if not isinstance(pdf, (bytes, bytearray)) else f"{number}.pdf",
                          field_name="pdf", max_bytes=max_bytes)
        problems += p
    with Session(engine, expire_on_commit=False) as s:
        if s.get(Analyzer, analyzer_id) is None:
            problems.append(f"analyzer: unknown analyzer {analyzer_id!r} (sync the registry first)")
        if problems:
            raise VerificationRecordError(problems, f"{analyzer_id}/{number}")
        errors = json.loads(audit.canonical_json(dict(errors))) if errors is not None else None
        try:
            existing = s.exec(select(InstrumentVerification).where(
                InstrumentVerification.analyzer_id == analyzer_id,
                InstrumentVerification.cert_number == number)).first()
            att = doc.sha256 if doc else None
            if existing is not None:
                same = (existing.institute == institute and existing.date == d0
                        and existing.result == result and existing.valid_until == d1
                        and existing.errors == errors and existing.attachment_sha256 == att)
                if same:
                    return RecordOutcome("unchanged", existing.id, analyzer_id, number)
                raise VerificationRecordError(
                    f"number: certificate {number} of {analyzer_id} is already recorded with "
                    "different content", f"{analyzer_id}/{number}")
            if doc:
                store_attachment(s, doc)
            now = utcnow()
            row = InstrumentVerification(analyzer_id=analyzer_id, cert_number=number,
                                         institute=institute, date=d0, result=result,
                                         errors=errors, valid_until=d1, attachment_sha256=att,
                                         recorded_at=now, recorded_by=actor)
            s.add(row)
            s.flush()
            audit.record(s, actor, "instrument_verification.create", "instrument_verification",
                         f"{analyzer_id}/{number}",
                         {"id": row.id, "institute": institute, "date": d0, "result": result,
                          "valid_until": d1, "errors": errors, "attachment_sha256": att}, ts=now)
            s.commit()
        except Exception:
            s.rollback()
            raise
    return RecordOutcome("created", row.id, analyzer_id, number)


def list_verification_records(engine: Engine, analyzer_id: str | None = None) -> list[dict[str, Any]]:
    """Instrument verification records (newest date first), as dicts."""
    with Session(engine) as s:
        q = select(InstrumentVerification)
        if analyzer_id:
            q = q.where(InstrumentVerification.analyzer_id == analyzer_id)
        rows = list(s.exec(q.order_by(InstrumentVerification.analyzer_id,
                                      InstrumentVerification.date.desc())))
    return [{"id": r.id, "analyzer_id": r.analyzer_id, "number": r.cert_number,
             "institute": r.institute, "date": r.date.isoformat(), "result": r.result,
             "valid_until": r.valid_until.isoformat(), "errors": r.errors,
             "attachment_sha256": r.attachment_sha256, "recorded_at": r.recorded_at.isoformat(),
             "recorded_by": r.recorded_by} for r in rows]


# --------------------------------------------------------------------------- coverage
@dataclass(frozen=True)
class AnalyzerCoverage:
    """One analyzer's verification status at a time; ``reasons`` say why it is not verified."""

    analyzer_id: str
    verified: bool
    record: str | None  # certificate number of the record that counts
    record_valid_until: dt.date | None
    checks: str  # "up to date" | "overdue" | "not evaluated"
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CoverageReport:
    """Verification coverage at ``at``: ``rate = verified / total`` (``None`` with no analyzers)."""

    at: dt.datetime
    total: int
    verified: int
    rate: float | None
    target: float
    meets_target: bool
    checks_evaluated: bool
    analyzers: list[AnalyzerCoverage]
    formula: str = "rate = N_verified / N_total"

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "total": self.total, "verified": self.verified,
                "rate": self.rate, "target": self.target, "meets_target": self.meets_target,
                "checks_evaluated": self.checks_evaluated, "formula": self.formula,
                "analyzers": [{"analyzer_id": a.analyzer_id, "verified": a.verified,
                               "record": a.record,
                               "record_valid_until": a.record_valid_until.isoformat()
                               if a.record_valid_until else None,
                               "checks": a.checks, "reasons": a.reasons} for a in self.analyzers]}


def routine_checks(engine: Engine, registry, at: dt.datetime | None = None
                   ) -> tuple[dict[str, list[tuple[str, dt.timedelta]]],
                              Callable[[str, str], dt.datetime | None]]:
    """The routine checks each analyzer's rule pack requires, and when each last happened.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    registry : envcal.registry.Registry
    at : datetime, optional
        Only checks that ended at or before this time count.

    Returns
    -------
    required : dict
        Analyzer id -> [(check kind, interval)]: the shortest interval any of its channels'
        rules requires for that kind (``RulePack.required_checks``).
    last_check : callable
        ``(analyzer_id, kind) -> end of the last evaluated (not invalid) check``, from the
        ``check_result`` table; an invalid check (no plateau, unusable material) does not
        count as done.
    """
    import sqlalchemy as sa

    from envcal.models import CheckResult
    from envcal.rules import load_pack

    packs: dict = {}
    required: dict[str, list[tuple[str, dt.timedelta]]] = {}
    for a in registry.analyzers.values():
        pack = packs.get(a.rule_pack) or packs.setdefault(a.rule_pack, load_pack(a.rule_pack))
        kinds: dict[str, dt.timedelta] = {}
        for ch in a.channels:
            for kind, freq in pack.required_checks(ch.analyte):
                kinds[kind] = min(freq, kinds.get(kind, freq))
        required[a.id] = sorted(kinds.items())
    c = CheckResult.__table__.c
    q = (sa.select(c.analyzer_id, c.kind, sa.func.max(c.end))
         .where(c.verdict != "invalid").group_by(c.analyzer_id, c.kind))
    if at is not None:
        q = q.where(c.end <= at)
    with engine.connect() as conn:
        last = {(a, k): t for a, k, t in conn.execute(q)}
    return required, lambda analyzer_id, kind: last.get((analyzer_id, kind))


def coverage(engine: Engine, at: dt.datetime, registry=None, *,
             required_checks: Mapping[str, Sequence[tuple[str, dt.timedelta]]] | None = None,
             last_check: Callable[[str, str], dt.datetime | None] | None = None,
             target: float = TARGET_RATE, routine: bool = True) -> CoverageReport:
    """Verification coverage rate of the network at ``at`` (see the module docstring).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    at : datetime
        Time evaluated (timezone-aware); records are compared by ``at.date()``.
    registry : envcal.registry.Registry, optional
        The analyzers counted; default: every analyzer in the database. With a registry
        and neither of the next two arguments, the routine checks are evaluated from the
        rule packs and the stored results (:func:`routine_checks`).
    required_checks : mapping, optional
        Analyzer id -> [(check kind, maximum age)] its rule pack requires (an analyzer
        absent from the mapping requires none).
    last_check : callable, optional
        ``(analyzer_id, kind) -> end time of the last check of that kind, or None``.
    target : float, default 0.96
    routine : bool, default True
        With False, only instrument verification records are judged (routine checks
        "not evaluated") unless ``required_checks`` and ``last_check`` are given.

    Returns
    -------
    CoverageReport
        ``rate = N_verified / N_total``; each analyzer with the reasons it is not verified.

    References
    ----------
    HJ 75-2017 clause 11 (periodic calibration and checks of CEMS); PRC Metrology Law,
    art. 9 (compulsory verification of instruments used for environmental monitoring).
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    day = at.date()
    if routine and required_checks is None and last_check is None and registry is not None:
        required_checks, last_check = routine_checks(engine, registry, at)
    evaluate = required_checks is not None and last_check is not None
    with Session(engine) as s:
        if registry is not None:
            ids = sorted(registry.analyzers)
        else:
            ids = sorted(s.exec(select(Analyzer.id)))
        records: dict[str, list[InstrumentVerification]] = {}
        for r in s.exec(select(InstrumentVerification).order_by(InstrumentVerification.date.desc())):
            records.setdefault(r.analyzer_id, []).append(r)
    out: list[AnalyzerCoverage] = []
    for aid in ids:
        reasons: list[str] = []
        recs = records.get(aid, [])
        good = [r for r in recs if r.result == "qualified" and r.date <= day <= r.valid_until]
        chosen = max(good, key=lambda r: r.valid_until) if good else None
        if chosen is None:
            if not recs:
                reasons.append("no instrument verification record")
            else:
                latest = recs[0]
                if latest.date > day:
                    reasons.append(f"verification record {latest.cert_number} dated {latest.date} "
                                   f"is after {day}")
                elif latest.result != "qualified":
                    reasons.append(f"verification record {latest.cert_number} of {latest.date}: "
                                   "not qualified")
                else:
                    reasons.append(f"verification record {latest.cert_number} expired on "
                                   f"{latest.valid_until}")
        checks = "not evaluated"
        if evaluate:
            checks = "up to date"
            for kind, freq in required_checks.get(aid, ()):
                last = last_check(aid, kind)
                if last is None:
                    reasons.append(f"no {kind} check on record (required every {freq})")
                    checks = "overdue"
                elif not (at - freq <= last <= at):
                    reasons.append(f"last {kind} check {last.isoformat()} is older than {freq}")
                    checks = "overdue"
        out.append(AnalyzerCoverage(aid, not reasons, chosen.cert_number if chosen else None,
                                    chosen.valid_until if chosen else None, checks, reasons))
    n = len(out)
    k = sum(a.verified for a in out)
    rate = k / n if n else None
    return CoverageReport(at, n, k, rate, target, rate is not None and rate >= target,
                          evaluate, out)


# --------------------------------------------------------------------------- due-date reminder
#: Days before a verification record expires that the ``verification_due`` alert opens.
DUE_LEAD_DAYS = 30.0


@dataclass(frozen=True)
class VerificationDue:
    """An analyzer's instrument verification falling due (``state`` "due": valid, expires
    within the lead time) or overdue (``state`` "overdue": the newest qualified record has
    expired)."""

    analyzer_id: str
    state: Literal["due", "overdue"]
    record: str | None  # certificate number
    valid_until: dt.date | None
    days: int  # days left ("due") or days since expiry ("overdue")


def verification_due(engine: Engine, at: dt.datetime, analyzer_ids: Sequence[str] | None = None,
                     *, lead_days: float = DUE_LEAD_DAYS) -> dict[str, VerificationDue | None]:
    """Which analyzers' verification records are due for renewal at ``at``.

    The record that counts is the one :func:`coverage` uses: qualified, valid on
    ``at.date()``, the latest ``valid_until``. It is *due* when it expires within
    ``lead_days`` days (``valid_until - day <= lead_days``); with no such record but an
    expired qualified one the analyzer is *overdue* (since that record's ``valid_until``).
    An analyzer never verified has no due date (coverage names it: "no instrument
    verification record").

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    at : datetime
        Time evaluated (timezone-aware).
    analyzer_ids : sequence of str, optional
        Analyzers to judge; default every analyzer in the database.
    lead_days : float, default 30
        Reminder lead time [d].

    Returns
    -------
    dict
        Analyzer id -> :class:`VerificationDue`, or None when nothing is due.

    References
    ----------
    PRC Metrology Law art. 9 and JJF 1033 (periodic compulsory verification: a record is
    renewed before its validity ends).
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    day = at.date()
    with Session(engine) as s:
        ids = list(analyzer_ids) if analyzer_ids is not None else sorted(s.exec(select(Analyzer.id)))
        records: dict[str, list[InstrumentVerification]] = {}
        for r in s.exec(select(InstrumentVerification)):
            records.setdefault(r.analyzer_id, []).append(r)
    out: dict[str, VerificationDue | None] = {}
    for aid in ids:
        quals = [r for r in records.get(aid, []) if r.result == "qualified" and r.date <= day]
        good = [r for r in quals if day <= r.valid_until]
        if good:
            r = max(good, key=lambda x: x.valid_until)
            left = (r.valid_until - day).days
            out[aid] = VerificationDue(aid, "due", r.cert_number, r.valid_until, left) \
                if left <= lead_days else None
        elif quals:
            r = max(quals, key=lambda x: x.valid_until)
            out[aid] = VerificationDue(aid, "overdue", r.cert_number, r.valid_until,
                                       (day - r.valid_until).days)
        else:
            out[aid] = None  # never verified: a coverage reason, not a due date
    return out


def verification_due_alert(d: VerificationDue) -> dict[str, Any]:
    """Severity, titles (en, zh) and evidence of the ``verification_due`` alert of ``d``
    (a warning, before and after expiry: an expired verification makes the analyzer
    unverified, not its data out of control)."""
    if d.state == "due":
        en = f"{d.analyzer_id}: instrument verification {d.record} expires on {d.valid_until} " \
             f"({d.days} days left)"
        zh = f"{d.analyzer_id}：检定证书 {d.record} 将于 {d.valid_until} 到期（剩余 {d.days} 天）"
        sev = "warning"
    else:
        en = f"{d.analyzer_id}: instrument verification {d.record} expired on {d.valid_until} " \
             f"({d.days} days ago)"
        zh = f"{d.analyzer_id}：检定证书 {d.record} 已于 {d.valid_until} 过期（已 {d.days} 天）"
        # not verified (a coverage reason), yet its data are not out of control for that
        sev = "warning"
    return {"severity": sev, "title_en": en, "title_zh": zh,
            "evidence": {"state": d.state, "record": d.record,
                         "valid_until": d.valid_until.isoformat() if d.valid_until else None,
                         "days": d.days}}
