"""Quotas per tenant: the `[quotas]` settings, each overridable for one tenant by an operator.

A tenant's `quotas` object (POST/PATCH /api/v2/tenants) holds overrides by API name; a key
left out takes the setting. The store enforces them in the same write transaction as the
change they limit, so concurrent requests cannot both slip under a quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .settings import QuotaSettings
from .store.base import Store

HOOKS_PER_POINT = "hooksPerPoint"
HOOKS = "hooks"
REPLAYS_PER_HOUR = "replaysPerHour"
KEYS = (HOOKS_PER_POINT, HOOKS, REPLAYS_PER_HOUR)
MAX_OVERRIDE = 10_000  # the largest override an operator may set, for any key


@dataclass(frozen=True, slots=True)
class Quotas:
    """The quotas in force for one tenant."""

    hooks_per_point: int
    hooks: int
    replays_per_hour: int


def effective(settings: QuotaSettings, overrides: Mapping[str, int]) -> Quotas:
    return Quotas(
        hooks_per_point=overrides.get(HOOKS_PER_POINT, settings.hooks_per_point),
        hooks=overrides.get(HOOKS, settings.hooks_per_tenant),
        replays_per_hour=overrides.get(REPLAYS_PER_HOUR, settings.replays_per_hour),
    )


async def of_tenant(store: Store, settings: QuotaSettings, tenant_id: str) -> Quotas:
    """The tenant's quotas, read from the store (not a cache: an override made through another
    instance applies at once). An unknown tenant gets the settings."""
    tenant = await store.get_tenant(tenant_id)
    return effective(settings, tenant.quotas if tenant is not None else {})
