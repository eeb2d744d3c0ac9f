"""The one settings object: TOML file + `GATEWAY_<SECTION>_<KEY>` environment overrides.

Parsed once at start-up into frozen, typed dataclasses and passed to `create_app`.
Nothing reads the environment after this. An unknown or ill-typed key stops start-up
with a `ConfigError` naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .tls import client_context, server_context

ENV_PREFIX = "GATEWAY_"
# Environment variables with the prefix that are not settings keys.
ENV_NOT_SETTINGS = frozenset({"GATEWAY_CONFIG"})

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """`5` / `"500ms"` / `"5s"` / `"5m"` / `"2h"` / `"3d"` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    raise ValueError(f"expected a duration such as 5, \"500ms\", \"5s\", \"2h\", \"3d\", got {value!r}")


class Secret:
    """A string that never shows itself in `repr`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Marker types for fields that need more than the Python type says.
Duration = typing.NewType("Duration", float)
Cidr = typing.NewType("Cidr", str)


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    mode: str = "development"  # "production" makes a missing encryption key fatal
    # "all": API and delivery workers; "api": intake and the Management API only; "worker":
    # delivery only (health, readiness and metrics are served by every role).
    role: str = "all"
    max_body_bytes: int = 256 * 1024
    # A request's whole body must arrive within this (else 408 and the connection is closed).
    body_timeout: Duration = Duration(10.0)
    shutdown_timeout: Duration = Duration(25.0)  # the drain's grace: above [sync] deadline
    access_log: bool = False
    log_level: str = "info"
    metrics_allowed_cidrs: tuple[Cidr, ...] = (Cidr("127.0.0.1/32"), Cidr("::1/128"))
    # HTTPS served by the gateway itself (PEM files: the certificate chain, its unencrypted key),
    # for deployments without a proxy that ends TLS. Both or neither; none: plain HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///data/gateway.db"
    busy_timeout: Duration = Duration(5.0)  # SQLite: how long a write waits for the file's lock
    # PostgreSQL only (gateway/store/postgres/): connections each instance keeps open (at least,
    # at most), how long one statement may run, how long opening a connection may take, and
    # whether `gateway serve` applies missing migrations itself ("auto") or refuses to start
    # until `gateway migrate` has ("manual").
    pool_min: int = 2
    pool_max: int = 10
    statement_timeout: Duration = Duration(30.0)
    connect_timeout: Duration = Duration(5.0)
    migrate: str = "manual"


@dataclass(frozen=True)
class AuthSettings:
    issuer: str = "https://auth.example.com/"
    audience: str = "hooks-gateway"
    hs256_secret: Secret | None = None
    jwks_file: str | None = None
    leeway: Duration = Duration(30.0)


@dataclass(frozen=True)
class SecuritySettings:
    # base64 of 32 bytes (AES-256-GCM) for hook secrets and signing secrets at rest.
    encryption_key: Secret | None = None


@dataclass(frozen=True)
class IngestSettings:
    allowed_cidrs: tuple[Cidr, ...] = (Cidr("127.0.0.1/32"), Cidr("::1/128"))
    trusted_proxies: tuple[Cidr, ...] = ()


@dataclass(frozen=True)
class EgressSettings:
    allow_http: bool = False
    allow_cidrs: tuple[Cidr, ...] = ()
    source_address: str | None = None
    connect_timeout: Duration = Duration(5.0)
    regions: Mapping[str, tuple[Cidr, ...]] = field(default_factory=dict)
    regions_updated_at: str | None = None  # ISO date of the last change of `regions`
    # A PEM bundle of private CAs that https receivers' certificates may also chain to (the
    # system's CAs are always trusted; this adds to them).
    ca_file: str | None = None


@dataclass(frozen=True)
class DeliverySettings:
    retry_schedule: tuple[Duration, ...] = tuple(
        Duration(s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000)
    )
    jitter: float = 0.2
    max_age: Duration = Duration(3 * 86400.0)
    ratelimit_remaining_threshold: int = 0
    workers: int = 2  # with `batch`: up to workers x batch attempts in flight in this process
    batch: int = 64  # deliveries claimed at most at once
    lease: Duration = Duration(300.0)
    poll_interval: Duration = Duration(0.5)
    timeout: Duration = Duration(10.0)
    default_max_concurrency: int = 10
    retention: Duration = Duration(30 * 86400.0)
    purge_interval: Duration = Duration(3600.0)
    signing_grace: Duration = Duration(86400.0)
    idempotency_ttl: Duration = Duration(86400.0)
    # Isolation (SPEC "Isolation"): one tenant's deliveries in flight at once, across all
    # workers of every instance; the rest of its work waits in the database, not in a worker.
    tenant_max_in_flight: int = 64
    # After a 429, a hook's deliveries wait at least `throttle_floor`, doubled for each 429 in a
    # row up to `throttle_max`, and at least the receiver's Retry-After up to `max_pause`. A
    # `X-RateLimit-Reset` pauses a destination for at most `max_pause` too.
    throttle_floor: Duration = Duration(1.0)
    throttle_max: Duration = Duration(600.0)
    max_pause: Duration = Duration(3600.0)
    # Auto-disable (gateway/delivery/control.py): a hook whose attempts have all failed for this
    # long (no success, no edit of the hook) is disabled by its next failed attempt.
    disable_after: Duration = Duration(5 * 86400.0)


@dataclass(frozen=True)
class SyncSettings:
    deadline: Duration = Duration(20.0)
    max_in_flight: int = 250
    default_timeout: Duration = Duration(10.0)


@dataclass(frozen=True)
class RateLimitSettings:
    # Token bucket per tenant per API: `rate` tokens a second, at most `burst` saved up.
    management_rate: float = 50.0
    management_burst: int = 100
    ingest_rate: float = 5000.0
    ingest_burst: int = 10000


@dataclass(frozen=True)
class QuotaSettings:
    # Per tenant, unless the tenant's `quotas` overrides them (POST/PATCH /api/v2/tenants).
    hooks_per_point: int = 10  # hooks on one extensibility point
    hooks_per_tenant: int = 50  # hooks in all
    replays_per_hour: int = 20  # POST /api/v2/hooks/{id}/replay calls in any 3600 s


@dataclass(frozen=True)
class DashboardSettings:
    """The web dashboard at /dashboard (gateway/dashboard/)."""

    enabled: bool = True  # served by every instance whose role is not "worker"
    # OpenID Connect sign-in against the operator's identity provider (none: OIDC sign-in off).
    issuer: str | None = None  # discovery at {issuer}/.well-known/openid-configuration
    client_id: str | None = None
    client_secret: Secret | None = None  # none: a public client (PKCE only)
    redirect_url: str | None = None  # default: {scheme}://{host}/dashboard/auth/callback of the request
    scopes: tuple[str, ...] = ("openid", "profile", "email")  # asked of the identity provider
    tenant_claim: str = "tenant"  # the ID token's claim naming the user's tenant
    scope_claim: str = "scope"  # the ID token's claim listing permissions (space-separated or a list)
    read_scope: str = "read:hooks"  # a value of scope_claim: may look at hooks and deliveries
    write_scope: str = "write:hooks"  # ...: may also create, change, delete, test and replay
    admin_scope: str = "admin:tenants"  # ...: may use the operator view (every tenant)
    # Sessions (stored in the database: every instance knows them).
    session_lifetime: Duration = Duration(8 * 3600.0)  # however active, signed out after this
    session_idle_timeout: Duration = Duration(1800.0)  # signed out after this long without a request
    secure_cookies: bool = False  # mark cookies Secure even on plain HTTP (TLS ends at a proxy)
    idp_timeout: Duration = Duration(10.0)  # each request to the identity provider


@dataclass(frozen=True)
class EventsSettings:
    """Operational events (gateway/delivery/ops_events.py): `delivery.failing`, `hook.disabled`,
    ... sent, signed and durably, to the operator's endpoint and to each tenant's own."""

    operator_url: str | None = None  # none: no operator endpoint (tenants' endpoints still work)
    operator_secret: Secret | None = None  # its Standard Webhooks `whsec_` secret (required with a url)
    failing_after: int = 4  # `delivery.failing` once a delivery has failed this many attempts


@dataclass(frozen=True)
class RuntimeSettings:
    """Hosted hooks: tenants' Node.js scripts in a layered sandbox (gateway/runtime/, docs/RUNTIME.md)."""

    enabled: bool = False  # off: hooks with a `script` are refused; on: the host is probed at start
    node: str = "/usr/bin/node"  # node 20 or later (its permission flags)
    bwrap: str = "/usr/bin/bwrap"  # Debian's `bubblewrap`
    # Each tenant runs as its own host uid (gid the same number) from [uid_first, uid_first + uid_count):
    # no host account may use the range, and gateways sharing a host need ranges of their own.
    uid_first: int = 1_500_000
    uid_count: int = 10_000
    address_space_mib: int = 2048  # RLIMIT_AS of each process (node reserves ~0.7 GiB at start)
    cpu_seconds: int = 30  # RLIMIT_CPU over a process's life (it is recycled well before)
    open_files: int = 256  # RLIMIT_NOFILE
    file_size_mib: int = 1  # RLIMIT_FSIZE
    processes: int = 1024  # RLIMIT_NPROC: tasks (threads too) of one tenant's uid, all its hooks
    memory_mib: int = 256  # cgroup memory cap of each process where the host has cgroups; 0: none
    pids: int = 32  # cgroup tasks cap of each process (threads count); 0: none
    # The supervisor (gateway/runtime/supervisor.py): one process per hook, never shared.
    max_processes: int = 64  # live processes at most; the least recently used idle one makes room
    max_processes_per_tenant: int = 16  # ... of them one tenant's hooks may hold (the rest stay for others)
    recycle_calls: int = 1000  # a process is replaced after this many calls (and before cpu_seconds runs out)
    idle_timeout: Duration = Duration(300.0)  # a process idle this long is stopped
    # Scripts' outbound HTTP goes through an egress proxy per process (gateway/runtime/egress_proxy.py),
    # under [egress] allow_cidrs and connect_timeout, with these caps; egress_connections = 0: no network.
    egress_connections: int = 8  # tunnels (connections) a hook's process may have open at once
    egress_bytes_mib: int = 8  # bytes through one tunnel, both ways together; it is cut past this
    egress_timeout: Duration = Duration(60.0)  # a tunnel's whole life
    # Hooks' `dependencies` (gateway/runtime/dependencies.py): installed once per set with npm,
    # sandboxed, the registry its only way out; then read-only, shared by every hook of that set.
    npm: str = "/usr/bin/npm"  # npm's command (its package folder is bound into the install's sandbox)
    npm_registry: str = "https://registry.npmjs.org/"
    # PEM certificates npm trusts for an https registry instead of node's own list (a registry
    # with a private CA, or a TLS-inspecting proxy): e.g. "/etc/ssl/certs/ca-certificates.crt".
    npm_cafile: str = ""
    # Where installed sets live; "": `hook-dependencies` beside the SQLite database file, or
    # `data/hook-dependencies` with PostgreSQL. Every parent folder must be world-traversable.
    dependencies_dir: str = ""
    install_timeout: Duration = Duration(120.0)  # one install's wall time at most
    max_install_mib: int = 64  # an installed set's size at most (and any one file's while installing)
    max_dependencies_mib: int = 1024  # every installed set together at most; sets no hook uses are removed
    max_packages: int = 200  # packages in an installed set (its lockfile's) at most
    max_dependencies: int = 32  # entries in a hook's `dependencies` at most; 0: dependencies refused


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    egress: EgressSettings = field(default_factory=EgressSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    ratelimit: RateLimitSettings = field(default_factory=RateLimitSettings)
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    source: str = "<defaults>"

    def replace(self, **sections: Any) -> Settings:
        """A copy with some keys changed: `s.replace(delivery={"workers": 1})`."""
        raw: dict[str, dict[str, Any]] = {}
        for name, values in sections.items():
            raw[name] = dict(values)
        return _build(raw, self, f"{self.source} + overrides")


SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if f.name != "source"
}


class _EnvText(str):
    """The raw text of an environment variable: typed once the target key's type is known."""


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where)
    if isinstance(value, _EnvText):
        # A string key takes the text as it is (a secret "123456" or "true" stays a string);
        # any other key reads it as a TOML value (5, true, ["1s", "2s"]), else as a string.
        value = str(value) if hint in (str, Secret, Cidr) else _env_value(value)
    if hint is Duration:
        try:
            return Duration(parse_duration(value))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if hint is Cidr:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a CIDR string, got {value!r}")
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a CIDR such as \"10.0.0.0/8\"") from None
        return Cidr(value)
    if hint is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return Secret(value)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected an array, got {value!r}")
        return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return types.MappingProxyType(
            {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # pragma: no cover


def _build(
    raw: Mapping[str, Mapping[str, Any]], base: Settings, source: str, *, validate: bool = True
) -> Settings:
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name, {})
        hints = typing.get_type_hints(cls, globalns=globals())
        current = getattr(base, name)
        changes = {}
        for key, value in values.items():
            env = f" ({ENV_PREFIX}{name.upper()}_{key.upper()})" if isinstance(value, _EnvText) else ""
            if key not in hints:
                raise ConfigError(f"{source}: unknown key [{name}] {key}{env}")
            changes[key] = _convert(value, hints[key], f"{source}: [{name}] {key}{env}")
        sections[name] = dataclasses.replace(current, **changes)
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}]")
    settings = Settings(**sections, source=source)
    if validate:
        _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.server.role not in ("all", "api", "worker"):
        raise ConfigError(f"{s.source}: [server] role must be \"all\", \"api\" or \"worker\"")
    if s.server.mode not in ("development", "production"):
        raise ConfigError(f"{s.source}: [server] mode must be \"development\" or \"production\"")
    if not s.database.url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(f"{s.source}: [database] url must start with sqlite:// or postgresql://")
    if s.auth.hs256_secret is None and s.auth.jwks_file is None:
        raise ConfigError(f"{s.source}: [auth] needs hs256_secret and/or jwks_file")
    if not s.delivery.retry_schedule:
        raise ConfigError(f"{s.source}: [delivery] retry_schedule cannot be empty")
    if not 0 <= s.delivery.jitter < 1:
        raise ConfigError(f"{s.source}: [delivery] jitter must be in [0, 1)")
    for key in ("workers", "batch", "default_max_concurrency", "tenant_max_in_flight"):
        if getattr(s.delivery, key) < 1:
            raise ConfigError(f"{s.source}: [delivery] {key} must be at least 1")
    d = s.delivery
    if not 0 < d.throttle_floor <= d.throttle_max <= d.max_pause:
        raise ConfigError(f"{s.source}: [delivery] needs 0 < throttle_floor <= throttle_max <= max_pause")
    if s.sync.max_in_flight < 1:
        raise ConfigError(f"{s.source}: [sync] max_in_flight must be at least 1")
    rl = s.ratelimit
    for key in ("management_rate", "ingest_rate", "management_burst", "ingest_burst"):
        if getattr(rl, key) <= 0:
            raise ConfigError(f"{s.source}: [ratelimit] {key} must be above 0")
    for key in ("hooks_per_point", "hooks_per_tenant", "replays_per_hour"):
        if getattr(s.quotas, key) < 1:
            raise ConfigError(f"{s.source}: [quotas] {key} must be at least 1")
    if s.server.max_body_bytes < 1024:
        raise ConfigError(f"{s.source}: [server] max_body_bytes must be at least 1024")
    if not 0 < s.server.body_timeout <= 3600:
        raise ConfigError(f"{s.source}: [server] body_timeout must be above 0 and at most 1h")
    _validate_dashboard(s)
    _validate_events(s)
    _validate_runtime(s)
    _validate_tls(s)
    if s.egress.regions_updated_at is not None:
        try:
            datetime.fromisoformat(s.egress.regions_updated_at.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{s.source}: [egress] regions_updated_at must be an ISO 8601 time "
                              "such as \"2026-12-01T00:00:00Z\"") from None


def _validate_tls(s: Settings) -> None:
    """The TLS files are read now, so that a missing or unusable one stops start-up."""
    if s.egress.ca_file is not None:
        try:
            client_context(s.egress.ca_file)
        except ValueError as exc:
            raise ConfigError(f"{s.source}: [egress] ca_file {exc}") from None
    try:
        server_context(s.server.tls_cert, s.server.tls_key)
    except ValueError as exc:
        raise ConfigError(f"{s.source}: [server] {exc}") from None


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _validate_dashboard(s: Settings) -> None:
    d = s.dashboard
    where = f"{s.source}: [dashboard]"
    if d.session_lifetime <= 0 or d.session_idle_timeout <= 0 or d.idp_timeout <= 0:
        raise ConfigError(f"{where} session_lifetime, session_idle_timeout and idp_timeout must be above 0")
    if d.issuer is not None:
        issuer = urlsplit(d.issuer)
        if issuer.scheme not in ("https", "http") or not issuer.hostname or issuer.query or issuer.fragment:
            raise ConfigError(f"{where} issuer must be an https URL without query or fragment")
        if issuer.scheme == "http" and issuer.hostname not in LOOPBACK_HOSTS:
            raise ConfigError(f"{where} issuer must use https (plain http only on a loopback address)")
        if not d.client_id:
            raise ConfigError(f"{where} issuer needs client_id")
        if "openid" not in d.scopes:
            raise ConfigError(f"{where} scopes must include \"openid\"")
    if d.redirect_url is not None and urlsplit(d.redirect_url).scheme not in ("https", "http"):
        raise ConfigError(f"{where} redirect_url must be an http(s) URL")
    for key in ("tenant_claim", "scope_claim", "read_scope", "write_scope", "admin_scope"):
        if not getattr(d, key):
            raise ConfigError(f"{where} {key} cannot be empty")


def _validate_events(s: Settings) -> None:
    from .signing import SECRET_PREFIX, decode_secret  # noqa: PLC0415 - settings stay light to import

    e = s.events
    where = f"{s.source}: [events]"
    if e.failing_after < 1:
        raise ConfigError(f"{where} failing_after must be at least 1")
    if s.delivery.disable_after <= 0:
        raise ConfigError(f"{s.source}: [delivery] disable_after must be above 0")
    if e.operator_url is not None:
        url = urlsplit(e.operator_url)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ConfigError(f"{where} operator_url must be an http(s) URL")
        secret = e.operator_secret.get() if e.operator_secret is not None else ""
        try:
            decode_secret(secret)
        except ValueError:
            secret = ""
        if not secret.startswith(SECRET_PREFIX):
            raise ConfigError(f"{where} operator_url needs operator_secret, a Standard Webhooks whsec_ key")


# Lowest values of [runtime] limits under which node cannot start or run a hook at all.
_RUNTIME_MINIMUMS = {"address_space_mib": 1024, "cpu_seconds": 1, "open_files": 32, "file_size_mib": 0,
                     "processes": 64, "memory_mib": 0, "pids": 0}


def _validate_runtime(s: Settings) -> None:
    r = s.runtime
    where = f"{s.source}: [runtime]"
    if r.uid_first < 1000 or r.uid_count < 1 or r.uid_first + r.uid_count > 2**31:
        raise ConfigError(f"{where} uid_first and uid_count must give a range of uids in [1000, 2^31)")
    for key, lowest in _RUNTIME_MINIMUMS.items():
        if getattr(r, key) < lowest:
            raise ConfigError(f"{where} {key} must be at least {lowest}")
    if r.max_processes < 1 or r.recycle_calls < 1 or r.idle_timeout <= 0:
        raise ConfigError(f"{where} max_processes and recycle_calls must be at least 1, idle_timeout above 0")
    if r.max_processes_per_tenant < 1:
        raise ConfigError(f"{where} max_processes_per_tenant must be at least 1")
    if r.egress_connections < 0 or r.egress_bytes_mib < 1 or r.egress_timeout <= 0:
        raise ConfigError(f"{where} egress_connections must be at least 0, egress_bytes_mib at least 1, "
                          "egress_timeout above 0")
    if 0 < r.memory_mib < 64 or 0 < r.pids < 16:
        raise ConfigError(f"{where} memory_mib must be 0 or at least 64, pids 0 or at least 16")
    for key in ("node", "bwrap", "npm"):
        if not getattr(r, key).startswith("/"):
            raise ConfigError(f"{where} {key} must be an absolute path")
    if r.npm_cafile and not r.npm_cafile.startswith("/"):
        raise ConfigError(f"{where} npm_cafile must be an absolute path (or \"\": node's own CA list)")
    registry = urlsplit(r.npm_registry)
    if registry.scheme not in ("https", "http") or not registry.hostname or registry.query \
            or registry.fragment:
        raise ConfigError(f"{where} npm_registry must be an http(s) URL without query or fragment")
    if r.install_timeout <= 0 or r.max_install_mib < 1 or r.max_packages < 1 or r.max_dependencies < 0:
        raise ConfigError(f"{where} install_timeout must be above 0, max_install_mib and max_packages at "
                          "least 1, max_dependencies at least 0")
    if r.max_dependencies_mib < r.max_install_mib:
        raise ConfigError(f"{where} max_dependencies_mib must be at least max_install_mib")


def _env_value(text: str) -> Any:
    """Environment values are TOML values when they parse as one, else plain strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _from_env(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    raw: dict[str, dict[str, Any]] = {}
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            raise ConfigError(f"environment: unknown setting {name}")
        raw.setdefault(section, {})[key] = _EnvText(text)
    return raw


def load(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), then apply environment overrides."""
    env = os.environ if environ is None else environ
    base = _DEFAULTS
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        for name, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{p}: [{name}] must be a table")
        # Cross-key rules are checked once the environment has been applied too.
        base = _build(data, _DEFAULTS, str(p), validate=False)
        source = str(p)
    overrides = _from_env(env)
    if overrides:
        return _build(overrides, base, f"{source} + environment")
    _validate(base)
    return base


_DEFAULTS = Settings()
