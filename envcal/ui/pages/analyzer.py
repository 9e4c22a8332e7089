"""Analyzer detail: control chart with rule bands, EWMA/CUSUM, drift trend and forecast,
out-of-control periods, raw readings around a check with its plateau, results table.

Opens on the channel that is failing (an open out-of-control period, else an unresolved
alert, else the newest failed check); ``?analyzer=…&analyte=…&kind=…`` deep-links. Times
are shown in the agency's time zone; lines break at data gaps.
"""

import datetime as dt

import numpy as np
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
    fmt_unit,
    lab,
    lang,
    local_times,
    localize_text,
    now,
    rename,
    source_text,
    state_label,
    t,
)

TZ = views.local_tz()


def wall(x):
    """UTC times as naive local wall-clock times (what plotly draws, without a shift)."""
    s = pd.to_datetime(pd.Series(x), utc=True)
    return s.dt.tz_convert(TZ).dt.tz_localize(None)


def wall1(v):
    return pd.Timestamp(v).tz_convert(TZ).tz_localize(None)


def with_gaps(x: pd.Series, y, factor: float = 3.0):
    """(x, y) with a None between points further apart than ``factor`` × the median step,
    so a line is not drawn across a gap."""
    x = pd.Series(pd.to_datetime(x)).reset_index(drop=True)
    y = list(np.asarray(y, dtype=float))
    if len(x) < 3:
        return list(x), y
    step = x.diff().dropna()
    med = step.median()
    xs, ys = [x.iloc[0]], [y[0]]
    for i in range(1, len(x)):
        if step.iloc[i - 1] > factor * med:
            xs.append(x.iloc[i - 1] + step.iloc[i - 1] / 2)
            ys.append(None)
        xs.append(x.iloc[i])
        ys.append(y[i])
    return xs, ys


st.title(t("an.title"))
eng = engine()
at = now()
states = views.analyzer_states(eng, at)
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
if st.query_params.get("analyzer") != aid:
    st.query_params["analyzer"] = aid
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
analytes = list(chans["analyte"])

# the failing channel first: open period, else unresolved alert, else the newest failure
periods_all = views.out_of_control_periods(eng, analyzer=aid)
open_p = periods_all[periods_all["end"].isna()]
alerts = views.alerts_frame(eng, state="open", analyzer=aid)
want_a, want_k = None, None
if len(open_p):
    want_a, want_k = open_p.iloc[-1]["analyte"], open_p.iloc[-1]["kind"]
else:
    crit = alerts[alerts["analyte"].isin(analytes)]
    if len(crit):
        want_a = crit.sort_values("severity").iloc[0]["analyte"]
qa, qk = st.query_params.get("analyte"), st.query_params.get("kind")
if qa in analytes:
    want_a, want_k = qa, qk
a_index = analytes.index(want_a) if want_a in analytes else 0
analyte = sel_cols[1].selectbox(t("an.channel"), analytes, index=a_index, key="channel_pick")
kinds = chans.loc[chans["analyte"] == analyte, "kinds"].iloc[0]
k_index = kinds.index(want_k) if want_k in kinds else 0
if want_k not in kinds and len(kinds) > 1:
    # the kind whose newest result is worst
    worst = {"fail": 3, "warn": 2, "invalid": 1, "pass": 0}
    scores = []
    for k in kinds:
        r = views.control_chart(eng, aid, analyte, k).results
        scores.append(worst.get(r["verdict"].iloc[-1], 0) if len(r) else -1)
    k_index = int(np.argmax(scores))
kind_lab = {k: lab("ckind", k) for k in kinds}  # pure format function (no session lookup)
kind = sel_cols[2].selectbox(t("an.kind"), kinds, index=k_index, key="kind_pick",
                             format_func=kind_lab.get)

cc = views.control_chart(eng, aid, analyte, kind)
res = cc.results
q_label = lab("qty", cc.quantity)
unit_q = fmt_unit(cc.unit)
if cc.rule_id:
    st.markdown(t("an.rule", rule=cc.rule_id, warn=f"{cc.warn:g}", limit=f"{cc.limit:g}",
                  unit=unit_q, source=source_text(cc.rule_source), status=t(f"status.{cc.rule_status}")))
    if cc.rule_status != "confirmed":
        st.warning(t("an.unverified_note"), icon=":material/report:")

valid = res[(res["verdict"] != "invalid") & res["value"].notna()].reset_index(drop=True)
vx = wall(valid["end"])
fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                    vertical_spacing=0.1,
                    subplot_titles=(t("an.chart_title", q=q_label, unit=unit_q),
                                    t("an.cusum_panel", h=f"{cc.cusum_h:g}")))
x0 = res["end"].min() if len(res) else at
x1 = max(res["end"].max() if len(res) else at, at)
tr = cc.trend
future = tr.crossing is not None and tr.crossing > at
if future and tr.crossing < x1 + dt.timedelta(days=120):
    x1 = tr.crossing + dt.timedelta(days=1)
colors = {"pass": "#2e7d32", "warn": "#f9a825", "fail": "#c62828", "invalid": "#9e9e9e"}
gx, gy = with_gaps(vx, valid["value"])
fig.add_trace(go.Scatter(x=gx, y=gy, mode="lines", name=t("col.value"), showlegend=False,
                         line={"color": "#0b3d6e", "width": 1.5}, hoverinfo="skip"), row=1, col=1)
fig.add_trace(go.Scatter(x=vx, y=valid["value"], mode="markers", name=f"{q_label} [{unit_q}]",
                         marker={"size": 8, "color": [colors[v] for v in valid["verdict"]]},
                         text=[t(f"verdict.{v}") for v in valid["verdict"]],
                         hovertemplate="%{x|%Y-%m-%d %H:%M}<br>%{y:+.2f} " + unit_q
                                       + "<br>%{text}<extra></extra>"), row=1, col=1)
if len(cc.ewma):
    ex, ey = with_gaps(vx, cc.ewma)
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", name="EWMA (λ = 0.2)",
                             line={"color": "#6a1b9a", "width": 2}), row=1, col=1)
if tr.slope_per_day is not None and tr.intercept is not None and len(valid) >= 2:
    # the fitted line: intercept at the time origin of envcal.trends (1970-01-01 UTC)
    t_first = valid["end"].iloc[max(0, len(valid) - tr.n)]
    xs = [t_first, x1]
    d = [(x - EPOCH).total_seconds() / 86400.0 for x in xs]
    fig.add_trace(go.Scatter(x=[wall1(x) for x in xs], y=[tr.intercept + tr.slope_per_day * v for v in d],
                             mode="lines", name=t("an.trend"),
                             line={"color": "#455a64", "dash": "longdash"}), row=1, col=1)
for _, p in cc.periods.iterrows():
    e = p["end"] if p["end"] is not None and not pd.isna(p["end"]) else x1
    fig.add_vrect(x0=wall1(p["start"]), x1=wall1(e), fillcolor="#c62828", opacity=0.12, line_width=0,
                  row=1, col=1)
if cc.limit:
    for sgn in (1, -1):
        fig.add_hline(y=sgn * cc.limit, line={"color": "#c62828", "dash": "dash", "width": 1.5},
                      row=1, col=1)
        fig.add_hline(y=sgn * cc.warn, line={"color": "#f9a825", "dash": "dot", "width": 1.5},
                      row=1, col=1)
    fig.add_hrect(y0=cc.warn, y1=cc.limit, fillcolor="#f9a825", opacity=0.08, line_width=0, row=1, col=1)
    fig.add_hrect(y0=-cc.limit, y1=-cc.warn, fillcolor="#f9a825", opacity=0.08, line_width=0, row=1, col=1)
    fig.add_annotation(x=wall1(x1), y=cc.limit, text=t("an.limit_line", v=f"{cc.limit:g}"),
                       showarrow=False, xanchor="right", yanchor="bottom",
                       font={"color": "#c62828", "size": 11}, row=1, col=1)
if future and cc.limit:
    fig.add_vline(x=wall1(tr.crossing), line={"color": "#c62828", "width": 1}, row=1, col=1)
if len(cc.cusum_plus):
    px_, py_ = with_gaps(vx, cc.cusum_plus)
    fig.add_trace(go.Scatter(x=px_, y=py_, name="CUSUM+", line={"color": "#ef6c00"}), row=2, col=1)
    mx_, my_ = with_gaps(vx, -cc.cusum_minus)
    fig.add_trace(go.Scatter(x=mx_, y=my_, name="CUSUM−", line={"color": "#00838f"}), row=2, col=1)
    fig.add_hline(y=cc.cusum_h, line={"color": "#c62828", "dash": "dot"}, row=2, col=1)
    fig.add_hline(y=-cc.cusum_h, line={"color": "#c62828", "dash": "dot"}, row=2, col=1)
fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                  legend={"orientation": "h", "y": -0.12}, plot_bgcolor="white")
fig.update_xaxes(gridcolor="#eceff1", range=[wall1(x0 - dt.timedelta(hours=12)), wall1(x1)],
                 tickformat="%m-%d", hoverformat="%Y-%m-%d %H:%M")
fig.update_xaxes(title_text=t("an.time_axis"), row=2, col=1)
fig.update_yaxes(gridcolor="#eceff1", zerolinecolor="#90a4ae")
fig.update_yaxes(title_text=t("an.value_axis", q=q_label, unit=unit_q), row=1, col=1)
fig.update_yaxes(title_text=t("an.cusum_axis", unit=unit_q), row=2, col=1)
st.plotly_chart(fig, width="stretch", key="control_chart")

m = st.columns(4)
m[0].metric(t("an.slope", unit=unit_q), "—" if tr.slope_per_day is None else f"{tr.slope_per_day:+.3f}")
m[1].metric(t("an.ewma"), "—" if tr.ewma is None else f"{tr.ewma:+.2f} {unit_q}")
m[2].metric(t("an.cusum"), t("an.yes") if tr.cusum_alarm else t("an.no"))
crossing = (fmt_time(tr.crossing)[:10] if future else t("an.crossing_past")) if tr.crossing else t("an.none")
m[3].metric(t("an.crossing"), crossing)

st.subheader(t("an.results"))
tab = res.sort_values("end", ascending=False).copy()
tab["verdict"] = [t(f"verdict.{v}") for v in tab["verdict"]]
tab["rule_status"] = [t(f"status.{s}") if s else "—" for s in tab["rule_status"]]
tab["reason"] = [localize_text(x) for x in (tab["reason_zh"] if lang() == "zh" else tab["reason_en"])]
tab["material"] = [f"/materials?cert={m}" if m else None for m in tab["material"]]
tab = local_times(tab, ["end"])
val_col = f"{q_label} [{unit_q}]"
st.dataframe(rename(tab, {"end": "col.end", "verdict": "col.verdict", "value": "col.value",
                          "reason": "col.reason_text", "material": "col.material",
                          "rule": "col.rule", "rule_status": "col.rule_status",
                          "needs_review": "col.review"}).rename(columns={t("col.value"): val_col}),
             hide_index=True, width="stretch", height=280,
             column_config={t("col.material"): st.column_config.LinkColumn(
                 display_text=r"cert=(.*)$"),
                 val_col: st.column_config.NumberColumn(format="%+.2f")})

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
    unit = fmt_unit(cr.result["unit"])
    f2 = go.Figure()
    if cr.plateau_start is not None:
        f2.add_vrect(x0=wall1(cr.plateau_start), x1=wall1(cr.plateau_end), fillcolor="#2e7d32",
                     opacity=0.15, line_width=0, annotation_text=t("an.plateau"),
                     annotation_position="top left")
    f2.add_vrect(x0=wall1(cr.result["start"]), x1=wall1(cr.result["end"]), fillcolor="#0b3d6e",
                 opacity=0.05, line_width=0)
    rx, ry = with_gaps(wall(df["ts"]), df["value"])
    f2.add_trace(go.Scatter(x=rx, y=ry, mode="lines+markers", name=f"{analyte} [{unit}]",
                            marker={"size": 4}, line={"color": "#0b3d6e"}))
    if cr.result.get("reference") is not None:
        f2.add_hline(y=cr.result["reference"], line={"color": "#6a1b9a", "dash": "dash"},
                     annotation_text=t("an.crm_line", v=f"{cr.result['reference']:g}", unit=unit))
    f2.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="white",
                     yaxis_title=t("an.reading_axis", analyte=analyte, unit=unit),
                     xaxis_title=t("an.time_axis"), showlegend=False)
    f2.update_xaxes(tickformat="%H:%M", hoverformat="%Y-%m-%d %H:%M")
    st.plotly_chart(f2, width="stretch", key="readings_chart")
