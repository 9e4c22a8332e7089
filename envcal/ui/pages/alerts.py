"""Alerts inbox: filters, evidence, acknowledge / resolve with a note (audit-logged)."""

import json

import streamlit as st

from envcal import views
from envcal.ui import actions
from envcal.ui.common import (
    current_actor,
    engine,
    flash,
    fmt_time,
    lang,
    local_times,
    rename,
    run_action,
    show_flash,
    t,
)

st.title(t("al.title"))
show_flash()
eng = engine()
actor = current_actor()
allf = views.alerts_frame(eng)
f = st.columns(4)
# labels are computed here, so the format functions are pure (no session lookup)
ALL = t("al.all")
states = ["__open", "__all", "open", "acknowledged", "resolved"]
st_lab = {"__open": t("al.open_states"), "__all": ALL,
          **{s: t(f"astate.{s}") for s in states[2:]}}
state = f[0].selectbox(t("al.filter_state"), states, key="al_state", format_func=st_lab.get)
kinds = ["__all", *sorted(allf["kind"].dropna().unique())]
kind = f[1].selectbox(t("al.filter_kind"), kinds, key="al_kind",
                      format_func=lambda k, a=ALL: a if k == "__all" else k)
sev_lab = {"__all": ALL, **{k: t(f"severity.{k}") for k in views.SEVERITIES}}
sev = f[2].selectbox(t("al.filter_severity"), list(sev_lab), key="al_sev", format_func=sev_lab.get)
stations = ["__all", *sorted(allf["station"].dropna().unique())]
stn = f[3].selectbox(t("al.filter_station"), stations, key="al_station",
                     format_func=lambda k, a=ALL: a if k == "__all" else k)
df = views.alerts_frame(eng, state="open" if state == "__open" else None if state == "__all" else state,
                        kind=None if kind == "__all" else kind,
                        severity=None if sev == "__all" else sev,
                        station=None if stn == "__all" else stn)
if not len(df):
    st.info(t("al.none"))
    st.stop()
show = df.copy()
show["title"] = show["title_zh"] if lang() == "zh" else show["title_en"]
show["severity"] = [t(f"severity.{s}") for s in show["severity"]]
show["state"] = [t(f"astate.{s}") for s in show["state"]]
show = local_times(show, ["opened_at"])
st.dataframe(rename(show, {"id": "col.id", "opened_at": "col.opened", "severity": "col.severity",
                           "state": "col.status", "kind": "col.kind", "analyzer": "col.analyzer",
                           "title": "col.title"}),
             hide_index=True, width="stretch")
pick_lab = {i: f"#{i} · {ti}" for i, ti in zip(df["id"], show["title"], strict=True)}
aid = st.selectbox(t("al.pick"), list(df["id"]), key="al_pick", format_func=pick_lab.get)
a = df[df["id"] == aid].iloc[0]
c1, c2 = st.columns([1.4, 1])
with c1:
    st.markdown(f"**{t('al.evidence')}** · {a['analyzer']} {a['analyte'] or ''} · "
                f"{t('col.opened')} {fmt_time(a['opened_at'])}")
    ev = a["evidence"]
    if isinstance(ev, str):
        try:
            ev = json.loads(ev)
        except ValueError:
            pass
    st.json(ev or {}, expanded=True)
with c2:
    if actor is not None and actor.can("alert.ack"):
        with st.form("alert_action"):
            note = st.text_area(t("al.note"), key="al_note")
            b1, b2 = st.columns(2)
            ack = b1.form_submit_button(t("al.ack"), disabled=a["state"] != "open")
            res = b2.form_submit_button(t("al.resolve"), type="primary",
                                        disabled=a["state"] == "resolved")
        from envcal.alerts import AlertError

        try:
            if ack and run_action(actions.acknowledge_alert, eng, actor, int(aid), note):
                flash(t("al.done", what=t("al.ack")))
            if res and run_action(actions.resolve_alert, eng, actor, int(aid), note):
                flash(t("al.done", what=t("al.resolve")))
        except AlertError as exc:
            st.error(str(exc))
    else:
        st.info(t("al.readonly"))
