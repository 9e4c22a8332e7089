"""Reports: monthly verification report per station or network; CSV, NetCDF, PDF."""


import streamlit as st

from envcal import reports, views
from envcal.ui.common import engine, lang, local_times, now, rename, t
from envcal.ui.i18n import LANG_NAMES, LANGS

st.title(t("rp.title"))
eng = engine()
local_now = now().astimezone(views.local_tz())
months = []
y, m = local_now.year, local_now.month
for _ in range(12):
    months.append((y, m))
    y, m = (y, m - 1) if m > 1 else (y - 1, 12)
c = st.columns(3)
ym = c[0].selectbox(t("rp.month"), months, format_func=lambda v: f"{v[0]:04d}-{v[1]:02d}", key="rp_month")
an = views.analyzers_frame(eng)
stations = ["", *sorted(an["station"].unique())]
names = dict(zip(an["station"], an["station_name"], strict=True))
stn = c[1].selectbox(t("rp.scope"), stations, key="rp_scope",
                     format_func=lambda s, net=t("rp.network"): net if not s else
                     f"{s} · {names.get(s, '')}")
rl = c[2].radio(t("rp.lang"), LANGS, index=LANGS.index(lang()), horizontal=True,
                format_func=lambda x: LANG_NAMES[x], key="rp_lang")
rep = reports.monthly_report(eng, ym[0], ym[1], stn or None)
tot = rep.totals
k = st.columns(5)
k[0].metric(t("ov.coverage"), "—" if rep.coverage_rate is None else f"{rep.coverage_rate:.1%}",
            help=views.COVERAGE_FORMULA)
k[1].metric(t("rp.k_results"), tot["checks"])
k[2].metric(t("rp.k_failed"), tot["fail"])
k[3].metric(t("rp.k_ooc"), f"{tot['ooc_hours']:.1f}")
k[4].metric(t("rp.k_alerts"), tot["alerts"])
d = st.columns(3)
d[0].download_button(t("rp.csv"), reports.report_csv(rep), file_name=f"envcal_{rep.label}.csv",
                     mime="text/csv", key="rp_csv", icon=":material/table:")
d[1].download_button(t("rp.nc"), reports.report_netcdf(rep), file_name=f"envcal_{rep.label}.nc",
                     mime="application/x-netcdf", key="rp_nc", icon=":material/dataset:")
d[2].download_button(t("rp.pdf"), reports.report_pdf(rep, rl), file_name=f"envcal_{rep.label}_{rl}.pdf",
                     mime="application/pdf", key="rp_pdf", icon=":material/picture_as_pdf:")
st.subheader(t("rp.per_analyzer"))
st.dataframe(rename(rep.per_analyzer, {"analyzer": "col.analyzer", "station": "col.station",
                                       "checks": "col.checks", "pass": "verdict.pass",
                                       "warn": "verdict.warn", "fail": "verdict.fail",
                                       "invalid": "verdict.invalid", "ooc_hours": "col.ooc_hours",
                                       "alerts": "rp.k_alerts"}),
             hide_index=True, width="stretch")
st.subheader(t("rp.daily"))
st.bar_chart(rep.daily.set_index("day")[["pass", "warn", "fail", "invalid"]],
             color=["#2e7d32", "#f9a825", "#c62828", "#9e9e9e"], height=220)
st.subheader(t("rp.failures"))
st.dataframe(rename(local_times(rep.failures, ["end"]),
                    {"end": "col.end", "analyzer": "col.analyzer", "analyte": "an.channel",
                     "kind": "col.kind", "error_fs_pct": "col.value", "material": "col.material",
                     "rule": "col.rule", "rule_status": "col.rule_status"}),
             hide_index=True, width="stretch")
