"""The gateway under test, as a subprocess: a generated TOML on a free loopback port and a
SQLite file in a temporary directory (or a PostgreSQL database, shared by several instances);
tenants and hooks created through its own API."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import settings as settings_mod
from gateway.auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE, mint

from . import backlog, pg
from .procs import Proc, free_port, spawn

TENANT = "bench"
TOKEN_TTL_S = 3600.0


@dataclass(frozen=True)
class Keys:
    """What instances of one deployment share: the token secret and the encryption key."""

    hs256: str
    encryption: str

    @classmethod
    def new(cls) -> Keys:
        return cls(secrets.token_urlsafe(32), base64.b64encode(os.urandom(32)).decode())


def write_config(workdir: Path, port: int, *, database_url: str | None = None,
                 keys: Keys | None = None, extra: str = "") -> Path:
    keys = keys or Keys.new()
    url = database_url or f"sqlite:///{workdir / 'gateway.db'}"
    migrate = '\nmigrate = "auto"' if url.startswith("postgresql") else ""
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_timeout = "3s"
log_level = "warning"

[database]
url = "{url}"{migrate}

[auth]
hs256_secret = "{keys.hs256}"

[security]
encryption_key = "{keys.encryption}"

[egress]
allow_http = true
allow_cidrs = ["127.0.0.0/8"]

[ratelimit]
management_rate = 10000.0
management_burst = 10000
ingest_rate = 10000000.0
ingest_burst = 10000000
{extra}
"""
    path = workdir / "gateway.toml"
    path.write_text(text)
    return path


@dataclass
class Gateway:
    workdir: Path
    config: Path
    port: int
    proc: Proc | None = None
    database_url: str | None = None  # None: the SQLite file `db_path`
    keys: Keys | None = None

    @classmethod
    def prepare(cls, workdir: Path, *, database_url: str | None = None, keys: Keys | None = None,
                extra: str = "") -> Gateway:
        """`database_url`: a PostgreSQL database; instances given the same `keys` accept each
        other's tokens and read each other's secrets; `extra`: more TOML tables."""
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        keys = keys or Keys.new()
        config = write_config(workdir, port, database_url=database_url, keys=keys, extra=extra)
        return cls(workdir, config, port, database_url=database_url, keys=keys)

    @property
    def db_path(self) -> Path:
        return self.workdir / "gateway.db"

    def count(self, status: str) -> int:
        """Deliveries in `status`, read from whichever database the gateway uses."""
        if self.database_url is None:
            return backlog.count(self.db_path, status)
        return pg.count(self.database_url, "SELECT COUNT(*) FROM deliveries WHERE status = $1", status)

    def count_kind(self, kind: str) -> int:
        if self.database_url is None:
            return backlog.count_kind(self.db_path, kind)
        return pg.count(self.database_url, "SELECT COUNT(*) FROM deliveries WHERE kind = $1", kind)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> settings_mod.Settings:
        return settings_mod.load(self.config, environ={})

    def start(self, core: int | None, *, env: dict[str, str] | None = None) -> Proc:
        """`env`: more environment variables for the gateway (the `OTEL_*` of tracing)."""
        self.proc = spawn(
            "gateway", [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)],
            core=core, log_dir=self.workdir, drop_env_prefix=settings_mod.ENV_PREFIX, env_extra=env,
        )
        self.proc.wait_http(f"{self.base}/readyz", timeout_s=120.0)
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    # -- tokens and the API ----------------------------------------------------------------

    def token(self, scopes: tuple[str, ...], tenant: str | None = TENANT) -> str:
        return mint(self.settings(), tenant=tenant, scopes=scopes, ttl_s=TOKEN_TTL_S)

    def service_header(self, tenant: str = TENANT) -> str:
        return f"Authorization: Bearer {self.token((SCOPE_FORWARD,), tenant=tenant)}"

    def _call(self, method: str, path: str, token: str, body: Any) -> Any:
        req = urllib.request.Request(  # noqa: S310 - loopback URL we built
            self.base + path, method=method, data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10.0) as resp:  # noqa: S310
            return json.loads(resp.read() or b"null")

    def create_tenant(self, tenant: str = TENANT) -> None:
        operator = self.token((SCOPE_ADMIN,), tenant=None)
        self._call("POST", "/api/v2/tenants", operator, {"id": tenant, "name": tenant})

    def create_hook(self, trigger: str, url: str, tenant: str = TENANT, **fields: Any) -> dict[str, Any]:
        token = self.token((SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE), tenant=tenant)
        body = {"name": f"bench {trigger}", "triggerId": trigger, "url": url, "enabled": True, **fields}
        hook: dict[str, Any] = self._call("POST", "/api/v2/hooks", token, body)
        return hook

    def create_script_hook(self, trigger: str, script: str, tenant: str = TENANT,
                           secrets: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        """A hosted hook (its `script` run by the gateway's runtime), then its secrets."""
        token = self.token((SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE), tenant=tenant)
        body = {"name": f"bench {trigger}", "triggerId": trigger, "script": script, "enabled": True, **fields}
        hook: dict[str, Any] = self._call("POST", "/api/v2/hooks", token, body)
        if secrets:
            self._call("POST", f"/api/v2/hooks/{hook['id']}/secrets", token, secrets)
        return hook

    def post(self, path: str, body: Any, tenant: str = TENANT) -> Any:
        return self._call("POST", path, self.token((SCOPE_FORWARD,), tenant=tenant), body)
