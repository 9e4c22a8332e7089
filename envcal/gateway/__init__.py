"""``envcal gateway``: the HJ 212-over-TCP server that data acquisition units (DAUs) connect to.

Modules: :mod:`~envcal.gateway.server` (connections, hand-off before answer, refusals),
:mod:`~envcal.gateway.link` (the MQTT client with PUBACK futures),
:mod:`~envcal.gateway.commands` (commands down, 9011 -> uploads -> 9012),
:mod:`~envcal.gateway.backfill` (history requests for holes),
:mod:`~envcal.gateway.control` (the MQTT control channel), :mod:`~envcal.gateway.wire`
(the protocol calls the gateway makes). :func:`envcal.gateway.run.run` ties them together.
"""
