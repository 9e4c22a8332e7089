"""Overview: analyzer states, verification coverage, checks today, unresolved alerts,
verification due dates, map, the analyzers needing attention (since when, for how long)."""

import os

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from envcal import views
from envcal.ui.common import (
    STATE_ICONS,
    engine,
    fmt_duration,
    fmt_time,
    lab,
    lang,
    local_times,
    now,
    reason_text,
    rename,
    state_label,
    styled_states,
    t,
)

REFRESH_S = int(os.environ.get("ENVCAL_REFRESH_S", "60"))

st.title(t("ov.title"))


def _since(eng, at, alerts: pd.DataFrame) -> dict[str, object]:
    """Analyzer -> start of its open out-of-control period (else its oldest unresolved
    critical alert), as stored by the alert engine."""
    p = views.out_of_control_periods(eng, start=at, end=at + pd.Timedelta(seconds=1))
    out: dict[str, object] = {}
    for aid, g in p[p["end"].isna()].groupby("analyzer"):
        out[str(aid)] = g["start"].min()
    crit = alerts[alerts["severity"] == "critical"]
    for aid, g in crit.groupby("analyzer"):
        out.setdefault(str(aid), g["opened_at"].min())
    return out


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    eng = engine()
    at = now()
    o = views.overview(eng, at)
    alerts = views.alerts_frame(eng, state="open")
    st.caption(t("app.updated", at=fmt_time(o.at), sec=REFRESH_S))
    st.subheader(t("ov.analyzers", n=o.total))
    cols = st.columns(4)
    for c, s in zip(cols, views.STATES, strict=True):
        c.metric(f"{STATE_ICONS[s]} {state_label(s)}", o.states[s])
    c1, c2, c3 = st.columns([1.3, 1, 1])
    rate = "—" if o.coverage_rate is None else f"{o.coverage_rate:.1%}"
    delta = None if o.coverage_rate is None else f"{(o.coverage_rate - o.coverage_target) * 100:+.1f} pp"
    c1.metric(t("ov.coverage"), rate, delta=delta, help=t("ov.coverage_formula_text"))
    c1.caption(t("ov.coverage_detail", k=o.coverage_verified, n=o.coverage_total,
                 met=t("ov.met") if (o.coverage_rate or 0) >= o.coverage_target else t("ov.not_met"))
               + " · " + t("ov.coverage_delta", target=f"{o.coverage_target:.0%}"))
    c2.metric(t("ov.checks_today"), f"{o.passed_today} / {o.checks_today}")
    c2.caption(t("ov.checks_today_detail", n=o.checks_today))
    c3.metric(t("ov.alerts"), len(alerts))
    by_kind = alerts["kind"].value_counts()
    c3.caption(" · ".join(f"{lab('akind', k)} {v}" for k, v in by_kind.items()) or "—")
    with st.expander(t("ov.formula") + ": " + t("ov.coverage")):
        st.markdown(t("ov.coverage_formula_text"))
        if len(o.not_verified):
            st.markdown(f"**{t('ov.not_verified')}**")
            nv = o.not_verified.copy()
            nv["reasons"] = ["；".join(reason_text(x) for x in str(r).split("; ")) if lang() == "zh"
                             else "; ".join(reason_text(x) for x in str(r).split("; "))
                             for r in nv["reasons"]]
            st.dataframe(rename(nv, {"analyzer": "col.analyzer", "reasons": "col.reasons"}),
                         hide_index=True, width="stretch")
    st.subheader(t("ov.worst"))
    w = o.worst.copy()
    since = _since(eng, at, alerts)
    raw = list(w["state"])
    w["since"] = [since.get(a) if s_ != "in_control" else None for a, s_ in zip(w["analyzer"], raw, strict=True)]
    w["duration"] = [fmt_duration((pd.Timestamp(at) - pd.Timestamp(x)).total_seconds() / 3600)
                     if x is not None and not pd.isna(x) else "—" for x in w["since"]]
    w["state"] = [state_label(s) for s in raw]
    w["reason"] = [t(f"reason.{r}") for r in w["reason"]]
    w = local_times(w, ["last_check", "since"])
    w = rename(w, {"state": "col.state", "analyzer": "col.analyzer", "since": "col.since",
                   "duration": "col.duration", "reason": "col.reason",
                   "open_alerts": "col.open_alerts", "station_name": "col.station_name",
                   "last_check": "col.last_check", "failed_30d": "col.failed_30d"})
    st.dataframe(styled_states(w, t("col.state"), raw), hide_index=True, width="stretch",
                 height=min(430, 35 * (len(w) + 1) + 3),
                 column_config={t("col.state"): st.column_config.TextColumn(width="small"),
                                t("col.since"): st.column_config.TextColumn(width="medium"),
                                t("col.duration"): st.column_config.TextColumn(width="medium"),
                                t("col.reason"): st.column_config.TextColumn(width="medium"),
                                t("col.open_alerts"): st.column_config.NumberColumn(width="small"),
                                t("col.failed_30d"): st.column_config.NumberColumn(width="small")})
    left, right = st.columns([1.2, 1])
    with left:
        st.subheader(t("ov.map"))
        fig = go.Figure()
        stn = o.stations
        # numbered markers (stations a few km apart would overlap as text labels)
        number = {x: i + 1 for i, x in enumerate(stn.sort_values("station")["station"])}
        for s in views.STATES:
            d = stn[stn["worst"] == s]
            if not len(d):
                continue
            fig.add_trace(go.Scatter(
                x=d["lon"], y=d["lat"], mode="markers+text", name=state_label(s),
                text=[str(number[x]) for x in d["station"]], textposition="middle center",
                textfont={"size": 11, "color": "white"},
                hovertext=[f"{a}<br>{b}<br>{c}" for a, b, c in
                           zip(d["station"], d["station_name"], d["operator"], strict=True)],
                hoverinfo="text", marker={"size": 20, "color": views.STATE_COLORS[s],
                                          "line": {"width": 1.5, "color": "white"}}))
        # offline: a plain longitude/latitude plane (no map tiles or boundary files from the internet)
        fig.update_xaxes(title=t("map.lon"), gridcolor="#dfe6ee", zeroline=False)
        fig.update_yaxes(title=t("map.lat"), gridcolor="#dfe6ee", zeroline=False,
                         scaleanchor="x", scaleratio=1.15)
        fig.update_layout(height=430, margin={"l": 0, "r": 0, "t": 10, "b": 0},
                          plot_bgcolor="#eef3f8",
                          legend={"orientation": "h", "y": -0.18})
        st.plotly_chart(fig, width="stretch", key="map")
        st.caption("　".join(f"{number[x]} {n}" for x, n in
                            zip(stn.sort_values("station")["station"],
                                stn.sort_values("station")["station_name"], strict=True)))

    with right:
        due = alerts[alerts["kind"] == "verification_due"]
        st.subheader(t("ov.due"))
        if not len(due):
            st.caption(t("ov.no_due"))
        else:
            d = due.copy()
            ev = [e if isinstance(e, dict) else {} for e in d["evidence"]]
            d["state"] = [lab("vdue", e.get("state")) for e in ev]
            d["record"] = [e.get("record") or "—" for e in ev]
            d["valid_until"] = [e.get("valid_until") or "—" for e in ev]
            d["days"] = [e.get("days") for e in ev]
            st.dataframe(rename(d, {"analyzer": "col.analyzer", "state": "col.state",
                                    "record": "col.record", "valid_until": "col.valid_until",
                                    "days": "col.days"}),
                         hide_index=True, width="stretch")


live()
