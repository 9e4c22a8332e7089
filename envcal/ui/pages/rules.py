"""Rules: packs in force, each rule's source and status; admin confirms with a citation."""

import streamlit as st

from envcal import views
from envcal.rules import RulePackError
from envcal.ui import actions
from envcal.ui.common import (
    current_actor,
    engine,
    flash,
    fmt_unit,
    lab,
    lang,
    rename,
    show_flash,
    t,
)
from envcal.users import PermissionDenied

st.title(t("ru.title"))
show_flash()
eng = engine()
actor = current_actor()
df = views.rules_frame(eng)
n_unv = int((df["status"] != "confirmed").sum())
if n_unv:
    st.warning(t("ru.unverified", n=n_unv), icon=":material/report:")
show = df.copy()
show["title"] = show["title_zh"] if lang() == "zh" else show["title_en"]
show["check_kind"] = [lab("ckind", k) for k in show["check_kind"]]
show["quantity"] = [lab("qty", q) for q in show["quantity"]]
show["unit"] = [fmt_unit(u) for u in show["unit"]]
show["status"] = [("✅ " if s == "confirmed" else "⚠️ ") + t(f"status.{s}") for s in show["status"]]
st.dataframe(rename(show, {"pack": "col.pack", "rule": "col.rule", "title": "col.title",
                           "status": "col.status", "check_kind": "col.check_kind", "analytes": "col.analytes",
                           "quantity": "col.quantity", "warn": "col.warn", "limit": "col.limit",
                           "unit": "col.unit", "frequency_h": "col.frequency_h",
                           "source": "col.source",
                           "confirmed_by": "col.confirmed_by", "citation": "col.citation"}),
             hide_index=True, width="stretch", height=460)
if actor is not None and actor.can("rule.confirm"):
    st.subheader(t("ru.confirm"))
    keys = [f"{p}/{r}" for p, r in zip(df["pack"], df["rule"], strict=True)]
    with st.form("rule_confirm"):
        key = st.selectbox(t("ru.pick"), keys, key="rule_pick")
        cit = st.text_area(t("ru.citation"), key="rule_citation")
        ok = st.form_submit_button(t("ru.submit"), type="primary")
    if ok:
        pack, rule = key.split("/", 1)
        try:
            actions.confirm_rule(eng, actor, pack, rule, cit)
        except (RulePackError, PermissionDenied) as exc:
            st.error(str(exc))
        else:
            flash(t("ru.done", rule=key))
else:
    st.caption(t("ru.admin_only"))
