"""The Streamlit app (``app_streamlit.py``; ``envcal ui`` starts it).

Layout: :mod:`envcal.ui.app` (frame, sign-in, ``st.navigation``), ``pages/*.py`` (one
script per page; they only lay out what :mod:`envcal.views` and :mod:`envcal.reports`
return), :mod:`envcal.ui.actions` (state changes, each behind
:func:`envcal.users.require`), :mod:`envcal.ui.i18n` (every label, zh-CN and English),
:mod:`envcal.ui.common` (engine, language, session), :mod:`envcal.ui.seed` (demo data).

Running::

    envcal users add admin --role admin          # asks for the password
    envcal ui --db sqlite:///envcal.db --port 8501

Sessions: a signed cookie (:mod:`envcal.ui.session`) keeps the sign-in and the language
across F5 and deep links. ``ENVCAL_PUBLIC_PAGE=1`` serves the public disclosure page
(``/public``, no sign-in, read-only).

Roles: viewer (read), staff (acknowledge / resolve alerts), lab (upload / revoke CRM
certificates), admin (everything, confirm rules). Sessions end after
``ENVCAL_SESSION_TIMEOUT_MIN`` idle minutes (default 30); five failed logins lock an
account for 15 minutes.

Single sign-on (OIDC): put Streamlit's ``[auth]`` section in ``.streamlit/secrets.toml``
(``redirect_uri = "https://HOST/oauth2callback"``, ``cookie_secret``, ``client_id``,
``client_secret``, ``server_metadata_url`` of the identity provider). The login page then
offers a single-sign-on button (``st.login``); the e-mail the provider returns must match an
account created with ``envcal users add EMAIL --role ROLE --sso`` (no local password),
whose role applies; unknown e-mails get no access.
"""
