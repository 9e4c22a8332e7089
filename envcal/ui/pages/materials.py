"""Reference materials: certificates with validity, detail (values, uncertainty, PDF,
results that used the lot); lab role: upload (JSON + PDF) and revoke with a reason."""

import pandas as pd
import streamlit as st

from envcal import views
from envcal.certificates import CertificateError, get_attachment
from envcal.ui import actions
from envcal.ui.common import (
    current_actor,
    engine,
    flash,
    fmt_time,
    local_times,
    rename,
    run_action,
    show_flash,
    t,
)

st.title(t("cm.title"))
show_flash()
eng = engine()
actor = current_actor()
is_lab = actor is not None and actor.can("certificate.upload")

if is_lab:
    with st.expander(t("cm.upload"), expanded=False, icon=":material/upload:"):
        with st.form("cert_upload", clear_on_submit=False):
            js = st.file_uploader(t("cm.json"), type=["json"], key="cert_json")
            pdf = st.file_uploader(t("cm.pdf"), type=["pdf"], key="cert_pdf")
            text = st.text_area(t("cm.json") + " (text)", key="cert_text", height=120)
            go = st.form_submit_button(t("cm.submit"), type="primary")
        if go:
            data = js.getvalue() if js is not None else text.encode("utf-8") if text.strip() else None
            if data is None:
                st.error(t("cm.need_json"))
            else:
                try:
                    o = run_action(actions.upload_certificate, eng, actor, data,
                                   pdf.getvalue() if pdf is not None else None)
                    if o is not None:
                        st.success(t("cm.imported", id=o.cert_id, v=o.version, status=o.status))
                except CertificateError as exc:
                    st.error(t("cm.refused", n=len(exc.problems)))
                    for p in exc.problems:
                        st.error(p, icon=":material/error:")

certs = views.certificates_frame(eng)
if not len(certs):
    st.info(t("app.no_data"))
    st.stop()
show = certs.copy()
show["state"] = [t(f"cstate.{s}") for s in show["state"]]
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
    st.dataframe(rename(pd.DataFrame(d["values"]),
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
                    st.error(p)
    elif not is_lab:
        st.caption(t("cm.lab_only"))
