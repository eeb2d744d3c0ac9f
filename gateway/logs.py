"""JSON logs, one object a line: time, level, logger, message, the ids of what the line is about
(`tenant_id`, `hook_id`, `event_id`, `delivery_id`, and with tracing on `trace_id`, `span_id`),
and any `extra=` fields.

The ids come from a log context (a `ContextVar`) that ingest, blocking invocations and delivery
attempts `bind` as they learn them: each runs in a task of its own (a request's, a delivery's),
so what one binds ends with it and is never seen by another.

Never a secret: no line is written with a secret value, a token, a request's headers or a hook's
URL (which may carry credentials in its query). As a last guard, what looks like key material
(`whsec_...`, `whsk_...`), a JWT or a bearer credential is replaced before a line is written.

What the delivery path logs: a line at debug for every attempt (`attempt`, `sync_attempt`), and
a warning for every change of state an operator acts on: a delivery exhausted (here), a
destination paused (gateway/delivery/throttle.py), a hook disabled (gateway/delivery/worker.py).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, Any

from . import tracing
from .metrics import attempt_outcome

if TYPE_CHECKING:
    from .store.models import Outcome

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_CONTEXT: ContextVar[dict[str, str]] = ContextVar("gateway_log_context")

delivery_log = logging.getLogger("gateway.delivery")
invoke_log = logging.getLogger("gateway.invoke")

# Shapes of credentials, replaced by `[redacted]` should a line ever carry one (see the docstring).
_MARKERS = ("whsec_", "whsk_", "eyJ", "earer")  # cheap test before the expression runs
_CREDENTIAL = re.compile(
    r"(?P<keep>whsec_|whsk_)[A-Za-z0-9+/=_-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|(?P<scheme>[Bb]earer\s+)[A-Za-z0-9._~+/=-]{8,}"
)


def _redact(match: re.Match[str]) -> str:
    return f"{match.group('keep') or match.group('scheme') or ''}[redacted]"


def redact(text: str) -> str:
    """`text` with anything shaped like key material, a JWT or a bearer credential replaced."""
    if not any(marker in text for marker in _MARKERS):
        return text
    return _CREDENTIAL.sub(_redact, text)


# -- the log context ---------------------------------------------------------------------------


def bind(**ids: str) -> None:
    """Add ids (`tenant_id=`, `hook_id=`, `event_id=`, `delivery_id=`) to the log context of the
    running task, for every line it logs from now on."""
    current = _CONTEXT.get(None)
    _CONTEXT.set({**current, **ids} if current else ids)


def context() -> dict[str, str]:
    """The ids a line logged here would carry."""
    current = _CONTEXT.get(None)
    out = dict(current) if current else {}
    if tracing.ENABLED:
        ids = tracing.trace_ids()
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
    return out


class ContextFilter(logging.Filter):
    """Adds the log context's ids to each record (a field the call passed in `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        ids = _CONTEXT.get(None)
        if ids:
            for key, value in ids.items():
                fields.setdefault(key, value)
        if tracing.ENABLED:
            trace = tracing.trace_ids()
            if trace is not None:
                fields.setdefault("trace_id", trace[0])
                fields.setdefault("span_id", trace[1])
        return True


# -- the format --------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False))


def handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines with the log context's ids to `stream` (stderr)."""
    out = logging.StreamHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(JsonFormatter())
    out.addFilter(ContextFilter())
    return out


def configure(level: str = "info") -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler()]
    root.setLevel(level.upper())


# -- what the delivery path logs -----------------------------------------------------------------


def attempt(outcome: Outcome) -> None:
    """A durable attempt's line (debug), and a warning when it ended the delivery (exhausted)."""
    record = outcome.attempt
    if record is not None and delivery_log.isEnabledFor(logging.DEBUG):
        kind = attempt_outcome(record.status_code, record.error, outcome.status == "succeeded")
        answer = f"HTTP {record.status_code}" if record.status_code is not None else "no answer"
        delivery_log.debug(
            "delivery attempt: %s in %.0f ms (%s); delivery %s", answer, record.duration_ms, kind,
            outcome.status,
            extra={"status_code": record.status_code, "duration_ms": record.duration_ms, "outcome": kind,
                   "delivery_status": outcome.status},
        )
    if outcome.status == "failed":
        delivery_log.warning("delivery exhausted: %s", outcome.last_error or "failed",
                             extra={"delivery_status": "failed"})


def sync_attempt(status_code: int | None, error: str | None, duration_ms: float) -> None:
    """A blocking hook call's attempt (debug)."""
    if not invoke_log.isEnabledFor(logging.DEBUG):
        return
    kind = attempt_outcome(status_code, error, error is None)
    answer = f"HTTP {status_code}" if status_code is not None else "no answer"
    invoke_log.debug("hook call attempt: %s in %.0f ms (%s)", answer, duration_ms, kind,
                     extra={"status_code": status_code, "duration_ms": duration_ms, "outcome": kind})
