"""Webhook dispatch in a worker group: every pending delivery is POSTed by one dispatcher
only (an atomic claim before the POST), on SQLite and PostgreSQL, against a real local HTTP
server."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from envcal.alerts_dispatch import WebhookDispatcher
from envcal.models import Alert, WebhookDelivery

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


class _Receiver:
    """http.server in a thread on 127.0.0.1 that counts POST bodies (slow, to widen races)."""

    def __init__(self, delay_s: float = 0.02, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.bodies.append(json.loads(body))
                time.sleep(delay_s)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


def _pending(engine, url: str, n: int, due: dt.datetime) -> list[int]:
    with engine.begin() as conn:
        aid = conn.execute(Alert.__table__.insert().values(
            analyzer_id="A1", station_id="S1", analyte="SO2", kind="out_of_control",
            severity="critical", state="open", open_key="A1|SO2|out_of_control",
            opened_at=T0, updated_at=T0)).inserted_primary_key[0]
        ids = []
        for k in range(n):
            ids.append(conn.execute(WebhookDelivery.__table__.insert().values(
                alert_id=aid, url=url, payload={"event_id": k, "id": aid}, state="pending",
                next_retry_at=due, created_at=due)).inserted_primary_key[0])
    return ids


def _states(engine) -> Counter:
    w = WebhookDelivery.__table__
    with engine.connect() as conn:
        return Counter(s for (s,) in conn.execute(sa.select(w.c.state)))


def test_webhook_two_dispatchers_post_each_row_once(engine, receiver):
    n = 40
    _pending(engine, receiver.url, n, T0)
    now = dt.datetime.now(dt.UTC)
    tried = [0, 0]
    go = threading.Barrier(2)

    def run(k: int) -> None:
        d = WebhookDispatcher(engine, timeout_s=5.0)
        go.wait()
        while True:  # as the background thread does: passes until nothing is due
            got = d.deliver_due(now)
            tried[k] += got
            if got == 0:
                return

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    posted = Counter(b["event_id"] for b in receiver.bodies)
    assert sorted(posted) == list(range(n))
    assert set(posted.values()) == {1}, {k: v for k, v in posted.items() if v > 1}
    assert sum(tried) == n
    assert _states(engine) == Counter({"delivered": n})
    print(f"POSTs per dispatcher: {tried}")


def test_webhook_claim_is_exclusive_and_expires(engine, receiver):
    """A claimed row is skipped by another dispatcher until the claim runs out (its holder
    died before storing the outcome); then it is delivered once."""
    (did,) = _pending(engine, receiver.url, 1, T0)
    a = WebhookDispatcher(engine, timeout_s=1.0, claim_s=30.0)
    b = WebhookDispatcher(engine, timeout_s=1.0, claim_s=30.0)
    now = T0 + dt.timedelta(seconds=1)
    assert a.claim(did, now) is True
    assert b.claim(did, now) is False  # taken: no second claim
    assert b.deliver_due(now + dt.timedelta(seconds=29)) == 0
    assert receiver.bodies == []
    assert b.deliver_due(now + dt.timedelta(seconds=31)) == 1  # a died: the claim expired
    assert [x["event_id"] for x in receiver.bodies] == [0]
    assert a.claim(did, now + dt.timedelta(hours=1)) is False  # delivered: nothing to claim
    assert b.deliver_due(now + dt.timedelta(hours=1)) == 0
    assert _states(engine) == Counter({"delivered": 1})


def test_webhook_failed_post_retried_after_backoff_once(engine):
    """A failing receiver: one POST per due time, the back-off replaces the claim."""
    r = _Receiver(delay_s=0.0, status=503)
    try:
        (did,) = _pending(engine, r.url, 1, T0)
        d = WebhookDispatcher(engine, timeout_s=1.0, backoff_s=60.0)
        assert d.deliver_due(T0) == 1
        assert d.deliver_due(T0) == 0  # the retry is due in 60 s (from the wall clock)
        w = WebhookDelivery.__table__
        with engine.connect() as conn:
            row = conn.execute(sa.select(w).where(w.c.id == did)).mappings().one()
        assert (row["state"], row["attempts"], row["last_error"]) == ("pending", 1, "HTTP 503")
        assert len(r.bodies) == 1
    finally:
        r.close()


def test_check_webhook_url_accepts_http_and_https_only():
    from envcal.alerts_dispatch import check_webhook_url

    assert check_webhook_url("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"
    assert check_webhook_url("https://alerts.example.org/envcal") == "https://alerts.example.org/envcal"
    for bad in ("file:///etc/passwd", "ftp://host/x", "http:///nohost", "hook", ""):
        with pytest.raises(ValueError, match="http"):
            check_webhook_url(bad)


def test_alert_engine_refuses_non_http_webhook(sqlite_engine, registry):
    from envcal.alerts import AlertEngine

    with pytest.raises(ValueError, match="webhook URL"):
        AlertEngine(sqlite_engine, registry, webhook_url="file:///tmp/alerts.json")


def test_webhook_redirect_not_followed(engine):
    """A 302 to another (loopback) service is refused: the alert reaches only the URL set."""
    inner = _Receiver(delay_s=0.0)

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(302)
            self.send_header("Location", inner.url)
            self.end_headers()

        def log_message(self, *args):
            pass

    outer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=outer.serve_forever, daemon=True).start()
    try:
        (did,) = _pending(engine, f"http://127.0.0.1:{outer.server_address[1]}/hook", 1, T0)
        assert WebhookDispatcher(engine, timeout_s=1.0).deliver_due(T0) == 1
        w = WebhookDelivery.__table__
        with engine.connect() as conn:
            err = conn.execute(sa.select(w.c.last_error).where(w.c.id == did)).scalar_one()
        assert "redirect refused" in err
        assert inner.bodies == []
    finally:
        outer.shutdown()
        outer.server_close()
        inner.close()
