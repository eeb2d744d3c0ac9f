"""What each Management API call sends and how its answer is read, shared by the sync and
async `ManagementClient`s (gateway/client/management.py), which only run these `Call`s."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from .errors import ProtocolError
from .models import Delivery, Hook, Page, Replay, SigningSecret, read_page
from .session import Call, read_json, read_nothing

BUCKET: Final = "management"  # a tenant's token spends its tenant's one management bucket

DeliveryStatus = Literal["pending", "succeeded", "failed", "cancelled"]
Time = datetime | float  # an aware datetime, or unix seconds


class Unset(Enum):
    """Marks an argument of `update_hook` as not given (None may be a value: no rate limit)."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET


def _id(value: str) -> str:
    return quote(value, safe="")


def _time(value: Time) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give an aware datetime (with a timezone), or unix seconds")
        return value.isoformat()
    return f"{float(value):.3f}"


def _names(response: httpx.Response) -> list[str]:
    body = read_json(response)
    if not isinstance(body, dict):
        raise ProtocolError("the gateway's answer about secrets is not an object")
    return sorted(body)


def _call(method: str, path: str, read: Any, *, params: Mapping[str, str] | None = None,
          json: Any = ...) -> Call[Any]:
    if json is ...:
        return Call(method=method, path=path, read=read, bucket=BUCKET, params=params)
    return Call(method=method, path=path, read=read, bucket=BUCKET, params=params, json=json)


# --- hooks -------------------------------------------------------------------------------------


def list_hooks(trigger_id: str | None, enabled: bool | None, page: int, per_page: int) -> Call[Page[Hook]]:
    params = {"page": str(page), "per_page": str(per_page), "include_totals": "true"}
    if trigger_id is not None:
        params["triggerId"] = trigger_id
    if enabled is not None:
        params["enabled"] = "true" if enabled else "false"
    return _call("GET", "/api/v2/hooks", lambda r: read_page(read_json(r), "hooks", Hook.from_json),
                 params=params)


def hook_fields(**fields: Any) -> dict[str, Any]:
    """The hook's writable fields by wire name, leaving out those not given."""
    wire = {
        "name": "name", "trigger_id": "triggerId", "url": "url", "enabled": "enabled", "order": "order",
        "timeout_ms": "timeoutMs", "failure_policy": "failurePolicy", "max_concurrency": "maxConcurrency",
        "rate_limit_per_second": "rateLimitPerSecond", "format": "format",
    }
    return {wire[k]: v for k, v in fields.items() if v is not UNSET}


def create_hook(body: dict[str, Any]) -> Call[Hook]:
    return _call("POST", "/api/v2/hooks", lambda r: Hook.from_json(read_json(r)), json=body)


def get_hook(hook_id: str) -> Call[Hook]:
    return _call("GET", f"/api/v2/hooks/{_id(hook_id)}", lambda r: Hook.from_json(read_json(r)))


def update_hook(hook_id: str, body: dict[str, Any]) -> Call[Hook]:
    return _call("PATCH", f"/api/v2/hooks/{_id(hook_id)}", lambda r: Hook.from_json(read_json(r)), json=body)


def delete_hook(hook_id: str) -> Call[None]:
    return _call("DELETE", f"/api/v2/hooks/{_id(hook_id)}", read_nothing)


def hook_test(hook_id: str, event: Mapping[str, Any] | None) -> Call[dict[str, Any]]:
    body = {} if event is None else {"event": dict(event)}

    def read(response: httpx.Response) -> dict[str, Any]:
        answer = read_json(response)
        if not isinstance(answer, dict):
            raise ProtocolError("the gateway's answer to a hook test is not an object")
        return answer

    return _call("POST", f"/api/v2/hooks/{_id(hook_id)}/test", read, json=body)


# --- secrets (values are write-only: answers carry names) ---------------------------------------


def list_secrets(hook_id: str) -> Call[list[str]]:
    return _call("GET", f"/api/v2/hooks/{_id(hook_id)}/secrets", _names)


def add_secrets(hook_id: str, secrets: Mapping[str, str]) -> Call[list[str]]:
    return _call("POST", f"/api/v2/hooks/{_id(hook_id)}/secrets", _names, json=dict(secrets))


def update_secrets(hook_id: str, secrets: Mapping[str, str]) -> Call[list[str]]:
    return _call("PATCH", f"/api/v2/hooks/{_id(hook_id)}/secrets", _names, json=dict(secrets))


def delete_secrets(hook_id: str, names: Iterable[str]) -> Call[None]:
    return _call("DELETE", f"/api/v2/hooks/{_id(hook_id)}/secrets", read_nothing, json=list(names))


# --- signing secrets -----------------------------------------------------------------------------


def get_signing_secret(hook_id: str) -> Call[SigningSecret]:
    return _call("GET", f"/api/v2/hooks/{_id(hook_id)}/signing-secret",
                 lambda r: SigningSecret.from_json(read_json(r)))


def rotate_signing_secret(hook_id: str, grace_period_s: int | None) -> Call[SigningSecret]:
    body = {} if grace_period_s is None else {"gracePeriodSeconds": grace_period_s}
    return _call("POST", f"/api/v2/hooks/{_id(hook_id)}/signing-secret/rotate",
                 lambda r: SigningSecret.from_json(read_json(r)), json=body)


# --- deliveries, retry and replay --------------------------------------------------------------


def list_deliveries(
    hook_id: str | None, status: DeliveryStatus | None, since: Time | None, until: Time | None,
    page: int, per_page: int,
) -> Call[Page[Delivery]]:
    params = {"page": str(page), "per_page": str(per_page), "include_totals": "true"}
    if hook_id is not None:
        params["hookId"] = hook_id
    if status is not None:
        params["status"] = status
    if since is not None:
        params["from"] = _time(since)
    if until is not None:
        params["to"] = _time(until)
    return _call("GET", "/api/v2/deliveries",
                 lambda r: read_page(read_json(r), "deliveries", Delivery.from_json), params=params)


def get_delivery(delivery_id: str) -> Call[Delivery]:
    return _call("GET", f"/api/v2/deliveries/{_id(delivery_id)}", lambda r: Delivery.from_json(read_json(r)))


def retry_delivery(delivery_id: str) -> Call[Delivery]:
    return _call("POST", f"/api/v2/deliveries/{_id(delivery_id)}/retry",
                 lambda r: Delivery.from_json(read_json(r)))


def replay(
    hook_id: str, since: Time, until: Time | None, statuses: Iterable[DeliveryStatus] | None
) -> Call[Replay]:
    body: dict[str, Any] = {"since": _time(since)}
    if until is not None:
        body["until"] = _time(until)
    if statuses is not None:
        body["status"] = list(statuses)
    return _call("POST", f"/api/v2/hooks/{_id(hook_id)}/replay", lambda r: Replay.from_json(read_json(r)),
                 json=body)
