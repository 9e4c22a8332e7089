"""The app's state-changing actions. Each checks the actor's permission first
(:func:`envcal.users.require`), whatever the page shows, then calls the envcal function the
CLI uses (so the audit trail records the same thing either way)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from envcal.users import Actor, require


def acknowledge_alert(engine: Engine, actor: Actor | None, alert_id: int, note: str) -> dict[str, Any]:
    """Acknowledge an alert with a note (staff, admin); audit-logged by :mod:`envcal.alerts`."""
    from envcal.alerts import acknowledge

    require(actor, "alert.ack")
    return acknowledge(engine, int(alert_id), actor.name, note)


def resolve_alert(engine: Engine, actor: Actor | None, alert_id: int, note: str) -> dict[str, Any]:
    """Resolve an alert with a note (staff, admin); audit-logged by :mod:`envcal.alerts`."""
    from envcal.alerts import resolve

    require(actor, "alert.resolve")
    return resolve(engine, int(alert_id), actor.name, note)


def upload_certificate(engine: Engine, actor: Actor | None, json_bytes: bytes,
                       pdf_bytes: bytes | None = None):
    """Validate and import a certificate exactly as ``envcal certs import`` does (lab, admin).

    Raises
    ------
    envcal.certificates.CertificateError
        With ``.problems``, one message per problem; nothing is stored.
    """
    from envcal.certificates import import_certificate

    require(actor, "certificate.upload")
    return import_certificate(engine, json_bytes, attachment=pdf_bytes, actor=actor.name)


def revoke_certificate(engine: Engine, actor: Actor | None, cert_id: str, reason: str):
    """Revoke a lot with a reason (lab, admin); its results are marked for review."""
    from envcal.certificates import revoke_certificate as revoke

    require(actor, "certificate.revoke")
    return revoke(engine, cert_id, reason, actor=actor.name)


def confirm_rule(engine: Engine, actor: Actor | None, pack: str, rule_id: str, citation: str) -> None:
    """Confirm a rule against the primary text with a citation (admin); audit-logged."""
    from envcal.rules.confirmations import confirm_rule as confirm

    require(actor, "rule.confirm")
    confirm(engine, pack, rule_id, citation, actor.name)


def record_verification(engine: Engine, actor: Actor | None, analyzer_id: str, number: str,
                        institute: str, date, result: str, valid_until, pdf: bytes | None = None):
    """Record an instrument verification certificate (检定/校准证书) exactly as
    ``envcal instruments verify-record add`` does (lab, admin); audit-logged by :mod:`envcal.instruments`.

    Raises
    ------
    envcal.instruments.VerificationRecordError
        With ``.problems``; nothing is stored.
    """
    from envcal.instruments import add_verification_record

    require(actor, "certificate.upload")
    return add_verification_record(engine, analyzer_id, number, institute, date, result,
                                   valid_until, pdf=pdf, actor=actor.name)
