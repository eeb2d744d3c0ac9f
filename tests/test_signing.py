"""Standard Webhooks signing: the official test vector, the reference library, our verify."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.errors import GatewayError
from gateway.signing import (
    SignatureError,
    Signer,
    headers,
    new_signing_secret,
    sign,
    verify,
)

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_official_test_vector() -> None:
    assert sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET]) == VECTOR_SIGNATURE


def test_signer_matches_free_function_and_gives_three_headers() -> None:
    signer = Signer([VECTOR_SECRET])
    assert signer.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    assert signer.headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY) == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET]) == signer.headers(
        VECTOR_ID, VECTOR_TS, VECTOR_BODY
    )


def test_signer_is_reusable_across_messages() -> None:
    signer = Signer([VECTOR_SECRET])
    first = signer.sign("msg_1", VECTOR_TS, b"{}")
    assert signer.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    assert signer.sign("msg_1", VECTOR_TS, b"{}") == first


def test_new_signing_secret_is_whsec_of_32_random_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_signing_secret() != secret


def test_reference_library_verifies_our_headers() -> None:
    secret = new_signing_secret()
    body = b'{"user":{"id":"u1"}}'
    hdrs = headers("msg_abc", int(time.time()), body, [secret])
    assert Webhook(secret).verify(body, hdrs) == {"user": {"id": "u1"}}


def test_rotation_signature_verifies_with_each_secret_in_the_library() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    body = b'{"scope":[]}'
    hdrs = headers("msg_rot", int(time.time()), body, [new, old])
    parts = hdrs["webhook-signature"].split(" ")
    assert len(parts) == 2 and all(p.startswith("v1,") for p in parts)
    assert parts[0] == sign("msg_rot", int(hdrs["webhook-timestamp"]), body, [new])
    Webhook(old).verify(body, hdrs)
    Webhook(new).verify(body, hdrs)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, hdrs)


def test_verify_accepts_our_headers() -> None:
    now = 1_700_000_000
    secret = new_signing_secret()
    verify(b"{}", headers("msg_1", now, b"{}", [secret]), secret, now=now)


def test_verify_accepts_the_test_vector_and_any_header_case() -> None:
    hdrs = {
        "Webhook-Id": VECTOR_ID,
        "Webhook-Timestamp": str(VECTOR_TS),
        "WEBHOOK-SIGNATURE": VECTOR_SIGNATURE,
    }
    verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS + 10)


def test_verify_accepts_if_any_of_several_signatures_matches() -> None:
    now = 1_700_000_000
    mine, other = new_signing_secret(), new_signing_secret()
    hdrs = headers("msg_1", now, b"{}", [other, mine])
    verify(b"{}", hdrs, mine, now=now)
    verify(b"{}", hdrs, other, now=now)


def test_verify_refuses_a_tampered_body() -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(b'{"test": 2432232315}', hdrs, VECTOR_SECRET, now=VECTOR_TS)


def test_verify_refuses_a_wrong_secret() -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    with pytest.raises(SignatureError):
        verify(VECTOR_BODY, hdrs, new_signing_secret(), now=VECTOR_TS)


def test_verify_refuses_a_changed_id() -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    hdrs["webhook-id"] = "msg_other"
    with pytest.raises(SignatureError):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS)


def test_verify_refuses_an_old_timestamp() -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    with pytest.raises(SignatureError, match="too old"):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS + 301)
    verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS + 300)


def test_verify_refuses_a_future_timestamp() -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    with pytest.raises(SignatureError, match="too new"):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS - 301)


def test_verify_tolerance_is_configurable() -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    with pytest.raises(SignatureError):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS + 11, tolerance_s=10)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_refuses_missing_headers(missing: str) -> None:
    hdrs = headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY, [VECTOR_SECRET])
    del hdrs[missing]
    with pytest.raises(SignatureError, match=missing):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS)


@pytest.mark.parametrize(
    "signature", ["v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,not base64!", "junk"]
)
def test_verify_refuses_malformed_or_other_version_signatures(signature: str) -> None:
    hdrs = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": signature}
    with pytest.raises(SignatureError):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS)


def test_verify_refuses_a_non_numeric_timestamp() -> None:
    hdrs = {"webhook-id": VECTOR_ID, "webhook-timestamp": "soon", "webhook-signature": VECTOR_SIGNATURE}
    with pytest.raises(SignatureError, match="timestamp"):
        verify(VECTOR_BODY, hdrs, VECTOR_SECRET, now=VECTOR_TS)


def test_signature_error_is_a_gateway_error() -> None:
    assert issubclass(SignatureError, GatewayError)


def test_signer_needs_secrets() -> None:
    with pytest.raises(ValueError):
        Signer([])
    with pytest.raises(TypeError):
        Signer(VECTOR_SECRET)
    with pytest.raises(ValueError):
        Signer(["whsec_"])
