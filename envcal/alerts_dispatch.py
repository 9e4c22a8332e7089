"""Alert dispatch: the MQTT alert topic and an optional webhook with retries.

MQTT publishing goes through a callable the service provides (its paho client, QoS 1).
Webhook deliveries are rows of :class:`envcal.models.WebhookDelivery` written in the same
transaction as the alert transition; a background thread POSTs them and retries failures
with exponential back-off, so ingest never waits for a webhook.

Exactly one POST attempt at a time per row, across workers: the workers of an ingest group
(``envcal ingest --group``) each run a dispatcher over the same table. Before a POST a
dispatcher *claims* the row with one atomic ``UPDATE webhook_delivery SET next_retry_at =
now + claim WHERE id = ? AND state = 'pending' AND next_retry_at <= now RETURNING id``;
a row another dispatcher claimed first returns nothing and is skipped. The claim expires
(``claim_s``) when its holder dies before recording the outcome, so the delivery is
retried. A receiver may still see a delivery twice when a dispatcher dies after the
receiver answered and before the outcome was stored (at least once): every payload carries
the alert event's ``event_id`` to de-duplicate by.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from envcal.models import WebhookDelivery, utcnow

log = logging.getLogger(__name__)

Publisher = Callable[[str, bytes], None]


def alert_topic(station: str, analyzer: str) -> str:
    """MQTT topic of an analyzer's alerts (DESIGN.md §4)."""
    return f"envcal/alerts/{station}/{analyzer}"


def backoff(attempts: int, base_s: float, max_s: float) -> dt.timedelta:
    """Delay before retry number ``attempts`` [s]: ``base · 2^(attempts-1)``, capped."""
    return dt.timedelta(seconds=min(max_s, base_s * 2 ** max(attempts - 1, 0)))


def check_webhook_url(url: str) -> str:
    """Accept only an absolute ``http://`` or ``https://`` URL as a webhook target.

    Parameters
    ----------
    url : str
        The operator's ``--webhook`` setting.

    Returns
    -------
    str
        ``url`` unchanged.

    Raises
    ------
    ValueError
        Another scheme (``file:``, ``ftp:``, ...) or no host: ``urllib`` would otherwise open
        local files or other protocols with the alert payload (bandit B310).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http:// or https:// with a host, got {url!r}")
    return url


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: the 3xx answer becomes an ``HTTPError`` (the target the
    operator configured is the only one an alert is posted to)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib hook
        return None


#: urllib opener of the webhook POSTs: redirects refused.
_OPENER = urllib.request.build_opener(_RefuseRedirects)


class WebhookDispatcher:
    """POSTs pending :class:`WebhookDelivery` rows from a daemon thread.

    Parameters
    ----------
    engine : Engine
    timeout_s : float
        Timeout of one POST [s].
    max_attempts : int
        Attempts before a delivery is marked ``failed``.
    backoff_s, backoff_max_s : float
        First retry delay and its cap [s].
    claim_s : float, optional
        How long a claimed row is reserved for this dispatcher's POST [s] (default
        ``max(30, 5 × timeout_s)``; longer than any POST can take, since a POST outliving its
        claim may be repeated by another dispatcher).
    """

    def __init__(self, engine: Engine, *, timeout_s: float = 2.0, max_attempts: int = 8,
                 backoff_s: float = 0.5, backoff_max_s: float = 300.0,
                 claim_s: float | None = None) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.claim_s = claim_s if claim_s is not None else max(30.0, 5.0 * timeout_s)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookDispatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="envcal-webhook", daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # noqa: BLE001 - the thread must survive a database hiccup
                log.exception("webhook delivery pass failed")
            self._wake.wait(0.25)
            self._wake.clear()

    def claim(self, delivery_id: int, now: dt.datetime) -> bool:
        """Reserve one due delivery for this dispatcher (atomic; see the module docstring).

        Parameters
        ----------
        delivery_id : int
        now : datetime
            Wall time (UTC); the row must be due (``next_retry_at <= now``).

        Returns
        -------
        bool
            True when this call claimed it; False when it is not pending and due any more
            (delivered, failed, or claimed by another dispatcher).
        """
        w = WebhookDelivery.__table__
        until = now + dt.timedelta(seconds=self.claim_s)
        with self.engine.begin() as conn:
            # RETURNING rather than rowcount: psycopg may report -1 for some statements
            got = conn.execute(w.update().where(w.c.id == delivery_id, w.c.state == "pending",
                                                w.c.next_retry_at <= now)
                               .values(next_retry_at=until).returning(w.c.id)).first()
        return got is not None

    def deliver_due(self, now: dt.datetime | None = None) -> int:
        """POST every pending delivery whose retry time has come and that this dispatcher
        claims first; returns how many were tried (POSTed) here."""
        now = now or utcnow()
        w = WebhookDelivery.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(w.c.id, w.c.url, w.c.payload, w.c.attempts)
                                .where(w.c.state == "pending", w.c.next_retry_at <= now)
                                .order_by(w.c.id).limit(100)).all()
        tried = 0
        for did, url, payload, attempts in rows:
            if self._stop.is_set():
                break
            if not self.claim(did, now):
                continue  # another dispatcher has it (or it was settled meanwhile)
            tried += 1
            err = self._post(url, payload)
            attempts += 1
            t = utcnow()
            if err is None:
                values = {"state": "delivered", "attempts": attempts, "delivered_at": t,
                          "next_retry_at": None}
            elif attempts >= self.max_attempts:
                values = {"state": "failed", "attempts": attempts, "last_error": err,
                          "next_retry_at": None}
            else:
                values = {"attempts": attempts, "last_error": err,
                          "next_retry_at": t + backoff(attempts, self.backoff_s, self.backoff_max_s)}
            with self.engine.begin() as conn:
                conn.execute(w.update().where(w.c.id == did, w.c.state == "pending").values(**values))
        return tried

    def _post(self, url: str, payload) -> str | None:
        try:
            check_webhook_url(url)
        except ValueError as exc:
            return str(exc)
        body = json.dumps(payload, ensure_ascii=False).encode()
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                return f"HTTP {exc.code}: redirect refused (webhook redirects are not followed)"
            return f"HTTP {exc.code}"
        except Exception as exc:  # noqa: BLE001 - any failure is a retry with its reason
            return f"{exc.__class__.__name__}: {exc}"
