"""Reference materials and instrument verification records.

CRM certificates with validity, detail (values, uncertainty, PDF, results that used the
lot); lab role: a certificate form or file upload (JSON + PDF, the same validation as
``envcal certs import``) and revocation with a reason. Instrument verification records
(检定/校准证书) per analyzer with their state; lab and admin record new ones.
"""

import datetime as dt
import json

import pandas as pd
import streamlit as st

from envcal import views
from envcal.certificates import CertificateError, get_attachment
from envcal.instruments import RESULTS, list_verification_records
from envcal.ui import actions
from envcal.ui.common import (
    current_actor,
    engine,
    flash,
    fmt_time,
    fmt_unit,
    lab,
    local_times,
    now,
    rename,
    run_action,
    show_flash,
    t,
)

KINDS = ("gas_cylinder", "solution", "membrane", "zero_material")
FIELDS = {"id": "cm.f_id", "crm_code": "cm.f_code", "name": "cm.f_name", "kind": "cm.f_kind",
          "producer": "cm.f_producer", "lot": "cm.f_lot", "matrix": "cm.f_matrix",
          "issued": "cm.f_issued", "expires": "cm.f_expires", "values": "cm.f_values",
          "traceability": "cm.f_trace", "number": "iv.number", "institute": "iv.institute",
          "date": "iv.date", "valid_until": "iv.valid_until", "result": "iv.result",
          "analyzer": "iv.analyzer", "pdf": "iv.pdf", "attachment": "cm.pdf"}


def problem_text(p: str) -> str:
    """A validation problem with its field named in the current language."""
    field, sep, rest = str(p).partition(":")
    head = field.split(".")[0].split("[")[0].strip()
    return f"{t(FIELDS[head])}（{field.strip()}）{sep}{rest}" if sep and head in FIELDS else str(p)


def show_problems(title_key: str, exc: CertificateError) -> None:
    st.error(t(title_key, n=len(exc.problems)))
    for p in exc.problems:
        st.error(problem_text(p), icon=":material/error:")


st.title(t("cm.title"))
show_flash()
eng = engine()
actor = current_actor()
is_lab = actor is not None and actor.can("certificate.upload")


def import_doc(data: bytes, pdf: bytes | None) -> None:
    try:
        o = run_action(actions.upload_certificate, eng, actor, data, pdf)
        if o is not None:
            st.success(t("cm.imported", id=o.cert_id, v=o.version, status=o.status))
    except CertificateError as exc:
        show_problems("cm.refused", exc)


if is_lab:
    with st.expander(t("cm.upload"), expanded=False, icon=":material/upload:"):
        tab_form, tab_file = st.tabs([t("cm.form"), t("cm.file")])
        with tab_form, st.form("cert_form"):
            c = st.columns(3)
            f_id = c[0].text_input(t("cm.f_id"), key="cf_id")
            f_code = c[1].text_input(t("cm.f_code"), key="cf_code")
            kind_lab = {k: lab("crmkind", k) for k in KINDS}
            f_kind = c[2].selectbox(t("cm.f_kind"), KINDS, key="cf_kind", format_func=kind_lab.get)
            c = st.columns(3)
            f_name = c[0].text_input(t("cm.f_name"), key="cf_name")
            f_producer = c[1].text_input(t("cm.f_producer"), key="cf_producer")
            f_lot = c[2].text_input(t("cm.f_lot"), key="cf_lot")
            c = st.columns(3)
            f_matrix = c[0].text_input(t("cm.f_matrix"), key="cf_matrix")
            f_issued = c[1].date_input(t("cm.f_issued"), key="cf_issued", format="YYYY-MM-DD")
            f_expires = c[2].date_input(t("cm.f_expires"), key="cf_expires", format="YYYY-MM-DD",
                                        value=dt.date.today() + dt.timedelta(days=365))
            f_trace = st.text_input(t("cm.f_trace"), key="cf_trace")
            st.markdown(t("cm.f_values"))
            f_values = st.data_editor(
                pd.DataFrame({"analyte": pd.Series(dtype=str), "value": pd.Series(dtype=float),
                              "unit": pd.Series(dtype=str), "U": pd.Series(dtype=float),
                              "k": pd.Series(dtype=float)}),
                num_rows="dynamic", key="cf_values", hide_index=True, width="stretch",
                column_config={"analyte": st.column_config.TextColumn(t("col.analyte")),
                               "value": st.column_config.NumberColumn(t("col.certified")),
                               "unit": st.column_config.TextColumn(t("col.unit")),
                               "U": st.column_config.NumberColumn(t("col.U")),
                               "k": st.column_config.NumberColumn(t("col.k"))})
            f_pdf = st.file_uploader(t("cm.pdf"), type=["pdf"], key="cf_pdf")
            go_form = st.form_submit_button(t("cm.submit_form"), type="primary")
        if go_form:
            vals = [{k: (None if pd.isna(v) else (float(v) if k in ("value", "U", "k") else str(v)))
                     for k, v in r.items()} for r in f_values.to_dict("records")
                    if str(r.get("analyte") or "").strip()]
            doc = {"id": f_id.strip(), "crm_code": f_code.strip(), "name": f_name.strip(),
                   "kind": f_kind, "producer": f_producer.strip(), "lot": f_lot.strip(),
                   "matrix": f_matrix.strip() or None, "issued": f_issued.isoformat(),
                   "expires": f_expires.isoformat(), "values": vals,
                   "traceability": f_trace.strip() or None}
            import_doc(json.dumps(doc, ensure_ascii=False).encode("utf-8"),
                       f_pdf.getvalue() if f_pdf is not None else None)
        with tab_file, st.form("cert_upload", clear_on_submit=False):
            js = st.file_uploader(t("cm.json"), type=["json"], key="cert_json")
            pdf = st.file_uploader(t("cm.pdf"), type=["pdf"], key="cert_pdf")
            text = st.text_area(t("cm.json_text"), key="cert_text", height=120)
            go = st.form_submit_button(t("cm.submit"), type="primary")
        if go:
            data = js.getvalue() if js is not None else text.encode("utf-8") if text.strip() else None
            if data is None:
                st.error(t("cm.need_json"))
            else:
                import_doc(data, pdf.getvalue() if pdf is not None else None)

certs = views.certificates_frame(eng)
if not len(certs):
    st.info(t("app.no_data"))
    st.stop()
show = certs.copy()
show["state"] = [t(f"cstate.{s}") for s in show["state"]]
show["kind"] = [lab("crmkind", k) for k in show["kind"]]
st.dataframe(rename(show, {"id": "col.id", "name": "col.name", "kind": "col.kind",
                           "analytes": "col.analytes", "issued": "col.issued",
                           "expires": "col.expires", "state": "col.state",
                           "results": "col.results"}),
             hide_index=True, width="stretch", height=300)
ids = list(certs["id"])
qp = st.query_params.get("cert")
cid = st.selectbox(t("cm.pick"), ids, index=ids.index(qp) if qp in ids else 0, key="cert_pick")
d, used = views.certificate_detail(eng, cid)
c1, c2 = st.columns([1.2, 1])
with c1:
    st.subheader(f"{d['id']} · {d['name']}")
    st.markdown(f"**{t('col.state')}**: {t('cstate.' + d['state'])} · **{t('col.issued')}** "
                f"{d['issued']} · **{t('col.expires')}** {d['expires']}  \n"
                f"**{t('cm.producer')}**: {d['producer']}  \n**{t('cm.traceability')}**: "
                f"{d['traceability'] or '—'}")
    if d["revoked_at"]:
        st.error(t("cm.revoked", at=fmt_time(d["revoked_at"]), by=d["revoked_by"],
                   reason=d["revoked_reason"]))
    st.markdown(f"**{t('cm.values')}**")
    vals = pd.DataFrame(d["values"])
    if "unit" in vals.columns:
        vals["unit"] = [fmt_unit(u) for u in vals["unit"]]
    st.dataframe(rename(vals,
                        {"analyte": "col.analyte", "value": "col.certified", "unit": "col.unit",
                         "U": "col.U", "k": "col.k", "u": "col.u"}),
                 hide_index=True, width="stretch")
    if d["attachment_sha256"]:
        att = get_attachment(eng, d["attachment_sha256"])
        st.download_button(t("cm.download"), att.data, file_name=att.filename,
                           mime=att.media_type, key="cert_pdf_dl", icon=":material/picture_as_pdf:")
    else:
        st.caption(t("cm.no_pdf"))
with c2:
    st.markdown(f"**{t('cm.used_by', n=len(used))}**")
    u = used.copy()
    if "verdict" in u.columns:
        u["verdict"] = [t(f"verdict.{v}") for v in u["verdict"]]
    if "kind" in u.columns:
        u["kind"] = [lab("ckind", k) for k in u["kind"]]
    st.dataframe(rename(local_times(u, ["end"]),
                        {"id": "col.result_id", "analyzer_id": "col.analyzer",
                         "analyte": "col.analyte", "kind": "col.kind", "end": "col.end",
                         "verdict": "col.verdict", "error_fs_pct": "col.value",
                         "needs_review": "col.review"}),
                 hide_index=True, width="stretch", height=260)
    if is_lab and not d["revoked_at"]:
        with st.form("cert_revoke"):
            reason = st.text_input(t("cm.reason"), key="revoke_reason")
            rv = st.form_submit_button(t("cm.revoke"))
        if rv:
            try:
                o = run_action(actions.revoke_certificate, eng, actor, cid, reason)
                if o is not None:
                    flash(t("cm.revoke_done", id=cid, n=len(o.results)))
            except CertificateError as exc:
                for p in exc.problems:
                    st.error(problem_text(p))
    elif not is_lab:
        st.caption(t("cm.lab_only"))

# --------------------------------------------------------------------------- 检定/校准证书
st.subheader(t("iv.title"))
today = now().date()
recs = pd.DataFrame(list_verification_records(eng))
if len(recs):
    vu = pd.to_datetime(recs["valid_until"]).dt.date
    recs["state"] = [t("iv.valid") if r == "qualified" and v >= today else
                     lab("vdue", "overdue") if r == "qualified" else lab("vresult", r)
                     for r, v in zip(recs["result"], vu, strict=True)]
    recs["result"] = [lab("vresult", r) for r in recs["result"]]
    st.dataframe(rename(recs, {"analyzer_id": "col.analyzer", "number": "iv.number",
                               "institute": "iv.institute", "date": "iv.date",
                               "valid_until": "iv.valid_until", "result": "iv.result",
                               "state": "iv.state", "recorded_by": "iv.recorded_by"}),
                 hide_index=True, width="stretch", height=min(420, 35 * (len(recs) + 1) + 3))
if is_lab:
    an = views.analyzers_frame(eng)
    with st.expander(t("iv.add"), icon=":material/verified:"), st.form("iv_form", clear_on_submit=False):
        c = st.columns(3)
        v_an = c[0].selectbox(t("iv.analyzer"), list(an["analyzer"]), key="iv_analyzer")
        v_no = c[1].text_input(t("iv.number"), key="iv_number")
        v_inst = c[2].text_input(t("iv.institute"), key="iv_institute", value="浙江省计量科学研究院")
        c = st.columns(3)
        v_date = c[0].date_input(t("iv.date"), key="iv_date", value=today, format="YYYY-MM-DD")
        v_until = c[1].date_input(t("iv.valid_until"), key="iv_until", format="YYYY-MM-DD",
                                  value=today + dt.timedelta(days=364))
        res_lab = {r: lab("vresult", r) for r in RESULTS}
        v_res = c[2].selectbox(t("iv.result"), RESULTS, key="iv_result", format_func=res_lab.get)
        v_pdf = st.file_uploader(t("iv.pdf"), type=["pdf"], key="iv_pdf")
        v_go = st.form_submit_button(t("iv.submit"), type="primary")
    if v_go:
        try:
            o = run_action(actions.record_verification, eng, actor, v_an, v_no.strip(),
                           v_inst.strip(), v_date, v_res, v_until,
                           v_pdf.getvalue() if v_pdf is not None else None)
            if o is not None:
                if o.status == "unchanged":
                    st.info(t("iv.unchanged"))
                else:
                    flash(t("iv.done", a=v_an, n=o.cert_number))
        except CertificateError as exc:
            show_problems("iv.refused", exc)
