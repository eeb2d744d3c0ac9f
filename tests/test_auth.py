"""Bearer tokens: every way a token can be wrong is a 401 with a JSON body; RS256 and ES256
tokens verify against a JWKS file; a missing scope is 403."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import HS256_SECRET, Gateway
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import TokenVerifier
from gateway.errors import ConfigError, Unauthorized
from gateway.settings import Settings

ISSUER = "https://auth.example.com/"
AUDIENCE = "hooks-gateway"
SCOPES = "read:hooks create:hooks update:hooks delete:hooks"

MakeGateway = Callable[..., Awaitable[Gateway]]


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "tester",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": SCOPES,
        "tenant": "acme",
    }
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), HS256_SECRET, algorithm="HS256")


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def status_and_body(gw: Gateway, headers: dict[str, str]) -> tuple[int, Any]:
    resp = await gw.client.get("/api/v2/hooks", headers=headers)
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- refusals -----------------------------------------------------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _refused_tokens() -> dict[str, dict[str, str]]:
    now = int(time.time())
    return {
        "alg none": bearer(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims())}."),
        "alg None spelled": bearer(f"{_b64({'alg': 'None'})}.{_b64(claims())}."),
        "expired": bearer(hs256(exp=now - 3600, iat=now - 7200, nbf=now - 7200)),
        "nbf in the future": bearer(hs256(nbf=now + 3600)),
        "wrong aud": bearer(hs256(aud="someone-else")),
        "wrong iss": bearer(hs256(iss="https://evil.example.com/")),
        "no exp": bearer(hs256(exp=None)),
        "no aud": bearer(hs256(aud=None)),
        "wrong key": bearer(jwt.encode(claims(), "another-secret-that-is-long-enough!!", algorithm="HS256")),
        "HS512": bearer(jwt.encode(claims(), HS256_SECRET * 2, algorithm="HS512")),
        "tampered payload": bearer(
            ".".join([hs256().split(".")[0], _b64(claims(tenant="globex")), hs256().split(".")[2]])
        ),
        "malformed": bearer("not.a.jwt"),
        "garbage": bearer("%%%"),
        "two parts": bearer("abc.def"),
        "RS256 when only HS256": bearer(jwt.encode(claims(), RSA_KEY, algorithm="RS256")),
        "ES256 when only HS256": bearer(jwt.encode(claims(), EC_KEY, algorithm="ES256")),
        "missing header": {},
        "empty header": {"Authorization": ""},
        "basic scheme": {"Authorization": "Basic dXNlcjpwdw=="},
        "bearer without token": {"Authorization": "Bearer "},
        "scope not a string": bearer(hs256(scope=5)),
        "tenant not a string": bearer(hs256(tenant=["acme"])),
    }


@pytest.mark.parametrize("case", list(_refused_tokens()))
async def test_bad_tokens_are_401_with_a_json_body(gateway: Gateway, case: str) -> None:
    status, body = await status_and_body(gateway, _refused_tokens()[case])
    assert status == 401, body
    assert set(body) == {"statusCode", "error", "message"}
    assert body["statusCode"] == 401 and body["error"] == "Unauthorized"
    assert "Traceback" not in body["message"]


async def test_a_valid_token_is_accepted(gateway: Gateway) -> None:
    status, body = await status_and_body(gateway, bearer(hs256()))
    assert status == 200 and body == []


async def test_a_token_within_the_leeway_is_accepted(gateway: Gateway) -> None:
    now = int(time.time())
    status, _ = await status_and_body(gateway, bearer(hs256(exp=now - 5, nbf=now + 5)))
    assert status == 200


async def test_a_token_for_an_unknown_tenant_is_401(gateway: Gateway) -> None:
    status, body = await status_and_body(gateway, bearer(hs256(tenant="nobody")))
    assert status == 401
    assert "nobody" in body["message"]


async def test_a_missing_scope_is_403(gateway: Gateway) -> None:
    status, body = await status_and_body(gateway, bearer(hs256(scope="create:hooks update:hooks")))
    assert status == 403
    assert body["statusCode"] == 403 and "read:hooks" in body["message"]
    status, _ = await status_and_body(gateway, bearer(hs256(scope=None)))
    assert status == 403


async def test_scope_may_be_a_list(gateway: Gateway) -> None:
    status, _ = await status_and_body(gateway, bearer(hs256(scope=["read:hooks"])))
    assert status == 200


async def test_ingest_refuses_bad_tokens_with_401(gateway: Gateway) -> None:
    for headers in ({}, bearer(hs256(aud="x", scope="forward:events")), bearer("junk")):
        resp = await gateway.client.post(
            "/v1/tenants/acme/triggers/post-user-registration",
            json={"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
            headers=headers,
        )
        assert resp.status == 401
        assert (await resp.json())["statusCode"] == 401


# -- RS256 / ES256 with a JWKS file --------------------------------------------------------


def write_jwks(path: Path, *entries: tuple[Any, str, str]) -> Path:
    keys = []
    for key, kid, alg in entries:
        algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        keys.append(jwk)
    path.write_text(json.dumps({"keys": keys}))
    return path


@pytest.fixture
def jwks_gateway(
    tmp_path: Path, make_gateway: MakeGateway, make_settings: Callable[..., Settings]
) -> MakeGateway:
    """A gateway whose [auth] has a JWKS file (and the HS256 secret unless told otherwise);
    tenant `acme` is created with an RS256 operator token."""

    async def make(hs256_secret: bool = True) -> Gateway:
        path = write_jwks(tmp_path / "jwks.json", (RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256"))
        settings = make_settings(auth={"jwks_file": str(path)})
        if not hs256_secret:
            settings = settings.replace(auth={"hs256_secret": None})
        gw = await make_gateway(settings)
        operator = jwt.encode(
            claims(tenant=None, scope="admin:tenants"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}
        )
        resp = await gw.client.post("/api/v2/tenants", json={"id": "acme"}, headers=bearer(operator))
        assert resp.status == 201, await resp.text()
        return gw

    return make


@pytest.mark.parametrize(("key", "kid", "alg"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256")])
async def test_asymmetric_tokens_verify_against_the_jwks_file(
    jwks_gateway: MakeGateway, key: Any, kid: str, alg: str
) -> None:
    gw = await jwks_gateway()
    token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
    status, body = await status_and_body(gw, bearer(token))
    assert status == 200, body
    # Without a kid the key is found by its algorithm.
    status, _ = await status_and_body(gw, bearer(jwt.encode(claims(), key, algorithm=alg)))
    assert status == 200
    # A token of a key that is not in the file is refused.
    stranger = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else (ec.generate_private_key(ec.SECP256R1()))
    )
    status, body = await status_and_body(
        gw, bearer(jwt.encode(claims(), stranger, algorithm=alg, headers={"kid": kid}))
    )
    assert status == 401 and body["statusCode"] == 401
    # An unknown kid is refused.
    status, _ = await status_and_body(
        gw, bearer(jwt.encode(claims(), key, algorithm=alg, headers={"kid": "x"}))
    )
    assert status == 401


async def test_with_a_jwks_file_expired_and_wrong_audience_rs256_tokens_are_refused(
    jwks_gateway: MakeGateway,
) -> None:
    gw = await jwks_gateway()
    now = int(time.time())
    for bad in (claims(exp=now - 3600), claims(aud="other"), claims(iss="https://evil/")):
        status, _ = await status_and_body(
            gw, bearer(jwt.encode(bad, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"}))
        )
        assert status == 401


async def test_hs256_is_refused_when_only_a_jwks_file_is_configured(jwks_gateway: MakeGateway) -> None:
    gw = await jwks_gateway(hs256_secret=False)
    status, _ = await status_and_body(gw, bearer(hs256()))
    assert status == 401
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    status, _ = await status_and_body(gw, bearer(token))
    assert status == 200


async def test_an_hs256_token_signed_with_the_public_key_is_refused(jwks_gateway: MakeGateway) -> None:
    """The classic algorithm-confusion attack: HMAC keyed with the RSA public key."""
    gw = await jwks_gateway()
    public_pem = RSA_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    payload = _b64(claims())
    for secret in (public_pem, RSAAlgorithm.to_jwk(RSA_KEY.public_key()).encode()):
        sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        status, _ = await status_and_body(gw, bearer(f"{header}.{payload}.{_b64(sig)}"))
        assert status == 401


# -- the verifier itself --------------------------------------------------------------------


def test_the_verifier_checks_times_with_the_injected_clock(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    t0 = 2_000_000_000  # a time pyjwt's own clock would call the future
    token = jwt.encode(claims(nbf=t0, iat=t0, exp=t0 + 600), HS256_SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="not yet valid"):
        TokenVerifier(settings, clock=lambda: t0 - 3600).verify(token)
    with pytest.raises(Unauthorized, match="expired"):
        TokenVerifier(settings, clock=lambda: t0 + 3600).verify(token)
    now = [float(t0 + 10)]
    verifier = TokenVerifier(settings, clock=lambda: now[0])
    principal = verifier.verify(token)
    assert principal.tenant == "acme" and "read:hooks" in principal.scopes
    # A verified token is reused from the cache, but never past its expiry (plus leeway).
    now[0] = t0 + 600 + settings.auth.leeway + 1
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(token)


@pytest.mark.parametrize("exp", ["soon", True, None, 1e400, [1]])
def test_a_time_claim_that_is_not_a_number_is_401(make_settings: Callable[..., Settings], exp: Any) -> None:
    payload = claims()
    payload["exp"] = exp
    token = jwt.encode(payload, HS256_SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        TokenVerifier(make_settings()).verify(token)


def test_a_jwks_file_that_is_missing_or_unusable_is_a_config_error(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        TokenVerifier(make_settings(auth={"jwks_file": str(tmp_path / "missing.json")}))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        TokenVerifier(make_settings(auth={"jwks_file": str(bad)}))
    hs_only = tmp_path / "hs.json"
    hs_only.write_text(json.dumps({"keys": [{"kty": "oct", "k": _b64(b"k" * 32), "alg": "HS256"}]}))
    with pytest.raises(ConfigError, match="no RS256 or ES256 key"):
        TokenVerifier(make_settings(auth={"jwks_file": str(hs_only)}))
