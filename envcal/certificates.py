"""Certified reference materials (CRMs): certificate schema, import, validation, versions,
revocation, and the certified values verification uses.

A certificate is one JSON file per lot (``reference_materials/schema.json``; the same model
is :class:`CertificateDoc` here, both strict: an unknown key is an error)::

    {"id": "GBW(E)080123-2026-017", "crm_code": "GBW(E)080123", "name": "...",
     "kind": "gas_cylinder", "producer": "...", "lot": "2026-017", "matrix": "N2",
     "issued": "2026-03-01", "expires": "2027-03-01",
     "values": [{"analyte": "SO2", "value": 56.0, "unit": "umol/mol", "U": 0.6, "k": 2}],
     "traceability": "...", "attachment": "GBW(E)080123-2026-017.pdf"}

Rules beyond the JSON schema (checked by :func:`validate_certificate`, every problem listed,
each naming its field):

- analytes are known (:data:`envcal.analytes.ANALYTES`), units parse (pint, :mod:`envcal.units`)
  and fit the analyte: a gas (SO2, NO, NOx, ...) in mole fraction or mass concentration
  convertible to mg/m3 at standard state; O2 in mole fraction (``%``, ``umol/mol``); water
  analytes in mass concentration (``mg/L``); pH in ``pH``; a ``membrane`` certifies a mass
  (``ug``) of PM2.5 / PM10 / dust collected on the membrane;
- value > 0, except a ``zero_material`` (value = certified residual content, usually 0);
  U > 0, k > 0; issued < expires; at least one value unless ``zero_material``;
- numbers are finite (``NaN``/``Infinity`` and overflowing literals such as ``1e999`` are
  refused); the file is at most :data:`MAX_CERTIFICATE_BYTES`, nested at most
  :data:`MAX_DEPTH` levels, and has no duplicate key; ``id`` and ``lot`` use only
  :data:`ID_PATTERN` (letters, digits, ``( ) . _ + -``);
- the attachment (the certificate's PDF) is a relative name resolved inside the
  certificate's folder (or the explicit attachments folder): no absolute path, no ``..``, no
  symbolic link leading out; error messages name only the attachment as written. It is at
  most ``max_attachment_bytes`` (default 10 MiB, setting ``ENVCAL_MAX_ATTACHMENT_BYTES``),
  starts with ``%PDF-``, ends with ``%%EOF`` and is parsed by pypdf (at least one page); it
  is stored content-addressed by SHA-256.

Versions: importing identical content again changes nothing; changed content for an existing
id becomes version n+1 and supersedes version n (kept, ``current`` false, ``superseded_at``
set). A revoked lot cannot get a new version. Every create, supersede and revoke writes the
audit trail (:mod:`envcal.audit`) in the same transaction.

Use in checks (:func:`certified_value`): always the **current** version of a lot (a
superseding version is a correction of the certificate); refused when the lot is unknown,
revoked (a revoked lot is never used for an evaluation made after the revocation, whatever
the time evaluated: replays of old periods are refused too and the earlier results were
marked for review), not yet valid or expired on the evaluated date (issued <= at.date() <=
expires, the date in ``at``'s own offset), or lacks the analyte, or its unit cannot be
converted to the channel's.

Analyte aliases (:data:`ALIASES`): a NOx channel is reported as NO2, so an NO or NO2 cylinder
serves it: the mole fraction is the same, mass concentrations use M(NO2) = 46.01 g/mol (a
value certified in mg/m3 of NO is first turned into umol/mol with M(NO) = 30.01).

Zero materials: a ``zero_material`` listing analytes gives its listed value (the residual,
usually 0) for those analytes only; one listing none (e.g. zero water) is a zero for any
analyte: value 0 and standard uncertainty 0 in any unit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from envcal import audit
from envcal.analytes import ANALYTES
from envcal.models import Attachment, Certificate, CertificateValue, Finding, utcnow
from envcal.units import (
    MOLAR_MASS,
    MOLAR_VOLUME_HJ,
    UnitError,
    conversion,
    convert,
    parse_unit,
    ureg,
)
from envcal.validation import error_message, loc_path

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "reference_materials" / "schema.json"
#: Default attachment size limit [bytes].
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: Largest certificate JSON file [bytes].
MAX_CERTIFICATE_BYTES = 256 * 1024
#: Deepest nesting of arrays and objects in a certificate file (a valid one needs 3).
MAX_DEPTH = 16
#: Characters of a certificate ``id`` and ``lot`` (also in reference_materials/schema.json).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9()._+-]*$"
#: A channel analyte -> certificate analytes that may serve it, in order of preference.
ALIASES: dict[str, tuple[str, ...]] = {"NOx": ("NOx", "NO2", "NO")}

Kind = Literal["gas_cylinder", "solution", "membrane", "zero_material"]
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class CertificateError(ValueError):
    """A certificate (or an operation on one) was refused; ``problems`` lists every reason."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems)
        super().__init__(msg)


# --------------------------------------------------------------------------- the model
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CertifiedValueDoc(_Strict):
    """One certified value: ``value`` and expanded uncertainty ``U`` in ``unit``, coverage ``k``."""

    analyte: str = Field(min_length=1, max_length=32)
    value: float = Field(ge=0, allow_inf_nan=False)
    unit: str = Field(min_length=1, max_length=32)
    U: float = Field(gt=0, allow_inf_nan=False)
    k: float = Field(gt=0, allow_inf_nan=False)


class CertificateDoc(_Strict):
    """A CRM certificate file; mirrors ``reference_materials/schema.json``."""

    id: str = Field(min_length=1, max_length=128, pattern=ID_PATTERN)
    crm_code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    kind: Kind
    producer: str = Field(min_length=1)
    lot: str = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
    matrix: str | None = None
    issued: dt.date
    expires: dt.date
    values: list[CertifiedValueDoc]
    traceability: str | None = None
    attachment: str | None = None


def load_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a certificate file."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- validation
#: Unit a value of each analyte dimension must be convertible to (gas: see _unit_problem).
_CANONICAL = {"mass_concentration": "mg/L", "mole_fraction": "%", "ph": "pH",
              "velocity": "m/s", "temperature": "K", "pressure": "kPa",
              "volume_flow": "L/min", "percent": "%"}
_MEMBRANE_ANALYTES = ("PM2.5", "PM10", "dust")


def _unit_problem(analyte: str, unit: str, kind: str | None, molar_volume: float) -> str | None:
    dim = ANALYTES[analyte].dimension
    if kind == "membrane":
        if analyte not in _MEMBRANE_ANALYTES:
            return (f"a membrane certifies a particulate mass ({', '.join(_MEMBRANE_ANALYTES)}), "
                    f"not {analyte}")
        if parse_unit(unit).dimensionality != ureg.gram.dimensionality:
            return f"{unit!r} is not a mass unit (a membrane certifies a mass, e.g. ug)"
        return None
    if dim == "gas":
        try:
            conversion(unit, "mg/m3", analyte, molar_volume)
        except UnitError:
            return (f"{unit!r} is not a unit for {analyte} (a gas: mole fraction such as "
                    "umol/mol, or mass concentration such as mg/m3)")
        return None
    want = _CANONICAL.get(dim)
    if want is None or parse_unit(unit).dimensionality != parse_unit(want).dimensionality:
        return f"{unit!r} is not a unit for {analyte} (expected a {dim.replace('_', ' ')} unit such as {want})"
    return None


def _structure_problems(text: str) -> list[str]:
    try:
        CertificateDoc.model_validate_json(text)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            out.append(f"{loc_path(err['loc'])}: {error_message(err)}")
        return out
    return []


def _semantic_problems(data: dict, molar_volume: float) -> list[str]:
    out: list[str] = []
    kind = data.get("kind")
    values = data.get("values")
    if isinstance(values, list):
        if not values and kind != "zero_material":
            out.append(f"values: at least one certified value is required for a {kind}")
        seen: set[str] = set()
        for i, v in enumerate(values):
            if not isinstance(v, dict):
                continue
            an, unit, val = v.get("analyte"), v.get("unit"), v.get("value")
            analyte_ok = isinstance(an, str) and an in ANALYTES
            if isinstance(an, str):
                if not analyte_ok:
                    out.append(f"values[{i}].analyte: unknown analyte {an!r} "
                               f"(known: {', '.join(sorted(ANALYTES))})")
                elif an in seen:
                    out.append(f"values[{i}].analyte: {an} is certified twice")
                seen.add(an)
            unit_ok = False
            if isinstance(unit, str) and unit.strip():
                try:
                    parse_unit(unit)
                    unit_ok = True
                except UnitError:
                    out.append(f"values[{i}].unit: unknown unit {unit!r}")
            if analyte_ok and unit_ok:
                p = _unit_problem(an, unit, kind, molar_volume)
                if p:
                    out.append(f"values[{i}].unit: {p}")
            if (isinstance(val, (int, float)) and not isinstance(val, bool) and val == 0
                    and kind != "zero_material"):
                out.append(f"values[{i}].value: must be > 0 for a {kind} (only a zero_material "
                           "may certify 0)")
    issued, expires = data.get("issued"), data.get("expires")
    try:
        d0, d1 = dt.date.fromisoformat(issued), dt.date.fromisoformat(expires)
    except (TypeError, ValueError):
        d0 = d1 = None
    if d0 is not None and d1 is not None and not d0 < d1:
        out.append(f"expires: {d1} is not after issued {d0}")
    return out


def _depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` outside JSON strings (no recursion, any input)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a certificate may hold (finite numbers only)")


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:20]} overflows to infinity (finite numbers only)")
    return v


def parse_certificate_json(raw: bytes) -> tuple[str, Any]:
    """Decode a certificate file strictly: size, depth, duplicate keys, finite numbers.

    Parameters
    ----------
    raw : bytes
        The file content (UTF-8, a BOM allowed).

    Returns
    -------
    (str, object)
        The text and the decoded JSON.

    Raises
    ------
    ValueError
        One sentence saying what is wrong (never a traceback-worthy error).

    References
    ----------
    RFC 8259 §4 (names within an object should be unique), §6 (Infinity and NaN are not
    permitted).
    """
    if len(raw) > MAX_CERTIFICATE_BYTES:
        raise ValueError(f"{len(raw)} bytes, over the limit of {MAX_CERTIFICATE_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if _depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant,
                          parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    return text, data


@dataclass(frozen=True)
class _Pdf:
    filename: str
    data: bytes
    sha256: str


def check_pdf(data: bytes, name: str, *, field_name: str = "attachment",
              max_bytes: int | None = None) -> list[str]:
    """Problems with a PDF attachment (empty when acceptable).

    Parameters
    ----------
    data : bytes
        File content.
    name : str
        File name (used in messages).
    field_name : str
        Field named in messages.
    max_bytes : int, optional
        Size limit [bytes]; default :func:`max_attachment_bytes`.

    Returns
    -------
    list of str
    """
    limit = max_attachment_bytes() if max_bytes is None else max_bytes
    out = []
    if len(data) > limit:
        out.append(f"{field_name}: {name} is {len(data)} bytes, over the limit of {limit} bytes")
        return out
    if b"%PDF-" not in data[:1024]:
        out.append(f"{field_name}: {name} is not a PDF (no %PDF- header)")
    elif b"%%EOF" not in data[-1024:]:
        out.append(f"{field_name}: {name} is not a complete PDF (no %%EOF at the end)")
    else:
        problem = _parse_pdf(data)
        if problem:
            out.append(f"{field_name}: {name} is not a readable PDF ({problem})")
    return out


def _parse_pdf(data: bytes) -> str | None:
    """Why pypdf cannot read ``data`` as a PDF with at least one page, or None."""
    import pypdf

    pdf_log = logging.getLogger("pypdf")
    level = pdf_log.level
    pdf_log.setLevel(logging.ERROR)  # pypdf warns about every repaired detail
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if len(reader.pages) < 1:
            return "no pages"
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on malformed input; the reason is returned
        return f"{exc.__class__.__name__}: {str(exc)[:120]}"
    finally:
        pdf_log.setLevel(level)
    return None


def max_attachment_bytes() -> int:
    """Attachment size limit [bytes]: ``ENVCAL_MAX_ATTACHMENT_BYTES`` / envcal.toml, else 10 MiB."""
    from envcal.config import setting

    return int(setting("max_attachment_bytes", default=MAX_ATTACHMENT_BYTES))


def read_pdf(source: Path | bytes, name: str | None = None, *, field_name: str = "attachment",
             max_bytes: int | None = None) -> tuple[_Pdf | None, list[str]]:
    """Read and check a PDF from a path or bytes; returns (pdf or None, problems)."""
    limit = max_attachment_bytes() if max_bytes is None else max_bytes
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = name or "attachment.pdf"
    else:
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            return None, [f"{field_name}: file {name!r} not found"]
        size = path.stat().st_size
        if size > limit:
            return None, [f"{field_name}: {name} is {size} bytes, over the limit of {limit} bytes"]
        data = path.read_bytes()
    problems = check_pdf(data, name, field_name=field_name, max_bytes=limit)
    if problems:
        return None, problems
    return _Pdf(name, data, hashlib.sha256(data).hexdigest()), []


def store_attachment(session: Session, pdf: _Pdf) -> str:
    """Store a checked PDF content-addressed (no-op when already stored); returns its SHA-256."""
    if session.get(Attachment, pdf.sha256) is None:
        session.add(Attachment(sha256=pdf.sha256, filename=pdf.filename, size=len(pdf.data),
                               data=pdf.data, stored_at=utcnow()))
        session.flush()
    return pdf.sha256


@dataclass(frozen=True)
class ValidatedCertificate:
    """A certificate that passed every check, ready to store."""

    doc: CertificateDoc
    data: dict
    pdf: _Pdf | None
    content_sha256: str


def resolve_attachment(name: str, folder: Path) -> tuple[Path | None, str | None]:
    """The attachment file ``name`` inside ``folder``, or (None, why not).

    Parameters
    ----------
    name : str
        The certificate's ``attachment`` as written: a relative path.
    folder : Path
        The certificate's folder, or the explicit attachments folder.

    Returns
    -------
    (Path or None, str or None)
        The resolved file, or a problem that names only ``name`` (never another path, and
        not whether a file outside ``folder`` exists).
    """
    p = Path(name)
    if not name or "\x00" in name or p.is_absolute() or ".." in p.parts or name.startswith("~"):
        return None, (f"attachment: {name!r} must be a file name inside the certificate's folder "
                      "(no absolute path, no '..')")
    base = folder.resolve()
    target = (base / p).resolve()
    if not target.is_relative_to(base):  # a symbolic link leading out of the folder
        return None, f"attachment: {name!r} leads outside the certificate's folder"
    if not target.is_file():
        return None, f"attachment: file {name!r} not found in the certificate's folder"
    return target, None


def validate_certificate(source: str | Path | bytes, *, attachment: Path | bytes | None = None,
                         molar_volume: float = MOLAR_VOLUME_HJ,
                         max_bytes: int | None = None,
                         attachments_dir: Path | None = None) -> ValidatedCertificate:
    """Validate a certificate file (schema, units, values, dates, attachment); store nothing.

    Parameters
    ----------
    source : str or Path or bytes
        Path of the JSON file, or its content.
    attachment : Path or bytes, optional
        The PDF; by default the file the JSON's ``attachment`` names, next to the JSON.
    molar_volume : float, default 22.4
        [L/mol] used to check that gas units convert to mg/m3.
    max_bytes : int, optional
        Attachment size limit [bytes].
    attachments_dir : Path, optional
        Folder the ``attachment`` name is resolved in, instead of the certificate's folder.

    Returns
    -------
    ValidatedCertificate

    Raises
    ------
    CertificateError
        Listing every problem found, each naming its field.

    References
    ----------
    JSON Schema draft 2020-12; HJ 75-2017 Appendix A (gas unit conversion).
    """
    label = None
    base_dir: Path | None = None
    if isinstance(source, (bytes, bytearray)):
        raw = bytes(source)
    else:
        path = Path(source)
        label, base_dir = str(path), path.parent
        try:
            if path.stat().st_size > MAX_CERTIFICATE_BYTES:
                raise CertificateError(f"{path.stat().st_size} bytes, over the limit of "
                                       f"{MAX_CERTIFICATE_BYTES} bytes", label)
            raw = path.read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read file: {exc.strerror}", label) from None
    if attachments_dir is not None:
        base_dir = Path(attachments_dir)
    try:
        text, data = parse_certificate_json(raw)
    except ValueError as exc:
        raise CertificateError(f"not valid JSON: {exc}", label) from None
    if not isinstance(data, dict):
        raise CertificateError("not a certificate: the JSON must be an object", label)
    problems = _structure_problems(text) + _semantic_problems(data, molar_volume)
    pdf = None
    name = data.get("attachment") if isinstance(data.get("attachment"), str) else None
    if attachment is not None:
        src_name = name or (Path(attachment).name if not isinstance(attachment, (bytes, bytearray))
                            else f"{data.get('id', 'certificate')}.pdf")
        pdf, p = read_pdf(attachment, src_name, max_bytes=max_bytes)
        problems += p
    elif name:
        if base_dir is None:
            problems.append(f"attachment: names {name!r} but no attachment was provided")
        else:
            target, why = resolve_attachment(name, base_dir)
            if why is not None:
                problems.append(why)
            else:
                pdf, p = read_pdf(target, name, max_bytes=max_bytes)
                problems += p
    if problems:
        raise CertificateError(problems, label)
    doc = CertificateDoc.model_validate_json(text)
    content = audit.canonical_json(data) + (pdf.sha256 if pdf else "")
    return ValidatedCertificate(doc, data, pdf, hashlib.sha256(content.encode()).hexdigest())


# --------------------------------------------------------------------------- import
@dataclass(frozen=True)
class ImportOutcome:
    """What :func:`import_certificate` did: ``created``, ``unchanged`` or ``superseded``."""

    status: Literal["created", "unchanged", "superseded"]
    cert_id: str
    version: int
    pk: int
    content_sha256: str
    attachment_sha256: str | None = None


def _versions(session: Session, cert_id: str) -> list[Certificate]:
    return list(session.exec(select(Certificate).where(Certificate.cert_id == cert_id)
                             .order_by(Certificate.version)))


def import_certificate(engine: Engine, path_or_bytes: str | Path | bytes, *,
                       attachment: Path | bytes | None = None, actor: str = "cli",
                       molar_volume: float = MOLAR_VOLUME_HJ,
                       max_bytes: int | None = None,
                       attachments_dir: Path | None = None) -> ImportOutcome:
    """Validate and store one CRM certificate (all or nothing, one transaction).

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    path_or_bytes : str or Path or bytes
        The certificate JSON (path, or content as uploaded in the UI).
    attachment : Path or bytes, optional
        The certificate PDF; default: the file named by the JSON's ``attachment``, next to it.
    actor : str, default "cli"
        Who imports (audit trail).
    molar_volume : float, default 22.4
        [L/mol], for the gas unit check.
    max_bytes : int, optional
        Attachment size limit [bytes] (default 10 MiB or ``ENVCAL_MAX_ATTACHMENT_BYTES``).
    attachments_dir : Path, optional
        Folder the ``attachment`` name is resolved in (default: the certificate's folder).

    Returns
    -------
    ImportOutcome
        ``unchanged`` when the current version has the same content (JSON and PDF),
        ``superseded`` when a changed certificate became the new current version.

    Raises
    ------
    CertificateError
        Every problem with the file; nothing is stored.
    """
    v = validate_certificate(path_or_bytes, attachment=attachment, molar_volume=molar_volume,
                             max_bytes=max_bytes, attachments_dir=attachments_dir)
    try:
        return _store_certificate(engine, v, actor)
    except sa.exc.IntegrityError:
        # a concurrent import of the same lot won the race: decide again on what it stored
        return _store_certificate(engine, v, actor)


def _store_certificate(engine: Engine, v: ValidatedCertificate, actor: str) -> ImportOutcome:
    doc = v.doc
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        try:
            versions = _versions(s, doc.id)
            current = next((c for c in versions if c.current), None)
            if current is not None and current.content_sha256 == v.content_sha256:
                return ImportOutcome("unchanged", doc.id, current.version, current.pk,
                                     current.content_sha256, current.attachment_sha256)
            if current is not None and current.revoked_at is not None:
                raise CertificateError(f"id: lot {doc.id} was revoked on "
                                       f"{current.revoked_at:%Y-%m-%d}; it cannot get a new version",
                                       doc.id)
            att = store_attachment(s, v.pdf) if v.pdf else None
            version = (versions[-1].version + 1) if versions else 1
            if current is not None:
                current.current = False
                current.superseded_at = now
                s.add(current)
                s.flush()
            cert = Certificate(cert_id=doc.id, version=version, current=True,
                               content_sha256=v.content_sha256, crm_code=doc.crm_code,
                               name=doc.name, kind=doc.kind, producer=doc.producer, lot=doc.lot,
                               matrix=doc.matrix, issued=doc.issued, expires=doc.expires,
                               traceability=doc.traceability, attachment_sha256=att,
                               document=v.data, imported_at=now, imported_by=actor)
            s.add(cert)
            s.flush()
            for val in doc.values:
                s.add(CertificateValue(certificate_pk=cert.pk, analyte=val.analyte,
                                       value=val.value, unit=val.unit, U=val.U, k=val.k))
            status = "superseded" if current is not None else "created"
            details = {"version": version, "pk": cert.pk, "content_sha256": v.content_sha256,
                       "attachment_sha256": att, "kind": doc.kind,
                       "analytes": [x.analyte for x in doc.values]}
            if current is not None:
                details["supersedes_version"] = current.version
            audit.record(s, actor, f"certificate.{'supersede' if current else 'create'}",
                         "certificate", doc.id, details, ts=now)
            s.commit()
        except Exception:
            s.rollback()
            raise
    return ImportOutcome(status, doc.id, version, cert.pk, v.content_sha256, att)


# --------------------------------------------------------------------------- revocation
def _check_result_table(conn) -> sa.Table | None:
    if not sa.inspect(conn).has_table("check_result"):
        return None
    return sa.Table("check_result", sa.MetaData(), autoload_with=conn)


def _results_using(conn, material_id: str, *, mark: bool) -> list[dict[str, Any]]:
    table = _check_result_table(conn)
    if table is None or "material" not in table.c:
        return []
    rows = [dict(r._mapping) for r in conn.execute(
        sa.select(table).where(table.c.material == material_id).order_by(table.c.id))]
    if mark and rows and "needs_review" in table.c:
        conn.execute(sa.update(table).where(table.c.material == material_id)
                     .values(needs_review=True))
    return rows


def results_using_material(engine: Engine, material_id: str) -> list[dict[str, Any]]:
    """Every check result that used the lot ``material_id`` (rows as dicts, by ``id``).

    Reads the ``check_result`` table (columns ``id`` and ``material``) when it exists, else
    returns ``[]``. The table is reflected, so this module needs no import of its model.
    """
    with engine.connect() as conn:
        return _results_using(conn, material_id, mark=False)


@dataclass(frozen=True)
class RevocationOutcome:
    """What :func:`revoke_certificate` did; ``results`` are the check results marked for review."""

    status: Literal["revoked", "already_revoked"]
    cert_id: str
    revoked_at: dt.datetime
    results: list[dict[str, Any]] = field(default_factory=list)
    finding_id: int | None = None


def revoke_certificate(engine: Engine, cert_id: str, reason: str, *, actor: str = "cli",
                       at: dt.datetime | None = None) -> RevocationOutcome:
    """Revoke a lot: never used again for new verdicts; its past results are marked for review.

    In one transaction: every version of the lot gets ``revoked_at``/``revoked_reason``/
    ``revoked_by``; every check result that used it gets ``needs_review = true``; a
    ``Finding(kind="material_revoked")`` lists them (the alerts machinery raises the alert);
    the audit trail records the revocation.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    cert_id : str
        The lot (certificate id).
    reason : str
        Why (required, shown to staff).
    actor : str, default "cli"
    at : datetime, optional
        Time of the revocation (timezone-aware), default now.

    Returns
    -------
    RevocationOutcome

    Raises
    ------
    CertificateError
        Unknown lot or empty reason.
    """
    if not reason or not reason.strip():
        raise CertificateError("reason: a revocation needs a reason", cert_id)
    now = at or utcnow()
    with Session(engine, expire_on_commit=False) as s:
        try:
            versions = _versions(s, cert_id)
            if not versions:
                raise CertificateError(f"id: no certificate {cert_id!r}", cert_id)
            current = next((c for c in versions if c.current), versions[-1])
            if current.revoked_at is not None:
                return RevocationOutcome("already_revoked", cert_id, current.revoked_at)
            for c in versions:
                c.revoked_at, c.revoked_reason, c.revoked_by = now, reason.strip(), actor
                s.add(c)
            s.flush()
            results = _results_using(s.connection(), cert_id, mark=True)
            ids = [r.get("id") for r in results]
            analyzers = sorted({r["analyzer_id"] for r in results if r.get("analyzer_id")})
            finding = Finding(created_at=now, kind="material_revoked", object_type="certificate",
                              object_id=cert_id,
                              details={"reason": reason.strip(), "revoked_by": actor,
                                       "version": current.version, "result_ids": ids,
                                       "analyzers": analyzers})
            s.add(finding)
            s.flush()
            audit.record(s, actor, "certificate.revoke", "certificate", cert_id,
                         {"reason": reason.strip(), "version": current.version,
                          "results_marked": len(ids), "finding_id": finding.id}, ts=now)
            s.commit()
        except Exception:
            s.rollback()
            raise
    return RevocationOutcome("revoked", cert_id, now, results, finding.id)


# --------------------------------------------------------------------------- listing
def certificate_state(cert: Certificate, on: dt.date) -> str:
    """``revoked``, ``superseded``, ``not_yet_valid``, ``expired`` or ``valid`` on date ``on``."""
    if cert.revoked_at is not None:
        return "revoked"
    if not cert.current:
        return "superseded"
    if on < cert.issued:
        return "not_yet_valid"
    if on > cert.expires:
        return "expired"
    return "valid"


def _summary(cert: Certificate, values: list[CertificateValue], on: dt.date) -> dict[str, Any]:
    return {"id": cert.cert_id, "version": cert.version, "pk": cert.pk, "kind": cert.kind,
            "crm_code": cert.crm_code, "name": cert.name, "lot": cert.lot,
            "analytes": [v.analyte for v in values], "issued": cert.issued.isoformat(),
            "expires": cert.expires.isoformat(), "state": certificate_state(cert, on),
            "current": cert.current}


def list_certificates(engine: Engine, *, on: dt.date | None = None,
                      include_superseded: bool = False) -> list[dict[str, Any]]:
    """Certificates (current versions, or all with ``include_superseded``) with their state on ``on``.

    Returns
    -------
    list of dict
        Keys: id, version, pk, kind, crm_code, name, lot, analytes, issued, expires, state,
        current.
    """
    on = on or dt.date.today()
    with Session(engine) as s:
        q = select(Certificate).order_by(Certificate.cert_id, Certificate.version)
        if not include_superseded:
            q = q.where(Certificate.current == sa.true())
        certs = list(s.exec(q))
        vals: dict[int, list[CertificateValue]] = {}
        for v in s.exec(select(CertificateValue).order_by(CertificateValue.id)):
            vals.setdefault(v.certificate_pk, []).append(v)
    return [_summary(c, vals.get(c.pk, []), on) for c in certs]


def show_certificate(engine: Engine, cert_id: str, *, on: dt.date | None = None) -> dict[str, Any]:
    """Everything about one lot: every version with its values, attachment and revocation,
    and the check results that used it.

    Raises
    ------
    CertificateError
        Unknown id.
    """
    on = on or dt.date.today()
    with Session(engine) as s:
        versions = _versions(s, cert_id)
        if not versions:
            raise CertificateError(f"id: no certificate {cert_id!r}", cert_id)
        out_versions = []
        for c in versions:
            values = list(s.exec(select(CertificateValue)
                                 .where(CertificateValue.certificate_pk == c.pk)
                                 .order_by(CertificateValue.id)))
            d = _summary(c, values, on)
            d.update({"producer": c.producer, "matrix": c.matrix, "traceability": c.traceability,
                      "content_sha256": c.content_sha256, "attachment_sha256": c.attachment_sha256,
                      "imported_at": c.imported_at.isoformat(), "imported_by": c.imported_by,
                      "superseded_at": c.superseded_at.isoformat() if c.superseded_at else None,
                      "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                      "revoked_reason": c.revoked_reason, "revoked_by": c.revoked_by,
                      "values": [{"analyte": v.analyte, "value": v.value, "unit": v.unit,
                                  "U": v.U, "k": v.k, "u": v.U / v.k} for v in values]})
            out_versions.append(d)
    current = next((d for d in out_versions if d["current"]), out_versions[-1])
    return {**current, "versions": out_versions,
            "results": [r.get("id") for r in results_using_material(engine, cert_id)]}


def get_attachment(engine: Engine, sha256: str) -> Attachment | None:
    """A stored attachment by its SHA-256 (``None`` when absent)."""
    with Session(engine) as s:
        return s.get(Attachment, sha256)


# --------------------------------------------------------------------------- use in checks
@dataclass(frozen=True)
class CertifiedValue:
    """A certified value ready for a check, in the channel's unit.

    ``value`` and ``u`` (standard uncertainty = U/k) are in ``unit``; ``U`` and ``k`` are the
    certificate's expanded uncertainty (converted) and coverage factor. ``source_analyte`` and
    ``source_value``/``source_unit`` are as certified; ``molar_mass``/``molar_volume`` record
    the gas conversion used (``None`` when none was needed).
    """

    material_id: str
    analyte: str
    value: float
    u: float
    U: float
    k: float
    unit: str
    certificate_pk: int
    version: int
    kind: str
    source_analyte: str | None
    source_value: float
    source_unit: str
    molar_mass: float | None = None
    molar_volume: float | None = None
    molar_mass_target: float | None = None


RefusalCode = Literal["unknown", "not_yet_valid", "expired", "revoked", "analyte_absent",
                      "unit_not_convertible"]


@dataclass(frozen=True)
class Refusal:
    """Why a lot cannot give a certified value: a machine ``code`` and reasons in en and zh."""

    material_id: str
    analyte: str
    code: RefusalCode
    reason: str
    reason_zh: str

    def __bool__(self) -> bool:  # a refusal is falsy, a value truthy
        return False


def _convert_value(value: float, U: float, src_analyte: str, src_unit: str, analyte: str,
                   unit: str, molar_volume: float) -> tuple[float, float, float | None, float | None]:
    """(value, U, molar mass of source, molar mass of target) converted to ``unit``."""
    if src_analyte == analyte:
        fu, tu = parse_unit(src_unit), parse_unit(unit)
        if fu.dimensionality == tu.dimensionality:
            v = convert(value, src_unit, unit)
            return v, convert(value + U, src_unit, unit) - v, None, None
        c = conversion(src_unit, unit, analyte, molar_volume)
        return c.apply(value), c.apply(U), c.molar_mass, c.molar_mass
    # alias: through the mole fraction (same for NO/NO2/NOx), each side with its molar mass
    a = conversion(src_unit, "umol/mol", src_analyte, molar_volume)
    b = conversion("umol/mol", unit, analyte, molar_volume)
    f = a.factor * b.factor
    return value * f, U * f, a.molar_mass, b.molar_mass


def certified_value(engine: Engine, material_id: str, analyte: str, unit: str, at: dt.datetime,
                    *, molar_volume: float = MOLAR_VOLUME_HJ) -> CertifiedValue | Refusal:
    """The certified value of ``analyte`` in lot ``material_id``, in ``unit``, for a check at ``at``.

    Parameters
    ----------
    engine : sqlalchemy.engine.Engine
    material_id : str
        The lot (certificate id) the check names.
    analyte : str
        The channel's analyte (NOx is served by NO/NO2 certificates, see :data:`ALIASES`).
    unit : str
        The channel's unit.
    at : datetime
        Time of the check (timezone-aware); the lot must be valid on ``at.date()``
        (issued <= date <= expires).
    molar_volume : float, default 22.4
        [L/mol] at 273.15 K, 101.325 kPa, as the rule pack names (22.4 HJ, 22.414 exact).

    Returns
    -------
    CertifiedValue or Refusal
        Value and standard uncertainty u = U/k in ``unit``, with the certificate version and
        conversion used; or a refusal (unknown, not_yet_valid, expired, revoked,
        analyte_absent, unit_not_convertible). A revoked lot is refused for any ``at``.

    References
    ----------
    JCGM 100:2008 (GUM) 6.2.1, u = U/k; HJ 75-2017 Appendix A, c = x * M / V_m;
    ISO Guide 33:2015 (use of CRMs).
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    day = at.date()

    def refuse(code: RefusalCode, en: str, zh: str) -> Refusal:
        return Refusal(material_id, analyte, code, en, zh)

    with Session(engine) as s:
        cert = s.exec(select(Certificate).where(Certificate.cert_id == material_id,
                                                Certificate.current == sa.true())).first()
        if cert is None:
            return refuse("unknown", f"reference material {material_id!r} is not registered",
                          f"标准物质 {material_id} 未登记")
        values = list(s.exec(select(CertificateValue)
                             .where(CertificateValue.certificate_pk == cert.pk)))
    if cert.revoked_at is not None:
        when = f"{cert.revoked_at:%Y-%m-%d}"
        return refuse("revoked", f"lot {material_id} was revoked on {when}: {cert.revoked_reason}",
                      f"标准物质 {material_id} 已于 {when} 撤销：{cert.revoked_reason}")
    if day < cert.issued:
        return refuse("not_yet_valid", f"lot {material_id} is not valid on {day} "
                      f"(issued {cert.issued})",
                      f"标准物质 {material_id} 在 {day} 尚未生效（定值日期 {cert.issued}）")
    if day > cert.expires:
        return refuse("expired", f"lot {material_id} expired on {cert.expires} (check on {day})",
                      f"标准物质 {material_id} 已于 {cert.expires} 过期（核查日期 {day}）")
    by_analyte = {v.analyte: v for v in values}
    chosen = None
    for name in ALIASES.get(analyte, (analyte,)):
        if name in by_analyte:
            chosen = by_analyte[name]
            break
    common = dict(material_id=material_id, analyte=analyte, certificate_pk=cert.pk,
                  version=cert.version, kind=cert.kind)
    if chosen is None:
        if cert.kind == "zero_material" and not values:
            try:
                parse_unit(unit)
            except UnitError:
                return refuse("unit_not_convertible", f"unknown unit {unit!r}",
                              f"未知单位 {unit}")
            return CertifiedValue(value=0.0, u=0.0, U=0.0, k=2.0, unit=unit, source_analyte=None,
                                  source_value=0.0, source_unit=unit, **common)
        listed = ", ".join(sorted(by_analyte)) or "none"
        return refuse("analyte_absent", f"lot {material_id} certifies no {analyte} "
                      f"(certified: {listed})",
                      f"标准物质 {material_id} 未给出 {analyte} 的标准值（已定值：{listed}）")
    try:
        value, U, mm_src, mm_dst = _convert_value(chosen.value, chosen.U, chosen.analyte,
                                                  chosen.unit, analyte, unit, molar_volume)
    except UnitError as exc:
        return refuse("unit_not_convertible",
                      f"lot {material_id}: {chosen.analyte} certified in {chosen.unit} cannot be "
                      f"expressed in {unit} ({exc})",
                      f"标准物质 {material_id} 的 {chosen.analyte} 标准值单位 {chosen.unit} "
                      f"无法换算为 {unit}")
    gas = mm_src is not None
    return CertifiedValue(value=value, u=U / chosen.k, U=U, k=chosen.k, unit=unit,
                          source_analyte=chosen.analyte, source_value=chosen.value,
                          source_unit=chosen.unit, molar_mass=mm_src,
                          molar_volume=molar_volume if gas else None,
                          molar_mass_target=mm_dst, **common)


__all__ = [
    "ALIASES", "MOLAR_MASS", "CertificateDoc", "CertificateError", "CertifiedValue",
    "CertifiedValueDoc", "ImportOutcome", "Refusal", "RevocationOutcome", "certificate_state",
    "certified_value", "check_pdf", "get_attachment", "import_certificate", "list_certificates",
    "load_schema", "read_pdf", "results_using_material", "revoke_certificate", "show_certificate",
    "store_attachment", "validate_certificate",
]
