"""Settings: TOML + `GATEWAY_<SECTION>_<KEY>` overrides, durations, loud refusals naming the key
and the file, masked secrets, and what production mode demands."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from gateway import settings as settings_mod
from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.settings import Secret, Settings, load, parse_duration
from gateway.tls import client_context, server_context

BASE = '[auth]\nhs256_secret = "s3cr3t-value-for-tests"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text + "\n" + BASE)
    return path


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("3d", 259200.0),
        (5, 5.0),
        (2.5, 2.5),
        ("7", 7.0),
        ("1.5h", 5400.0),
        (" 10s ", 10.0),
        (0, 0.0),
    ],
)
def test_durations_are_numbers_of_seconds_or_strings_with_a_unit(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "5w", "-5s", -1, True, None, "", "s", [5]])
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_in_the_file_become_seconds(tmp_path: Path) -> None:
    s = load(
        write(
            tmp_path,
            '[delivery]\nretry_schedule = ["500ms", "5s", "5m", "2h", 3]\nmax_age = "3d"\n'
            '[sync]\ndeadline = "20s"\n',
        ),
        environ={},
    )
    assert s.delivery.retry_schedule == (0.5, 5.0, 300.0, 7200.0, 3.0)
    assert s.delivery.max_age == 259200.0
    assert s.sync.deadline == 20.0


# -- the file and the environment -------------------------------------------------------------


def test_the_contract_keys_load_from_toml(tmp_path: Path) -> None:
    s = load(
        write(
            tmp_path,
            """
[server]
host = "0.0.0.0"
port = 9090
[database]
url = "sqlite:///var/lib/gateway/gateway.db"
[ingest]
allowed_cidrs = ["10.0.0.0/8"]
trusted_proxies = ["192.0.2.1/32"]
[egress]
allow_http = true
allow_cidrs = ["10.1.0.0/16"]
source_address = "203.0.113.10"
[egress.regions]
us = ["203.0.113.10/32"]
[delivery]
ratelimit_remaining_threshold = 2
""",
        ),
        environ={},
    )
    assert (s.server.host, s.server.port) == ("0.0.0.0", 9090)
    assert s.database.url == "sqlite:///var/lib/gateway/gateway.db"
    assert s.auth.hs256_secret == Secret("s3cr3t-value-for-tests")
    assert s.ingest.allowed_cidrs == ("10.0.0.0/8",)
    assert s.egress.allow_http is True and s.egress.allow_cidrs == ("10.1.0.0/16",)
    assert dict(s.egress.regions) == {"us": ("203.0.113.10/32",)}
    assert s.delivery.ratelimit_remaining_threshold == 2
    assert s.source == str(tmp_path / "gateway.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server.port = 1  # type: ignore[misc]


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 9090\nhost = "127.0.0.1"\n')
    s = load(
        path,
        environ={
            "GATEWAY_SERVER_PORT": "7000",
            "GATEWAY_EGRESS_ALLOW_HTTP": "true",
            "GATEWAY_DELIVERY_RETRY_SCHEDULE": '["1s", "2m"]',
            "GATEWAY_DELIVERY_MAX_AGE": "2h",
            "GATEWAY_SYNC_DEADLINE": "15",
            "GATEWAY_INGEST_ALLOWED_CIDRS": '["10.0.0.0/8"]',
            "GATEWAY_CONFIG": "/ignored/path.toml",
            "OTHER_VARIABLE": "ignored",
        },
    )
    assert s.server.port == 7000
    assert s.server.host == "127.0.0.1"  # from the file
    assert s.egress.allow_http is True
    assert s.delivery.retry_schedule == (1.0, 120.0)
    assert s.delivery.max_age == 7200.0
    assert s.sync.deadline == 15.0
    assert s.ingest.allowed_cidrs == ("10.0.0.0/8",)


@pytest.mark.parametrize("value", ["123456", "true", "3.5", "[1]", "with spaces and = signs", '"quoted"'])
def test_secrets_from_the_environment_are_taken_as_they_are(tmp_path: Path, value: str) -> None:
    s = load(
        write(tmp_path, ""),
        environ={"GATEWAY_AUTH_HS256_SECRET": value, "GATEWAY_SECURITY_ENCRYPTION_KEY": value},
    )
    assert s.auth.hs256_secret == Secret(value)
    assert s.security.encryption_key == Secret(value)


def test_the_environment_alone_can_configure_the_gateway(tmp_path: Path) -> None:
    s = load(None, environ={"GATEWAY_AUTH_HS256_SECRET": "from-env", "GATEWAY_SERVER_PORT": "1234"})
    assert s.auth.hs256_secret is not None and s.auth.hs256_secret.get() == "from-env"
    assert s.server.port == 1234


# -- refusals name the key and the file -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[server]\nprot = 1\n", ("[server] prot", "unknown key")),
        ("[srever]\nport = 1\n", ("[srever]", "unknown section")),
        ('[server]\nport = "eighty"\n', ("[server] port", "integer")),
        ("[server]\nport = true\n", ("[server] port", "integer")),
        ('[egress]\nallow_http = "yes"\n', ("[egress] allow_http", "true or false")),
        ('[delivery]\nmax_age = "forever"\n', ("[delivery] max_age", "duration")),
        ('[delivery]\nretry_schedule = ["5s", "soon"]\n', ("[delivery] retry_schedule[1]", "duration")),
        ('[ingest]\nallowed_cidrs = ["not-a-cidr"]\n', ("[ingest] allowed_cidrs[0]", "CIDR")),
        ('[ingest]\nallowed_cidrs = "10.0.0.0/8"\n', ("[ingest] allowed_cidrs", "array")),
        ("[sync]\ndeadline = []\n", ("[sync] deadline", "duration")),
        ('server = "x"\n', ("[server]", "table")),
        ('[server]\nmode = "staging"\n', ("[server] mode",)),
        ('[database]\nurl = "mysql://x"\n', ("[database] url",)),
        ("[delivery]\nretry_schedule = []\n", ("[delivery] retry_schedule",)),
        ("[ratelimit]\nmanagement_rate = 0\n", ("[ratelimit] management_rate",)),
        ("[server]\nmax_body_bytes = 10\n", ("[server] max_body_bytes",)),
        ("[server\nport = 1\n", ("not valid TOML",)),
    ],
)
def test_a_bad_file_is_a_config_error_naming_the_key_and_the_file(
    tmp_path: Path, text: str, needles: tuple[str, ...]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("environ", "needles"),
    [
        ({"GATEWAY_SERVER_PROT": "1"}, ("[server] prot", "GATEWAY_SERVER_PROT")),
        ({"GATEWAY_SRVR_PORT": "1"}, ("GATEWAY_SRVR_PORT",)),
        ({"GATEWAY_SERVER": "1"}, ("GATEWAY_SERVER",)),
        ({"GATEWAY_SERVER_PORT": "eighty"}, ("[server] port", "GATEWAY_SERVER_PORT", "integer")),
        ({"GATEWAY_DELIVERY_MAX_AGE": "forever"}, ("[delivery] max_age", "GATEWAY_DELIVERY_MAX_AGE")),
    ],
)
def test_a_bad_environment_override_is_a_config_error_naming_the_variable(
    tmp_path: Path, environ: dict[str, str], needles: tuple[str, ...]
) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load(path, environ=environ)
    for needle in needles:
        assert needle in str(info.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load(tmp_path / "missing.toml", environ={})


def test_some_way_to_verify_tokens_is_required(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    with pytest.raises(ConfigError, match="hs256_secret and/or jwks_file"):
        load(path, environ={})


def test_the_example_config_documents_valid_keys() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    s = load(example, environ={"GATEWAY_AUTH_HS256_SECRET": "x"})
    assert isinstance(s, Settings)


def test_replace_changes_keys_and_checks_them(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    changed = s.replace(delivery={"workers": 1}, server={"port": 1})
    assert (changed.delivery.workers, changed.server.port) == (1, 1)
    assert s.delivery.workers != 1 or s.server.port != 1
    with pytest.raises(ConfigError, match="unknown key"):
        s.replace(server={"nope": 1})


# -- secrets are masked -----------------------------------------------------------------------


def test_secret_masks_its_repr_and_str(tmp_path: Path) -> None:
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert secret.get() == "hunter2-very-secret"
    s = load(
        write(tmp_path, '[security]\nencryption_key = "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleTE="\n'),
        environ={},
    )
    assert "s3cr3t-value-for-tests" not in repr(s)
    assert "a2V5LWtleS1" not in repr(s)


# -- production mode ----------------------------------------------------------------------------


def test_production_without_an_encryption_key_fails_at_create_app(tmp_path: Path) -> None:
    path = write(tmp_path, f'[server]\nmode = "production"\n[database]\nurl = "sqlite:///{tmp_path}/g.db"\n')
    s = load(path, environ={})
    with pytest.raises(ConfigError) as info:
        create_app(s)
    assert "encryption_key" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("key", ["not base64!", "c2hvcnQ="])
def test_a_bad_encryption_key_fails_at_create_app(tmp_path: Path, key: str) -> None:
    path = write(
        tmp_path, f'[database]\nurl = "sqlite:///{tmp_path}/g.db"\n[security]\nencryption_key = "{key}"\n'
    )
    with pytest.raises(ConfigError, match="encryption_key"):
        create_app(load(path, environ={}))


def test_development_without_a_key_warns_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, f'[database]\nurl = "sqlite:///{tmp_path}/g.db"\n')
    with caplog.at_level(logging.WARNING):
        create_app(load(path, environ={}))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("NO ENCRYPTION KEY" in r.getMessage() for r in warnings)


def test_nothing_reads_the_environment_after_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load(write(tmp_path, "[server]\nport = 1111\n"), environ={})
    monkeypatch.setenv("GATEWAY_SERVER_PORT", "2222")
    assert s.server.port == 1111
    assert (
        settings_mod.load(
            write(tmp_path, "[server]\nport = 1111\n"), environ={"GATEWAY_SERVER_PORT": "2222"}
        ).server.port
        == 2222
    )


# -- TLS files are read at load ---------------------------------------------------------------


def _pem_files(tmp_path: Path) -> dict[str, Path]:
    """A private CA, a server certificate of it with its key, a key of another certificate,
    an encrypted key, and a file that is not PEM."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    names = ("ca", "cert", "key", "other_key", "encrypted_key", "junk")
    files = {name: tmp_path / f"{name}.pem" for name in names}
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    ca.issue_cert("other.test").private_key_pem.write_to_path(str(files["other_key"]))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    files["encrypted_key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))
    files["junk"].write_text("not a certificate\n")
    return files


def test_tls_keys_load_and_default_to_none(tmp_path: Path) -> None:
    files = _pem_files(tmp_path)
    assert (load(write(tmp_path, ""), environ={}).egress.ca_file, Settings().server.tls_cert) == (None, None)
    s = load(write(tmp_path, f'[egress]\nca_file = "{files["ca"]}"\n[server]\ntls_cert = "{files["cert"]}"\n'
                             f'tls_key = "{files["key"]}"\n'), environ={})
    assert (s.egress.ca_file, s.server.tls_cert, s.server.tls_key) == tuple(
        str(files[k]) for k in ("ca", "cert", "key"))
    env = load(write(tmp_path, ""), environ={"GATEWAY_EGRESS_CA_FILE": str(files["ca"])})
    assert env.egress.ca_file == str(files["ca"])


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[egress]\nca_file = "{missing}"\n', ("[egress] ca_file", "no such file")),
        ('[egress]\nca_file = "{junk}"\n', ("[egress] ca_file", "not a PEM", "NO_CERTIFICATE_OR_CRL_FOUND")),
        ('[egress]\nca_file = "{dir}"\n', ("[egress] ca_file", "not a PEM bundle")),
        ('[server]\ntls_cert = "{cert}"\n', ("[server] tls_cert and tls_key go together",)),
        ('[server]\ntls_key = "{key}"\n', ("[server] tls_cert and tls_key go together",)),
        ('[server]\ntls_cert = "{missing}"\ntls_key = "{key}"\n', ("[server] tls_cert", "No such file")),
        ('[server]\ntls_cert = "{cert}"\ntls_key = "{missing}"\n', ("[server] tls_key", "No such file")),
        ('[server]\ntls_cert = "{junk}"\ntls_key = "{key}"\n', ("[server] tls_cert", "not a PEM")),
        ('[server]\ntls_cert = "{cert}"\ntls_key = "{other_key}"\n', ("KEY_VALUES_MISMATCH",)),
        ('[server]\ntls_cert = "{cert}"\ntls_key = "{encrypted_key}"\n', ("[server] tls_key", "encrypted")),
    ],
)
def test_an_unusable_tls_file_is_a_config_error_at_load(
    tmp_path: Path, text: str, needles: tuple[str, ...]
) -> None:
    files = {k: str(v) for k, v in _pem_files(tmp_path).items()}
    path = write(tmp_path, text.format(missing=tmp_path / "missing.pem", dir=tmp_path, **files))
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message
    assert "not a certificate" not in message  # the file's bytes are never quoted


def test_the_tls_contexts_refuse_anything_older_than_tls_1_2(tmp_path: Path) -> None:
    files = _pem_files(tmp_path)
    server = server_context(str(files["cert"]), str(files["key"]))
    assert server is not None
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = client_context(str(files["ca"]))
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
