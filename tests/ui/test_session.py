"""Signed session cookies (envcal.ui.session)."""

from envcal.ui import session

KEY = b"k" * 32


def test_session_cookie_roundtrip():
    v = session.sign("staff", "staff", 1800, now=1000.0, key=KEY)
    assert session.verify(v, now=1500.0, key=KEY) == ("staff", "staff", 2800.0, 1000.0)


def test_session_cookie_expired_forged_or_malformed_refused():
    v = session.sign("staff", "staff", 1800, now=1000.0, key=KEY)
    assert session.verify(v, now=2801.0, key=KEY) is None  # expired
    assert session.verify(v, now=1500.0, key=b"x" * 32) is None  # another server's key
    body, mac = v.split(".")
    admin = session.sign("staff", "admin", 1800, now=1000.0, key=KEY).split(".")[0]
    assert session.verify(f"{admin}.{mac}", now=1500.0, key=KEY) is None  # role swapped
    for bad in (None, "", "abc", "a.b.c", f"{body}.!!", f"{body}."):
        assert session.verify(bad, now=1500.0, key=KEY) is None


def test_session_cookie_js_quotes_the_value():
    js = session.set_cookie_js(session.COOKIE, 'x"; alert(1); "', 60)
    assert 'encodeURIComponent("x\\"; alert(1); \\"")' in js and "max-age=60" in js
