"""The bare relay: the floor of any Python hop. One shared `ClientSession` forwards each POST
to the target and hands the answer back. `python -m bench.relay --port P --target URL
[--client aiohttp|transport]`; `transport` forwards with the gateway's own outbound client
(`gateway.transport`) instead, to show what that client costs against `ClientSession`."""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(target: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app[SESSION].post(
            target, data=body, headers={"Content-Type": request.content_type or "application/json"}
        ) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data, content_type=resp.content_type)

    app.cleanup_ctx.append(session_ctx)
    _routes(app, forward)
    return app


def make_transport_app(target: str) -> web.Application:
    from gateway.peers import Cidrs  # noqa: PLC0415 - only this variant needs the gateway
    from gateway.transport import Target, Transport  # noqa: PLC0415

    app = web.Application()
    loopback = Cidrs([ipaddress.ip_network("127.0.0.0/8")])
    to = Target.of(target, allow_http=True, allow_cidrs=loopback)
    key = web.AppKey("transport", Transport)

    async def transport_ctx(app: web.Application) -> AsyncIterator[None]:
        app[key] = Transport(allow_cidrs=loopback)
        yield
        await app[key].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.content_type or "application/json"}
        answer = await request.app[key].post(to, body, headers, timeout_s=30.0, body_cap=1 << 20)
        ctype = answer.headers.get("content-type", "application/json").split(";")[0]
        return web.Response(status=answer.status, body=answer.body, content_type=ctype)

    app.cleanup_ctx.append(transport_ctx)
    _routes(app, forward)
    return app


def _routes(app: web.Application, forward: object) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{tail:.*}", forward)  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--client", choices=("aiohttp", "transport"), default="aiohttp")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    app = make_app(args.target) if args.client == "aiohttp" else make_transport_app(args.target)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
