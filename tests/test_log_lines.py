"""The gateway's log lines (gateway/logs.py): JSON, one object a line, with the ids of what each
line is about, a line at debug per attempt and a warning at each change of state. The lines are
written by the gateway's own handler, as `gateway serve` writes them, and read back as JSON."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Receiver
from opentelemetry.sdk.trace import TracerProvider

from gateway import logs, tracing

EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
PUR = "post-user-registration"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeReceiver = Callable[..., Awaitable[Receiver]]


class Lines:
    """What the gateway's JSON handler wrote, parsed line by line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def matching(self, text: str, level: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.all() if text in r["message"] and (level is None or r["level"] == level)]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """The gateway's handler on the root logger, and its loggers at debug, for one test."""
    stream = io.StringIO()
    handler = logs.handler(stream)
    root, gateway_logger = logging.getLogger(), logging.getLogger("gateway")
    level = gateway_logger.level
    root.addHandler(handler)
    gateway_logger.setLevel(logging.DEBUG)
    try:
        yield Lines(stream)
    finally:
        root.removeHandler(handler)
        gateway_logger.setLevel(level)


async def test_each_attempt_is_a_debug_line_with_the_ids_it_is_about(
    gateway: Gateway, make_receiver: MakeReceiver, lines: Lines
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    ce = await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=rx.url(), enabled=True)
    sent = await (await gateway.forward(PUR, EVENT)).json()
    delivery_id = sent["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, status="succeeded")
    assert (await gateway.forward("credentials-exchange", CE)).status == 200
    await gateway.invoker.drain()

    (line,) = [r for r in lines.matching("delivery attempt") if r.get("delivery_id") == delivery_id]
    assert line["level"] == "debug"
    assert line["logger"] == "gateway.delivery"
    assert (line["tenant_id"], line["hook_id"], line["event_id"]) == ("acme", hook["id"], sent["eventId"])
    assert (line["status_code"], line["outcome"], line["delivery_status"]) == (200, "success", "succeeded")

    (call,) = lines.matching("hook call attempt")
    assert call["level"] == "debug"
    assert (call["tenant_id"], call["hook_id"]) == ("acme", ce["id"])
    sync = (await (await gateway.client.get(
        "/api/v2/deliveries", params={"hookId": ce["id"]}, headers=gateway.auth())).json())
    (record,) = sync
    assert (call["delivery_id"], call["event_id"]) == (record["id"], record["eventId"])
    # A line outside any delivery or request carries no ids of one.
    logging.getLogger("gateway.test").warning("outside")
    (outside,) = lines.matching("outside")
    assert not {"tenant_id", "hook_id", "event_id", "delivery_id"} & outside.keys()


async def test_a_warning_for_each_change_of_state(
    make_gateway: MakeGateway, make_settings: Any, make_receiver: MakeReceiver, lines: Lines
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["10ms"]}))
    await gw.create_tenant("acme")

    async def failing(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, status=500)

    async def gone(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, status=410)

    async def paced(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "600"})

    hooks = {}
    for name, responder in (("failing", failing), ("gone", gone), ("paced", paced)):
        rx = await make_receiver(responder)
        hooks[name] = (await gw.create_hook(name=name, url=rx.url(), enabled=True))["id"]
    sent = await (await gw.forward(PUR, EVENT)).json()
    by_hook = {d["hookId"]: d["deliveryId"] for d in sent["deliveries"]}
    await gw.wait_delivery(by_hook[hooks["failing"]], status="failed")
    await gw.wait_delivery(by_hook[hooks["gone"]], attempts=1)
    await gw.wait_delivery(by_hook[hooks["paced"]], status="succeeded")

    (exhausted,) = lines.matching("delivery exhausted", "warning")
    assert exhausted["delivery_id"] == by_hook[hooks["failing"]]
    assert exhausted["hook_id"] == hooks["failing"]
    assert "HTTP 500" in exhausted["message"]
    (disabled,) = lines.matching("disabled", "warning")
    assert (disabled["hook_id"], disabled["tenant_id"]) == (hooks["gone"], "acme")
    assert "410" in disabled["message"]
    (paused,) = lines.matching("paused", "warning")
    assert paused["hook_id"] == hooks["paced"]
    assert paused["destination"].startswith("http://127.0.0.1:")


async def test_lines_carry_the_trace_id_when_tracing_is_on(
    make_gateway: MakeGateway, make_receiver: MakeReceiver, lines: Lines
) -> None:
    tracing.use(TracerProvider())
    try:
        gw = await make_gateway()
        await gw.create_tenant("acme")
        rx = await make_receiver()
        await gw.create_hook(name="ce", triggerId="credentials-exchange", url=rx.url(), enabled=True)
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        resp = await gw.forward("credentials-exchange", CE, headers={"traceparent": traceparent})
        assert resp.status == 200
    finally:
        tracing.shutdown()
    (call,) = lines.matching("hook call attempt")
    assert call["trace_id"] == TRACE_ID
    assert len(call["span_id"]) == 16
    sent_traceparent = rx.requests[0].headers["traceparent"]
    assert sent_traceparent.split("-")[1] == TRACE_ID
