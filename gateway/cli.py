"""The `gateway` command: serve, demo, migrate, tenant create, token."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import time
from collections.abc import Sequence

from . import __version__, logs, tracing
from . import settings as settings_mod
from .auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_DELETE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE, mint
from .errors import ApiError, ConfigError
from .settings import Settings, parse_duration
from .store import is_postgres, open_store
from .store.models import Tenant
from .store.postgres.schema import SchemaNotReady

log = logging.getLogger("gateway.cli")

DEMO_TENANT = "demo"
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
HOOK_SCOPES = (SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_DELETE)


def _load(path: str | None) -> Settings:
    return settings_mod.load(path or os.environ.get("GATEWAY_CONFIG"))


async def _create_tenant(settings: Settings, tenant_id: str, name: str | None, *, exist_ok: bool) -> bool:
    from .api.tenants import ID_PATTERN  # noqa: PLC0415

    if not ID_PATTERN.fullmatch(tenant_id):
        raise ConfigError(f"tenant id {tenant_id!r} must match ^[a-z0-9][a-z0-9-]{{0,62}}$")
    store = open_store(settings)
    await store.open()
    try:
        if exist_ok and await store.get_tenant(tenant_id) is not None:
            return False
        now = time.time()
        await store.create_tenant(
            Tenant(id=tenant_id, name=name or tenant_id, created_at=now, updated_at=now)
        )
        return True
    finally:
        await store.close()


def _dashboard_line(settings: Settings, base: str) -> str:
    """How to open the dashboard, for the demo banner."""
    if not settings.dashboard.enabled or settings.server.role == "worker":
        return ""
    if settings.server.mode == "development":
        how = ("sign in by pasting the tenant token above ($TOKEN), or the operator token\n"
               "    ($OPERATOR_TOKEN) for the operator view (token sign-in: development mode only)")
    else:
        how = "sign in with your identity provider ([dashboard] issuer)"
    return f"\n  dashboard: {base}/dashboard\n    {how}\n"


def _demo_banner(settings: Settings) -> str:
    base = f"http://{settings.server.host}:{settings.server.port}"
    hooks_token = mint(settings, tenant=DEMO_TENANT, scopes=HOOK_SCOPES, ttl_s=86400)
    service_token = mint(settings, tenant=DEMO_TENANT, scopes=(SCOPE_FORWARD,), ttl_s=86400)
    operator_token = mint(settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=86400)
    return f"""
  hooks gateway {__version__} on {base}  (database: {settings.database.url})
  demo tenant: {DEMO_TENANT}   tokens below are valid for 24 h

  tenant token (read/create/update/delete:hooks):
    export TOKEN={hooks_token}
  service token (forward:events, for the auth server):
    export SERVICE_TOKEN={service_token}
  operator token (admin:tenants):
    export OPERATOR_TOKEN={operator_token}

{_dashboard_line(settings, base)}
  try:
    curl -s {base}/api/v2/hooks -H "Authorization: Bearer $TOKEN"
    curl -s -X POST {base}/v1/tenants/{DEMO_TENANT}/triggers/credentials-exchange \\
      -H "Authorization: Bearer $SERVICE_TOKEN" -H 'Content-Type: application/json' \\
      -d '{{"audience":"https://api.example.com","client":{{"id":"c1","name":"App"}},"scope":["read"]}}'
"""


async def _check_schema(settings: Settings) -> None:
    """On PostgreSQL with `[database] migrate = "manual"`: `SchemaNotReady` (naming `gateway
    migrate`) unless every migration is applied. SQLite migrates itself when it opens; with
    "auto", the store applies what is missing when it opens."""
    if not is_postgres(settings.database.url) or settings.database.migrate == "auto":
        return
    from .store.postgres import PostgresStore, schema  # noqa: PLC0415

    store = open_store(settings)
    assert isinstance(store, PostgresStore)
    conn = await store.db.connect()
    try:
        await schema.check(conn, where=_shown_url(settings))
    finally:
        await conn.close()


def _shown_url(settings: Settings) -> str:
    from .store.postgres import redact  # noqa: PLC0415

    return redact(settings.database.url)


async def _migrate(settings: Settings) -> str:
    """Bring the database's schema up to date; returns what was done, for the operator."""
    store = open_store(settings)
    where = _shown_url(settings)
    if not is_postgres(settings.database.url):
        await store.open()  # SQLite applies its migrations when it opens
        await store.close()
        return f"database {where}: schema up to date"
    from .store.postgres import PostgresStore  # noqa: PLC0415

    assert isinstance(store, PostgresStore)
    before, after = await store.migrate()
    if before == after:
        return f"database {where}: schema already at version {after}"
    return f"database {where}: schema migrated from version {before} to {after}"


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    logs.configure(settings.server.log_level)
    print(asyncio.run(_migrate(settings)), flush=True)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    logs.configure(settings.server.log_level)
    open_store(settings)  # the [database] settings are checked before anything starts
    asyncio.run(_check_schema(settings))
    secret = settings.auth.hs256_secret
    if (
        settings.server.mode == "production"
        and secret is not None
        and (secret.get().startswith("change-me") or len(secret.get()) < MIN_HS256_SECRET_BYTES)
    ):
        raise ConfigError(
            f"{settings.source}: [auth] hs256_secret must be changed, and at least "
            f"{MIN_HS256_SECRET_BYTES} bytes, in production mode"
        )
    tracing.configure(os.environ)  # OTEL_* variables; off unless they name an exporter (gateway/tracing.py)
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:  # pragma: no cover - optional speed-up
        pass
    if args.demo:
        asyncio.run(_create_tenant(settings, DEMO_TENANT, "Demo tenant", exist_ok=True))
        print(_demo_banner(settings), flush=True)
    from .app import create_app  # noqa: PLC0415
    from .server import run  # noqa: PLC0415
    from .tls import server_context  # noqa: PLC0415

    app = create_app(settings)
    tune_gc()
    raise_open_files_limit()
    try:
        run(
            app,
            host=settings.server.host,
            port=settings.server.port,
            access_log=logging.getLogger("gateway.access") if settings.server.access_log else None,
            shutdown_timeout=settings.server.shutdown_timeout,
            on_ready=lambda url: log.info("serving on %s", url),
            ssl_context=server_context(settings.server.tls_cert, settings.server.tls_key),  # HTTPS, or None
        )
    finally:
        tracing.shutdown()  # export the spans still queued
    return 0


GC_GEN0_THRESHOLD = 10_000  # net new container objects before a young collection (CPython: 700)


def raise_open_files_limit() -> int:
    """Lift the soft limit of open files to the hard one: every request in flight to a receiver
    holds a socket, and with Linux's usual soft limit of 1,024, four tenants each at their cap of
    250 blocking calls to hanging receivers would leave no socket for anyone else's login.
    Returns the limit now in force."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return int(soft)
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX, or refused
        return -1


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a server. Almost everything a request allocates is
    freed by reference counting, but the requests in flight hold a few thousand objects, so
    with CPython's threshold of 700 a young collection ran every ~40 requests and traversed
    them all: measured at ~11 us of CPU per blocking request (bench/, scenario 1). At 10,000
    it runs a few times a minute. `gc.freeze()` moves what start-up built (modules, settings,
    the app) out of the collector's sight, so the rare full collection is short."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def cmd_demo(args: argparse.Namespace) -> int:
    """The gateway at work on SQLite with example receivers (gateway/demo.py): `make run`."""
    from . import demo  # noqa: PLC0415

    settings = _load(args.config)
    logs.configure("warning")  # the tour's own lines on stdout; the configured level once it serves
    port = settings.server.port if args.port is None else args.port
    try:
        return asyncio.run(demo.run(settings, port=port, once=args.once))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


def cmd_tenant_create(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    created = asyncio.run(_create_tenant(settings, args.id, args.name, exist_ok=False))
    print(f"tenant {args.id} created" if created else f"tenant {args.id} exists")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if args.tenant is None and SCOPE_ADMIN not in args.scope.split():
        print("a token without --tenant is an operator token: add admin:tenants to --scope", file=sys.stderr)
        return 2
    print(mint(settings, tenant=args.tenant, scopes=args.scope.split(), ttl_s=parse_duration(args.ttl)))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="Auth0-compatible hooks gateway")
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", help="TOML settings file (default: $GATEWAY_CONFIG, else built-in defaults)"
    )
    serve.add_argument("--demo", action="store_true", help="create the demo tenant and print tokens to try")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="start the gateway on SQLite with a demo tenant and example receivers, fire sample "
                     "events and show what each receiver got; then serve until Ctrl-C")
    demo.add_argument(
        "--config", help="TOML settings file (default: $GATEWAY_CONFIG, else built-in defaults)"
    )
    demo.add_argument("--port", type=int,
                      help="listen on this port (default: [server] port; 0: any free port)")
    demo.add_argument("--once", action="store_true", help="exit after the tour instead of serving")
    demo.set_defaults(func=cmd_demo)

    migrate = sub.add_parser(
        "migrate", help="apply the database's missing migrations (PostgreSQL; SQLite migrates itself)"
    )
    migrate.add_argument(
        "--config", help="TOML settings file (default: $GATEWAY_CONFIG, else built-in defaults)"
    )
    migrate.set_defaults(func=cmd_migrate)

    tenant = sub.add_parser("tenant", help="manage tenants")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tsub.add_parser("create", help="create a tenant")
    create.add_argument("id")
    create.add_argument("--name")
    create.add_argument("--config")
    create.set_defaults(func=cmd_tenant_create)

    token = sub.add_parser("token", help="print a token signed with [auth] hs256_secret")
    token.add_argument("--tenant", help="bind the token to this tenant (omit for an operator token)")
    token.add_argument(
        "--scope", required=True, help='space-separated scopes, e.g. "read:hooks create:hooks"'
    )
    token.add_argument("--ttl", default="1h", help='lifetime, e.g. "30m", "1h", "7d" (default 1h)')
    token.add_argument("--config")
    token.set_defaults(func=cmd_token)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except SchemaNotReady as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"gateway: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
