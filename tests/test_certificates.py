import datetime as dt
import json
import re
import shutil
import threading
from pathlib import Path

import jsonschema
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import Session, SQLModel, select
from typer.testing import CliRunner

from envcal.audit import verify_chain
from envcal.certificates import (
    CertificateDoc,
    CertificateError,
    CertifiedValue,
    Refusal,
    certified_value,
    import_certificate,
    list_certificates,
    load_schema,
    results_using_material,
    revoke_certificate,
    show_certificate,
    validate_certificate,
)
from envcal.models import Attachment, AuditLog, Certificate, CertificateValue, Finding

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "reference_materials" / "samples"
SO2 = SAMPLES / "gas_so2.json"
SO2_ID = "GBW(E)080123-2026-017"
PDF = SAMPLES / f"{SO2_ID}.pdf"
CST = dt.timezone(dt.timedelta(hours=8))
T_CHECK = dt.datetime(2026, 11, 27, 8, 0, tzinfo=CST)


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*.json"))


def so2_doc() -> dict:
    return json.loads(SO2.read_text(encoding="utf-8"))


def doc_bytes(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar()
                for t in SQLModel.metadata.tables if sa.inspect(conn).has_table(t)}


# --------------------------------------------------------------------------- broken files
def _set(path, value):
    def f(d):
        *head, last = path
        for p in head:
            d = d[p]
        d[last] = value
    return f


def _del(path):
    def f(d):
        *head, last = path
        for p in head:
            d = d[p]
        del d[last]
    return f


# (case, mutation of the SO2 sample, attachment override, expected message fragment)
BROKEN = [
    ("missing_U", _del(["values", 0, "U"]), None, "values[0].U: required field is missing"),
    ("negative_value", _set(["values", 0, "value"], -1.0), None,
     "values[0].value: Input should be greater than or equal to 0"),
    ("zero_value_gas", _set(["values", 0, "value"], 0), None,
     "values[0].value: must be > 0 for a gas_cylinder"),
    ("expires_before_issued", _set(["expires"], "2026-01-01"), None,
     "expires: 2026-01-01 is not after issued 2026-03-01"),
    ("unknown_unit", _set(["values", 0, "unit"], "umol/mool"), None,
     "values[0].unit: unknown unit 'umol/mool'"),
    ("wrong_dimension", _set(["values", 0, "unit"], "m/s"), None,
     "values[0].unit: 'm/s' is not a unit for SO2"),
    ("unknown_analyte", _set(["values", 0, "analyte"], "XYZ"), None,
     "values[0].analyte: unknown analyte 'XYZ'"),
    ("unknown_key", _set(["colour"], "blue"), None, "colour: unknown key"),
    ("unknown_key_in_value", _set(["values", 0, "note"], "x"), None,
     "values[0].note: unknown key"),
    ("zero_k", _set(["values", 0, "k"], 0), None, "values[0].k: Input should be greater than 0"),
    ("bad_kind", _set(["kind"], "bottle"), None, "kind: Input should be"),
    ("not_a_pdf", None, b"hello, I am a text file\n" * 10, "attachment: GBW(E)080123-2026-017.pdf "
     "is not a PDF (no %PDF- header)"),
    ("truncated_pdf", None, PDF.read_bytes()[:600], "is not a complete PDF (no %%EOF"),
    ("oversized_pdf", None, PDF.read_bytes() + b"%" * 20000 + b"\n%%EOF\n",
     "bytes, over the limit of 10000 bytes"),
    ("mass_for_gas", _set(["values", 0, "unit"], "ug"), None, "'ug' is not a unit for SO2"),
    ("ph_unit_for_water", lambda d: d["values"][0].update(analyte="CODcr", unit="pH"), None,
     "values[0].unit: 'pH' is not a unit for CODcr"),
    ("no_values", _set(["values"], []), None, "values: at least one certified value is required"),
]


def _broken_input(case, tmp_path):
    _, mutate, att, _ = case
    d = so2_doc()
    if mutate:
        mutate(d)
    folder = tmp_path / case[0]
    folder.mkdir()
    (folder / PDF.name).write_bytes(att if att is not None else PDF.read_bytes())
    p = folder / "cert.json"
    p.write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_validate_broken_certificate_names_the_problem(case, tmp_path):
    p = _broken_input(case, tmp_path)
    with pytest.raises(CertificateError) as ei:
        validate_certificate(p, max_bytes=10_000)
    assert case[3] in str(ei.value)
    assert str(p) in str(ei.value)


def test_validate_lists_every_problem(tmp_path):
    d = so2_doc()
    del d["values"][0]["U"]
    d["values"][0]["analyte"] = "XYZ"
    d["expires"] = "2025-01-01"
    d["extra"] = 1
    with pytest.raises(CertificateError) as ei:
        validate_certificate(doc_bytes(d))
    msgs = ei.value.problems
    assert any(m.startswith("values[0].U") for m in msgs)
    assert any(m.startswith("values[0].analyte: unknown analyte") for m in msgs)
    assert any(m.startswith("expires:") for m in msgs)
    assert any(m.startswith("extra: unknown key") for m in msgs)
    # the attachment is named but not provided with bytes input
    assert any(m.startswith("attachment: names") for m in msgs)


def test_import_broken_certificates_store_nothing(engine, tmp_path):
    import_certificate(engine, SAMPLES / "gas_no.json")  # something already there
    before = counts(engine)
    for case in BROKEN:
        p = _broken_input(case, tmp_path)
        with pytest.raises(CertificateError, match=re.escape(case[3])):
            import_certificate(engine, p, max_bytes=10_000)
    assert counts(engine) == before


def test_import_not_a_json_refused(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b"{not json")
    with pytest.raises(CertificateError, match="not valid JSON"):
        validate_certificate(p)


# --------------------------------------------------------------------------- schema parity
def test_schema_matches_pydantic_model():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    gen = CertificateDoc.model_json_schema()
    assert set(schema["properties"]) == set(gen["properties"])
    assert set(schema["required"]) == set(gen["required"])
    assert schema["additionalProperties"] is False
    val_gen = gen["$defs"]["CertifiedValueDoc"]
    val = schema["$defs"]["CertifiedValue"]
    assert set(val["properties"]) == set(val_gen["properties"])
    assert set(val["required"]) == set(val_gen["required"])
    assert val["additionalProperties"] is False
    assert set(schema["properties"]["kind"]["enum"]) == set(gen["properties"]["kind"]["enum"])


def _structure_cases():
    cases = [json.loads(p.read_text(encoding="utf-8")) for p in sample_files()]
    for case in BROKEN:
        if case[1] is not None:
            d = so2_doc()
            case[1](d)
            cases.append(d)
    for bad in ({"k": "2"}, {"value": "56"}, {"value": True}, {"U": None}):
        d = so2_doc()
        d["values"][0].update(bad)
        cases.append(d)
    d = so2_doc()
    d["issued"] = "01/03/2026"
    cases.append(d)
    d = so2_doc()
    d["issued"] = 20260301
    cases.append(d)
    return cases


def test_schema_and_model_agree_on_every_case():
    validator = jsonschema.Draft202012Validator(load_schema())
    outcomes = []
    for d in _structure_cases():
        schema_ok = not list(validator.iter_errors(d))
        try:
            CertificateDoc.model_validate_json(json.dumps(d))
            model_ok = True
        except ValidationError:
            model_ok = False
        assert schema_ok == model_ok, d
        outcomes.append(schema_ok)
    assert True in outcomes and False in outcomes


# --------------------------------------------------------------------------- import
def test_import_samples_all(engine):
    files = sample_files()
    assert len(files) >= 12
    outs = [import_certificate(engine, f, actor="lab") for f in files]
    assert {o.status for o in outs} == {"created"}
    listed = list_certificates(engine, on=dt.date(2026, 11, 27))
    assert len(listed) == len(files)
    assert {r["state"] for r in listed} == {"valid"}
    kinds = {r["kind"] for r in listed}
    assert kinds == {"gas_cylinder", "solution", "membrane", "zero_material"}
    so2 = next(o for o in outs if o.cert_id == SO2_ID)
    with Session(engine) as s:
        att = s.get(Attachment, so2.attachment_sha256)
        assert att.data == PDF.read_bytes() and att.size == PDF.stat().st_size
        assert s.exec(select(sa.func.count()).select_from(AuditLog)).one() == len(files)
    assert verify_chain(engine) == []


def test_import_same_file_twice_unchanged(engine):
    a = import_certificate(engine, SO2)
    before = counts(engine)
    b = import_certificate(engine, SO2)
    assert (a.status, b.status) == ("created", "unchanged")
    assert (b.version, b.pk) == (1, a.pk)
    assert counts(engine) == before
    # concurrent importers of one new lot: one creates it, the others find it unchanged
    outs, barrier = [], threading.Barrier(3)

    def work():
        barrier.wait()
        outs.append(import_certificate(engine, SAMPLES / "gas_no.json").status)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outs) == ["created", "unchanged", "unchanged"]
    assert verify_chain(engine) == []


def test_attachment_limit_from_environment(monkeypatch):
    monkeypatch.setenv("ENVCAL_MAX_ATTACHMENT_BYTES", "1000")
    with pytest.raises(CertificateError, match="over the limit of 1000 bytes"):
        validate_certificate(SO2)
    monkeypatch.delenv("ENVCAL_MAX_ATTACHMENT_BYTES")
    assert validate_certificate(SO2).pdf is not None


def test_import_bytes_with_attachment_bytes(sqlite_engine):
    o = import_certificate(sqlite_engine, SO2.read_bytes(), attachment=PDF.read_bytes(), actor="ui")
    assert o.status == "created" and o.attachment_sha256 is not None
    # the same content from a path is the same certificate
    assert import_certificate(sqlite_engine, SO2).status == "unchanged"


def test_import_changed_certificate_supersedes(engine):
    first = import_certificate(engine, SO2)
    d = so2_doc()
    d["values"][0]["value"] = 57.0
    d["attachment"] = None
    second = import_certificate(engine, doc_bytes(d), actor="lab")
    assert second.status == "superseded" and second.version == 2
    with Session(engine) as s:
        rows = list(s.exec(select(Certificate).where(Certificate.cert_id == SO2_ID)
                           .order_by(Certificate.version)))
        assert [r.current for r in rows] == [False, True]
        assert rows[0].superseded_at is not None and rows[1].superseded_at is None
        assert s.exec(select(sa.func.count()).select_from(CertificateValue)).one() == 2
        actions = list(s.exec(select(AuditLog.action).order_by(AuditLog.id)))
    assert actions == ["certificate.create", "certificate.supersede"]
    cv = certified_value(engine, SO2_ID, "SO2", "umol/mol", T_CHECK)
    assert cv.value == pytest.approx(57.0) and cv.version == 2 and cv.certificate_pk != first.pk
    shown = show_certificate(engine, SO2_ID)
    assert [v["state"] for v in shown["versions"]] == ["superseded", shown["state"]]
    assert len(list_certificates(engine, include_superseded=True)) == 2


# --------------------------------------------------------------------------- certified values
def test_certified_value_so2_hand_computed(sqlite_engine):
    import_certificate(sqlite_engine, SO2)
    hj = certified_value(sqlite_engine, SO2_ID, "SO2", "mg/m3", T_CHECK)
    assert isinstance(hj, CertifiedValue)
    assert round(hj.value, 2) == 160.15  # 56.0 * 64.06 / 22.4
    assert hj.u == pytest.approx(0.3 * 64.06 / 22.4)
    assert (hj.molar_mass, hj.molar_volume, hj.k) == (64.06, 22.4, 2)
    exact = certified_value(sqlite_engine, SO2_ID, "SO2", "mg/m3", T_CHECK, molar_volume=22.414)
    assert round(exact.value, 2) == 160.05
    same = certified_value(sqlite_engine, SO2_ID, "SO2", "ppm", T_CHECK)
    assert same.value == pytest.approx(56.0) and same.u == pytest.approx(0.3)
    assert same.molar_volume is None


def test_certified_value_nox_channel_from_no_cylinder(sqlite_engine):
    import_certificate(sqlite_engine, SAMPLES / "gas_no.json")
    mol = certified_value(sqlite_engine, "GBW(E)080226-2026-009", "NOx", "umol/mol", T_CHECK)
    assert mol.value == pytest.approx(150.0) and mol.source_analyte == "NO"
    mass = certified_value(sqlite_engine, "GBW(E)080226-2026-009", "NOx", "mg/m3", T_CHECK)
    assert mass.value == pytest.approx(150.0 * 46.01 / 22.4)  # as NO2
    assert mass.molar_mass_target == 46.01
    # an NO channel in mg/m3 uses M(NO)
    no = certified_value(sqlite_engine, "GBW(E)080226-2026-009", "NO", "mg/m3", T_CHECK)
    assert no.value == pytest.approx(150.0 * 30.01 / 22.4)


def test_certified_value_nox_from_no_in_mg_per_m3(sqlite_engine):
    d = json.loads((SAMPLES / "gas_no.json").read_text(encoding="utf-8"))
    d["values"][0].update(value=30.01, unit="mg/m3", U=0.3)
    import_certificate(sqlite_engine, doc_bytes(d))
    cv = certified_value(sqlite_engine, d["id"], "NOx", "mg/m3", T_CHECK)
    assert cv.value == pytest.approx(46.01)  # 1 mmol/m3-equivalent: 22.4 umol/mol * M(NO2)/22.4


def test_certified_value_refusals(engine):
    for f in ("gas_so2.json", "gas_o2.json", "membrane_pm25.json"):
        import_certificate(engine, SAMPLES / f)

    def code(*a, **kw):
        r = certified_value(engine, *a, **kw)
        assert isinstance(r, Refusal) and not r and r.reason and r.reason_zh
        return r.code

    assert code("NOPE", "SO2", "mg/m3", T_CHECK) == "unknown"
    assert code(SO2_ID, "SO2", "mg/m3", dt.datetime(2027, 3, 2, tzinfo=CST)) == "expired"
    assert code(SO2_ID, "SO2", "mg/m3", dt.datetime(2026, 2, 28, tzinfo=CST)) == "not_yet_valid"
    assert code(SO2_ID, "NOx", "mg/m3", T_CHECK) == "analyte_absent"
    assert code(SO2_ID, "SO2", "ug", T_CHECK) == "unit_not_convertible"
    assert code(SO2_ID, "SO2", "pH", T_CHECK) == "unit_not_convertible"
    # membrane: certified mass, comparable to a mass, not to a concentration
    pm = certified_value(engine, "PMREF-2026-0412", "PM2.5", "mg", T_CHECK)
    assert pm.value == pytest.approx(0.812)
    assert code("PMREF-2026-0412", "PM2.5", "ug/m3", T_CHECK) == "unit_not_convertible"
    o2 = certified_value(engine, "GBW(E)080241-2026-022", "O2", "%", T_CHECK)
    assert o2.value == pytest.approx(20.9) and o2.u == pytest.approx(0.05)
    # validity on the last day, revocation refuses even an earlier time
    assert certified_value(engine, SO2_ID, "SO2", "ppm", dt.datetime(2027, 3, 1, 23, tzinfo=CST))
    revoke_certificate(engine, SO2_ID, "cylinder leak found", actor="lab")
    assert code(SO2_ID, "SO2", "mg/m3", dt.datetime(2026, 4, 1, tzinfo=CST)) == "revoked"


def test_certified_value_zero_materials(sqlite_engine):
    import_certificate(sqlite_engine, SAMPLES / "zero_gas_n2.json")
    import_certificate(sqlite_engine, SAMPLES / "zero_water.json")
    z = certified_value(sqlite_engine, "ZERO-N2-2026-088", "SO2", "mg/m3", T_CHECK)
    assert z.value == 0.0 and z.u > 0
    assert certified_value(sqlite_engine, "ZERO-N2-2026-088", "CODcr", "mg/L", T_CHECK).code == "analyte_absent"
    w = certified_value(sqlite_engine, "ZERO-WATER-2026-014", "NH3-N", "mg/L", T_CHECK)
    assert (w.value, w.u, w.source_analyte) == (0.0, 0.0, None)


# --------------------------------------------------------------------------- revocation
def test_revoke_without_check_result_table(engine):
    import_certificate(engine, SO2)
    with engine.connect() as conn:
        has = sa.inspect(conn).has_table("check_result")
    if not has:
        assert results_using_material(engine, SO2_ID) == []
    out = revoke_certificate(engine, SO2_ID, "contamination", actor="lab")
    assert out.status == "revoked" and out.finding_id is not None
    with Session(engine) as s:
        f = s.get(Finding, out.finding_id)
        assert (f.kind, f.object_id, f.details["reason"]) == ("material_revoked", SO2_ID,
                                                              "contamination")
        assert s.exec(select(Certificate).where(Certificate.cert_id == SO2_ID)).one().revoked_by == "lab"
    assert revoke_certificate(engine, SO2_ID, "again").status == "already_revoked"
    assert list_certificates(engine)[0]["state"] == "revoked"
    d = so2_doc()
    d["values"][0]["value"] = 58.0
    with pytest.raises(CertificateError, match="cannot get a new version"):
        import_certificate(engine, doc_bytes(d), attachment=PDF)
    with pytest.raises(CertificateError, match="no certificate"):
        revoke_certificate(engine, "NOPE", "x")
    assert verify_chain(engine) == []


def test_revoke_marks_results_for_review(engine, registry):
    from envcal.models import CheckResult
    from envcal.registry import sync_registry

    sync_registry(engine, registry)
    t = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)
    with Session(engine) as s:
        for i, (aid, mat) in enumerate([("JX-PP01-CEMS", SO2_ID), ("NB-PP02-CEMS", "OTHER"),
                                        ("NB-PP02-CEMS", SO2_ID)]):
            s.add(CheckResult(id=i + 1, analyzer_id=aid, station_id="x", analyte="SO2", kind="span",
                              check_id=f"CK-{i}", start=t, end=t, unit="mg/m3", span=500.0,
                              verdict="pass", pack="hj75_2017", pack_version="1", material=mat,
                              evaluated_at=t))
        s.commit()
    import_certificate(engine, SO2)
    assert [r["id"] for r in results_using_material(engine, SO2_ID)] == [1, 3]
    out = revoke_certificate(engine, SO2_ID, "cylinder leak", actor="lab")
    assert [r["id"] for r in out.results] == [1, 3]
    with Session(engine) as s:
        flagged = list(s.exec(select(CheckResult.id).where(CheckResult.needs_review == sa.true())
                              .order_by(CheckResult.id)))
        f = s.get(Finding, out.finding_id)
    assert flagged == [1, 3]
    assert f.details["result_ids"] == [1, 3]
    assert f.details["analyzers"] == ["JX-PP01-CEMS", "NB-PP02-CEMS"]
    assert show_certificate(engine, SO2_ID)["results"] == [1, 3]


# --------------------------------------------------------------------------- command line
def test_cli_certs_lifecycle(sqlite_url, tmp_path):
    from envcal.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["certs", "import", *map(str, sample_files()), "--by", "lab",
                            "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    assert r.output.count("created") == len(sample_files())
    r = runner.invoke(app, ["certs", "list", "--json", "--db", sqlite_url])
    rows = json.loads(r.output)
    assert len(rows) == len(sample_files()) and set(rows[0]) >= {"id", "version", "kind",
                                                                  "analytes", "issued", "expires",
                                                                  "state"}
    r = runner.invoke(app, ["certs", "show", SO2_ID, "--json", "--db", sqlite_url])
    assert json.loads(r.output)["values"][0]["u"] == pytest.approx(0.3)
    r = runner.invoke(app, ["certs", "revoke", SO2_ID, "--reason", "leak", "--db", sqlite_url])
    assert r.exit_code == 0 and "revoked" in r.output
    bad = tmp_path / "bad.json"
    d = so2_doc()
    d["values"][0]["unit"] = "m/s"
    d["attachment"] = None
    bad.write_text(json.dumps(d), encoding="utf-8")
    r = runner.invoke(app, ["certs", "import", str(bad), "--db", sqlite_url])
    assert r.exit_code == 1 and "'m/s' is not a unit for SO2" in r.output
    r = runner.invoke(app, ["certs", "show", "NOPE", "--db", sqlite_url])
    assert r.exit_code == 1


def test_cli_certs_import_explicit_attachment(sqlite_url, tmp_path):
    from envcal.cli import app

    shutil.copy(SO2, tmp_path / "c.json")  # the PDF is not next to it
    r = CliRunner().invoke(app, ["certs", "import", str(tmp_path / "c.json"), "--db", sqlite_url])
    assert r.exit_code == 1 and "not found" in r.output
    r = CliRunner().invoke(app, ["certs", "import", str(tmp_path / "c.json"), "--attachment",
                                 str(PDF), "--db", sqlite_url])
    assert r.exit_code == 0, r.output


# --------------------------------------------------------------------------- hostile files
def _cert_folder(tmp_path, doc: dict | None = None, name: str = "cert.json") -> Path:
    folder = tmp_path / "certs"
    folder.mkdir(exist_ok=True)
    shutil.copy(PDF, folder / PDF.name)
    p = folder / name
    p.write_text(json.dumps(doc if doc is not None else so2_doc(), ensure_ascii=False), encoding="utf-8")
    return p


@pytest.mark.parametrize("attachment", ["../secret.pdf", "ABSOLUTE", "../missing.pdf", "sub/../../secret.pdf"])
def test_attachment_outside_the_certificate_folder_refused(tmp_path, engine, attachment):
    secret = tmp_path / "secret.pdf"
    shutil.copy(PDF, secret)  # a real PDF next to, not inside, the certificate's folder
    if attachment == "ABSOLUTE":
        attachment = str(secret)
    p = _cert_folder(tmp_path, dict(so2_doc(), attachment=attachment))
    with pytest.raises(CertificateError) as ei:
        import_certificate(engine, p)
    msg = "\n".join(ei.value.problems)
    assert "inside the certificate's folder" in msg
    # no other path than the one written, and nothing on whether that file exists
    assert str(tmp_path) not in msg.replace(repr(attachment), "")
    assert "not found" not in msg
    assert counts(engine)["attachment"] == 0


def test_attachment_symlink_out_of_folder_refused(tmp_path):
    secret = tmp_path / "secret.pdf"
    shutil.copy(PDF, secret)
    p = _cert_folder(tmp_path, dict(so2_doc(), attachment="link.pdf"))
    (p.parent / "link.pdf").symlink_to(secret)
    with pytest.raises(CertificateError, match="leads outside the certificate's folder"):
        validate_certificate(p)


def test_attachment_from_explicit_attachments_folder(tmp_path, engine):
    att = tmp_path / "pdfs"
    att.mkdir()
    shutil.copy(PDF, att / PDF.name)
    folder = tmp_path / "json"
    folder.mkdir()
    p = folder / "cert.json"
    p.write_text(json.dumps(so2_doc(), ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CertificateError, match="not found in the certificate's folder"):
        validate_certificate(p)
    assert import_certificate(engine, p, attachments_dir=att).attachment_sha256 is not None


@pytest.mark.parametrize("body", [b"%PDF-1.4\n<html><body>hi</body></html>\n%%EOF\n",
                                  b"%PDF-1.4\nPK\x03\x04" + b"z" * 200 + b"\n%%EOF\n"])
def test_attachment_that_only_looks_like_a_pdf_refused(tmp_path, body):
    p = _cert_folder(tmp_path)
    (p.parent / PDF.name).write_bytes(body)
    with pytest.raises(CertificateError, match="is not a readable PDF"):
        validate_certificate(p)


@pytest.mark.parametrize("field, literal", [("value", "Infinity"), ("U", "Infinity"), ("k", "Infinity"),
                                            ("value", "NaN"), ("k", "1e999"), ("U", "-Infinity")])
def test_certificate_non_finite_numbers_refused(tmp_path, field, literal):
    text = json.dumps(so2_doc(), ensure_ascii=False)
    text = re.sub(rf'"{field}": [0-9.]+', f'"{field}": {literal}', text, count=1)
    assert literal in text
    p = _cert_folder(tmp_path)
    p.write_text(text, encoding="utf-8")
    with pytest.raises(CertificateError, match="finite numbers only"):
        validate_certificate(p)


def test_certificate_deep_nesting_size_and_duplicate_keys_refused(tmp_path):
    p = _cert_folder(tmp_path)
    p.write_text('{"values": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CertificateError, match="nested deeper than 16 levels"):
        validate_certificate(p)
    p.write_bytes(b'{"name": "' + b"x" * 300_000 + b'"}')
    with pytest.raises(CertificateError, match="over the limit of 262144 bytes"):
        validate_certificate(p)
    with pytest.raises(CertificateError, match="over the limit"):
        validate_certificate(p.read_bytes())
    text = json.dumps(so2_doc(), ensure_ascii=False).replace('"value": ', '"value": 1.0, "value": ', 1)
    p.write_text(text, encoding="utf-8")
    with pytest.raises(CertificateError, match="duplicate key 'value'"):
        validate_certificate(p)


@pytest.mark.parametrize("cert_id", ["../../etc/x", "LOT\u0000A", "a/b", " lead", "x;rm"])
def test_certificate_unsafe_id_refused(tmp_path, cert_id):
    p = _cert_folder(tmp_path, dict(so2_doc(), id=cert_id))
    with pytest.raises(CertificateError, match="id: String should match pattern"):
        validate_certificate(p)
    schema = load_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(so2_doc(), id=cert_id), schema)


def test_cli_certs_import_hostile_file_one_line_no_traceback(tmp_path):
    from envcal.cli import app

    p = _cert_folder(tmp_path)
    p.write_text("[" * 50_000 + "]" * 50_000)
    r = CliRunner().invoke(app, ["certs", "import", str(p), "--db", f"sqlite:///{tmp_path / 'e.db'}"])
    assert r.exit_code == 1 and "Traceback" not in r.output and "nested deeper" in r.output
