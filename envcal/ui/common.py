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
import re
import time

import pandas as pd
import streamlit as st

from envcal.ui.i18n import coverage_reason as _coverage_reason
from envcal.ui.i18n import label as _label
from envcal.ui.i18n import t as _t
from envcal.users import Actor, PermissionDenied, session_actor

SESSION_KEY = "envcal_actor"


def lang() -> str:
    """The current language, 'zh' (default) or 'en': this session's choice, else the
    browser's ``envcal_lang`` cookie (kept across F5 and deep links)."""
    cur = st.session_state.get("lang")
    if cur is None:
        from envcal.ui.i18n import LANGS
        from envcal.ui.session import LANG_COOKIE

        cur = _cookie(LANG_COOKIE)
        cur = cur if cur in LANGS else "zh"
        st.session_state["lang"] = cur
    return cur


def set_lang(value: str) -> None:
    """Switch the language and remember it in the browser (cookie, one year)."""
    from envcal.ui.session import LANG_COOKIE

    st.session_state["lang"] = value
    _queue_cookie(LANG_COOKIE, value, 365 * 86400)


def _cookie(name: str) -> str | None:
    try:
        return st.context.cookies.get(name)
    except (AttributeError, RuntimeError):  # no browser request (AppTest, bare script run)
        return None


def _queue_cookie(name: str, value: str, max_age_s: int) -> None:
    """Set a cookie in the browser on the next render (:func:`emit_cookies`)."""
    st.session_state.setdefault("envcal_cookies", {})[name] = (value, int(max_age_s))


def emit_cookies() -> None:
    """Write the queued cookies (one line of JavaScript of our own, no user input in it:
    the value is a signature or a language code, JSON-quoted)."""
    pending = st.session_state.pop("envcal_cookies", None)
    if not pending:
        return
    from envcal.ui.session import set_cookie_js

    # a container of its own each time: the browser mounts (and runs) the script anew
    n = st.session_state["envcal_cookie_n"] = st.session_state.get("envcal_cookie_n", 0) + 1
    with st.container(key=f"envcal_cookie_{n}"):
        st.html("".join(set_cookie_js(k, v, age) for k, (v, age) in pending.items()),
                unsafe_allow_javascript=True)


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


def public_page_enabled() -> bool:
    """Whether the public disclosure page is served (setting ``public_page``:
    ``ENVCAL_PUBLIC_PAGE=1`` or ``public_page = true`` in ``envcal.toml``; default off)."""
    from envcal.config import setting

    v = setting("public_page", None, False)
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timeout_minutes() -> float:
    return float(os.environ.get("ENVCAL_SESSION_TIMEOUT_MIN", "30"))


def _from_cookie() -> tuple[Actor, float] | None:
    """The actor of a valid signed session cookie and its sign-in time [s since the epoch],
    re-checked against the account table (a disabled or deleted account or a changed role
    is not restored)."""
    from envcal.ui.session import COOKIE, verify
    from envcal.users import actor_for

    v = verify(_cookie(COOKIE))
    if v is None or st.session_state.get("envcal_signed_out"):
        return None
    name, role, _exp, signed_in_at = v
    a = actor_for(engine(), name)
    return (a, signed_in_at) if a is not None and a.role == role else None


def current_actor() -> Actor | None:
    """The signed-in actor as the account is *now* (re-read on every rerun), or None after
    ``ENVCAL_SESSION_TIMEOUT_MIN`` idle minutes, ``ENVCAL_SESSION_MAX_HOURS`` after the
    password sign-in, or when the account was disabled (:func:`envcal.users.session_actor`).

    A new browser session (F5, a deep link) is signed in again from the signed cookie
    (:mod:`envcal.ui.session`), which carries the time of the sign-in; the cookie is renewed
    while the user is active.
    """
    a = st.session_state.get(SESSION_KEY)
    t_now = time.time()
    if a is None:
        restored = _from_cookie()
        if restored is None:
            return None
        a, st.session_state["envcal_signed_in_at"] = restored
        st.session_state["envcal_last_seen"] = t_now
        st.session_state["envcal_cookie_at"] = t_now
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
    if t_now - st.session_state.get("envcal_cookie_at", 0.0) > timeout_minutes() * 30:
        _write_session_cookie(chk.actor)
    return chk.actor


def _write_session_cookie(actor: Actor) -> None:
    from envcal.ui.session import COOKIE, sign

    ttl = timeout_minutes() * 60
    _queue_cookie(COOKIE, sign(actor.name, actor.role, ttl,
                               signed_in_at=st.session_state.get("envcal_signed_in_at")), int(ttl))
    st.session_state["envcal_cookie_at"] = time.time()


def sign_in(actor: Actor) -> None:
    st.session_state[SESSION_KEY] = actor
    st.session_state["envcal_last_seen"] = st.session_state["envcal_signed_in_at"] = time.time()
    st.session_state.pop("envcal_expired", None)
    st.session_state.pop("envcal_signed_out", None)
    _write_session_cookie(actor)


def sign_out() -> None:
    from envcal.ui.session import COOKIE

    st.session_state.pop(SESSION_KEY, None)
    # the browser still sends the old cookie to this session: never restore from it again
    st.session_state["envcal_signed_out"] = True
    _queue_cookie(COOKIE, "", 0)
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


INTEGRITY_COLUMNS = {"operator": "col.operator", "score": "col.score", "analyzers": "col.analyzers",
                     "checks": "col.checks", "failed": "col.failed",
                     "overdue_analyzers": "col.overdue", "ooc_hours": "col.ooc_hours",
                     "falsification": "col.falsification", "expired_crm": "col.expired_crm"}


def integrity_table(df: pd.DataFrame) -> None:
    """The operator integrity table (:func:`envcal.state.operator_integrity`), as the
    operators page and the public page show it."""
    st.dataframe(rename(df, INTEGRITY_COLUMNS), hide_index=True, width="stretch",
                 column_config={t("col.score"): st.column_config.ProgressColumn(
                     min_value=0, max_value=100, format="%.1f"),
                     t("col.ooc_hours"): st.column_config.NumberColumn(format="%.1f")})


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


def lab(prefix: str, value) -> str:
    """A domain value's label in the current language (alert kinds ``akind``, check kinds
    ``ckind``, certificate kinds ``crmkind``, quantities ``qty``...)."""
    return _label(prefix, value, lang())


def reason_text(text: str) -> str:
    """A coverage reason of :mod:`envcal.instruments` in the current language."""
    return _coverage_reason(text, lang(), fmt_time)


def fmt_unit(u: str | None) -> str:
    """A unit as printed (``umol/mol`` → µmol/mol, ``mg/m3`` → mg/m³, ``ug`` → µg)."""
    if not u:
        return ""
    out = str(u).replace("umol", "µmol").replace("ug/", "µg/").replace("m3", "m³")
    return "µg" if out == "ug" else out


def fmt_duration(hours: float | None) -> str:
    """A duration [h] as '3 天 4 小时' / '3 d 4 h'."""
    if hours is None or pd.isna(hours):
        return "—"
    h = int(round(float(hours)))
    return t("dur.days", d=h // 24, h=h % 24) if h >= 24 else t("dur.hours", h=h)


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _ev_key(k: str) -> str:
    from envcal.ui.i18n import STRINGS

    for prefix in ("evk", "ckind", "akind", "qty"):
        if f"{prefix}.{k}" in STRINGS:
            return t(f"{prefix}.{k}")
    return k


def _ev_value(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return t("an.yes") if v else t("an.no")
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str) and _ISO.match(v):
        return fmt_time(v)
    if isinstance(v, str):
        from envcal.ui.i18n import STRINGS

        for prefix in ("vdue", "verdict", "astate", "ckind", "akind", "crmkind", "qty", "status"):
            if f"{prefix}.{v}" in STRINGS:
                return t(f"{prefix}.{v}")
        return localize_text(v)
    if isinstance(v, list):
        return ", ".join(_ev_value(x) for x in v)
    return str(v)


def evidence_rows(ev, prefix: str = "") -> pd.DataFrame:
    """An alert's evidence (nested JSON) as a labelled two-column table: item, value;
    times in local time, floats to 4 significant digits, only the current language's
    explanation (``reason_zh`` / ``reason_en``)."""
    rows: list[tuple[str, str]] = []
    other = "reason_en" if lang() == "zh" else "reason_zh"

    def walk(obj, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k == other:
                    continue
                name = _ev_key("reason" if k in ("reason_en", "reason_zh") else k)
                walk(v, f"{path} · {name}" if path else name)
        elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
            for i, x in enumerate(obj, 1):
                walk(x, f"{path} {i}")
        else:
            rows.append((path, _ev_value(obj)))

    walk(ev if isinstance(ev, (dict, list)) else {}, prefix)
    return pd.DataFrame(rows, columns=[t("ev.field"), t("ev.value")])


_ISO_IN_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})")
_TOKEN = re.compile(r"(?<![\w.\-])([a-z][a-z0-9]*(?:_[a-z0-9]+)*)(?![\w.\-])")


def localize_text(text) -> str:
    """A stored text (alert title, check explanation) for display: ISO times in local time;
    in Chinese, the check kinds, compared quantities and data-quality tests it names by
    their Chinese labels (identifiers such as rule ids stay as they are)."""
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return ""
    out = _ISO_IN_TEXT.sub(lambda m: fmt_time(m.group(0)), str(text))
    if lang() != "zh":
        return out
    from envcal.ui.i18n import STRINGS

    def sub(m):
        w = m.group(1)
        for prefix in ("ckind", "qty", "evk"):
            if f"{prefix}.{w}" in STRINGS and (prefix != "evk" or "_" in w):
                return t(f"{prefix}.{w}")
        return w

    return _TOKEN.sub(sub, out)


_CJK = re.compile(r"[\u4e00-\u9fff]")


def source_text(text: str | None) -> str:
    """A rule's source (standard, clause and its description): in Chinese, the parts of
    the description that are only English are left out when a Chinese part exists."""
    if not text:
        return "—"
    if lang() != "zh" or not _CJK.search(text):
        return text
    parts = [p for p in re.split(r"[;；]\s*", text) if _CJK.search(p)]
    return "；".join(parts)


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
