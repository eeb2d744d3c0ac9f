"""Row mappers both stores share: a row of their tables, in the column order they select
(`HOOK_COLUMNS`, `DELIVERY_COLUMNS`, `TENANT_COLUMNS`), to the models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .models import Delivery, Hook, Tenant

# Hook fields as the API names them -> column.
HOOK_FIELD_COLUMNS = {
    "name": "name",
    "url": "url",
    "enabled": "enabled",
    "order": '"order"',
    "timeoutMs": "timeout_ms",
    "failurePolicy": "failure_policy",
    "maxConcurrency": "max_concurrency",
    "rateLimitPerSecond": "rate_limit_per_second",
    "format": "format",
    "disabledReason": "disabled_reason",
    "script": "script",
    "dependencies": "dependencies",
}


def dependencies_column(deps: Sequence[tuple[str, str]]) -> str:
    """A hook's dependencies as the column holds them: a JSON object."""
    return json.dumps(dict(deps), separators=(",", ":"))


def column_value(key: str, value: Any) -> Any:
    """An API-named change as its column takes it."""
    return dependencies_column(value) if key == "dependencies" else value


def hook_from_row(row: Sequence[Any]) -> Hook:
    return Hook(
        id=row[0],
        tenant_id=row[1],
        name=row[2],
        trigger_id=row[3],
        url=row[4],
        enabled=bool(row[5]),
        order=row[6],
        timeout_ms=row[7],
        failure_policy=row[8],
        max_concurrency=row[9],
        rate_limit_per_second=row[10],
        format=row[11],
        disabled_reason=row[12],
        created_at=row[13],
        updated_at=row[14],
        signature_scheme=row[15],
        script=row[16],
        dependencies=tuple(sorted(json.loads(row[17]).items())),
    )


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


def tenant_from_row(row: Sequence[Any]) -> Tenant:
    return Tenant(
        id=row[0],
        name=row[1],
        allowed_cidrs=tuple(json.loads(row[2])),
        deadlines=json.loads(row[3]),
        max_in_flight=row[4],
        created_at=row[5],
        updated_at=row[6],
        quotas=json.loads(row[7]),
    )
