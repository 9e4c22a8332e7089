"""Shared helpers of the Streamlit pages: engine, language, login state, formatting.

Settings: ``ENVCAL_DB`` (database URL; ``envcal ui --db`` passes it through),
``ENVCAL_ARCHIVE`` (NetCDF archive folder), ``ENVCAL_STATIONS`` (registry),
``ENVCAL_SESSION_TIMEOUT_MIN`` (idle minutes before a session is signed out, default 30),
``ENVCAL_SESSION_MAX_HOURS`` (hours after sign-in a session ends however active, default 12),
``ENVCAL_REFRESH_S`` (Overview live refresh, default 60).

OIDC: when ``.streamlit/secrets.toml`` has an ``[auth]`` section (Streamlit's ``st.login``
configuration: ``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret``,
``server_metadata_url``), the login page offers single sign-on; the signed-in e-mail is
matched to an account created with ``envcal users add`` (its role applies; unknown
e-mails get no access).
"""

from __future__ import annotations

import datetime as dt
import os
import time

import pandas as pd
import streamlit as st

from envcal.ui.i18n import t as _t
from envcal.users import Actor, PermissionDenied, session_actor

SESSION_KEY = "envcal_actor"


def lang() -> str:
    """The current language, 'zh' (default) or 'en'."""
    return st.session_state.get("lang", "zh")


def t(key: str, **kw) -> str:
    """A label in the current language."""
    return _t(key, lang(), **kw)


@st.cache_resource(show_spinner=False)
def _engine(url: str):
    from envcal.db import init_db, make_engine

    eng = make_engine(url)
    init_db(eng)
    return eng


def engine():
    """The database engine of ``ENVCAL_DB`` (migrated once per process)."""
    from envcal.config import db_url

    return _engine(db_url(None))


def archive_dir() -> str | None:
    from envcal.config import setting

    p = str(setting("archive", None))
    return p if os.path.isdir(p) else None


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timeout_minutes() -> float:
    return float(os.environ.get("ENVCAL_SESSION_TIMEOUT_MIN", "30"))


def current_actor() -> Actor | None:
    """The signed-in actor as the account is *now* (re-read on every rerun), or None after
    ``ENVCAL_SESSION_TIMEOUT_MIN`` idle minutes, ``ENVCAL_SESSION_MAX_HOURS`` after sign-in,
    or when the account was disabled (:func:`envcal.users.session_actor`)."""
    a = st.session_state.get(SESSION_KEY)
    if a is None:
        return None
    t_now = time.time()
    chk = session_actor(engine(), a, signed_in_at=st.session_state.setdefault("envcal_signed_in_at", t_now),
                        last_seen=st.session_state.get("envcal_last_seen", t_now), now=t_now,
                        idle_s=timeout_minutes() * 60,
                        lifetime_s=float(os.environ.get("ENVCAL_SESSION_MAX_HOURS", "12")) * 3600)
    if chk.actor is None:
        sign_out()
        st.session_state["envcal_expired"] = True
        return None
    st.session_state[SESSION_KEY] = chk.actor
    st.session_state["envcal_last_seen"] = t_now
    return chk.actor


def sign_in(actor: Actor) -> None:
    st.session_state[SESSION_KEY] = actor
    st.session_state["envcal_last_seen"] = st.session_state["envcal_signed_in_at"] = time.time()
    st.session_state.pop("envcal_expired", None)


def sign_out() -> None:
    st.session_state.pop(SESSION_KEY, None)
    st.session_state.pop("envcal_signed_in_at", None)


def oidc_configured() -> bool:
    """Whether ``st.login`` is configured (``[auth]`` in the Streamlit secrets)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all
        return False


def run_action(fn, *args, **kw):
    """Call an action; a permission refusal becomes an error box, not a traceback."""
    try:
        return fn(*args, **kw)
    except PermissionDenied as exc:
        st.error(t("app.denied", msg=str(exc)))
        return None


def fmt_time(v) -> str:
    """A UTC time as local (Asia/Shanghai by default) 'YYYY-MM-DD HH:MM'."""
    from envcal.views import local_tz

    if v is None or pd.isna(v):
        return "—"
    ts = pd.Timestamp(v)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert(local_tz()).strftime("%Y-%m-%d %H:%M")


def local_times(df: pd.DataFrame, cols) -> pd.DataFrame:
    df = df.copy()
    for c in cols:
        if c in df.columns:
            df[c] = [fmt_time(v) for v in df[c]]
    return df


def rename(df: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """Keep ``mapping``'s columns in its order, headed by their translated labels."""
    cols = [c for c in mapping if c in df.columns]
    return df[cols].rename(columns={c: t(mapping[c]) for c in cols})


def state_label(s: str) -> str:
    return t(f"state.{s}")


STATE_ICONS = {"in_control": ":green[●]", "warning": ":orange[●]", "out_of_control": ":red[●]",
               "no_data": ":gray[●]"}
_STATE_BG = {"in_control": "#e8f5e9", "warning": "#fff8e1", "out_of_control": "#ffebee",
             "no_data": "#f5f5f5"}
_STATE_FG = {"in_control": "#1b5e20", "warning": "#8d6e00", "out_of_control": "#b71c1c",
             "no_data": "#616161"}


def styled_states(df: pd.DataFrame, col: str, states: list[str]):
    """A Styler colouring ``col`` (already translated) by the untranslated ``states``."""
    css = [f"background-color: {_STATE_BG[s]}; color: {_STATE_FG[s]}; font-weight: 600"
           for s in states]
    return df.style.apply(lambda _c: css, subset=[col], axis=0)


def header(title_key: str) -> None:
    st.title(t(title_key))


def flash(msg: str) -> None:
    """Show ``msg`` as a success box after the next rerun (the page re-reads fresh data)."""
    st.session_state["envcal_flash"] = msg
    st.rerun()


def show_flash() -> None:
    msg = st.session_state.pop("envcal_flash", None)
    if msg:
        st.success(msg, icon=":material/check_circle:")
