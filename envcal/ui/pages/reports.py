"""Reports: monthly verification report per station or network; CSV, NetCDF, PDF.

Opens on the last complete month. Each choice (month, scope, report language) is built
once — report, CSV, NetCDF and PDF — and cached until the stored data change (count of
results and alerts, and, for the running month, every 10 minutes).
"""

import time

import streamlit as st

from envcal import reports, views
from envcal.alerts import alert_counts
from envcal.config import db_url
from envcal.ui.common import engine, fmt_unit, lab, lang, local_times, now, rename, t
from envcal.ui.i18n import LANG_NAMES, LANGS

st.title(t("rp.title"))
eng = engine()
local_now = now().astimezone(views.local_tz())
months = []
y, m = local_now.year, local_now.month
for _ in range(13):
    months.append((y, m))
    y, m = (y, m - 1) if m > 1 else (y - 1, 12)


@st.cache_data(max_entries=48, show_spinner=False)
def build(url: str, year: int, month: int, station: str | None, rlang: str, version: tuple):
    """(report, csv, netcdf, pdf or None, font problem or None) of one choice."""
    rep = reports.monthly_report(engine(), year, month, station)
    try:
        pdf, problem = reports.report_pdf(rep, rlang), None
    except reports.ReportFontError as exc:
        pdf, problem = None, str(exc)
    return rep, reports.report_csv(rep), reports.report_netcdf(rep), pdf, problem


c = st.columns(3)
ym = c[0].selectbox(t("rp.month"), months, index=1, key="rp_month",
                    format_func=lambda v: f"{v[0]:04d}-{v[1]:02d}")
an = views.analyzers_frame(eng)
stations = ["", *sorted(an["station"].unique())]
names = dict(zip(an["station"], an["station_name"], strict=True))
stn = c[1].selectbox(t("rp.scope"), stations, key="rp_scope",
                     format_func=lambda s, net=t("rp.network"): net if not s else
                     f"{s} · {names.get(s, '')}")
rl = c[2].radio(t("rp.lang"), LANGS, index=LANGS.index(lang()), horizontal=True,
                format_func=lambda x: LANG_NAMES[x], key="rp_lang")
counts = alert_counts(eng)
running = ym == months[0]
version = (counts["results"], counts["alerts"], counts["alerts_open"],
           int(time.time() // 600) if running else 0)
rep, csv, nc, pdf, font_problem = build(db_url(None), ym[0], ym[1], stn or None, rl, version)
tot = rep.totals
st.caption(t("rp.number", n=reports.report_number(rep)))
k = st.columns(5)
k[0].metric(t("ov.coverage"), "—" if rep.coverage_rate is None else f"{rep.coverage_rate:.1%}",
            help=t("ov.coverage_formula_text"))
k[1].metric(t("rp.k_results"), tot["checks"])
k[2].metric(t("rp.k_failed"), tot["fail"])
k[3].metric(t("rp.k_ooc"), f"{tot['ooc_hours']:.1f}")
k[4].metric(t("rp.k_alerts"), tot["alerts"])
d = st.columns(3)
d[0].download_button(t("rp.csv"), csv, file_name=f"envcal_{rep.label}.csv",
                     mime="text/csv", key="rp_csv", icon=":material/table:")
d[1].download_button(t("rp.nc"), nc, file_name=f"envcal_{rep.label}.nc",
                     mime="application/x-netcdf", key="rp_nc", icon=":material/dataset:")
if pdf is not None:
    d[2].download_button(t("rp.pdf"), pdf, file_name=f"envcal_{rep.label}_{rl}.pdf",
                         mime="application/pdf", key="rp_pdf", icon=":material/picture_as_pdf:")
else:
    d[2].error(t("rp.no_font"), icon=":material/font_download_off:")
st.subheader(t("rp.per_analyzer"))
per = rep.per_analyzer.copy()
per["station_name"] = per["station"].map(rep.station_names)
st.dataframe(rename(per, {"analyzer": "col.analyzer", "station_name": "col.station_name",
                          "checks": "col.checks", "pass": "verdict.pass",
                          "warn": "verdict.warn", "fail": "verdict.fail",
                          "invalid": "verdict.invalid", "ooc_hours": "col.ooc_hours",
                          "alerts": "rp.k_alerts"}),
             hide_index=True, width="stretch",
             column_config={t("col.ooc_hours"): st.column_config.NumberColumn(format="%.1f")})
st.subheader(t("rp.daily"))
daily = rep.daily.set_index("day")[["pass", "warn", "fail", "invalid"]]
daily.index = [f"{x:%m-%d}" for x in daily.index]
daily.columns = [t(f"verdict.{v}") for v in daily.columns]
st.bar_chart(daily, color=["#2e7d32", "#f9a825", "#c62828", "#9e9e9e"], height=220,
             x_label=t("col.day"), y_label=t("col.checks"))
st.subheader(t("rp.failures"))
f = rep.failures.copy()
f["deciding"] = [reports.fmt_value(v, fmt_unit(u)) for v, u in zip(f["value"], f["value_unit"], strict=True)]
f["quantity"] = [lab("qty", q) for q in f["quantity"]]
f["limit"] = [f"±{x:g} {fmt_unit(u)}" if x == x and x is not None else "—"
              for x, u in zip(f["limit"], f["value_unit"], strict=True)]
f["kind"] = [lab("ckind", k_) for k_ in f["kind"]]
f["material"] = [m_ if isinstance(m_, str) else "—" for m_ in f["material"]]
f["rule_status"] = [t(f"status.{s_}") if s_ else "—" for s_ in f["rule_status"]]
st.dataframe(rename(local_times(f, ["end"]),
                    {"end": "col.end", "analyzer": "col.analyzer", "analyte": "an.channel",
                     "kind": "col.kind", "quantity": "col.quantity_label",
                     "deciding": "col.deciding", "limit": "col.limit", "material": "col.material",
                     "rule": "col.rule", "rule_status": "col.rule_status"}),
             hide_index=True, width="stretch")
