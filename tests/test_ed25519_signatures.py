"""Standard Webhooks `v1a` (Ed25519) signatures: a hook signs with a private key that never
leaves the gateway, receivers verify with its published `whpk_` public key, byte for byte as
the spec says (`v1a,<base64 signature of "{id}.{timestamp}.{body}">`), through rotations; `v1`
hooks still verify with the `standardwebhooks` library."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import backends
import pytest
from aiohttp.test_utils import TestServer
from conftest import Gateway, Received
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

from gateway.client import PostUserRegistrationEvent, Receiver
from gateway.client.ed25519 import Verifier
from gateway.signing import SignatureError, Signer, decode_private_key, new_signing_key, public_key_of

PUR = "post-user-registration"
EVENT = {
    "user": {"id": "u1", "email": "a@example.com", "user_metadata": {"plan": "pro"}},
    "context": {"connection": {"id": "con_1", "name": "db"}},
}
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# RFC 8032, section 7.1, TEST 1: an Ed25519 key pair and its signature of the empty message.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
RFC_WHSK = "whsk_" + base64.b64encode(RFC_SEED + RFC_PUBLIC).decode()
RFC_WHPK = "whpk_" + base64.b64encode(RFC_PUBLIC).decode()

# The spec's own example message (spec/standard-webhooks.md, "Signature scheme", minified). The
# spec publishes no key for its example `v1a` signature, so it cannot be checked; signed here with
# the RFC's key, Ed25519 being deterministic, the signature is this known answer.
SPEC_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
SPEC_TS = 1674087231
SPEC_BODY = (
    b'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",'
    b'"data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'
)
SPEC_V1A = "v1a,pbpYBMlty2hExn4zt0UTGb6BaP2Vq5AfyzjB9GGV3x/wCJKd8UjOCf8Qhaji6TKY9C5eNMnlF0GG4udaO6B7Ag=="
# The spec's v1 test vector (the reference libraries' tests), signed beside a v1a key.
V1_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
V1_ID, V1_TS, V1_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
V1_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def public_key(whpk: str) -> Ed25519PublicKey:
    assert whpk.startswith("whpk_")
    raw = base64.b64decode(whpk.removeprefix("whpk_"), validate=True)
    assert len(raw) == 32
    return Ed25519PublicKey.from_public_bytes(raw)


def signed_content(received: Received) -> bytes:
    """What the spec says is signed: `{webhook-id}.{webhook-timestamp}.{body}`, as received."""
    msg_id, timestamp = received.headers["webhook-id"], received.headers["webhook-timestamp"]
    return f"{msg_id}.{timestamp}.".encode() + received.body


def v1a_signatures(received: Received) -> list[bytes]:
    out = []
    for entry in received.headers["webhook-signature"].split(" "):
        version, _, encoded = entry.partition(",")
        if version == "v1a":
            out.append(base64.b64decode(encoded, validate=True))
    return out


def verifies(key: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        key.verify(signature, content)
    except InvalidSignature:
        return False
    return True


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def call(gw: Gateway, method: str, path: str, body: Any = None, tenant: str = "acme") -> Any:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return await gw.client.request(method, path, headers=gw.auth(tenant), **kwargs)


async def signing(gw: Gateway, hook_id: str, tenant: str = "acme") -> dict[str, Any]:
    resp = await call(gw, "GET", f"/api/v2/hooks/{hook_id}/signing-secret", tenant=tenant)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def published(gw: Gateway, hook_id: str, tenant: str = "acme") -> Any:
    """The receivers' endpoint, called without a token."""
    return await gw.client.get(f"/v1/signing-keys/{tenant}/{hook_id}")


async def deliver_one(gw: Gateway, rx: Any, count: int) -> Received:
    resp = await gw.forward(PUR, EVENT)
    assert resp.status == 202, await resp.text()
    return (await rx.wait_for(count))[count - 1]  # type: ignore[no-any-return]


# -- the key format and the signature, byte for byte ------------------------------------------


def test_whsk_is_the_rfc8032_seed_and_public_key_and_whpk_the_public_key() -> None:
    key = decode_private_key(RFC_WHSK)
    assert key.sign(b"") == RFC_EMPTY_SIGNATURE  # RFC 8032's answer: the key is the RFC's
    assert public_key_of(RFC_WHSK) == RFC_WHPK
    # the bare 32-byte seed is read too; a public half that is not the seed's is refused
    assert public_key_of("whsk_" + base64.b64encode(RFC_SEED).decode()) == RFC_WHPK
    with pytest.raises(ValueError, match="does not match"):
        decode_private_key("whsk_" + base64.b64encode(RFC_SEED + bytes(32)).decode())


def test_new_v1a_key_is_base64_of_64_bytes_and_its_public_key_signs_for_it() -> None:
    whsk = new_signing_key("v1a")
    raw = base64.b64decode(whsk.removeprefix("whsk_"), validate=True)
    assert whsk.startswith("whsk_") and len(raw) == 64
    assert Ed25519PrivateKey.from_private_bytes(raw[:32]).public_key().public_bytes_raw() == raw[32:]
    assert public_key_of(whsk) == "whpk_" + base64.b64encode(raw[32:]).decode()
    assert new_signing_key("v1a") != whsk


def test_the_spec_example_signed_v1a_is_the_known_answer_and_verifies_with_cryptography() -> None:
    header = Signer([RFC_WHSK]).sign(SPEC_ID, SPEC_TS, SPEC_BODY)
    assert header == SPEC_V1A
    version, _, encoded = header.partition(",")
    signature = base64.b64decode(encoded, validate=True)
    assert version == "v1a" and len(signature) == 64
    content = f"{SPEC_ID}.{SPEC_TS}.".encode() + SPEC_BODY
    Ed25519PublicKey.from_public_bytes(RFC_PUBLIC).verify(signature, content)  # raises if not
    assert not verifies(Ed25519PublicKey.from_public_bytes(RFC_PUBLIC), signature, content + b" ")


def test_v1_and_v1a_keys_sign_side_by_side_each_in_its_own_format() -> None:
    header = Signer([RFC_WHSK, V1_SECRET]).sign(V1_ID, V1_TS, V1_BODY)
    v1a, v1 = header.split(" ")
    assert v1 == V1_SIGNATURE  # the spec's v1 test vector, unchanged beside a v1a key
    assert v1a.startswith("v1a,")
    content = f"{V1_ID}.{V1_TS}.".encode() + V1_BODY
    assert verifies(public_key(RFC_WHPK), base64.b64decode(v1a.removeprefix("v1a,")), content)


# -- deliveries to a real receiver ------------------------------------------------------------


async def test_v1a_delivery_verifies_with_cryptography_against_the_published_public_key(
    gateway: Gateway, make_receiver: Any
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True, signatureScheme="v1a")
    assert hook["signatureScheme"] == "v1a"

    answer = await signing(gateway, hook["id"])
    assert answer["scheme"] == "v1a" and answer["previous"] == []
    assert answer["publicKey"] == answer["secret"] and answer["publicKey"].startswith("whpk_")
    resp = await published(gateway, hook["id"])
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"].startswith("public")
    keys = (await resp.json())["keys"]
    assert [k["publicKey"] for k in keys] == [answer["publicKey"]] and keys[0]["expiresAt"] is None
    key = public_key(keys[0]["publicKey"])

    received = await deliver_one(gateway, rx, 1)

    entries = received.headers["webhook-signature"].split(" ")
    assert len(entries) == 1 and entries[0].startswith("v1a,")
    (signature,) = v1a_signatures(received)
    assert len(signature) == 64
    assert verifies(key, signature, signed_content(received))
    assert not verifies(key, signature, signed_content(received).replace(b"pro", b"free"))
    assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 300
    # the SDK's receiver helper and the plain-cryptography example accept it; a v1 library cannot
    event = Receiver(PostUserRegistrationEvent, secret=keys[0]["publicKey"]).verify(
        received.body, received.headers
    )
    assert event.webhook_id == received.headers["webhook-id"]
    example = load_example("receiver_v1a")
    assert example.verify_v1a(received.body, received.headers, [key])
    assert not example.verify_v1a(received.body + b" ", received.headers, [key])


async def test_after_a_rotation_each_valid_key_signs_and_each_signature_verifies(
    gateway: Gateway, make_receiver: Any
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True, signatureScheme="v1a")
    old = (await signing(gateway, hook["id"]))["publicKey"]
    before = await deliver_one(gateway, rx, 1)
    assert len(v1a_signatures(before)) == 1

    resp = await call(gateway, "POST", f"/api/v2/hooks/{hook['id']}/signing-secret/rotate")
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    new = rotated["publicKey"]
    assert new != old and rotated["scheme"] == "v1a"
    assert [(p["scheme"], p["publicKey"]) for p in rotated["previous"]] == [("v1a", old)]
    keys = (await (await published(gateway, hook["id"])).json())["keys"]
    assert [k["publicKey"] for k in keys] == [new, old]
    assert keys[0]["expiresAt"] is None and keys[1]["expiresAt"] == rotated["previous"][0]["expiresAt"]

    during = await deliver_one(gateway, rx, 2)

    signatures = v1a_signatures(during)
    assert len(signatures) == 2
    content = signed_content(during)
    # the first signature is the new key's, the second the old one's: each verifies with one key
    assert [verifies(public_key(new), s, content) for s in signatures] == [True, False]
    assert [verifies(public_key(old), s, content) for s in signatures] == [False, True]


async def test_a_rotation_without_grace_stops_the_old_key_at_once(
    gateway: Gateway, make_receiver: Any
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True, signatureScheme="v1a")
    old = (await signing(gateway, hook["id"]))["publicKey"]
    resp = await call(gateway, "POST", f"/api/v2/hooks/{hook['id']}/signing-secret/rotate",
                      {"gracePeriodSeconds": 0})
    assert resp.status == 200
    new = (await resp.json())["publicKey"]
    assert [k["publicKey"] for k in (await (await published(gateway, hook["id"])).json())["keys"]] == [new]

    received = await deliver_one(gateway, rx, 1)

    (signature,) = v1a_signatures(received)
    assert verifies(public_key(new), signature, signed_content(received))
    assert not verifies(public_key(old), signature, signed_content(received))


async def test_switching_a_v1_hook_to_v1a_signs_with_both_schemes_during_the_grace(
    gateway: Gateway, make_receiver: Any
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    whsec = await gateway.signing_secret(hook["id"])
    resp = await call(gateway, "PATCH", f"/api/v2/hooks/{hook['id']}", {"signatureScheme": "v1a"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["signatureScheme"] == "v1a"
    answer = await signing(gateway, hook["id"])
    assert answer["scheme"] == "v1a"
    assert [set(p) for p in answer["previous"]] == [{"scheme", "createdAt", "expiresAt"}]  # v1: no secret
    assert answer["previous"][0]["scheme"] == "v1"

    received = await deliver_one(gateway, rx, 1)

    assert [e.split(",")[0] for e in received.headers["webhook-signature"].split(" ")] == ["v1a", "v1"]
    Webhook(whsec).verify(received.body, received.headers)  # the v1 receiver keeps working
    (signature,) = v1a_signatures(received)
    assert verifies(public_key(answer["publicKey"]), signature, signed_content(received))


async def test_a_v1_hook_still_verifies_with_the_standardwebhooks_library(
    gateway: Gateway, make_receiver: Any
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    assert hook["signatureScheme"] == "v1"
    answer = await signing(gateway, hook["id"])
    assert answer["scheme"] == "v1" and answer["secret"].startswith("whsec_") and "publicKey" not in answer
    resp = await published(gateway, hook["id"])
    assert resp.status == 404  # a v1 secret is never published

    received = await deliver_one(gateway, rx, 1)

    assert received.headers["webhook-signature"].startswith("v1,")
    assert Webhook(answer["secret"]).verify(received.body, received.headers) == EVENT


# -- the private key stays private --------------------------------------------------------------


def _private_forms(whsk: str) -> list[str]:
    raw = base64.b64decode(whsk.removeprefix("whsk_"))
    seed = raw[:32]
    return [whsk, whsk.removeprefix("whsk_"), base64.b64encode(seed).decode(), seed.hex(),
            base64.urlsafe_b64encode(seed).decode().rstrip("=")]


async def test_the_private_key_is_encrypted_at_rest_and_in_no_answer_or_log(
    gateway: Gateway, make_receiver: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rx = await make_receiver()
    answers: list[str] = []

    async def keep(resp: Any) -> Any:
        answers.append(await resp.text())
        answers.append(str(dict(resp.headers)))
        return resp

    created = await keep(await call(gateway, "POST", "/api/v2/hooks", {
        "name": "ed", "triggerId": PUR, "url": rx.url(), "enabled": True, "signatureScheme": "v1a"}))
    hook_id = (await created.json())["id"]
    await keep(await call(gateway, "GET", f"/api/v2/hooks/{hook_id}/signing-secret"))
    await keep(await call(gateway, "POST", f"/api/v2/hooks/{hook_id}/signing-secret/rotate"))
    await keep(await call(gateway, "GET", f"/api/v2/hooks/{hook_id}"))
    await keep(await call(gateway, "GET", "/api/v2/hooks"))
    await keep(await published(gateway, hook_id))
    await deliver_one(gateway, rx, 1)
    await keep(await call(gateway, "POST", f"/api/v2/hooks/{hook_id}/test"))
    await keep(await call(gateway, "GET", "/api/v2/deliveries"))

    url = gateway.settings.database.url
    stored = backends.db_rows(url, "SELECT value, public_key FROM signing_secrets WHERE hook_id = ?", hook_id)
    assert len(stored) == 2
    cipher = gateway.svc.cipher
    private = [cipher.decrypt(value, f"signing-secret:{hook_id}") for value, _ in stored]
    assert all(p.startswith("whsk_") for p in private)
    assert {pk for _, pk in stored} == {public_key_of(p) for p in private}  # public keys stored in clear
    forms = [f for p in private for f in _private_forms(p)]
    rows = [str(r) for r in backends.db_rows(url, "SELECT * FROM signing_secrets")]
    rows += [str(r) for r in backends.db_rows(url, "SELECT * FROM hooks")]
    assert all(value.startswith("v1:") for value, _ in stored)
    if url.startswith("sqlite://"):
        db = Path(url.removeprefix("sqlite:///"))
        raw_db = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the file and its WAL
        for form in forms:
            assert form.encode() not in raw_db
        assert base64.b64decode(private[0].removeprefix("whsk_"))[:32] not in raw_db
    logs = caplog.text + "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for form in forms:
        assert all(form not in text for text in answers + rows)
        assert form not in logs
    assert "whsk_" not in "".join(answers) and "whsk_" not in logs


# -- isolation and bad input ------------------------------------------------------------------


async def test_a_tenant_cannot_read_another_tenants_public_key(gateway: Gateway) -> None:
    await gateway.create_tenant("globex")
    theirs = await gateway.create_hook(tenant="globex", name="theirs", signatureScheme="v1a")
    their_key = (await signing(gateway, theirs["id"], tenant="globex"))["publicKey"]

    for method, path, body in (
        ("GET", f"/api/v2/hooks/{theirs['id']}/signing-secret", None),
        ("POST", f"/api/v2/hooks/{theirs['id']}/signing-secret/rotate", None),
        ("PATCH", f"/api/v2/hooks/{theirs['id']}", {"signatureScheme": "v1"}),
        ("GET", f"/api/v2/hooks/{theirs['id']}", None),
    ):
        resp = await call(gateway, method, path, body, tenant="acme")
        assert resp.status == 404, (method, path)
        assert their_key not in await resp.text()

    across = await published(gateway, theirs["id"], tenant="acme")
    unknown = await published(gateway, "hk_00000000000000000000000000000000", tenant="acme")
    assert across.status == unknown.status == 404
    assert await across.json() == await unknown.json()  # no hint that the id exists elsewhere
    assert (await signing(gateway, theirs["id"], tenant="globex"))["publicKey"] == their_key  # untouched
    own = await published(gateway, theirs["id"], tenant="globex")
    assert own.status == 200 and (await own.json())["keys"][0]["publicKey"] == their_key


@pytest.mark.parametrize("value", ["v2", "V1A", "", "v1a ", 1, None, True, ["v1a"], {"v": "v1a"}])
async def test_a_bad_signature_scheme_is_a_json_400_on_create_and_update(
    gateway: Gateway, value: Any
) -> None:
    hook = await gateway.create_hook(name="existing")
    bad = {"name": "bad", "triggerId": PUR, "url": "http://127.0.0.1:9/", "signatureScheme": value}
    created = await call(gateway, "POST", "/api/v2/hooks", bad)
    updated = await call(gateway, "PATCH", f"/api/v2/hooks/{hook['id']}", {"signatureScheme": value})
    for resp in (created, updated):
        assert resp.status == 400
        body = await resp.json()
        assert set(body) == {"statusCode", "error", "message"} and body["statusCode"] == 400
        assert "signatureScheme" in body["message"]
    assert (await call(gateway, "GET", f"/api/v2/hooks/{hook['id']}/signing-secret")).status == 200
    after = await (await call(gateway, "GET", f"/api/v2/hooks/{hook['id']}")).json()
    assert after["signatureScheme"] == "v1" and after["updatedAt"] == hook["updatedAt"]
    listed = await (await call(gateway, "GET", "/api/v2/hooks")).json()
    assert [h["name"] for h in listed] == ["existing"]


# -- the receiver side ------------------------------------------------------------------------


def test_the_receiver_helper_takes_public_keys_refuses_a_private_one_and_checks_freshness() -> None:
    whsk = new_signing_key("v1a")
    headers = Signer([whsk]).headers("msg_1", 1_700_000_000, b"{}")
    Verifier([public_key_of(whsk)]).verify(b"{}", headers, now=1_700_000_000)
    Verifier([V1_SECRET, public_key_of(whsk)]).verify(b"{}", headers, now=1_700_000_000)  # mixed list
    with pytest.raises(SignatureError, match="too old"):
        Verifier([public_key_of(whsk)]).verify(b"{}", headers, now=1_700_000_000 + 301)
    with pytest.raises(SignatureError, match="no matching"):
        Verifier([public_key_of(new_signing_key("v1a"))]).verify(b"{}", headers, now=1_700_000_000)
    with pytest.raises(SignatureError, match="no matching"):  # a v1 secret does not accept v1a
        Verifier([V1_SECRET]).verify(b"{}", headers, now=1_700_000_000)
    with pytest.raises(ValueError, match="private"):
        Verifier([whsk])
    with pytest.raises((ValueError, binascii.Error)):
        Verifier(["whpk_not-base64!"])


async def test_the_example_receiver_answers_through_the_gateway_only_with_the_right_key(
    gateway: Gateway, aiohttp_server: Any
) -> None:
    example = load_example("receiver_v1a")
    ce = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
    hook = await gateway.create_hook(name="ce", triggerId="credentials-exchange", url="http://127.0.0.1:9/",
                                     signatureScheme="v1a")
    key = (await signing(gateway, hook["id"]))["publicKey"]
    right: TestServer = await aiohttp_server(example.make_app(key))
    wrong: TestServer = await aiohttp_server(example.make_app(public_key_of(new_signing_key("v1a"))))

    answers = []
    for server in (right, wrong):
        resp = await call(gateway, "PATCH", f"/api/v2/hooks/{hook['id']}",
                          {"url": str(server.make_url("/credentials-exchange")), "enabled": True})
        assert resp.status == 200
        answers.append(await (await gateway.forward("credentials-exchange", ce)).json())

    assert answers[0] == {"status": "success",
                          "data": {"scope": ["read", "read:reports"], "https://example.com/client": "c1"}}
    assert answers[1]["status"] == "error"
