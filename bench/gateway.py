"""The gateway under test, as a subprocess: a generated TOML on a free loopback port and a
SQLite file in a temporary directory; tenants and hooks created through its own API."""

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

from .procs import Proc, free_port, spawn

TENANT = "bench"
TOKEN_TTL_S = 3600.0


def write_config(workdir: Path, port: int) -> Path:
    key = base64.b64encode(os.urandom(32)).decode()
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_timeout = "3s"
log_level = "warning"

[database]
url = "sqlite:///{workdir / 'gateway.db'}"

[auth]
hs256_secret = "{secrets.token_urlsafe(32)}"

[security]
encryption_key = "{key}"

[egress]
allow_http = true
allow_cidrs = ["127.0.0.0/8"]

[ratelimit]
management_rate = 10000.0
management_burst = 10000
ingest_rate = 10000000.0
ingest_burst = 10000000
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

    @classmethod
    def prepare(cls, workdir: Path) -> Gateway:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        return cls(workdir, write_config(workdir, port), port)

    @property
    def db_path(self) -> Path:
        return self.workdir / "gateway.db"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> settings_mod.Settings:
        return settings_mod.load(self.config, environ={})

    def start(self, core: int | None) -> Proc:
        self.proc = spawn(
            "gateway", [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)],
            core=core, log_dir=self.workdir, drop_env_prefix=settings_mod.ENV_PREFIX,
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

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, self.token((SCOPE_FORWARD,)), body)
