"""Public disclosure (强制检定合格公示, 计量信用信息发布): per station and operator the
verification status, the coverage rate and the operators below the integrity threshold,
with the date of the data and the formulas.

Read-only and without sign-in: it shows no person's name or account, calls no action and
has no input that changes state. Served only when the setting ``public_page`` is on
(``ENVCAL_PUBLIC_PAGE=1``; :func:`envcal.ui.common.public_page_enabled`), at ``/public``.
"""

import datetime as dt

import pandas as pd
import streamlit as st

from envcal import views
from envcal.ui.common import (
    INTEGRITY_COLUMNS,
    engine,
    fmt_time,
    integrity_table,
    now,
    public_page_enabled,
    rename,
    t,
)

st.title(t("pb.title"))
if not public_page_enabled():
    st.info(t("pb.disabled"))
    st.stop()
eng = engine()
at = now()
st.caption(t("pb.intro", at=fmt_time(at)))

cov = views.coverage_at(eng, at)
an = views.analyzers_frame(eng)
ok = {a.analyzer_id: a for a in cov.analyzers}
an["verified"] = [bool(ok[a].verified) if a in ok else False for a in an["analyzer"]]
an["cert_valid"] = [bool(ok[a].record) if a in ok else False for a in an["analyzer"]]
per = an.groupby(["station", "station_name", "operator"], as_index=False).agg(
    analyzers=("analyzer", "count"), verified=("verified", "sum"), cert_valid=("cert_valid", "sum"))
per["verified_n"] = [f"{int(v)} / {int(n)}" for v, n in zip(per["verified"], per["analyzers"], strict=True)]
per["cert_n"] = [f"{int(v)} / {int(n)}" for v, n in zip(per["cert_valid"], per["analyzers"], strict=True)]
per["rate"] = per["verified"] / per["analyzers"].clip(lower=1) * 100.0

k = st.columns(3)
k[0].metric(t("ov.coverage"), "—" if cov.rate is None else f"{cov.rate:.1%}",
            help=t("ov.coverage_formula_text"))
k[1].metric(t("pb.verified"), f"{cov.verified} / {cov.total}")
k[2].metric(t("ov.coverage_delta", target=f"{cov.target:.0%}"),
            t("ov.met") if cov.meets_target else t("ov.not_met"))
st.caption(t("ov.formula") + "：" + t("ov.coverage_formula_text"))

st.subheader(t("pb.stations"))
st.dataframe(rename(per, {"station": "col.station", "station_name": "col.station_name",
                          "operator": "col.operator", "cert_n": "col.cert_valid",
                          "verified_n": "col.verified_n", "rate": "col.rate"}),
             hide_index=True, width="stretch",
             column_config={t("col.rate"): st.column_config.ProgressColumn(
                 min_value=0, max_value=100, format="%.0f%%")})

end = at
start = end - dt.timedelta(days=30)
tz = views.local_tz()
st.subheader(t("pb.operators"))
st.caption(t("pb.period", start=f"{start.astimezone(tz):%Y-%m-%d}", end=f"{end.astimezone(tz):%Y-%m-%d}"))
integ = views.operator_integrity(eng, start, end)
integrity_table(integ)
thr = views.INTEGRITY_THRESHOLD
st.subheader(t("pb.blacklist", thr=f"{thr:g}"))
below = integ[integ["score"] < thr]
if not len(below):
    st.success(t("pb.none_below"))
else:
    st.dataframe(rename(below, INTEGRITY_COLUMNS), hide_index=True, width="stretch")
st.caption(t("ov.formula") + "：" + t("pb.integrity_formula"))
st.caption(pd.Timestamp(at).tz_convert(tz).strftime("%Y-%m-%d %H:%M %Z"))
