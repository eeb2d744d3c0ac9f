"""Several gateway processes on one PostgreSQL database, for the tests of what must hold across
instances: each is `gateway serve` in a process of its own, on its own loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway import settings as settings_mod
from gateway.auth import (
    SCOPE_ADMIN,
    SCOPE_CREATE,
    SCOPE_DELETE,
    SCOPE_FORWARD,
    SCOPE_READ,
    SCOPE_UPDATE,
    mint,
)
from gateway.crypto import new_key

HS256_SECRET = "test-secret-that-is-long-enough-for-hs256"
SCOPES = (SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_DELETE, SCOPE_FORWARD)
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(sections: dict[str, dict[str, Any]]) -> str:
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items()) + "\n"
        for name, values in sections.items()
    )


@dataclass
class Instance:
    port: int
    proc: subprocess.Popen[bytes]
    config: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Deployment:
    """A database URL, a shared configuration, and the instances started on them."""

    database_url: str
    workdir: Path
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: list[Instance] = field(default_factory=list)
    key: str = field(default_factory=new_key)

    def sections(self, port: int, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        raw: dict[str, dict[str, Any]] = {
            "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": "2s"},
            "database": {"url": self.database_url, "migrate": "auto"},
            "auth": {"hs256_secret": HS256_SECRET},
            "security": {"encryption_key": self.key},
            "egress": {"allow_http": True, "allow_cidrs": ["127.0.0.0/8", "::1/128"]},
            "delivery": {"retry_schedule": ["1s", "2s", "3s"], "poll_interval": "30s", "jitter": 0.0},
        }
        for source in (self.overrides, extra or {}):
            for name, values in source.items():
                raw.setdefault(name, {}).update(values)
        return raw

    def settings(self) -> settings_mod.Settings:
        path = self.workdir / "tokens.toml"
        path.write_text(config_text(self.sections(8080)))
        return settings_mod.load(path, environ={})

    def token(self, tenant: str | None = "acme", scopes: tuple[str, ...] = SCOPES) -> str:
        return mint(self.settings(), tenant=tenant, scopes=scopes, ttl_s=3600)

    def auth(self, tenant: str | None = "acme", scopes: tuple[str, ...] = SCOPES) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, scopes)}"}

    def operator(self) -> dict[str, str]:
        return self.auth(None, (SCOPE_ADMIN,))

    async def start(
        self, extra: dict[str, dict[str, Any]] | None = None, *, port: int | None = None
    ) -> Instance:
        port = port or free_port()
        config = self.workdir / f"gateway-{port}.toml"
        config.write_text(config_text(self.sections(port, extra)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        log = open(self.workdir / f"gateway-{port}.log", "wb")  # noqa: SIM115, ASYNC230 - a local file
        proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own entry point, started once
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        instance = Instance(port=port, proc=proc, config=config)
        self.instances.append(instance)
        await self._wait_ready(instance)
        return instance

    async def _wait_ready(self, instance: Instance) -> None:
        end = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                if instance.proc.poll() is not None:
                    raise AssertionError(f"gateway exited: {self.log_of(instance)[-3000:]}")
                try:
                    async with http.get(f"{instance.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"gateway not ready: {self.log_of(instance)[-3000:]}")

    def log_of(self, instance: Instance) -> str:
        return (self.workdir / f"gateway-{instance.port}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.proc.poll() is None:
                instance.proc.terminate()
        for instance in self.instances:
            try:
                instance.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                instance.proc.kill()
                instance.proc.wait(timeout=10)
        self.instances.clear()
