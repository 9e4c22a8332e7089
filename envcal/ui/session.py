"""Signed session cookies of the app (no Streamlit here: pure functions, testable alone).

A signed-in browser holds the cookie ``envcal_session``::

    base64url(JSON {"n": name, "r": role, "e": expiry [s since the epoch]}) "." base64url(HMAC-SHA256)

signed with the server's secret (``ENVCAL_SESSION_SECRET``; else a random secret made when
the app process starts, so a server restart signs everyone out). Pressing F5 or opening a
deep link starts a new Streamlit session; :func:`verify` turns the cookie back into the
name and role, which the app then re-checks against the account table (a disabled or
deleted account, or a changed role, is not restored from an old cookie). The cookie carries
no password and expires after the idle timeout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time

COOKIE = "envcal_session"
LANG_COOKIE = "envcal_lang"
_PROCESS_SECRET = secrets.token_bytes(32)


def secret() -> bytes:
    """The signing key: ``ENVCAL_SESSION_SECRET`` (UTF-8) or this process's random key."""
    env = os.environ.get("ENVCAL_SESSION_SECRET")
    return env.encode("utf-8") if env else _PROCESS_SECRET


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode("ascii").rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def sign(name: str, role: str, ttl_s: float, *, now: float | None = None,
         signed_in_at: float | None = None, key: bytes | None = None) -> str:
    """A cookie value for ``name``/``role`` valid for ``ttl_s`` seconds [s].

    ``signed_in_at`` [s since the epoch] is the time of the password sign-in (default: now);
    it travels with every renewed cookie so that the absolute session lifetime
    (:func:`envcal.users.session_actor`) counts from the sign-in, not from the last renewal.
    """
    t = time.time() if now is None else now
    s_at = t if signed_in_at is None else signed_in_at
    body = _b64(json.dumps({"n": name, "r": role, "e": int(t + ttl_s), "s": int(s_at)},
                           separators=(",", ":")).encode("utf-8"))
    mac = hmac.new(key or secret(), body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(value: str | None, *, now: float | None = None,
           key: bytes | None = None) -> tuple[str, str, float, float] | None:
    """``(name, role, expiry, signed_in_at)`` of a valid, unexpired cookie value; None
    otherwise (missing, malformed, forged or expired)."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    good = hmac.new(key or secret(), body.encode("ascii"), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), good):
            return None
        d = json.loads(_unb64(body))
        name, role, exp, s_at = str(d["n"]), str(d["r"]), float(d["e"]), float(d["s"])
    except (ValueError, KeyError, TypeError):
        return None
    t = time.time() if now is None else now
    return (name, role, exp, s_at) if exp > t else None


def set_cookie_js(name: str, value: str, max_age_s: int) -> str:
    """JavaScript that sets (``max_age_s > 0``) or deletes (0) a first-party cookie."""
    v = json.dumps(value)
    return ("<script>(() => { const w = window.parent; w.document.cookie = "
            f"{json.dumps(name + '=')} + encodeURIComponent({v}) + "
            f"'; path=/; max-age={int(max_age_s)}; SameSite=Strict' + "
            "(w.location.protocol === 'https:' ? '; Secure' : ''); })();</script>")
