"""Analyzer detail: control chart with rule bands, EWMA/CUSUM, drift trend and forecast,
out-of-control periods, raw readings around a check with its plateau, results table."""

import datetime as dt

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from envcal import views
from envcal.trends import EPOCH
from envcal.ui.common import (
    STATE_ICONS,
    archive_dir,
    engine,
    fmt_time,
    lang,
    local_times,
    now,
    rename,
    state_label,
    t,
)

st.title(t("an.title"))
eng = engine()
states = views.analyzer_states(eng, now())
if not len(states):
    st.info(t("app.no_data"))
    st.stop()
ids = list(states.sort_values("analyzer")["analyzer"])
qp = st.query_params.get("analyzer")
default = ids.index(qp) if qp in ids else ids.index(states.iloc[0]["analyzer"])
label = dict(zip(states["analyzer"], states["station_name"], strict=True))
sel_cols = st.columns([2, 1, 1])
aid = sel_cols[0].selectbox(t("an.pick"), ids, index=default, key="analyzer_pick",
                            format_func=lambda a: f"{a} · {label.get(a, '')}")
row = states[states["analyzer"] == aid].iloc[0]
st.markdown(f"#### {STATE_ICONS[row['state']]} " + t("an.state", state=state_label(row["state"]))
            + (f" — {t('reason.' + row['reason'])}" if row["reason"] else ""))
st.caption(f"{row['station_name']} · {row['operator']} · {row['model']} ({row['serial']}) · "
           f"{t('col.pack')}: {row['rule_pack']}")
chans = views.channels_of(eng, aid)
chans = chans[chans["kinds"].map(len) > 0]
if not len(chans):
    st.info(t("an.no_results"))
    st.stop()
analyte = sel_cols[1].selectbox(t("an.channel"), list(chans["analyte"]), key="channel_pick")
kinds = chans.loc[chans["analyte"] == analyte, "kinds"].iloc[0]
kind = sel_cols[2].selectbox(t("an.kind"), kinds, key="kind_pick")

cc = views.control_chart(eng, aid, analyte, kind)
res = cc.results
if cc.rule_id:
    st.markdown(t("an.rule", rule=cc.rule_id, warn=f"{cc.warn:g}", limit=f"{cc.limit:g}",
                  unit=cc.unit, source=cc.rule_source, status=t(f"status.{cc.rule_status}")))
    if cc.rule_status != "confirmed":
        st.warning(t("an.unverified_note"), icon=":material/report:")

valid = res[(res["verdict"] != "invalid") & res["value"].notna()]
fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                    vertical_spacing=0.06)
x0 = res["end"].min() if len(res) else now()
x1 = max(res["end"].max() if len(res) else now(), now())
tr = cc.trend
if tr.crossing is not None and tr.crossing > x1 and tr.crossing < x1 + dt.timedelta(days=120):
    x1 = tr.crossing + dt.timedelta(days=1)
colors = {"pass": "#2e7d32", "warn": "#f9a825", "fail": "#c62828", "invalid": "#9e9e9e"}
fig.add_trace(go.Scatter(x=valid["end"], y=valid["value"], mode="lines+markers",
                         name=t("col.value"), line={"color": "#0b3d6e", "width": 1.5},
                         marker={"size": 8, "color": [colors[v] for v in valid["verdict"]]},
                         text=[t(f"verdict.{v}") for v in valid["verdict"]]), row=1, col=1)
if len(cc.ewma):
    fig.add_trace(go.Scatter(x=valid["end"], y=cc.ewma, mode="lines", name="EWMA",
                             line={"color": "#6a1b9a", "width": 2}), row=1, col=1)
if tr.slope_per_day is not None and tr.intercept is not None and len(valid) >= 2:
    # the fitted line: intercept at the time origin of envcal.trends (1970-01-01 UTC)
    t_first = valid["end"].iloc[max(0, len(valid) - tr.n)]
    xs = [t_first, x1]
    d = [(x - EPOCH).total_seconds() / 86400.0 for x in xs]
    fig.add_trace(go.Scatter(x=xs, y=[tr.intercept + tr.slope_per_day * v for v in d],
                             mode="lines", name=t("an.trend"),
                             line={"color": "#455a64", "dash": "longdash"}), row=1, col=1)
for _, p in cc.periods.iterrows():
    e = p["end"] if p["end"] is not None and not pd.isna(p["end"]) else x1
    fig.add_vrect(x0=p["start"], x1=e, fillcolor="#c62828", opacity=0.12, line_width=0,
                  row=1, col=1)
if cc.limit:
    for sgn in (1, -1):
        fig.add_hline(y=sgn * cc.limit, line={"color": "#c62828", "dash": "dash", "width": 1.5},
                      row=1, col=1)
        fig.add_hline(y=sgn * cc.warn, line={"color": "#f9a825", "dash": "dot", "width": 1.5},
                      row=1, col=1)
    fig.add_hrect(y0=cc.warn, y1=cc.limit, fillcolor="#f9a825", opacity=0.08, line_width=0, row=1, col=1)
    fig.add_hrect(y0=-cc.limit, y1=-cc.warn, fillcolor="#f9a825", opacity=0.08, line_width=0, row=1, col=1)
if tr.crossing is not None and cc.limit:
    fig.add_vline(x=tr.crossing, line={"color": "#c62828", "width": 1}, row=1, col=1)
if len(cc.cusum_plus):
    fig.add_trace(go.Scatter(x=valid["end"], y=cc.cusum_plus, name="CUSUM+",
                             line={"color": "#ef6c00"}), row=2, col=1)
    fig.add_trace(go.Scatter(x=valid["end"], y=-cc.cusum_minus, name="CUSUM−",
                             line={"color": "#00838f"}), row=2, col=1)
    fig.add_hline(y=cc.cusum_h, line={"color": "#c62828", "dash": "dot"}, row=2, col=1)
    fig.add_hline(y=-cc.cusum_h, line={"color": "#c62828", "dash": "dot"}, row=2, col=1)
fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                  legend={"orientation": "h", "y": 1.06}, plot_bgcolor="white")
fig.update_xaxes(gridcolor="#eceff1", range=[x0 - dt.timedelta(hours=12), x1])
fig.update_yaxes(gridcolor="#eceff1", zerolinecolor="#90a4ae")
st.markdown(f"**{t('an.chart', q=cc.quantity, unit=cc.unit)}**")
st.plotly_chart(fig, width="stretch", key="control_chart")

m = st.columns(4)
m[0].metric(t("an.slope", unit=cc.unit), "—" if tr.slope_per_day is None else f"{tr.slope_per_day:+.3f}")
m[1].metric(t("an.ewma"), "—" if tr.ewma is None else f"{tr.ewma:+.2f}")
m[2].metric(t("an.cusum"), t("an.yes") if tr.cusum_alarm else t("an.no"))
m[3].metric(t("an.crossing"), fmt_time(tr.crossing)[:10] if tr.crossing else t("an.none"))

st.subheader(t("an.results"))
tab = res.sort_values("end", ascending=False).copy()
tab["verdict"] = [t(f"verdict.{v}") for v in tab["verdict"]]
tab["rule_status"] = [t(f"status.{s}") if s else "—" for s in tab["rule_status"]]
tab["reason"] = tab["reason_zh"] if lang() == "zh" else tab["reason_en"]
tab["material"] = [f"/materials?cert={m}" if m else None for m in tab["material"]]
tab = local_times(tab, ["end"])
st.dataframe(rename(tab, {"end": "col.end", "value": "col.value", "verdict": "col.verdict",
                          "material": "col.material", "rule": "col.rule",
                          "rule_status": "col.rule_status", "reason": "col.reason_text",
                          "needs_review": "col.review"}),
             hide_index=True, width="stretch", height=280,
             column_config={t("col.material"): st.column_config.LinkColumn(
                 display_text=r"cert=(.*)$"),
                 t("col.value"): st.column_config.NumberColumn(format="%+.2f")})

st.subheader(t("an.readings"))
checks = res.sort_values("end", ascending=False)
pick = st.selectbox(t("an.pick_check"), list(checks["id"]), key="check_pick",
                    format_func=lambda i: f"{fmt_time(checks.loc[checks['id'] == i, 'end'].iloc[0])} · "
                                          f"{checks.loc[checks['id'] == i, 'check_id'].iloc[0]}")
cr = views.readings_around_check(eng, int(pick), archive_dir())
df = cr.readings
if not len(df):
    st.info(t("an.no_readings"))
else:
    f2 = go.Figure()
    if cr.plateau_start is not None:
        f2.add_vrect(x0=cr.plateau_start, x1=cr.plateau_end, fillcolor="#2e7d32", opacity=0.15,
                     line_width=0, annotation_text=t("an.plateau"), annotation_position="top left")
    f2.add_vrect(x0=cr.result["start"], x1=cr.result["end"], fillcolor="#0b3d6e", opacity=0.05,
                 line_width=0)
    f2.add_trace(go.Scatter(x=df["ts"], y=df["value"], mode="lines+markers", name=analyte,
                            marker={"size": 4}, line={"color": "#0b3d6e"}))
    if cr.result.get("reference") is not None:
        f2.add_hline(y=cr.result["reference"], line={"color": "#6a1b9a", "dash": "dash"},
                     annotation_text=f"C = {cr.result['reference']:g} {cr.result['unit']}")
    f2.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="white",
                     yaxis_title=cr.result["unit"])
    st.plotly_chart(f2, width="stretch", key="readings_chart")
