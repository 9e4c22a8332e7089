"""Start, run and stop a gateway: broker first, then the listening socket."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from envcal.gateway.backfill import Backfill
from envcal.gateway.control import ControlServer
from envcal.gateway.link import BrokerLink
from envcal.gateway.server import Gateway, Limits
from envcal.registry import Registry

log = logging.getLogger("envcal.gateway")

#: Retained status of the gateway itself (its last will says ``offline``).
STATUS_TOPIC = "envcal/gateway/status"


class GatewayStartError(RuntimeError):
    """The gateway cannot start (broker unreachable, address not bindable); one line."""


@dataclass
class Options:
    """Everything ``envcal gateway`` takes besides the registry."""

    broker_url: str
    host: str = "127.0.0.1"  # `envcal gateway --listen` always names it
    port: int = 21212
    limits: Limits = Limits()
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    keys: dict[str, bytes] | None = None
    client_id: str = "envcal-gateway"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    broker_timeout: float = 10.0
    command_timeout: float = 10.0
    command_retries: int = 3
    backfill: bool = True
    backfill_gap: float = 30.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> (host, port).

    Raises
    ------
    ValueError
        Not HOST:PORT, or the port is not 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: want HOST:PORT, e.g. 0.0.0.0:21212")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host, int(port)


def parse_allow(items: Iterable[str]) -> tuple:
    """CIDR texts -> networks (``ValueError`` names the bad one)."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"--allow {item!r}: not an address or CIDR network") from None
    return tuple(out)


async def run(registry: Registry, opts: Options, *, stop: asyncio.Event,
              ready: Callable[[Gateway], None] | None = None) -> Gateway:
    """Run a gateway until ``stop`` is set.

    Parameters
    ----------
    registry : Registry
    opts : Options
    stop : asyncio.Event
        Set it (e.g. from a signal handler) to close every connection and exit.
    ready : callable, optional
        ``ready(gateway)`` once listening (``gateway.address`` is the bound address).

    Returns
    -------
    Gateway
        The stopped gateway (its counters).

    Raises
    ------
    GatewayStartError
        Broker unreachable within ``opts.broker_timeout``, or the address cannot be bound.

    References
    ----------
    HJ 212-2017, clause 5 (TCP/IP transport); DESIGN.md section 2 (answer after hand-off).
    """
    link = BrokerLink(opts.broker_url, client_id=opts.client_id, username=opts.username,
                      password=opts.password, ca_file=opts.ca_file,
                      will=(STATUS_TOPIC, b"offline"))
    gw = Gateway(registry, link, limits=opts.limits, allow=opts.allow, keys=opts.keys,
                 command_timeout=opts.command_timeout, command_retries=opts.command_retries)
    link.start(asyncio.get_running_loop())
    try:
        if not await link.wait_connected(opts.broker_timeout):
            why = f" (refused: {link.refused})" if link.refused else ""
            raise GatewayStartError(f"broker {opts.broker_url} unreachable within "
                                    f"{opts.broker_timeout:g} s{why}")
        try:
            host, port = await gw.serve(opts.host, opts.port)
        except OSError as exc:
            raise GatewayStartError(f"cannot listen on {opts.host}:{opts.port}: "
                                    f"{exc.strerror or exc}") from None
        ControlServer(gw)
        if opts.backfill:
            gw.backfill = Backfill(gw, min_gap=opts.backfill_gap)
            gw.backfill.start()
        link.publish_nowait(STATUS_TOPIC, b"online", retain=True)
        log.info("listening on %s:%d, handing off to %s", host, port, opts.broker_url)
        if ready is not None:
            ready(gw)
        await stop.wait()
        link.publish_nowait(STATUS_TOPIC, b"offline", retain=True)
        await gw.close()
    finally:
        link.stop()
    return gw
