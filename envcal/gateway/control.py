"""The gateway's control channel over MQTT: commands and state requests, with replies.

Request on :data:`REQUEST_TOPIC` (JSON, strict)::

    {"id": "r-1f3a", "user": "li.wei", "action": "command", "mn": "3304...", "cn": "3011",
     "params": {"PolId": "a21026"}}
    {"id": "r-1f3b", "user": "li.wei", "action": "state"}

Reply on ``envcal/gateway/control/reply/{id}``: a command's
:meth:`envcal.gateway.commands.CommandResult.as_dict` or the gateway's state, plus ``id``.

Permission checks and the audit trail happen where the request is made (the CLI and the
app hold the database; :func:`send_command`); the broker's ACL lets only envcal's accounts
publish on the request topic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envcal.gateway.commands import COMMANDS, CommandError, build_cp

log = logging.getLogger("envcal.gateway.control")

REQUEST_TOPIC = "envcal/gateway/control/request"
REPLY_PREFIX = "envcal/gateway/control/reply/"
#: Permission of :mod:`envcal.users` needed to command a DAU.
PERMISSION = "device.command"


class ControlRequest(BaseModel):
    """One request on the control topic (unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    user: str = Field(min_length=1, max_length=128)
    action: Literal["command", "state"]
    mn: str | None = Field(default=None, max_length=64)
    cn: str | None = None
    begin: dt.datetime | None = None
    end: dt.datetime | None = None
    params: dict[str, str] = {}
    timeout: float | None = Field(default=None, gt=0, le=120)
    retries: int | None = Field(default=None, ge=0, le=99)


def reply_topic(request_id: str) -> str:
    """Topic of the reply to request ``request_id``."""
    return REPLY_PREFIX + request_id


class ControlServer:
    """Serves control requests inside a running :class:`envcal.gateway.server.Gateway`."""

    def __init__(self, gateway) -> None:
        self.gw = gateway
        gateway.link.subscribe(REQUEST_TOPIC, self._on_request)

    def _on_request(self, topic: str, payload: bytes) -> None:
        try:
            req = ControlRequest.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("control request refused: %s", exc.errors()[0].get("msg", exc))
            try:
                rid = json.loads(payload).get("id")
            except (ValueError, AttributeError):
                rid = None
            if isinstance(rid, str) and rid.replace("-", "").replace("_", "").replace(".", "").isalnum():
                self._reply(rid[:64], {"ok": False, "error": f"bad request: {exc.errors()[0]['msg']}"})
            return
        self.gw.spawn(self._serve(req))

    async def _serve(self, req: ControlRequest) -> None:
        if req.action == "state":
            self._reply(req.id, {"ok": True, **self.gw.state()})
            return
        mn, cn = req.mn or "", req.cn or ""
        if mn not in self.gw.by_mn:
            self._reply(req.id, {"ok": False, "mn": mn, "cn": cn,
                                 "error": f"MN {mn!r} is not in the registry"})
            return
        try:
            cp = build_cp(cn, now=dt.datetime.now(dt.UTC), begin=req.begin, end=req.end,
                          params=req.params)
        except CommandError as exc:
            self._reply(req.id, {"ok": False, "mn": mn, "cn": cn, "error": str(exc)})
            return
        log.info("control: %s asks CN %s (%s) of MN %s", req.user, cn, COMMANDS[cn], mn)
        res = await self.gw.commands.run(mn, cn, cp, timeout=req.timeout, retries=req.retries)
        self._reply(req.id, res.as_dict())

    def _reply(self, rid: str, body: dict) -> None:
        self.gw.link.publish_nowait(reply_topic(rid), json.dumps({"id": rid, **body}).encode())


# --------------------------------------------------------------------------- client side
class ControlError(RuntimeError):
    """The gateway could not be reached or did not reply in time."""


def request(broker_url: str, body: dict, *, timeout: float = 60.0, username: str | None = None,
            password: str | None = None, ca_file: str | None = None) -> dict:
    """Send one control request and wait for its reply.

    Parameters
    ----------
    broker_url : str
        The broker the gateway uses.
    body : dict
        A :class:`ControlRequest` without ``id`` (one is generated).
    timeout : float
        Longest wait for the reply [s].

    Returns
    -------
    dict
        The reply.

    Raises
    ------
    ControlError
        Broker unreachable, or no reply within ``timeout`` (is ``envcal gateway`` running?).

    References
    ----------
    OASIS MQTT Version 5.0, §4.10 (request / response).
    """
    import paho.mqtt.client as mqtt

    from envcal.broker import parse_broker_url

    rid = body.get("id") or f"r-{uuid.uuid4().hex[:12]}"
    req = ControlRequest.model_validate({**body, "id": rid})
    host, port, tls = parse_broker_url(broker_url)
    got: dict = {}
    subscribed, replied = threading.Event(), threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"envcal-ctl-{rid}",
                    protocol=mqtt.MQTTv5)
    if tls:
        c.tls_set(ca_certs=ca_file)
    if username is not None:
        c.username_pw_set(username, password)

    def on_connect(client, userdata, flags, rc, props) -> None:
        if not rc.is_failure:
            client.subscribe(reply_topic(rid), qos=1)

    def on_message(client, userdata, m) -> None:
        try:
            got.update(json.loads(m.payload))
        except ValueError:
            got.update({"ok": False, "error": "unreadable reply"})
        replied.set()

    c.on_connect = on_connect
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30)
    except OSError as exc:
        raise ControlError(f"broker {broker_url} unreachable: {exc}") from None
    c.loop_start()
    try:
        if not subscribed.wait(min(timeout, 10.0)):
            raise ControlError(f"broker {broker_url} did not accept the reply subscription")
        c.publish(REQUEST_TOPIC, req.model_dump_json(exclude_none=True).encode(), qos=1)
        if not replied.wait(timeout):
            raise ControlError(f"no reply from the gateway within {timeout:g} s "
                               "(is `envcal gateway` running on this broker?)")
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def send_command(engine, actor, broker_url: str, analyzer_id: str, mn: str, cn: str, *,
                 begin: dt.datetime | None = None, end: dt.datetime | None = None,
                 params: dict[str, str] | None = None, timeout: float = 120.0,
                 command_timeout: float | None = None, retries: int | None = None,
                 **mqtt_options) -> dict:
    """Command a DAU through the running gateway: permission check, audit rows, reply.

    Parameters
    ----------
    engine : Engine
        The database holding users and the audit trail.
    actor : envcal.users.Actor
        Who asks; needs :data:`PERMISSION` (staff or admin).
    broker_url, analyzer_id, mn, cn, begin, end, params
        What to send to which DAU.
    timeout : float
        Longest wait for the whole command [s].
    command_timeout, retries : optional
        Override HJ 212-2017 Table 1 for this command.
    **mqtt_options
        ``username``, ``password``, ``ca_file`` for the broker.

    Returns
    -------
    dict
        The gateway's reply (``ok``, ``qn_rtn``, ``exe_rtn``, ``uploads``, ``error``).

    Raises
    ------
    envcal.users.PermissionDenied
        The actor's role may not command devices.
    ControlError, CommandError
        No gateway, or a command that cannot be built.

    References
    ----------
    HJ 212-2017, Table 9 (commands), Appendix C; DESIGN.md section 4 (audit trail).
    """
    from sqlmodel import Session

    from envcal import audit
    from envcal.users import require

    require(actor, PERMISSION)
    build_cp(cn, now=dt.datetime.now(dt.UTC), begin=begin, end=end, params=params)
    rid = f"r-{uuid.uuid4().hex[:12]}"
    details = {"request": rid, "mn": mn, "cn": cn, "params": dict(params or {}),
               "begin": begin.isoformat() if begin else None,
               "end": end.isoformat() if end else None}
    with Session(engine) as s:
        audit.record(s, actor.name, "device.command", "analyzer", analyzer_id, details)
        s.commit()
    body = {"id": rid, "user": actor.name, "action": "command", "mn": mn, "cn": cn,
            "begin": begin.isoformat() if begin else None, "end": end.isoformat() if end else None,
            "params": dict(params or {}), "timeout": command_timeout, "retries": retries}
    try:
        reply = request(broker_url, {k: v for k, v in body.items() if v is not None},
                        timeout=timeout, **mqtt_options)
    except ControlError as exc:
        reply = {"ok": False, "error": str(exc)}
    outcome = {k: reply.get(k) for k in ("ok", "qn", "qn_rtn", "exe_rtn", "attempts", "error")}
    outcome.update(request=rid, uploads=len(reply.get("uploads") or []))
    with Session(engine) as s:
        audit.record(s, actor.name, "device.command.result", "analyzer", analyzer_id, outcome)
        s.commit()
    return reply
