"""Tracing (gateway/tracing.py): one trace from the auth server's request to the receiver.

Spans are collected by OpenTelemetry's in-memory exporter; the receivers are real aiohttp servers
on 127.0.0.1 and report the `traceparent` they got. The OTLP export is checked against a real
loopback OTLP/HTTP sink, configured by the standard `OTEL_*` variables.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Gateway, Receiver
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import tracing
from gateway.errors import ConfigError
from gateway.points import sample_event

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeReceiver = Callable[..., Awaitable[Receiver]]

# The auth server's own trace, as its request carries it.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
INCOMING = {"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span kept in memory as it ends. Ask for it before the gateway: an app
    traces its store calls when tracing was on as it was made."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use(provider)
    yield spans
    tracing.shutdown()


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def wait_spans(
    spans: InMemorySpanExporter, name: str, count: int = 1, timeout: float = 10.0
) -> list[ReadableSpan]:
    """The finished spans of that name, once there are `count` (a span ends just after the write
    that the API already shows)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while len(found := named(spans, name)) < count:
        if loop.time() > end:
            got = sorted({s.name for s in spans.get_finished_spans()})
            raise AssertionError(f"{len(found)} finished {name!r} spans, expected {count}; spans: {got}")
        await asyncio.sleep(0.01)
    return found


def received_traceparent(receiver: Receiver, index: int = 0) -> tuple[str, str]:
    """(trace id, parent span id) of the `traceparent` the receiver's request carried."""
    headers = {k.lower(): v for k, v in receiver.requests[index].headers.items()}
    version, trace, parent, flags = headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return trace, parent


async def test_an_event_is_one_trace_from_ingest_through_the_queue_to_the_receiver(
    exporter: InMemorySpanExporter, make_gateway: MakeGateway, make_receiver: MakeReceiver,
) -> None:
    # One instance takes the event in and has no workers; another, started afterwards, delivers
    # it: the trace context goes through the database with the event.
    front = await make_gateway(start_workers=False)
    await front.create_tenant("acme")
    rx = await make_receiver()
    hook = await front.create_hook(url=rx.url(), enabled=True)
    resp = await front.forward("post-user-registration", sample_event("post-user-registration"),
                               headers=INCOMING)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    event_id, delivery_id = answer["eventId"], answer["deliveries"][0]["deliveryId"]

    [ingest] = named(exporter, "ingest")
    assert (trace_id(ingest), parent_id(ingest)) == (TRACE_ID, CALLER_SPAN_ID)
    assert ingest.attributes is not None
    assert ingest.attributes[tracing.TENANT] == "acme"
    assert ingest.attributes[tracing.EVENT] == event_id
    assert list(ingest.attributes[tracing.DELIVERIES]) == [delivery_id]  # type: ignore[arg-type]
    assert ingest.attributes["http.response.status_code"] == 202
    [stored] = named(exporter, "store.ingest")
    assert (trace_id(stored), parent_id(stored)) == (TRACE_ID, span_id(ingest))
    assert stored.attributes is not None and stored.attributes[tracing.EVENT] == event_id

    worker = await make_gateway(front.settings)
    await rx.wait_for(1)
    await worker.wait_delivery(delivery_id, status="succeeded")
    [attempt] = await wait_spans(exporter, "delivery attempt")
    assert (trace_id(attempt), parent_id(attempt)) == (TRACE_ID, span_id(ingest))
    assert attempt.attributes is not None
    ids = (tracing.TENANT, tracing.HOOK, tracing.EVENT, tracing.DELIVERY)
    assert [attempt.attributes[k] for k in ids] == ["acme", hook["id"], event_id, delivery_id]
    assert attempt.attributes[tracing.DELIVERY_STATUS] == "succeeded"
    [post] = named(exporter, "POST")
    assert (trace_id(post), parent_id(post)) == (TRACE_ID, span_id(attempt))
    assert post.attributes is not None and post.attributes["http.response.status_code"] == 200
    # The attempt's store calls are in the trace too (recording its outcome, at least).
    recorded = [s for s in named(exporter, "store.record_outcomes") if parent_id(s) == span_id(attempt)]
    assert recorded and all(trace_id(s) == TRACE_ID for s in recorded)

    # The receiver got the trace id, with the request's own span as its parent.
    assert received_traceparent(rx) == (TRACE_ID, span_id(post))


async def test_a_blocking_call_traces_the_invocation_and_each_hook_call_to_its_receiver(
    exporter: InMemorySpanExporter, make_gateway: MakeGateway, make_receiver: MakeReceiver,
) -> None:
    gw = await make_gateway()
    await gw.create_tenant("acme")
    first, second = await make_receiver(), await make_receiver()
    hook1 = await gw.create_hook(name="one", triggerId="credentials-exchange", url=first.url(), enabled=True,
                                 order=1)
    hook2 = await gw.create_hook(name="two", triggerId="credentials-exchange", url=second.url(), enabled=True,
                                 order=2)
    resp = await gw.forward("credentials-exchange", sample_event("credentials-exchange"), headers=INCOMING)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "success"

    [ingest] = named(exporter, "ingest")
    [invoke] = named(exporter, "invoke")
    assert (trace_id(ingest), parent_id(ingest)) == (TRACE_ID, CALLER_SPAN_ID)
    assert (trace_id(invoke), parent_id(invoke)) == (TRACE_ID, span_id(ingest))
    assert invoke.attributes is not None
    assert invoke.attributes[tracing.TENANT] == "acme"
    assert invoke.attributes[tracing.TRIGGER] == "credentials-exchange"
    assert invoke.attributes[tracing.ANSWER_STATUS] == "success"
    event_id = invoke.attributes[tracing.EVENT]

    calls = sorted(named(exporter, "hook call"), key=lambda s: s.start_time or 0)
    assert [c.attributes[tracing.HOOK] for c in calls if c.attributes] == [hook1["id"], hook2["id"]]
    posts = named(exporter, "POST")
    for call, receiver in zip(calls, (first, second), strict=True):
        assert (trace_id(call), parent_id(call)) == (TRACE_ID, span_id(invoke))
        assert call.attributes is not None
        assert call.attributes[tracing.TENANT] == "acme"
        assert call.attributes[tracing.EVENT] == event_id
        assert str(call.attributes[tracing.DELIVERY]).startswith("dlv_")
        [post] = [p for p in posts if parent_id(p) == span_id(call)]
        assert trace_id(post) == TRACE_ID
        assert received_traceparent(receiver) == (TRACE_ID, span_id(post))


async def test_a_failed_hook_call_is_an_error_span(
    exporter: InMemorySpanExporter, make_gateway: MakeGateway, make_receiver: MakeReceiver,
) -> None:
    async def refuse(request: web.Request, *_: Any) -> web.StreamResponse:
        return web.json_response({"message": "no"}, status=400)

    gw = await make_gateway()
    await gw.create_tenant("acme")
    rx = await make_receiver(refuse)
    await gw.create_hook(triggerId="credentials-exchange", url=rx.url(), enabled=True)
    resp = await gw.forward("credentials-exchange", sample_event("credentials-exchange"))
    assert (await resp.json())["status"] == "error"

    [call] = named(exporter, "hook call")
    [post] = named(exporter, "POST")
    assert not call.status.is_ok and call.status.description == "receiver answered HTTP 400"
    assert post.attributes is not None and post.attributes["http.response.status_code"] == 400
    # Without a traceparent from the auth server, the ingest starts a trace of its own.
    [ingest] = named(exporter, "ingest")
    assert ingest.parent is None and trace_id(post) == trace_id(ingest)
    assert received_traceparent(rx)[0] == trace_id(ingest)


@pytest.mark.parametrize("incoming", [
    "00-zzzz", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-" + "a" * 5000,
])
async def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    exporter: InMemorySpanExporter, make_gateway: MakeGateway, make_receiver: MakeReceiver, incoming: str,
) -> None:
    gw = await make_gateway()
    await gw.create_tenant("acme")
    rx = await make_receiver()
    await gw.create_hook(triggerId="credentials-exchange", url=rx.url(), enabled=True)
    resp = await gw.forward("credentials-exchange", sample_event("credentials-exchange"),
                            headers={"traceparent": incoming})
    assert (await resp.json())["status"] == "success"
    [ingest] = named(exporter, "ingest")
    assert ingest.parent is None
    assert received_traceparent(rx)[0] == trace_id(ingest) != TRACE_ID


async def test_with_tracing_off_no_traceparent_goes_out_and_nothing_is_exported(
    make_gateway: MakeGateway, make_receiver: MakeReceiver,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    # An OTLP collector is there, but the environment says `none`: off (the default is off too).
    exports: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        exports.append(await request.read())
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    collector = await aiohttp_server(app, host="127.0.0.1")
    assert tracing.configure({}) is False
    assert tracing.configure({"OTEL_TRACES_EXPORTER": "none",
                              "OTEL_EXPORTER_OTLP_ENDPOINT": str(collector.make_url(""))}) is False
    assert tracing.configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is False
    assert not tracing.ENABLED

    gw = await make_gateway()
    await gw.create_tenant("acme")
    blocking, durable = await make_receiver(), await make_receiver()
    await gw.create_hook(triggerId="credentials-exchange", url=blocking.url(), enabled=True)
    await gw.create_hook(name="durable", url=durable.url(), enabled=True)
    resp = await gw.forward("credentials-exchange", sample_event("credentials-exchange"), headers=INCOMING)
    assert (await resp.json())["status"] == "success"
    resp = await gw.forward("post-user-registration", sample_event("post-user-registration"),
                            headers=INCOMING)
    await gw.wait_delivery((await resp.json())["deliveries"][0]["deliveryId"], status="succeeded")

    for rx in (blocking, durable):
        assert "traceparent" not in {k.lower() for k in rx.requests[0].headers}
    assert exports == []


async def test_otlp_export_is_configured_by_the_standard_environment_variables(
    make_gateway: MakeGateway, make_receiver: MakeReceiver,
    aiohttp_server: Callable[..., Awaitable[TestServer]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    exports: list[tuple[str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        exports.append((request.content_type, await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    collector = await aiohttp_server(app, host="127.0.0.1")
    # The SDK reads its own variables (endpoint, batch delay) from the process environment.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", str(collector.make_url("")).rstrip("/"))
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    try:
        assert tracing.configure(os.environ) is True
        gw = await make_gateway()
        await gw.create_tenant("acme")
        rx = await make_receiver()
        await gw.create_hook(triggerId="credentials-exchange", url=rx.url(), enabled=True)
        resp = await gw.forward("credentials-exchange", sample_event("credentials-exchange"),
                                headers=INCOMING)
        assert (await resp.json())["status"] == "success"
    finally:
        await asyncio.to_thread(tracing.shutdown)  # exports what is queued (the collector runs meanwhile)

    assert exports and {ctype for ctype, _ in exports} == {"application/x-protobuf"}
    names, trace_ids, services = set(), set(), set()
    for _, body in exports:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = resource_spans.resource.attributes
            services |= {a.value.string_value for a in attributes if a.key == "service.name"}
            for scope_spans in resource_spans.scope_spans:
                names |= {s.name for s in scope_spans.spans}
                trace_ids |= {s.trace_id.hex() for s in scope_spans.spans}
    assert services == {tracing.SERVICE_NAME}
    assert {"ingest", "invoke", "hook call", "POST"} <= names
    assert trace_ids == {TRACE_ID}
    assert received_traceparent(rx)[0] == TRACE_ID


def test_an_exporter_or_protocol_it_cannot_make_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="unsupported exporter 'zipkin'"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})
    with pytest.raises(ConfigError, match="unsupported protocol 'grpc'"):
        tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert not tracing.ENABLED


def test_without_the_tracing_packages_asking_for_tracing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"hooks-gateway\[tracing\]"):
        tracing.configure({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.configure({}) is False


def test_the_gateway_does_not_import_opentelemetry_while_tracing_is_off() -> None:
    """So it runs, tracing off, where the optional packages are not installed."""
    code = ("import sys, gateway.app, gateway.cli, gateway.tracing as t; "
            "assert t.configure({}) is False; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert out.stdout.strip() == "[]"
