"""What a hosted hook's script gets and answers for each kind of body, through the supervisor and a
real sandboxed process: the runtime parses a JSON body itself, saving the compiler's read of it
(wreck, from a stream), and must answer exactly as that read would have: a body that does not
parse, or parses to nothing, still gets Auth0's compiler's own answer; a script that throws is
still an asynchronous exception, as after wreck's read. And no HTTP request is made up for it.
Needs what tests/test_hosted_hooks.py needs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Gateway
from test_hosted_hooks import hosted, runtime_settings, sample, sandbox_host, script_hook

from gateway.api import hook_test
from gateway.runtime.hosting import Hosting, start_hosting
from gateway.runtime.supervisor import HostedHook
from gateway.settings import RuntimeSettings

__all__ = ["hosted", "sandbox_host"]  # the fixtures, imported for this module's tests

UID_FIRST = 1_950_000  # a range of this file's own
SECRETS = {"auth0-extension-secret": "extension-secret", "CLAIM": "x"}  # noqa: S105 - test values
ECHO = """module.exports = function (client, scope, audience, context, cb) {
  cb(null, { body: context.webtask.body, claim: context.webtask.secrets.CLAIM, audience: audience });
};"""
THROWS = """module.exports = function (client, scope, audience, context, cb) {
  throw new Error('thrown by the hook');
};"""


@pytest.fixture
async def hosting(sandbox_host: None) -> AsyncIterator[Hosting]:
    hosting = await start_hosting(RuntimeSettings(**runtime_settings(uid_first=UID_FIRST)))
    assert hosting.refusal is None, hosting.refusal
    try:
        yield hosting
    finally:
        await hosting.close()


async def call(hosting: Hosting, script: str, body: bytes) -> tuple[int, Any]:
    hook = HostedHook("acme", f"hk-{abs(hash(script))}", "credentials-exchange", script, SECRETS)
    answer = await hosting.call(hook, body, timeout_s=20.0, body_cap=1 << 20)
    return answer.status, json.loads(answer.body)


async def test_a_json_body_reaches_the_script_parsed(hosting: Hosting) -> None:
    event = {"audience": "https://api.example.com/", "client": {"id": "c1"}, "scope": ["read"],
             "x": "é\u2028\"quoted\"", "n": 1.5e300}
    status, answer = await call(hosting, ECHO, json.dumps(event, ensure_ascii=False).encode())
    assert status == 200
    assert answer == {"statusCode": 200, "headers": {}, "status": "success",
                      "data": {"body": event, "claim": "x", "audience": event["audience"]}}


@pytest.mark.parametrize(("body", "name", "message"), [
    (b"{not json", "SyntaxError", "JSON"),
    (b"0", "Error", "Body received by extensibility point is not an object"),
    (b'"text"', "Error", "Body received by extensibility point is not an object"),
    (b"[]", "Error", "Body .client received by extensibility point is not an object"),
])
async def test_a_body_the_compiler_refuses_gets_the_compilers_own_answer(
    hosting: Hosting, body: bytes, name: str, message: str
) -> None:
    status, answer = await call(hosting, ECHO, body)
    assert status == 200 and answer["status"] == "error", answer
    # The compiler answers an Error's own properties: its message and its stack, named first
    assert answer["data"]["stack"].startswith(name + ":") and message in answer["data"]["message"], answer


@pytest.mark.parametrize("body", [b"", b"null"])
async def test_an_empty_or_null_body_fails_in_the_compiler_as_it_always_did(
    hosting: Hosting, body: bytes
) -> None:
    # wreck reads both as null, which passes the compiler's `typeof body !== 'object'` test and then
    # fails on `body.client`: Auth0's compiler's own behaviour, kept.
    status, answer = await call(hosting, ECHO, body)
    assert status == 500
    assert answer["error"] == "Script generated an unhandled asynchronous exception."
    assert answer["name"] == "TypeError" and "reading 'client'" in answer["message"], answer


async def test_a_script_that_throws_is_an_asynchronous_exception(hosting: Hosting) -> None:
    status, answer = await call(hosting, THROWS, b'{"audience":"a","client":{"id":"c"}}')
    assert status == 500
    assert answer["error"] == "Script generated an unhandled asynchronous exception."
    assert answer["message"] == "thrown by the hook"


@pytest.mark.sqlite_only
async def test_a_hosted_hooks_test_run_lists_no_request_headers(hosted: Gateway) -> None:
    """A hosted hook's call is no HTTP request: nothing is signed for it, and the dashboard's test
    run shows no request headers (it listed a signature that was never sent)."""
    hook = await script_hook(hosted, "credentials-exchange", sample("ce-add-claim"))
    run = await hook_test.run(hosted.svc, "acme", hook["id"], None)
    assert run.answer["statusCode"] == 200 and run.answer["error"] is None, run.answer
    assert run.request_headers == []
