"""The app frame: page setup, language switch, sign-in, navigation (``st.navigation``)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from envcal.ui.common import (
    current_actor,
    emit_cookies,
    engine,
    lang,
    oidc_configured,
    public_page_enabled,
    set_lang,
    sign_in,
    sign_out,
    t,
)
from envcal.ui.i18n import LANG_NAMES, LANGS

PAGES_DIR = Path(__file__).resolve().parent / "pages"
#: page file, title key, icon, group
PAGES = [
    ("overview.py", "nav.overview", ":material/dashboard:", "nav.group.monitor"),
    ("analyzer.py", "nav.analyzer", ":material/monitoring:", "nav.group.monitor"),
    ("alerts.py", "nav.alerts", ":material/notifications:", "nav.group.monitor"),
    ("devices.py", "nav.devices", ":material/router:", "nav.group.monitor"),
    ("materials.py", "nav.materials", ":material/science:", "nav.group.evidence"),
    ("reports.py", "nav.reports", ":material/description:", "nav.group.evidence"),
    ("operators.py", "nav.operators", ":material/apartment:", "nav.group.evidence"),
    ("rules.py", "nav.rules", ":material/gavel:", "nav.group.evidence"),
]
#: the public disclosure page: no sign-in, read-only, served only when enabled
PUBLIC_PAGE = ("public.py", "nav.public", ":material/public:", "nav.group.evidence")

CSS = """
<style>
[data-testid="stMetric"] {background: #f5f8fb; border: 1px solid #dde5ee; border-radius: 6px;
  padding: 10px 14px;}
[data-testid="stMetricLabel"] p {font-size: 0.92rem; color: #36506b;}
h1 {color: #0b3d6e; font-size: 1.7rem !important;}
[data-testid="stSidebar"] {background: #0b3d6e0d;}
.envcal-banner {background: #0b3d6e; color: white; padding: 8px 16px; border-radius: 4px;
  margin-bottom: 8px; font-size: 0.95rem;}
</style>
"""


def uploader_css() -> str:
    """Streamlit's own file-uploader texts in the current language (it has no option)."""
    return (
        "<style>"
        "[data-testid='stFileUploaderDropzone'] button [data-testid='stMarkdownContainer'] p"
        "{font-size:0}"
        "[data-testid='stFileUploaderDropzone'] button [data-testid='stMarkdownContainer'] p::after"
        f"{{content:'{t('cm.uploader_browse')}';font-size:0.875rem}}"
        "[data-testid='stFileUploaderDropzoneInstructions'] span{font-size:0}"
        "[data-testid='stFileUploaderDropzoneInstructions'] span::after"
        f"{{content:'{t('cm.uploader_limit')}';font-size:0.75rem}}"
        "</style>")


def _language_switch() -> None:
    cur = lang()
    choice = st.sidebar.radio(t("app.language"), LANGS, index=LANGS.index(cur),
                              format_func=lambda x: LANG_NAMES[x], horizontal=True,
                              key="lang_choice")
    if choice != cur:
        set_lang(choice)
        st.rerun()


def _login() -> None:
    from envcal.users import UserError, actor_for, authenticate

    st.markdown(f"<div class='envcal-banner'>{t('app.subtitle')}</div>", unsafe_allow_html=True)
    st.title(t("app.title"))
    if st.session_state.get("envcal_expired"):
        st.warning(t("app.session_expired"))
    col, _ = st.columns([1, 1])
    with col:
        st.subheader(t("login.title"))
        with st.form("login"):
            name = st.text_input(t("login.name"), key="login_name")
            pw = st.text_input(t("login.password"), type="password", key="login_password")
            ok = st.form_submit_button(t("login.submit"), type="primary")
        if ok:
            try:
                sign_in(authenticate(engine(), name, pw))
                st.rerun()
            except UserError as exc:
                st.error(t("login.failed", msg=login_error(exc)))
        if oidc_configured():
            if getattr(st.user, "is_logged_in", False):
                a = actor_for(engine(), st.user.get("email") or st.user.get("name") or "")
                if a is not None:
                    sign_in(a)
                    st.rerun()
                st.error(t("login.unknown_sso", email=str(st.user.get("email"))))
            st.button(t("login.oidc"), on_click=st.login)
        st.caption(t("login.hint"))


def login_error(exc: Exception) -> str:
    """The sign-in refusal in the current language (wrong name/password or locked)."""
    msg = str(exc).lower()
    if "lock" in msg:
        return t("login.locked")
    if "disabled" in msg:
        return t("login.disabled")
    return t("login.bad")


def _icon():
    """The page icon, drawn here (no request to an outside icon or font host)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((2, 2, 62, 62), fill=(11, 61, 110, 255))
    d.line((18, 33, 28, 44, 47, 21), fill=(255, 255, 255, 255), width=7, joint="curve")
    return img


def _page(spec) -> st.Page:
    fname, key, icon, _group = spec
    return st.Page(PAGES_DIR / fname, title=t(key), icon=icon, url_path=fname[:-3])


def main() -> None:
    """Render the app (called by ``app_streamlit.py`` on every rerun).

    Signed out, every page is registered hidden so the address (a deep link such as
    ``/analyzer?analyzer=JX-PP01-CEMS``) is kept while the sign-in form shows, and the page
    opens after signing in; the public page (``/public``) needs no sign-in.
    """
    st.set_page_config(page_title=t("app.title"), page_icon=_icon(), layout="wide")
    st.markdown(CSS + uploader_css(), unsafe_allow_html=True)
    public = public_page_enabled()
    _language_switch()
    actor = current_actor()
    pages = [_page(p) for p in PAGES]
    pub = _page(PUBLIC_PAGE) if public else None
    if actor is None:
        nav = st.navigation(pages + ([pub] if pub else []), position="hidden")
        emit_cookies()
        if pub is not None and nav.url_path == pub.url_path:
            nav.run()
            return
        _login()
        return
    with st.sidebar:
        st.markdown(f"**{t('app.title')}**")
        st.caption(t("app.signed_in", name=actor.name, role=t(f"role.{actor.role}")))
        if st.button(t("app.logout"), key="logout"):
            sign_out()
            if oidc_configured() and getattr(st.user, "is_logged_in", False):
                st.logout()
            st.rerun()
    groups: dict[str, list] = {}
    for spec, pg in zip(PAGES + ([PUBLIC_PAGE] if pub else []), pages + ([pub] if pub else []),
                        strict=True):
        groups.setdefault(t(spec[3]), []).append(pg)
    nav = st.navigation(groups)
    emit_cookies()
    nav.run()
