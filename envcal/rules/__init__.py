"""Rule packs: the acceptance criteria of each standard as versioned, strictly validated data.

One TOML file per standard lives next to this module (``envcal/rules/{name}.toml``); the
file name is the pack name an analyzer's ``rule_pack`` refers to. A pack holds

- a header: ``name``, ``version``, ``standard``, ``title_zh``, ``title_en``, ``molar_volume``
  [L/mol] used for gas unit conversions, and ``[plateau]`` parameters for check extraction;
- ``[[rules]]``: what is compared (``quantity``), the fail ``limit`` and the ``warn`` level
  (``|q| <= warn`` pass, ``<= limit`` warn, ``> limit`` fail), the required check interval,
  the consequence of a failure, ``source`` (standard and clause) and ``status``;
- ``[[out_of_control]]``: the standard's out-of-control conditions over the rules;
- optionally ``[statistics]`` (40 CFR 58 App A CV and bias upper bounds).

``status = "confirmed"`` is allowed only with a ``quote`` of the primary text; everything
else is ``"unverified"`` and shown as such. An administrator confirms a rule with
:func:`confirm_rule` (a :class:`envcal.models.RuleConfirmation` row + an audit entry); the
confirmation is overlaid when a pack is loaded with an engine, and only while the rule in
the file is unchanged (it is bound to the SHA-256 of the rule's content).

Every result records :attr:`RulePack.effective_version`: the pack ``version``, a short
SHA-256 of the file and, when confirmations apply, a short SHA-256 of the overlay.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from envcal.analytes import ANALYTES
from envcal.codes import CHECK_KINDS, QUANTITIES, VERDICTS, limit_verdict
from envcal.validation import describe

RULES_DIR = Path(__file__).resolve().parent



def _one_of(names: tuple[str, ...], what: str):
    def check(v: str) -> str:
        if v not in names:
            raise ValueError(f"{what} {v!r} is not one of {', '.join(names)}")
        return v
    return AfterValidator(check)


CheckKind = Annotated[str, _one_of(CHECK_KINDS, "check kind")]
Quantity = Annotated[str, _one_of(QUANTITIES, "quantity")]
Status = Literal["confirmed", "unverified"]

#: the unit a limit must be written in, per compared quantity (error_abs: the channel unit)
_QUANTITY_UNIT: dict[str, str] = {"error_rel_pct": "%", "error_fs_pct": "% F.S.",
                                  "drift_fs_pct": "% F.S.", "en": "1"}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RulePackError(ValueError):
    """A rule pack is missing or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Source(_Strict):
    """Where a rule comes from: the standard and the clause (section, table)."""

    standard: str = Field(min_length=1)
    clause: str = Field(min_length=1)


def _check_quote(status: str, quote: str | None) -> None:
    if status == "confirmed" and not (quote and quote.strip()):
        raise ValueError("status 'confirmed' needs a 'quote' of the primary text "
                         "(otherwise use status = 'unverified')")


class Confirmation(_Strict):
    """An administrator's confirmation of one rule (from the ``rule_confirmation`` table)."""

    citation: str
    by: str
    at: dt.datetime


class Rule(_Strict):
    """One acceptance criterion of a standard.

    ``limit`` and ``warn`` are in ``unit`` and compared with ``abs(value)`` of
    ``quantity``: ``|q| <= warn`` passes, ``warn < |q| <= limit`` warns, ``|q| > limit``
    fails.
    """

    id: str = Field(min_length=3, max_length=128, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    check_kind: CheckKind
    analytes: list[str] = Field(min_length=1)
    quantity: Quantity
    limit: float = Field(gt=0)
    warn: float = Field(gt=0)
    unit: str = Field(min_length=1)
    frequency_h: float | None = Field(default=None, gt=0)
    consequence: str = Field(min_length=1)
    source: Source
    status: Status
    quote: str | None = None
    note: str | None = None
    title_zh: str = Field(min_length=1)
    title_en: str = Field(min_length=1)

    _confirmation: Confirmation | None = PrivateAttr(default=None)
    _sha256: str = PrivateAttr(default="")

    @field_validator("analytes")
    @classmethod
    def _known_analytes(cls, v: list[str]) -> list[str]:
        for a in v:
            if a not in ANALYTES:
                raise ValueError(f"unknown analyte {a!r} (known: {', '.join(sorted(ANALYTES))})")
        if len(set(v)) != len(v):
            raise ValueError("duplicate analyte")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        expected = _QUANTITY_UNIT.get(self.quantity)
        if expected is not None and self.unit != expected:
            raise ValueError(f"unit {self.unit!r} does not fit quantity {self.quantity!r} "
                             f"(expected {expected!r})")
        if self.quantity == "error_abs":
            # deferred: envcal.units builds a pint registry (+1.5 s measured on import of
            # envcal.rules); only absolute-error rules need it (ARCHITECTURE.md, imports)
            from envcal.units import UnitError, parse_unit

            try:
                parse_unit(self.unit)
            except UnitError as exc:
                raise ValueError(f"unit: {exc}") from None
        if self.warn > self.limit:
            raise ValueError(f"warn ({self.warn}) must not exceed limit ({self.limit})")
        _check_quote(self.status, self.quote)
        return self

    @property
    def confirmation(self) -> Confirmation | None:
        """The administrator confirmation overlaid on this rule, if any."""
        return self._confirmation

    @property
    def content_sha256(self) -> str:
        """SHA-256 of the rule as written in the file (what a confirmation is bound to)."""
        return self._sha256 or _rule_sha(self.model_dump(mode="json"))

    @property
    def frequency(self) -> dt.timedelta | None:
        """Required check interval, or ``None`` when the standard sets none."""
        return None if self.frequency_h is None else dt.timedelta(hours=self.frequency_h)

    def verdict(self, value: float) -> str:
        """Classify one value of :attr:`quantity` against this rule.

        Parameters
        ----------
        value : float
            The compared quantity, in :attr:`unit` (e.g. [% F.S.] for a drift, [%] for a
            relative error, the channel unit for an absolute error, [1] for E_n).

        Returns
        -------
        str
            ``"pass"`` when ``|value| <= warn``, ``"warn"`` when ``|value| <= limit``,
            ``"fail"`` when ``|value| > limit``, ``"invalid"`` for NaN, infinity or a
            value that is not a number (:func:`envcal.codes.limit_verdict`, the comparison
            of the batch kernel).

        References
        ----------
        The limit and its clause are in :attr:`source` (e.g. HJ 75-2017 Table 5 for
        CEMS drift, 40 CFR 75 App. B §2.1.4 for daily calibration error).
        """
        try:
            v = float(value)
        except (TypeError, ValueError):
            return "invalid"
        return VERDICTS[min(limit_verdict(v, self.warn, self.limit), 3)]

    def applies_to(self, check_kind: str, analyte: str) -> bool:
        return self.check_kind == check_kind and analyte in self.analytes


class Plateau(_Strict):
    """Stable-plateau search parameters for check extraction (used by ``envcal.verify``).

    ``window`` readings; ``max_std`` [fraction of span]; ``max_slope`` [fraction of span
    per minute]; ``min_n`` the fewest readings a plateau may have.
    """

    window: int = Field(ge=1)
    max_std: float = Field(gt=0, lt=1)
    max_slope: float = Field(gt=0, lt=1)
    min_n: int = Field(ge=1)


class OutOfControl(_Strict):
    """An out-of-control condition of the standard.

    ``kind = "single"``: one check with ``|q| > factor × limit`` of the rule;
    ``kind = "consecutive"``: ``days`` consecutive daily checks with ``|q| > factor × limit``.
    Both are counted per check kind (the zero checks and the span checks are separate
    series: a passing zero check neither breaks a run of failing span checks nor closes a
    period they opened, unless ``close`` says so).

    ``close`` (required, with the clause that says it in ``close_source``) is when a period
    ends:

    ``"same_kind"``
        at the next passing check of the kind that opened it (HJ 75-2017: invalid from the
        last passing check of that kind until it passes again after adjustment);
    ``"all_kinds"``
        at the first passing check after which the newest valid check of *every* check
        kind the condition covers for the channel passed after the trigger (40 CFR 60
        App. F Proc. 1 §4.3.2: until the CDs at both the zero and the high level are within
        their limits); a failure of another kind while open belongs to the same period.
    """

    id: str = Field(min_length=3, max_length=128, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    kind: Literal["single", "consecutive"]
    factor: float = Field(gt=0)
    days: int = Field(default=1, ge=1)
    rules: list[str] = Field(min_length=1)
    close: Literal["same_kind", "all_kinds"]
    close_source: Source
    consequence: str = Field(min_length=1)
    source: Source
    status: Status
    quote: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OutOfControl:
        if self.kind == "single" and self.days != 1:
            raise ValueError("kind 'single' takes days = 1")
        if self.kind == "consecutive" and self.days < 2:
            raise ValueError("kind 'consecutive' needs days >= 2")
        _check_quote(self.status, self.quote)
        return self

    def threshold(self, rule: Rule) -> float:
        """The value of ``|q|`` above which a check counts toward this condition [rule unit]."""
        return self.factor * rule.limit


class StatisticsLimit(_Strict):
    """Upper-bound limits of the period statistics for a group of analytes [%]."""

    analytes: list[str] = Field(min_length=1)
    cv_ub: float = Field(gt=0)
    bias_ub: float = Field(gt=0)
    source: Source
    status: Status
    quote: str | None = None
    note: str | None = None

    @field_validator("analytes")
    @classmethod
    def _known_analytes(cls, v: list[str]) -> list[str]:
        for a in v:
            if a not in ANALYTES:
                raise ValueError(f"unknown analyte {a!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StatisticsLimit:
        _check_quote(self.status, self.quote)
        return self


class Statistics(_Strict):
    """Period statistics over one-point QC checks (40 CFR 58 App A §4.1).

    The CV upper bound uses the chi-squared quantile at ``1 - cv_confidence`` with
    n − 1 degrees of freedom; the bias upper bound the t quantile at ``bias_confidence``.
    """

    check_kind: CheckKind
    cv_confidence: float = Field(gt=0, lt=1)
    bias_confidence: float = Field(gt=0, lt=1)
    min_n: int = Field(ge=2)
    period_days: int = Field(ge=1)
    source: Source
    status: Status
    quote: str | None = None
    note: str | None = None
    limits: list[StatisticsLimit] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Statistics:
        _check_quote(self.status, self.quote)
        return self

    def limit_for(self, analyte: str) -> StatisticsLimit | None:
        for lim in self.limits:
            if analyte in lim.analytes:
                return lim
        return None


class RulePack(_Strict):
    """All rules of one standard, as loaded from ``envcal/rules/{name}.toml``."""

    name: str
    version: str = Field(min_length=1, max_length=32)
    standard: str = Field(min_length=1)
    title_zh: str = Field(min_length=1)
    title_en: str = Field(min_length=1)
    molar_volume: float = Field(gt=20, lt=25)
    note: str | None = None
    plateau: Plateau
    rules: list[Rule] = Field(min_length=1)
    out_of_control: list[OutOfControl] = []
    statistics: Statistics | None = None

    _path: Path | None = PrivateAttr(default=None)
    _file_sha256: str = PrivateAttr(default="")
    _overlay_sha256: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _references(self) -> RulePack:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"name {self.name!r}: lower-case letters, digits and _ only")
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"duplicate rule id {r.id!r}")
            seen.add(r.id)
        for c in self.out_of_control:
            if c.id in seen:
                raise ValueError(f"duplicate id {c.id!r} (out_of_control ids share the rule id space)")
            seen.add(c.id)
            for rid in c.rules:
                if rid not in {r.id for r in self.rules}:
                    raise ValueError(f"out_of_control {c.id!r}: unknown rule id {rid!r}")
        return self

    # ------------------------------------------------------------------ identity
    @property
    def path(self) -> Path | None:
        """The TOML file this pack was loaded from."""
        return self._path

    @property
    def file_sha256(self) -> str:
        """SHA-256 of the pack file's bytes."""
        return self._file_sha256

    @property
    def effective_version(self) -> str:
        """``version`` + ``+`` + 12 hex digits of the file's SHA-256 (+ ``.c`` + 8 hex
        digits of the confirmations overlay when any applies), e.g. ``2026.1+3fa2b0c19d4e``."""
        v = f"{self.version}+{self._file_sha256[:12]}"
        if self._overlay_sha256:
            v += f".c{self._overlay_sha256[:8]}"
        return v

    # ------------------------------------------------------------------ lookups
    def rule(self, rule_id: str) -> Rule:
        """The rule with id ``rule_id`` (``KeyError`` naming the pack when absent)."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(f"pack {self.name!r} has no rule {rule_id!r}")

    def rules_for(self, check_kind: str, analyte: str) -> list[Rule]:
        """Rules that judge a check of ``check_kind`` on a channel of ``analyte``.

        Parameters
        ----------
        check_kind : str
            One of zero, span, std_sample, membrane, flow, linearity.
        analyte : str
            Analyte name from :mod:`envcal.analytes`.

        Returns
        -------
        list of Rule
            In file order; empty when the pack has no rule for that check.
        """
        if check_kind not in CHECK_KINDS:
            raise ValueError(f"unknown check kind {check_kind!r} (known: {', '.join(CHECK_KINDS)})")
        return [r for r in self.rules if r.applies_to(check_kind, analyte)]

    def required_checks(self, analyte: str) -> list[tuple[str, dt.timedelta]]:
        """Check kinds the standard requires for ``analyte`` with their maximum interval.

        Returns
        -------
        list of (str, datetime.timedelta)
            One entry per check kind (the shortest interval among its rules), sorted by
            kind; kinds whose rules set no ``frequency_h`` are left out.
        """
        best: dict[str, float] = {}
        for r in self.rules:
            if analyte in r.analytes and r.frequency_h is not None:
                best[r.check_kind] = min(best.get(r.check_kind, math.inf), r.frequency_h)
        return [(k, dt.timedelta(hours=h)) for k, h in sorted(best.items())]

    def out_of_control_for(self, rule_id: str) -> list[OutOfControl]:
        """Out-of-control conditions that apply to checks judged by ``rule_id``."""
        return [c for c in self.out_of_control if rule_id in c.rules]

    def analytes(self) -> set[str]:
        """Every analyte some rule of this pack covers."""
        return {a for r in self.rules for a in r.analytes}

    def counts(self) -> dict[str, int]:
        """Number of rules by status (after any confirmation overlay)."""
        out = {"confirmed": 0, "unverified": 0}
        for r in self.rules:
            out[r.status] += 1
        return out


# ---------------------------------------------------------------------------- loading
def _rule_sha(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode("utf-8")).hexdigest()


_CACHE: dict[tuple[str, str], RulePack] = {}


def pack_path(name: str, directory: Path | None) -> Path:
    """The file of pack ``name`` in ``directory`` (default ``envcal/rules``)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RulePackError(f"invalid rule pack name {name!r} (lower-case letters, digits, _)")
    return (directory or RULES_DIR) / f"{name}.toml"


def parse_pack(path: Path, name: str) -> RulePack:
    """Read and validate one pack file (cached by path and content)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.toml"))) or "none"
        raise RulePackError(f"{path}: no such rule pack {name!r} (available: {known})") from None
    sha = hashlib.sha256(raw).hexdigest()
    key = (str(path), sha)
    if key in _CACHE:
        return _CACHE[key]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulePackError(f"{path}: not valid TOML: {exc}") from None
    try:
        pack = RulePack.model_validate(data)
    except ValidationError as exc:
        raise RulePackError(describe(path, exc, data, whole="(pack)")) from None
    if pack.name != name:
        raise RulePackError(f"{path}: name: {pack.name!r} does not match the file name {name!r}")
    pack._path = path
    pack._file_sha256 = sha
    for r in pack.rules:
        r._sha256 = _rule_sha(r.model_dump(mode="json"))
    _CACHE[key] = pack
    return pack


def apply_confirmations(pack: RulePack,
                        confirmations: Mapping[str, tuple[str, Confirmation]]) -> RulePack:
    """``pack`` with confirmed rules: rule id -> (SHA-256 of the rule content it confirms,
    the confirmation). A confirmation of other content (the rule was edited) is ignored.
    The overlay's hash enters :attr:`RulePack.effective_version`."""
    applied = []
    new_rules = []
    for r in pack.rules:
        got = confirmations.get(r.id)
        if got is not None and got[0] == r.content_sha256:
            c = got[1]
            nr = r.model_copy(update={"status": "confirmed", "quote": c.citation})
            nr._sha256 = r.content_sha256
            nr._confirmation = c
            new_rules.append(nr)
            applied.append([r.id, got[0], c.citation, c.by])
        else:
            new_rules.append(r)
    if not applied:
        return pack
    out = pack.model_copy(update={"rules": new_rules})
    out._path = pack._path
    out._file_sha256 = pack._file_sha256
    out._overlay_sha256 = hashlib.sha256(
        json.dumps(applied, ensure_ascii=False).encode("utf-8")).hexdigest()
    return out


def load_pack(name: str, *, directory: str | Path | None = None) -> RulePack:
    """Load and validate one rule pack.

    Parameters
    ----------
    name : str
        Pack name = file stem, e.g. ``"hj75_2017"``.
    directory : str or Path, optional
        Folder of pack files (default: ``envcal/rules``).

    Returns
    -------
    RulePack
        As in the file; :func:`envcal.rules.confirmations.load_pack` overlays the
        administrators' confirmations stored in a database.

    Raises
    ------
    RulePackError
        Missing file, invalid TOML, unknown key / analyte / check kind / quantity,
        duplicate rule id, dangling reference; the message names the file and the key.
    """
    d = Path(directory) if directory is not None else None
    return parse_pack(pack_path(name, d), name)


def pack_names(directory: str | Path | None = None) -> list[str]:
    """Names of the pack files in ``directory`` (default ``envcal/rules``), sorted."""
    d = Path(directory) if directory is not None else RULES_DIR
    return sorted(p.stem for p in d.glob("*.toml"))


def load_all(*, directory: str | Path | None = None) -> dict[str, RulePack]:
    """Load every pack in ``directory`` (default ``envcal/rules``), keyed by name."""
    return {n: load_pack(n, directory=directory) for n in pack_names(directory)}


def validate_registry_packs(registry, directory: str | Path | None = None) -> None:
    """Check at service start that every analyzer's ``rule_pack`` exists, is valid and
    covers at least one of the analyzer's channels.

    Parameters
    ----------
    registry : envcal.registry.Registry
    directory : str or Path, optional
        Folder of pack files (default ``envcal/rules``).

    Raises
    ------
    RulePackError
        Naming the analyzer and the pack.
    """
    problems = []
    for a in registry.analyzers.values():
        try:
            pack = load_pack(a.rule_pack, directory=directory)
        except RulePackError as exc:
            problems.append(f"analyzer {a.id!r}: rule_pack {a.rule_pack!r}: {exc}")
            continue
        channels = {c.analyte for c in a.channels}
        if not channels & pack.analytes():
            problems.append(f"analyzer {a.id!r}: rule_pack {a.rule_pack!r}: no rule covers any "
                            f"of its channels ({', '.join(sorted(channels))})")
    if problems:
        raise RulePackError("\n".join(problems))


__all__ = [
    "CHECK_KINDS", "QUANTITIES", "RULES_DIR", "Confirmation", "OutOfControl", "Plateau", "Rule",
    "RulePack", "RulePackError", "Source", "Statistics", "StatisticsLimit", "apply_confirmations",
    "load_all",
    "load_pack", "pack_names", "pack_path", "parse_pack", "validate_registry_packs",
]
