"""`examples/` is code that runs: the example receiver, behind the gateway, verifies the
gateway's signature and its answer reaches the auth server."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from aiohttp.test_utils import TestServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_receiver_verifies_the_signature_and_answers_through_the_gateway(
    gateway, aiohttp_server
) -> None:
    receiver = load("receiver")
    hook = await gateway.create_hook(name="ce", triggerId="credentials-exchange", url="http://127.0.0.1:9/")
    server: TestServer = await aiohttp_server(receiver.make_app(await gateway.signing_secret(hook["id"])))
    resp = await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}",
        json={"url": str(server.make_url("/credentials-exchange")), "enabled": True},
        headers=gateway.auth(),
    )
    assert resp.status == 200

    answer = await (await gateway.forward("credentials-exchange", CE)).json()

    assert answer == {
        "status": "success",
        "data": {"scope": ["read", "read:reports"], "https://example.com/client": "c1"},
    }


async def test_example_receiver_refuses_a_request_signed_with_another_secret(gateway, aiohttp_server) -> None:
    receiver = load("receiver")
    hook = await gateway.create_hook(name="ce", triggerId="credentials-exchange", url="http://127.0.0.1:9/")
    other = await gateway.create_hook(
        name="other", triggerId="post-change-password", url="http://127.0.0.1:9/"
    )
    server: TestServer = await aiohttp_server(receiver.make_app(await gateway.signing_secret(other["id"])))
    await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}",
        json={"url": str(server.make_url("/credentials-exchange")), "enabled": True},
        headers=gateway.auth(),
    )

    answer = await (await gateway.forward("credentials-exchange", CE)).json()

    assert answer["status"] == "error"
    assert answer["data"]["name"] == "ServerError"
    assert "'ce'" in answer["data"]["message"]
