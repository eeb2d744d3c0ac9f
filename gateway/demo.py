"""`gateway demo`: the gateway doing its job, in one command (`make run`).

Starts the gateway (the app `gateway serve` runs) on SQLite, with example receivers in this
process on 127.0.0.1, each verifying the signature of every request with `gateway.client.Receiver`:

- `credentials-exchange` (blocking): adds a claim and a scope to the access token;
- `pre-user-registration` (blocking): denies signups from one email domain, adds metadata to others;
- `post-user-registration` (asynchronous): welcomes each new user, and answers the first request
  it gets `429` with `Retry-After: 1`, so the gateway's retry is seen at work.

It creates the `demo` tenant and its hooks through the Management API (or points the hooks of an
earlier run at this run's receivers), fires sample events as an auth server would, shows what
each receiver got, prints the dashboard's address with a token to sign in with, and serves until
Ctrl-C (`--once`: exits after the tour, with status 1 if a step did not turn out as expected).

The demo loosens what a deployment must not: development mode only, plain `http` to loopback
allowed by the egress guard (for its receivers), and tokens printed on the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web

from . import __version__
from .auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_DELETE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE, mint
from .errors import ConfigError
from .settings import Settings
from .store import is_postgres

TENANT = "demo"
TOKEN_TTL_S = 86400.0
DELIVERY_WAIT_S = 60.0  # how long the tour waits for the asynchronous deliveries
POLL_S = 0.1
CLAIM = "https://demo.example.com/plan"
BLOCKED_DOMAIN = "blocked.example"
RETRY_AFTER_S = 1
LOOPBACK = "127.0.0.1"

HOOKS = (  # name, point, receiver path
    ("demo-add-claim", "credentials-exchange", "/credentials-exchange"),
    ("demo-screen-signups", "pre-user-registration", "/pre-user-registration"),
    ("demo-welcome", "post-user-registration", "/post-user-registration"),
)
CONNECTION = {"id": "con_demo", "name": "Username-Password-Authentication"}
SIGNUPS = ("alice@example.com", "mallory@blocked.example")
NEW_USERS = (("auth0|alice", "alice@example.com"), ("auth0|bob", "bob@example.com"))


def demo_settings(settings: Settings, *, port: int) -> tuple[Settings, str]:
    """The settings the demo runs with, and a note on its database. Refused in production mode."""
    if settings.server.mode != "development":
        raise ConfigError(f"{settings.source}: the demo runs in development mode only ([server] mode)")
    note = ""
    url = settings.database.url
    if is_postgres(url):
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='gateway-demo-')) / 'gateway.db'}"
        note = "the demo runs on SQLite: a temporary database, not the configured PostgreSQL"
    loopback = f"{LOOPBACK}/32"
    return settings.replace(
        server={"port": port},
        database={"url": url},
        egress={"allow_http": True, "allow_cidrs": [*settings.egress.allow_cidrs, loopback]},
        ingest={"allowed_cidrs": [*settings.ingest.allowed_cidrs, loopback]},
    ), note


class Receivers:
    """The example receivers, one aiohttp server on loopback; what each got is kept for the tour."""

    def __init__(self) -> None:
        try:
            from . import client  # noqa: PLC0415 - the SDK's receiver helper, in its extra (httpx)
        except ImportError:
            raise ConfigError("the demo's receivers use the SDK: pip install 'hooks-gateway[sdk]'") from None

        self.sdk = client
        self._types: dict[str, Any] = {"credentials-exchange": client.CredentialsExchangeEvent,
                                       "pre-user-registration": client.PreUserRegistrationEvent,
                                       "post-user-registration": client.PostUserRegistrationEvent}
        self.verifiers: dict[str, Any] = {}
        self.got: dict[str, list[str]] = {point: [] for point in self._types}
        self.refused = 0  # requests whose signature did not verify
        self.throttled = 0  # 429s answered
        self.app = web.Application()
        for _, point, path in HOOKS:
            self.app.router.add_post(path, self._handler(point))

    def trust(self, point: str, secret: str) -> None:
        """Verify the requests of `point` with its hook's signing secret."""
        self.verifiers[point] = self.sdk.Receiver(self._types[point], secret)

    def _handler(self, point: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        answer = {"credentials-exchange": self._on_token, "pre-user-registration": self._on_signup,
                  "post-user-registration": self._on_new_user}[point]

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            verifier = self.verifiers.get(point)
            if verifier is None:  # an earlier run's delivery, before this run knows the secret
                return web.json_response({"statusCode": 503, "error": "Service Unavailable",
                                          "message": "starting"}, status=503, headers={"Retry-After": "1"})
            try:
                event = verifier.verify(body, request.headers)
            except self.sdk.ReceiverError as exc:
                self.refused += 1
                return web.json_response(exc.body(), status=exc.status)
            status, envelope = answer(event)
            headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
            return web.json_response(envelope, status=status, headers=headers)

        return handle

    def _on_token(self, event: Any) -> tuple[int, dict[str, Any]]:
        answers = self.sdk.answers
        self.got["credentials-exchange"].append(
            f"client {event.client.id} asked for [{', '.join(event.scope)}]; answered: claim {CLAIM} = "
            f"\"gold\", scope + write:reports")
        return 200, dict(answers.grant([*event.scope, "write:reports"], {CLAIM: "gold"}))

    def _on_signup(self, event: Any) -> tuple[int, dict[str, Any]]:
        answers = self.sdk.answers
        email = event.user.email or ""
        if email.rpartition("@")[2].lower() == BLOCKED_DOMAIN:
            self.got["pre-user-registration"].append(f"{email}: denied (domain {BLOCKED_DOMAIN})")
            return 200, dict(answers.deny(f"Signups from {BLOCKED_DOMAIN} are not accepted.",
                                          message=f"signup refused: domain {BLOCKED_DOMAIN} is blocked"))
        self.got["pre-user-registration"].append(f"{email}: allowed, user_metadata.plan = \"trial\"")
        return 200, dict(answers.add_metadata(user_metadata={"plan": "trial"}))

    def _on_new_user(self, event: Any) -> tuple[int, dict[str, Any]]:
        answers = self.sdk.answers
        if self.throttled == 0:  # the first request of the run: "too many requests, come back in 1 s"
            self.throttled += 1
            self.got["post-user-registration"].append(
                f"{event.user.email}: answered 429 (Retry-After: {RETRY_AFTER_S})")
            return 429, {"statusCode": 429, "error": "Too Many Requests", "message": "slow down"}
        self.got["post-user-registration"].append(f"{event.user.email}: welcomed")
        return 200, dict(answers.success())


class Tour:
    """The auth server's side: sample events, and what came of them, printed as it goes."""

    def __init__(
        self, base: str, settings: Settings, receivers: Receivers, rx_base: str, out: IO[str]
    ) -> None:
        self.base = base
        self.receivers = receivers
        self.rx_base = rx_base
        self.out = out
        self.tty = out.isatty()
        self.tenant_token = mint(settings, tenant=TENANT, scopes=(SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE,
                                                                    SCOPE_DELETE), ttl_s=TOKEN_TTL_S)
        self.service_token = mint(settings, tenant=TENANT, scopes=(SCOPE_FORWARD,), ttl_s=TOKEN_TTL_S)
        self.operator_token = mint(settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=TOKEN_TTL_S)
        self.ok = True

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    async def call(self, http: aiohttp.ClientSession, method: str, path: str, token: str,
                   body: Any = None) -> tuple[int, Any]:
        async with http.request(method, f"{self.base}{path}", json=body,
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def run(self) -> bool:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await self.set_up(http)
            await self.fire(http)
        self.report()
        return self.ok

    async def set_up(self, http: aiohttp.ClientSession) -> None:
        status, _ = await self.call(http, "POST", "/api/v2/tenants", self.operator_token,
                                    {"id": TENANT, "name": "Demo tenant"})
        if status not in (201, 409):  # 409: made by an earlier run
            raise RuntimeError(f"creating the demo tenant answered {status}")
        _, existing = await self.call(http, "GET", "/api/v2/hooks?per_page=100", self.tenant_token)
        by_name = {h["name"]: h for h in existing or []}
        self.say(f"  receivers in this process on {self.rx_base}; the demo tenant's hooks call them:")
        for name, point, path in HOOKS:
            url = f"{self.rx_base}{path}"
            if name in by_name:
                hook_id = by_name[name]["id"]
                status, hook = await self.call(http, "PATCH", f"/api/v2/hooks/{hook_id}", self.tenant_token,
                                               {"url": url, "enabled": True})
            else:
                new = {"name": name, "triggerId": point, "url": url, "enabled": True}
                status, hook = await self.call(http, "POST", "/api/v2/hooks", self.tenant_token, new)
            if status not in (200, 201):
                raise RuntimeError(f"setting up hook {name} answered {status}: {hook}")
            _, secret = await self.call(http, "GET", f"/api/v2/hooks/{hook['id']}/signing-secret",
                                        self.tenant_token)
            self.receivers.trust(point, secret["secret"])
            kind = "blocking" if point != "post-user-registration" else "asynchronous"
            self.say(f"    {name:<20} {point:<23} {kind:<12} -> {path}")

    async def fire(self, http: aiohttp.ClientSession) -> None:
        steps = 1 + len(SIGNUPS) + len(NEW_USERS)
        self.say(f"\nthe auth server's side: {steps} sample events")
        n = 0

        def step(point: str, what: str) -> None:
            nonlocal n
            n += 1
            self.say(f"  [{n}/{steps}] {point:<23} {what}")

        step("credentials-exchange", "client demo-cli asks for [read:reports]")
        answer = await self.forward(http, "credentials-exchange", {
            "audience": "https://api.demo.example.com", "client": {"id": "demo-cli", "name": "Demo CLI"},
            "scope": ["read:reports"]})
        data = answer.get("data", {})
        if answer.get("status") == "success" and data.get(CLAIM) == "gold":
            scope = ", ".join(data.get("scope", []))
            self.say(f"        -> claim added: {CLAIM} = \"gold\"; scope [{scope}]")
        else:
            self.fail(f"        -> no claim added: {answer}")
        for email in SIGNUPS:
            step("pre-user-registration", f"signup of {email}")
            answer = await self.forward(http, "pre-user-registration", {
                "user": {"email": email, "username": email.partition("@")[0]},
                "context": {"connection": CONNECTION, "request": {"ip": "203.0.113.7", "language": "en"}}})
            data = answer.get("data", {})
            if answer.get("status") == "success":
                metadata = json.dumps(data["user"]["user_metadata"])
                self.say(f"        -> signup allowed; user_metadata {metadata}")
            else:
                friendly = json.dumps(data.get("friendlyMessage"))
                self.say(f"        -> signup denied: {friendly} ({data.get('name')})")
        delivery_ids = []
        for user_id, email in NEW_USERS:
            step("post-user-registration", f"new user {email}")
            stored = await self.forward(http, "post-user-registration", {
                "user": {"id": user_id, "email": email}, "context": {"connection": CONNECTION}})
            new = [d["deliveryId"] for d in stored["deliveries"]]
            delivery_ids += new
            self.say(f"        -> 202: event {stored['eventId']} stored, delivery {', '.join(new)}")
        await self.wait(http, delivery_ids)

    async def forward(self, http: aiohttp.ClientSession, point: str, event: dict[str, Any]) -> dict[str, Any]:
        status, answer = await self.call(http, "POST", f"/v1/tenants/{TENANT}/triggers/{point}",
                                         self.service_token, event)
        if status not in (200, 202):
            raise RuntimeError(f"{point} answered {status}: {answer}")
        return dict(answer)

    async def wait(self, http: aiohttp.ClientSession, delivery_ids: list[str]) -> None:
        """Follow the asynchronous deliveries until each is delivered (or the wait ends)."""
        shown = ""
        attempts: dict[str, int] = {}
        deadline = time.monotonic() + DELIVERY_WAIT_S
        while True:
            states = []
            for did in delivery_ids:
                _, d = await self.call(http, "GET", f"/api/v2/deliveries/{did}", self.tenant_token)
                states.append(d["status"])
                attempts[did] = len(d["attempts"])
            done = states.count("succeeded")
            line = f"  waiting for {len(delivery_ids)} deliveries: {done} delivered, " \
                   f"{sum(attempts.values())} requests so far"
            if line != shown:
                if self.tty:
                    print(f"\r{line.ljust(len(shown))}", end="", file=self.out, flush=True)
                else:
                    self.say(line)
                shown = line
            if done == len(delivery_ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
        if self.tty:
            self.say()
        retried = [did for did, n in attempts.items() if n > 1]
        if done == len(delivery_ids) and retried:
            self.say(f"        -> all {done} delivered; {', '.join(retried)} despite a 429: the gateway "
                     f"waited out its Retry-After and sent it again (a 429 uses up no retry)")
        elif done == len(delivery_ids):
            self.say(f"        -> all {done} delivered")
        else:
            self.fail(f"        -> {done} of {len(delivery_ids)} delivered within {DELIVERY_WAIT_S:.0f} s; "
                      "see the dashboard")

    def fail(self, text: str) -> None:
        self.ok = False
        self.say(text)

    def report(self) -> None:
        r = self.receivers
        self.say("\nwhat the receivers got (every request's signature verified with its hook's "
                 "whsec_ secret):")
        for _, point, _ in HOOKS:
            got = r.got[point]
            self.say(f"  {point:<23} {len(got)} request{'s' if len(got) != 1 else ''}")
            for line in got:
                self.say(f"    {line}")
        if r.refused:
            self.fail(f"  {r.refused} requests refused: their signature did not verify")


async def run(settings: Settings, *, port: int, once: bool, out: IO[str] = sys.stdout) -> int:
    """The demo; its exit status."""
    from .app import create_app  # noqa: PLC0415
    from .server import KEEPALIVE_TIMEOUT_S, GatewayRunner  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.server.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.server.host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {settings.server.host}:{port}: {exc.strerror} (try --port)"
        ) from None
    settings, note = demo_settings(settings, port=sock.getsockname()[1])
    host = LOOPBACK if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host  # noqa: S104
    base = f"http://{host if ':' not in host else f'[{host}]'}:{settings.server.port}"
    receivers = Receivers()
    rx_runner = web.AppRunner(receivers.app, access_log=None)
    runner = GatewayRunner(create_app(settings), handle_signals=False, keepalive_timeout=KEEPALIVE_TIMEOUT_S,
                           shutdown_timeout=settings.server.shutdown_timeout, access_log=None)
    try:
        await rx_runner.setup()
        rx_site = web.TCPSite(rx_runner, LOOPBACK, 0)
        await rx_site.start()
        rx_port = rx_runner.addresses[0][1]
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(f"hooks gateway {__version__}: the demo on {base} (database: {settings.database.url})",
              file=out, flush=True)
        if note:
            print(f"  {note}", file=out, flush=True)
        tour = Tour(base, settings, receivers, f"http://{LOOPBACK}:{rx_port}", out)
        touring = asyncio.ensure_future(tour.run())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({touring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not touring.done():
            touring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await touring
            return 130
        ok = touring.result()
        _sign_in(tour, settings, base)
        if once:
            return 0 if ok else 1
        logging.getLogger().setLevel(settings.server.log_level.upper())
        tour.say("\nserving until Ctrl-C")
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()
        await rx_runner.cleanup()
        sock.close()


def _sign_in(tour: Tour, settings: Settings, base: str) -> None:
    say = tour.say
    say("\nlook around (tokens valid 24 h):\n"
        f"  export TOKEN={tour.tenant_token}\n"
        f"  export SERVICE_TOKEN={tour.service_token}")
    if settings.dashboard.enabled:
        say(f"  dashboard: {base}/dashboard  (sign in by pasting $TOKEN: development mode only)")
    say(f"  curl -s {base}/api/v2/deliveries -H \"Authorization: Bearer $TOKEN\"\n"
        f"  curl -s -X POST {base}/v1/tenants/{TENANT}/triggers/credentials-exchange \\\n"
        f"    -H \"Authorization: Bearer $SERVICE_TOKEN\" -H 'Content-Type: application/json' \\\n"
        f"    -d '{{\"audience\":\"https://api.demo.example.com\",\"client\":{{\"id\":\"c1\"}},\"scope\":[\"read\"]}}'")
    say(f"  metrics: {base}/metrics")


__all__ = ["demo_settings", "run"]
