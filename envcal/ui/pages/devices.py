"""Devices: the DAUs of the HJ 212 gateway (online state, version, quirks) and, for staff
and admin, commands down to them (permission-checked and audit-logged)."""

import datetime as dt

import pandas as pd
import streamlit as st

from envcal.config import setting
from envcal.gateway.commands import COMMANDS, HISTORY_CNS, CommandError
from envcal.gateway.control import PERMISSION, ControlError, request, send_command
from envcal.registry import RegistryError, load_registry
from envcal.ui.common import current_actor, engine, fmt_time, rename, run_action, t

st.title(t("dv.title"))
actor = current_actor()
broker = str(setting("broker", None))
try:
    reg = load_registry(str(setting("stations", None)))
except RegistryError:
    reg = None
registered = {a.mn: a for a in (reg.analyzers.values() if reg else []) if a.mn}
try:
    state = request(broker, {"user": actor.name if actor else "app", "action": "state"}, timeout=3)
except ControlError as exc:
    state = None
    st.info(t("dv.no_gateway", msg=str(exc)))
known = {d["mn"]: d for d in (state or {}).get("devices", [])}
if state is not None:
    st.caption(t("dv.summary", n=state.get("connections", 0)))
rows = []
for mn in sorted(set(registered) | set(known)):
    d = known.get(mn, {})
    a = registered.get(mn)
    counts = d.get("counts", {})
    quirks = ", ".join(f"{k[6:]} ×{v}" for k, v in sorted(counts.items()) if k.startswith("quirk:"))
    online = d.get("online")
    rows.append({"mn": mn, "analyzer": a.id if a else d.get("analyzer_id"),
                 "state": t("dv.online") if online else t("dv.offline") if d else t("dv.unknown"),
                 "version": d.get("version", "—"), "peer": d.get("peer") or "—",
                 "last_seen": fmt_time(d.get("last_seen")) if d.get("last_seen") else "—",
                 "frames": counts.get("frames", 0), "quirks": quirks or "—"})
if not rows:
    st.info(t("dv.none"))
    st.stop()
st.dataframe(rename(pd.DataFrame(rows), {"mn": "MN", "analyzer": "col.analyzer", "state": "dv.col.state",
                                         "version": "dv.col.version", "peer": "dv.col.peer",
                                         "last_seen": "dv.col.last_seen", "frames": "dv.col.frames",
                                         "quirks": "dv.col.quirks"}),
             hide_index=True, width="stretch")

st.subheader(t("dv.command"))
if actor is None or not actor.can(PERMISSION):
    st.caption(t("dv.staff_only"))
    st.stop()
with st.form("dv_command"):
    c1, c2 = st.columns(2)
    mn = c1.selectbox("MN", [r["mn"] for r in rows if r["mn"] in registered], key="dv_mn",
                      format_func=lambda m: f"{m} · {registered[m].id}")
    cn = c2.selectbox(t("dv.cn"), list(COMMANDS), key="dv_cn",
                      format_func=lambda c: f"{c} · {COMMANDS[c]}")
    c3, c4, c5 = st.columns(3)
    polid = c3.text_input(t("dv.polid"), key="dv_polid")
    infoid = c4.text_input(t("dv.infoid"), key="dv_infoid")
    hours = c5.number_input(t("dv.hours"), min_value=1, max_value=720, value=24, key="dv_hours")
    send = st.form_submit_button(t("dv.send"), type="primary")
if send and mn:
    params = {k: v for k, v in (("PolId", polid.strip()), ("InfoId", infoid.strip())) if v}
    if cn not in ("1011", "1012", "3011", "3020", "3024"):
        params.pop("PolId", None)
    if cn != "3020":
        params.pop("InfoId", None)
    now = dt.datetime.now(dt.UTC)
    begin = now - dt.timedelta(hours=int(hours)) if cn in HISTORY_CNS else None
    try:
        reply = run_action(send_command, engine(), actor, broker, registered[mn].id, mn, cn,
                           begin=begin, end=now if begin else None, params=params, timeout=120)
    except CommandError as exc:
        reply = {"ok": False, "error": str(exc)}
    if reply is not None:
        if reply.get("ok"):
            st.success(t("dv.done", cn=cn, qn=reply.get("qn"), n=len(reply.get("uploads") or [])))
            for up in reply.get("uploads") or []:
                st.json(up, expanded=False)
        else:
            st.error(t("dv.failed", cn=cn, msg=reply.get("error")))
