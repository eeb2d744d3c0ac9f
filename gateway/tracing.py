"""OpenTelemetry tracing: one trace from the auth server's request to every receiver.

Spans: `ingest` (the auth server's request, continuing its W3C `traceparent`); `invoke` (a
blocking invocation) with a `hook call` per hook; `delivery attempt` (one durable attempt, a child
of the ingest whose `traceparent` is stored with the event and so survives the queue); `POST`
(each request to a receiver, which gets this span's `traceparent`); and `store.<method>` (each
store call made inside one of those). Each carries the tenant, hook, event and delivery ids it
knows, as `gateway.*` attributes.

Configured at start-up by OpenTelemetry's own environment variables (`configure`): tracing is
on when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); it is off otherwise (unlike
the SDK's own default of `otlp`) and with `OTEL_SDK_DISABLED=true`. The SDK reads the rest itself
(endpoint, headers, timeout, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_SERVICE_NAME`).

Off, which is the default, each span site costs a test of `ENABLED`: nothing of OpenTelemetry is
imported, no span is made and no `traceparent` goes out. This is the only module that imports
`opentelemetry` (the optional extra `hooks-gateway[tracing]`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from .errors import ApiError, ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanKind

    from .store.base import Store
    from .store.models import Claimed, Outcome

log = logging.getLogger("gateway.tracing")

SERVICE_NAME = "hooks-gateway"  # service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES set one
EXPORTERS = ("otlp", "console")  # what OTEL_TRACES_EXPORTER may name here, besides `none`
OTLP_PROTOCOL = "http/protobuf"  # the one OTLP protocol shipped (no gRPC stack in the extra)
INSTALL_HINT = "pip install 'hooks-gateway[tracing]'"

# Attributes of the gateway's own ids.
TENANT = "gateway.tenant_id"
TRIGGER = "gateway.trigger_id"
HOOK = "gateway.hook_id"
EVENT = "gateway.event_id"
DELIVERY = "gateway.delivery_id"
DELIVERIES = "gateway.delivery_ids"
TRIES_USED = "gateway.tries_used"  # tries of the retry schedule used before this attempt
DELIVERY_STATUS = "gateway.delivery_status"  # the delivery's state after the attempt
ANSWER_STATUS = "gateway.answer_status"  # the envelope's `status` for the auth server
# A store argument of one of these names becomes the attribute.
_ID_PARAMETERS = {"tenant_id": TENANT, "hook_id": HOOK, "event_id": EVENT, "delivery_id": DELIVERY}

ENABLED = False  # read before every span site: False costs the site nothing more
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
T = TypeVar("T")


class _Otel:
    """The parts of OpenTelemetry the spans use, imported once tracing is switched on."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace  # noqa: PLC0415 - imported only when tracing is on
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        from . import __version__  # noqa: PLC0415

        self.provider = provider
        self.tracer = provider.get_tracer("gateway", __version__)
        self.current_span = trace.get_current_span
        self.use_span = trace.use_span
        self.propagator = TraceContextTextMapPropagator()
        self.server, self.client, self.internal = SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL
        self.status = Status
        self.error = StatusCode.ERROR

    @contextlib.contextmanager
    def span(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], parent: Context | None = None
    ) -> Iterator[Span]:
        """A span, current inside the block. An `ApiError` is the caller's (its HTTP status is
        noted, an error only from 500 on); any other exception is an error, named by its type
        alone: exception messages may carry what does not belong in a trace."""
        span = self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes,
                                      record_exception=False, set_status_on_exception=False)
        with self.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                yield span
            except ApiError as exc:
                span.set_attribute("http.response.status_code", exc.status)
                if exc.status >= 500:
                    span.set_status(self.status(self.error, exc.error))
                raise
            except BaseException as exc:  # CancelledError too: the span says how it ended
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(self.status(self.error, type(exc).__name__))
                raise

    def extract(self, traceparent: str | None) -> Context | None:
        """The context of a W3C `traceparent`; None for none, or one that does not parse."""
        if not traceparent:
            return None
        ctx = self.propagator.extract({"traceparent": traceparent})
        return ctx if self.current_span(ctx).get_span_context().is_valid else None


_otel: _Otel | None = None


# -- switching it on and off ---------------------------------------------------------------------


def configure(environ: Mapping[str, str]) -> bool:
    """Switch tracing on if the environment asks for it (see the module's doc); whether it is on.
    `ConfigError` for an exporter or protocol this gateway cannot make, or a missing package."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not names and endpoint:
        names = ["otlp"]
    names = [n for n in names if n != "none"]
    if not names:
        return False
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r} "
                          f"(this gateway exports traces with {', '.join(EXPORTERS)} or none)")
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or OTLP_PROTOCOL).strip()
    if "otlp" in names and protocol != OTLP_PROTOCOL:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} "
                          f"(this gateway exports OTLP as {OTLP_PROTOCOL})")
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise ConfigError(f"tracing is asked for (OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT) but "
                          f"opentelemetry-sdk is not installed: {INSTALL_HINT}") from None
    resource = Resource.create()  # reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                    OTLPSpanExporter,
                )
            except ImportError:
                raise ConfigError("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                                  f"{INSTALL_HINT}") from None
            exporter = OTLPSpanExporter()  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
        else:
            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    use(provider)
    log.info("tracing on: spans exported with %s", ", ".join(names))
    return True


def use(provider: TracerProvider) -> None:
    """Trace with this provider from now on (its sampler, processors and exporters). Apps made
    after this call trace their store calls too (`traced_store`)."""
    global ENABLED, _otel
    _otel = _Otel(provider)
    ENABLED = True


def shutdown() -> None:
    """Export what is still queued and switch tracing off (the end of `gateway serve`, tests)."""
    global ENABLED, _otel
    otel, _otel, ENABLED = _otel, None, False
    if otel is not None:
        otel.provider.shutdown()


# -- the spans -----------------------------------------------------------------------------------


def ingest(headers: Mapping[str, str]) -> AbstractContextManager[object]:
    """The auth server's request, continuing the trace of its `traceparent` (when it has one)."""
    if not ENABLED or _otel is None:
        return _NOOP
    parent = _otel.extract(headers.get("traceparent"))
    return _otel.span("ingest", _otel.server, {"http.request.method": "POST"}, parent)


def invocation(tenant_id: str, trigger_id: str) -> AbstractContextManager[object]:
    """A blocking invocation: the hooks of one point called in order within the deadline."""
    if not ENABLED or _otel is None:
        return _NOOP
    return _otel.span("invoke", _otel.internal, {TENANT: tenant_id, TRIGGER: trigger_id})


def hook_call(
    tenant_id: str, hook_id: str, event_id: str, delivery_id: str
) -> AbstractContextManager[object]:
    """One hook's part of a blocking invocation: its attempts within the deadline."""
    if not ENABLED or _otel is None:
        return _NOOP
    return _otel.span("hook call", _otel.internal,
                      {TENANT: tenant_id, HOOK: hook_id, EVENT: event_id, DELIVERY: delivery_id})


async def delivery_attempt(item: Claimed, run: Awaitable[T]) -> T:
    """Await `run` (one durable attempt, recorded) in a span that continues the trace of the
    ingest that stored the event; a trace of its own for an event stored without one."""
    if _otel is None:
        return await run
    d = item.delivery
    attributes = {TENANT: d.tenant_id, HOOK: d.hook_id, EVENT: d.event_id, DELIVERY: d.id,
                  TRIGGER: d.trigger_id, TRIES_USED: d.attempt_count}
    with _otel.span("delivery attempt", _otel.internal, attributes, _otel.extract(item.traceparent)):
        return await run


def outbound(url: str) -> AbstractContextManager[object]:
    """One request to a receiver (the span whose `traceparent` the receiver gets)."""
    if not ENABLED or _otel is None:
        return _NOOP
    attributes: dict[str, Any] = {"http.request.method": "POST"}
    with contextlib.suppress(ValueError):  # the transport refuses such a URL in its own words
        parts = urlsplit(url)
        attributes["url.scheme"] = parts.scheme
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return _otel.span("POST", _otel.client, attributes)


# -- what the current span learns ----------------------------------------------------------------


def annotate(**ids: str) -> None:
    """Ids learnt inside the current span: `annotate(tenant_id=..., event_id=...)`."""
    if not ENABLED or _otel is None:
        return
    span = _otel.current_span()
    for name, value in ids.items():
        span.set_attribute(f"gateway.{name}", value)


def ingested(event_id: str, deliveries: Sequence[tuple[str, str]]) -> None:
    """The event stored by the current (ingest) span, and its deliveries' ids."""
    if not ENABLED or _otel is None:
        return
    span = _otel.current_span()
    span.set_attribute(EVENT, event_id)
    span.set_attribute(DELIVERIES, [d for d, _ in deliveries])


def answered(status_code: int | None, error: str | None = None) -> None:
    """The HTTP status of the current span's answer (the gateway's, or a receiver's); `error`:
    why it failed (the gateway's own words: status, time-out, refused destination)."""
    if not ENABLED or _otel is None:
        return
    span = _otel.current_span()
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if error is not None:
        span.set_status(_otel.status(_otel.error, error))


def failed(reason: str | None) -> None:
    """The current span's work failed for `reason` (None: it did not)."""
    if reason is None or not ENABLED or _otel is None:
        return
    _otel.current_span().set_status(_otel.status(_otel.error, reason))


def envelope(answer: Mapping[str, Any]) -> None:
    """The envelope a blocking invocation answers: `success`, or an `error` (a deny too)."""
    if not ENABLED or _otel is None:
        return
    span = _otel.current_span()
    span.set_attribute(ANSWER_STATUS, str(answer.get("status", "error")))
    error = answer.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("name"), str):
        span.set_attribute("gateway.answer_error", error["name"])


def outcome(result: Outcome) -> None:
    """What a durable attempt left behind: the delivery's next state, and the attempt's error."""
    if not ENABLED or _otel is None:
        return
    span = _otel.current_span()
    span.set_attribute(DELIVERY_STATUS, result.status)
    if result.attempt is not None and result.attempt.error is not None:
        span.set_status(_otel.status(_otel.error, result.attempt.error))


# -- carrying the context ------------------------------------------------------------------------


def traceparent() -> str | None:
    """The current span's context as a W3C `traceparent` (None when off or outside a span): stored
    with an event, so that its delivery attempts continue the ingest's trace."""
    if not ENABLED or _otel is None:
        return None
    ctx = _otel.current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def with_traceparent(headers: Mapping[str, str] | bytes) -> Mapping[str, str] | bytes:
    """`headers` and the current span's `traceparent` (nothing else: a `tracestate` is the
    tracing vendor's business, not the receiver's). Unchanged when off."""
    value = traceparent()
    if value is None:
        return headers
    if isinstance(headers, bytes):
        return headers + f"traceparent: {value}\r\n".encode("ascii")
    return {**headers, "traceparent": value}


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log lines; None when off or outside one."""
    if not ENABLED or _otel is None:
        return None
    ctx = _otel.current_span().get_span_context()
    return (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") if ctx.is_valid else None


# -- store calls ---------------------------------------------------------------------------------


def traced_store(store: Store) -> Store:
    """`store` itself when tracing is off; else the store with a span for each call made inside a
    traced operation (background work outside any trace, such as claims and lease renewals, is
    not traced: it would be a stream of one-span traces)."""
    if not ENABLED:
        return store
    return cast("Store", _TracedStore(store))


class _TracedStore:
    """Each public coroutine method of the store, wrapped; everything else passed through."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        system = "postgresql" if type(inner).__module__.startswith("gateway.store.postgres") else "sqlite"
        for name in dir(type(inner)):
            if not name.startswith("_") and inspect.iscoroutinefunction(getattr(type(inner), name, None)):
                setattr(self, name, _traced_call(name, getattr(inner, name), system))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _traced_call(
    name: str, method: Callable[..., Awaitable[Any]], system: str
) -> Callable[..., Awaitable[Any]]:
    span_name = f"store.{name}"
    # Where each id argument sits, by keyword or by position (self is not a parameter here).
    params = list(inspect.signature(method).parameters)
    ids = [(p, params.index(p), attr) for p, attr in _ID_PARAMETERS.items() if p in params]

    async def call(*args: Any, **kwargs: Any) -> Any:
        otel = _otel
        if otel is None or not otel.current_span().is_recording():
            return await method(*args, **kwargs)
        attributes: dict[str, Any] = {"db.system.name": system, "db.operation.name": name}
        for param, position, attr in ids:
            value = kwargs.get(param, args[position] if position < len(args) else None)
            if isinstance(value, str):
                attributes[attr] = value
        with otel.span(span_name, otel.client, attributes):
            return await method(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call
