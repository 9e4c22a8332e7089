"""Overview: analyzer states, verification coverage, checks today, open alerts, map, worst."""

import os

import plotly.graph_objects as go
import streamlit as st

from envcal import views
from envcal.ui.common import (
    STATE_ICONS,
    engine,
    fmt_time,
    local_times,
    now,
    rename,
    state_label,
    styled_states,
    t,
)

REFRESH_S = int(os.environ.get("ENVCAL_REFRESH_S", "60"))

st.title(t("ov.title"))


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    o = views.overview(engine(), now())
    st.caption(t("app.updated", at=fmt_time(o.at), sec=REFRESH_S))
    st.subheader(t("ov.analyzers", n=o.total))
    cols = st.columns(4)
    for c, s in zip(cols, views.STATES, strict=True):
        c.metric(f"{STATE_ICONS[s]} {state_label(s)}", o.states[s])
    c1, c2, c3 = st.columns([1.3, 1, 1])
    rate = "—" if o.coverage_rate is None else f"{o.coverage_rate:.1%}"
    delta = None if o.coverage_rate is None else f"{(o.coverage_rate - o.coverage_target) * 100:+.1f} pp"
    c1.metric(t("ov.coverage"), rate, delta=delta, help=o.coverage_formula)
    c1.caption(t("ov.coverage_detail", k=o.coverage_verified, n=o.coverage_total,
                 met=t("ov.met") if (o.coverage_rate or 0) >= o.coverage_target else t("ov.not_met"))
               + " · " + t("ov.coverage_delta", target=f"{o.coverage_target:.0%}"))
    c2.metric(t("ov.checks_today"), f"{o.passed_today} / {o.checks_today}")
    c2.caption(t("ov.checks_today_detail", n=o.checks_today))
    c3.metric(t("ov.alerts"), sum(o.alerts_by_severity.values()))
    c3.caption(" · ".join(f"{t('severity.' + k)} {v}" for k, v in o.alerts_by_severity.items()))
    with st.expander(t("ov.formula") + ": " + t("ov.coverage")):
        st.code(o.coverage_formula, language=None, wrap_lines=True)
        if len(o.not_verified):
            st.markdown(f"**{t('ov.not_verified')}**")
            st.dataframe(rename(o.not_verified, {"analyzer": "col.analyzer", "reasons": "col.reasons"}),
                         hide_index=True, width="stretch")
    left, right = st.columns([1, 1.25])
    with left:
        st.subheader(t("ov.map"))
        fig = go.Figure()
        stn = o.stations
        for s in views.STATES:
            d = stn[stn["worst"] == s]
            if not len(d):
                continue
            fig.add_trace(go.Scatter(
                x=d["lon"], y=d["lat"], mode="markers+text", name=state_label(s),
                text=list(d["station"]), textposition="top center",
                textfont={"size": 10, "color": "#37474f"},
                hovertext=[f"{a}<br>{b}<br>{c}" for a, b, c in
                           zip(d["station"], d["station_name"], d["operator"], strict=True)],
                hoverinfo="text", marker={"size": 16, "color": views.STATE_COLORS[s],
                                          "line": {"width": 1.5, "color": "white"}}))
        # offline: a plain longitude/latitude plane (no map tiles or topojson from the internet)
        fig.update_xaxes(title=t("map.lon"), gridcolor="#dfe6ee", zeroline=False)
        fig.update_yaxes(title=t("map.lat"), gridcolor="#dfe6ee", zeroline=False,
                         scaleanchor="x", scaleratio=1.15)
        fig.update_layout(height=420, margin={"l": 0, "r": 0, "t": 10, "b": 0},
                          plot_bgcolor="#eef3f8",
                          legend={"orientation": "h", "y": -0.15})
        st.plotly_chart(fig, width="stretch", key="map")
    with right:
        st.subheader(t("ov.worst"))
        w = o.worst.copy()
        raw = list(w["state"])
        w["state"] = [state_label(s) for s in raw]
        w["reason"] = [t(f"reason.{r}") for r in w["reason"]]
        w = local_times(w, ["last_check"])
        w = rename(w, {"analyzer": "col.analyzer", "station_name": "col.station_name",
                       "state": "col.state", "reason": "col.reason",
                       "last_check": "col.last_check", "failed_30d": "col.failed_30d",
                       "open_alerts": "col.open_alerts"})
        st.dataframe(styled_states(w, t("col.state"), raw), hide_index=True, width="stretch",
                     height=min(420, 35 * (len(w) + 1) + 3))


live()
