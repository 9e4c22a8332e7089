"""Alerts inbox: filters, evidence (a labelled table in local time), who acknowledged or
resolved and when, with the note; acknowledge / resolve with a note (audit-logged)."""

import streamlit as st

from envcal import views
from envcal.alerts import ACTOR, AlertError, staff_actions
from envcal.ui import actions
from envcal.ui.common import (
    current_actor,
    engine,
    evidence_rows,
    flash,
    fmt_time,
    lab,
    lang,
    local_times,
    localize_text,
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
kind_lab = {"__all": ALL, **{k: lab("akind", k) for k in sorted(allf["kind"].dropna().unique())}}
kind = f[1].selectbox(t("al.filter_kind"), list(kind_lab), key="al_kind", format_func=kind_lab.get)
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
df = df.sort_values(["opened_at", "id"], ascending=[False, False]).reset_index(drop=True)
hist: dict[int, list[dict]] = {}
for h in staff_actions(eng, list(df["id"])):
    hist.setdefault(int(h["alert_id"]), []).append(h)


def who(h: dict) -> str:
    name = t("al.auto") if h["actor"] == ACTOR else h["actor"]
    return f"{t('al.acked') if h['action'] == 'acknowledge' else t('al.resolved')}: {name} · {fmt_time(h['ts'])}"


show = df.copy()
show["title"] = [localize_text(x) for x in (show["title_zh"] if lang() == "zh" else show["title_en"])]
show["severity"] = [t(f"severity.{s}") for s in show["severity"]]
show["state"] = [t(f"astate.{s}") for s in show["state"]]
show["kind"] = [lab("akind", k) for k in show["kind"]]
show["handled"] = ["；".join(who(h) for h in hist.get(int(i), [])) or "—" for i in df["id"]]
show["note"] = ["；".join(h["note"] for h in hist.get(int(i), []) if h["note"]) or "—" for i in df["id"]]
show = local_times(show, ["opened_at", "updated_at"])
st.dataframe(rename(show, {"opened_at": "col.opened", "severity": "col.severity",
                           "state": "col.status", "kind": "col.kind", "analyzer": "col.analyzer",
                           "title": "col.title", "handled": "col.handled", "note": "col.note",
                           "id": "col.id"}),
             hide_index=True, width="stretch")
pick_lab = {i: f"#{i} · {ti}" for i, ti in zip(df["id"], show["title"], strict=True)}
aid = st.selectbox(t("al.pick"), list(df["id"]), key="al_pick", format_func=pick_lab.get)
a = df[df["id"] == aid].iloc[0]
c1, c2 = st.columns([1.4, 1])
with c1:
    channel = a["analyte"] if isinstance(a["analyte"], str) else ""
    st.markdown(f"**{t('al.evidence')}** · {a['analyzer']} {channel} · "
                f"{lab('akind', a['kind'])} · {t('col.opened')} {fmt_time(a['opened_at'])}")
    ev = a["evidence"]
    if isinstance(ev, str):
        import json

        try:
            ev = json.loads(ev)
        except ValueError:
            ev = {"reason": ev}
    st.dataframe(evidence_rows(ev or {}), hide_index=True, width="stretch")
    for h in hist.get(int(aid), []):
        st.caption(who(h) + (f" — {h['note']}" if h["note"] else ""))
with c2:
    if actor is not None and actor.can("alert.ack"):
        if st.session_state.pop("al_note_clear", False):
            st.session_state["al_note"] = ""  # an action was recorded: start a new note
        with st.form("alert_action", clear_on_submit=False):
            note = st.text_area(t("al.note"), key="al_note")
            b1, b2 = st.columns(2)
            ack = b1.form_submit_button(t("al.ack"), disabled=a["state"] != "open")
            res = b2.form_submit_button(t("al.resolve"), type="primary",
                                        disabled=a["state"] == "resolved")
        try:
            if (ack or res) and not note.strip():
                st.error(t("al.need_note"))
            elif ack and run_action(actions.acknowledge_alert, eng, actor, int(aid), note):
                st.session_state["al_note_clear"] = True
                flash(t("al.done", what=t("al.ack")))
            elif res and run_action(actions.resolve_alert, eng, actor, int(aid), note):
                st.session_state["al_note_clear"] = True
                flash(t("al.done", what=t("al.resolve")))
        except AlertError as exc:
            st.error(t("al.action_error", msg=str(exc)))
    else:
        st.info(t("al.readonly"))
