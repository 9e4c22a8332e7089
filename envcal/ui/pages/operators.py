"""Operators: per-operator integrity record and transparent score; list below threshold."""

import datetime as dt

import streamlit as st

from envcal import views
from envcal.ui.common import INTEGRITY_COLUMNS, engine, integrity_table, now, rename, t

st.title(t("op.title"))
eng = engine()
c = st.columns(2)
days = c[0].number_input(t("op.period"), min_value=7, max_value=366, value=30, step=1, key="op_days")
thr = c[1].slider(t("op.threshold"), 0.0, 100.0, views.INTEGRITY_THRESHOLD, 1.0, key="op_thr")
end = now()
df = views.operator_integrity(eng, end - dt.timedelta(days=int(days)), end)
st.markdown(f"**{t('op.formula')}**")
st.markdown(t("pb.integrity_formula"))
integrity_table(df)
below = df[df["score"] < thr]
st.subheader(t("op.below"))
if not len(below):
    st.success(t("op.none_below"))
else:
    st.dataframe(rename(below, INTEGRITY_COLUMNS), hide_index=True, width="stretch")
st.download_button(t("op.export"), below.to_csv(index=False).encode("utf-8-sig"),
                   file_name=f"operators_below_{thr:g}.csv", mime="text/csv", key="op_csv")
