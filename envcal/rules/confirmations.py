"""Administrator confirmations of rules (the ``rule_confirmation`` table), overlaid on packs.

An administrator confirms a rule against the primary text with :func:`confirm_rule` (a
:class:`envcal.models.RuleConfirmation` row and an audit entry); :func:`overlay` applies
the confirmations to a pack loaded from its file, only while the rule in the file is
unchanged (bound to the SHA-256 of the rule's content). :func:`load_pack` and
:func:`load_all` are :func:`envcal.rules.load_pack` / :func:`envcal.rules.load_all` with
that overlay.

References
----------
ISO/IEC 17025:2017 §7.2.1.5 (methods verified before use); HJ 630-2011 (monitoring QA/QC).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal import audit, rules
from envcal.models import RuleConfirmation
from envcal.rules import Confirmation, RulePack, RulePackError, apply_confirmations, pack_names


def overlay(pack: RulePack, engine: Engine) -> RulePack:
    """``pack`` with the stored confirmations of its unchanged rules applied
    (:func:`envcal.rules.apply_confirmations`; later confirmations of a rule win)."""
    with Session(engine) as s:
        rows = list(s.exec(select(RuleConfirmation).where(RuleConfirmation.pack == pack.name)
                           .order_by(RuleConfirmation.confirmed_at, RuleConfirmation.id)))
    latest = {row.rule_id: (row.rule_sha256, Confirmation(citation=row.citation,
                                                          by=row.confirmed_by,
                                                          at=row.confirmed_at))
              for row in rows}
    return apply_confirmations(pack, latest)


def confirm_rule(engine: Engine, pack: str, rule_id: str, citation: str, by: str,
                 directory: str | Path | None = None) -> None:
    """Record an administrator's confirmation of a rule against the primary text.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
        A migrated database.
    pack : str
        Pack name.
    rule_id : str
        Id of a rule in that pack.
    citation : str
        The quotation of the primary text with its clause (becomes the rule's ``quote``).
    by : str
        Who confirms (recorded, and the audit actor).
    directory : str or Path, optional
        Folder of pack files (default ``envcal/rules``).

    Raises
    ------
    RulePackError
        Unknown pack or rule, or an empty citation / name.

    Notes
    -----
    The confirmation is bound to the rule's content hash: once the rule is edited in the
    file it no longer applies and must be confirmed again. Writing the same confirmation
    twice updates the row (idempotent). An audit entry is written through
    :func:`envcal.audit.record`.
    """
    citation = (citation or "").strip()
    by = (by or "").strip()
    if len(citation) < 10:
        raise RulePackError("citation: quote the primary text with its clause (at least 10 characters)")
    if not by:
        raise RulePackError("by: who confirms must be named")
    p = rules.load_pack(pack, directory=directory)
    try:
        rule = p.rule(rule_id)
    except KeyError as exc:
        raise RulePackError(f"{p.path}: {exc.args[0]}") from None
    sha = rule.content_sha256
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as s:
        row = s.exec(select(RuleConfirmation).where(
            RuleConfirmation.pack == pack, RuleConfirmation.rule_id == rule_id,
            RuleConfirmation.rule_sha256 == sha)).first()
        action = "rule.confirm" if row is None else "rule.reconfirm"
        if row is None:
            row = RuleConfirmation(pack=pack, rule_id=rule_id, rule_sha256=sha,
                                   pack_version=p.effective_version, citation=citation,
                                   confirmed_by=by, confirmed_at=now)
        else:
            row.citation, row.confirmed_by, row.confirmed_at = citation, by, now
            row.pack_version = p.effective_version
        s.add(row)
        audit.record(s, by, action, "rule", f"{pack}/{rule_id}",
                     {"citation": citation, "rule_sha256": sha,
                      "pack_version": p.effective_version,
                      "previous_status": rule.status, "limit": rule.limit, "unit": rule.unit})
        s.commit()


def load_pack(name: str, engine: Engine | None = None,
              directory: str | Path | None = None) -> RulePack:
    """Load one rule pack (:func:`envcal.rules.load_pack`) with the confirmations stored in
    ``engine`` overlaid (none without an engine); they enter
    :attr:`~envcal.rules.RulePack.effective_version`.

    Raises
    ------
    envcal.rules.RulePackError
        As :func:`envcal.rules.load_pack`.
    """
    pack = rules.load_pack(name, directory=directory)
    return overlay(pack, engine) if engine is not None else pack


def load_all(engine: Engine | None = None,
             directory: str | Path | None = None) -> dict[str, RulePack]:
    """Every pack in ``directory`` (default ``envcal/rules``) with confirmations, by name."""
    return {n: load_pack(n, engine, directory) for n in pack_names(directory)}
