"""The services every handler and worker shares, owned by the app, under typed AppKeys."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import tracing
from .auth import TokenVerifier
from .coordination import TENANT, Bus, open_bus
from .crypto import Cipher
from .metrics import Metrics
from .peers import IPNetwork, networks
from .ratelimit import RateLimiter
from .registry import HookRegistry
from .settings import Settings
from .store.base import Store

if TYPE_CHECKING:
    from .transport import Transport


Clock = Callable[[], float]


@dataclass
class Services:
    settings: Settings
    store: Store
    cipher: Cipher
    verifier: TokenVerifier
    registry: HookRegistry
    bus: Bus
    management_limiter: RateLimiter
    ingest_limiter: RateLimiter
    clock: Clock = time.time
    ingest_cidrs: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    egress_allow: tuple[IPNetwork, ...] = ()
    transport: Transport | None = None
    metrics: Metrics = field(default_factory=Metrics)
    metrics_cidrs: tuple[IPNetwork, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, store: Store, cipher: Cipher, *, clock: Clock = time.time) -> Services:
        rl = settings.ratelimit
        bus = open_bus(settings.database.url)
        store = tracing.traced_store(store)  # itself, unless tracing is on: then store calls are spans
        return cls(
            settings=settings,
            store=store,
            cipher=cipher,
            verifier=TokenVerifier(settings, clock=clock),
            registry=HookRegistry(store, cipher, clock=clock, announce=lambda t: bus.publish(TENANT, t)),
            bus=bus,
            management_limiter=RateLimiter(rate=rl.management_rate, burst=rl.management_burst, clock=clock,
                                           instances=bus.instances),
            ingest_limiter=RateLimiter(rate=rl.ingest_rate, burst=rl.ingest_burst, clock=clock,
                                       instances=bus.instances),
            clock=clock,
            ingest_cidrs=networks(settings.ingest.allowed_cidrs),
            trusted_proxies=networks(settings.ingest.trusted_proxies),
            egress_allow=networks(settings.egress.allow_cidrs),
            metrics_cidrs=networks(settings.server.metrics_allowed_cidrs),
        )


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
