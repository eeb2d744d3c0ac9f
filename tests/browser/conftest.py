"""Fixtures of the browser tests: Chromium through Playwright's async API (the tests are
`async def`, on pytest-aiohttp's loop like the rest of the suite), the test OpenID Connect
provider, and gateway processes. The helpers they use are in harness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from instances import Deployment, free_port
from playwright.async_api import Browser, Page, async_playwright

from .harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CONTEXT_OPTIONS,
    DASHBOARD_CALLBACK_PATH,
    DASHBOARD_SIGNED_OUT_PATHS,
    GatewayProcess,
    LoopbackGuard,
    OidcProvider,
    oidc_dashboard_settings,
    require_chromium,
)


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One provider for the session (accounts: harness.ACCOUNTS; static client: STATIC_CLIENT)."""
    provider = OidcProvider.start(tmp_path_factory.mktemp("oidc"))
    yield provider
    provider.stop()


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for this test (Playwright's objects live on the test's loop)."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


NewPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def new_page(chromium: Browser) -> AsyncIterator[NewPage]:
    """`await new_page(**context_options)`: a page in a browser context of its own (its own
    cookies: one per signed-in user). A request to a host beyond loopback fails the test."""
    guards: list[LoopbackGuard] = []

    async def make(**options: Any) -> Page:
        context = await chromium.new_context(**{**CONTEXT_OPTIONS, **options})
        guard = LoopbackGuard()
        await guard.attach(context)
        guards.append(guard)
        return await context.new_page()

    yield make
    blocked = [url for guard in guards for url in guard.blocked]
    assert not blocked, f"pages asked for hosts beyond loopback: {blocked}"


@pytest.fixture
async def page(new_page: NewPage) -> Page:
    return await new_page()


StartGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def start_gateway(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StartGateway]:
    """`await start_gateway(dashboard={...}, oidc=True, sections={...})`: a `gateway serve`
    process on a SQLite file of this test. `oidc=True` registers a client for its callback at
    the session's provider and fills in the `[dashboard]` keys for it; `dashboard` adds or
    overrides keys; `sections` overrides other sections. Stopped at the end of the test."""
    deployment = Deployment(database_url=f"sqlite:///{tmp_path / 'gateway.db'}", workdir=tmp_path)

    async def start(
        *,
        dashboard: Mapping[str, Any] | None = None,
        oidc: bool = False,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> GatewayProcess:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        extra = {name: dict(values) for name, values in (sections or {}).items()}
        settings: dict[str, Any] = {}
        client = None
        if oidc:
            provider: OidcProvider = request.getfixturevalue("oidc_provider")
            client = await provider.register_client(
                base + DASHBOARD_CALLBACK_PATH, tuple(base + path for path in DASHBOARD_SIGNED_OUT_PATHS))
            settings.update(oidc_dashboard_settings(provider, client))
        settings.update(dashboard or {})
        if settings:
            extra.setdefault("dashboard", {}).update(settings)
        instance = await deployment.start(extra, port=port)
        return GatewayProcess(deployment, instance, client)

    yield start
    deployment.stop_all()
