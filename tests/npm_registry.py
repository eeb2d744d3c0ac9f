"""A loopback npm registry for the dependency installs' tests: packuments and tarballs built in
the test (tarfile), every request recorded, and faults on demand (a hang, a tarball served from
elsewhere). npm reaches it through the gateway's egress proxy, as it would the real registry.

    registry = NpmRegistry(); await registry.start()
    registry.publish("greet", "1.0.0", {"index.js": "module.exports = () => 'hi';"})
    ... [runtime] npm_registry = registry.url ...
    registry.requests   # every path asked for, in order
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import ssl
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

RAN_PATH = "/ran"  # what an install script that ran would ask for (it never should)


def tarball(files: dict[str, str | bytes], *, mode: int = 0o644) -> bytes:
    """A package tarball: gzip'd tar with every file under `package/`, as `npm pack` makes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            info.mode = mode
            info.mtime = 499162500  # npm's own fixed time (1985-10-26)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def folder_files(folder: Path) -> dict[str, str | bytes]:
    """Every file under `folder`, by path relative to it (to publish an installed package again)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class NpmRegistry:
    host: str = "127.0.0.1"
    requests: list[str] = field(default_factory=list)
    hang: bool = False  # every request waits, unanswered, until the registry closes
    tls: ssl.SSLContext | None = None  # served over https with this server context
    name: str = ""  # the host in its URLs (e.g. "localhost", for a certificate's name); "": `host`
    _packuments: dict[str, dict[str, Any]] = field(default_factory=dict)
    _tarballs: dict[str, bytes] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.name or self.host}:{self.port}/"

    async def start(self) -> NpmRegistry:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def publish(self, name: str, version: str, files: dict[str, str | bytes] | None = None, *,
                dependencies: dict[str, str] | None = None, scripts: dict[str, str] | None = None,
                tarball_base: str | None = None) -> bytes:
        """Add `name@version` (its package.json made here unless `files` has one) and make it the
        `latest`; `tarball_base`: the packument points its tarball there instead (another host)."""
        manifest: dict[str, Any] = {"name": name, "version": version, "main": "index.js"}
        if dependencies:
            manifest["dependencies"] = dependencies
        if scripts:
            manifest["scripts"] = scripts
        content = dict(files or {})
        content.setdefault("package.json", json.dumps(manifest, indent=2))
        data = tarball(content)
        file_name = f"{name.rsplit('/', 1)[-1]}-{version}.tgz"
        tar_path = f"{name}/-/{file_name}"
        self._tarballs[tar_path] = data
        base = tarball_base or self.url
        packument = self._packuments.setdefault(name, {"name": name, "dist-tags": {}, "versions": {}})
        packument["versions"][version] = {
            **manifest,
            "dist": {
                "tarball": base + tar_path,
                "shasum": hashlib.sha1(data).hexdigest(),  # noqa: S324 - npm's legacy checksum
                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
            },
        }
        packument["dist-tags"]["latest"] = version
        return data

    def downloads(self) -> list[str]:
        return [p for p in self.requests if p.endswith(".tgz")]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = urllib.parse.unquote(request.path)
        self.requests.append(path)
        if self.hang:
            await self._closing.wait()
            raise web.HTTPServiceUnavailable
        key = path.lstrip("/")
        if key in self._tarballs:
            return web.Response(body=self._tarballs[key], content_type="application/octet-stream")
        if key in self._packuments:
            return web.json_response(self._packuments[key])
        return web.json_response({"error": "Not found"}, status=404)
