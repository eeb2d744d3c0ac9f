"""TLS contexts built from the settings: the outbound client's and the gateway's own server's.

Outbound, receivers' certificates are always verified (chain and name) against the system's
CAs, plus the private CA of `[egress] ca_file` if one is set: it adds trust, it never replaces
the system's. Inbound, `[server] tls_cert` / `tls_key` let the gateway serve HTTPS itself.
Both refuse anything older than TLS 1.2. A file that cannot be used raises `ValueError` with
the reason; the settings turn it into a `ConfigError` at start-up.
"""

from __future__ import annotations

import ssl

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The context outbound connections verify receivers with: the system's CAs and `ca_file`."""
    context = ssl.create_default_context()
    context.minimum_version = MINIMUM_TLS_VERSION
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except FileNotFoundError:
            raise ValueError(f"{ca_file}: no such file") from None
        except (OSError, ssl.SSLError) as exc:  # ssl.SSLError: not PEM, or no certificate in it
            raise ValueError(f"{ca_file}: not a PEM bundle of CA certificates ({_reason(exc)})") from None
    return context


def server_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The context the gateway serves HTTPS with: the certificate chain and its private key;
    None (plain HTTP) when neither is set. One without the other is a `ValueError`."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ValueError("tls_cert and tls_key go together: set both or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MINIMUM_TLS_VERSION
    for name, path in (("tls_cert", cert_file), ("tls_key", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{name} {path}: {exc.strerror or exc}") from None
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _Encrypted:
        raise ValueError(f"tls_key {key_file}: the key is encrypted (it must not be)") from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_cert {cert_file}, tls_key {key_file}: not a PEM certificate chain and its "
                         f"private key ({_reason(exc)})") from None
    return context


class _Encrypted(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise _Encrypted


def _reason(exc: OSError) -> str:
    """OpenSSL's reason (`NO_CERTIFICATE_OR_CRL_FOUND`, `KEY_VALUES_MISMATCH`) or the system's
    (`Is a directory`), never the file's bytes."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "PEM lib")
    return str(exc.strerror or type(exc).__name__)
