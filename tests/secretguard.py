"""A pytest plugin that keeps secrets out of the logs: `pytest_plugins = ["secretguard"]`.

Every log record of the session reaches a handler on the root logger, with the gateway's loggers
at debug (unless a test sets them otherwise), and is checked for key material: a `whsec_` signing
secret or `whsk_` private key, a signed JWT (every token the tests mint is one), a bearer
credential, or the tests' HS256 secret. A test during which one was logged (by the gateway, a
library or the test itself) fails at its teardown, naming the logger; one logged outside any test
fails the session. Only records are checked: what a test prints, and what subprocesses write,
are not logs of this process.

The check is a substring test for the few markers, then one regular expression over the record's
message, its `extra=` fields and its exception's text (not the traceback, whose source lines may
quote a test's literal secrets).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

HS256_SECRET = "test-secret-that-is-long-enough-for-hs256"  # tests/conftest.py's
_MARKERS = ("whsec_", "whsk_", "eyJ", "earer", HS256_SECRET)
_SECRET = re.compile(
    r"(?P<signing>whsec_[A-Za-z0-9+/]{20,})"
    r"|(?P<private_key>whsk_[A-Za-z0-9+/]{20,})"
    r"|(?P<jwt>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})"
    r"|(?P<bearer>[Bb]earer\s+[A-Za-z0-9._~+/-]{16,})"
    rf"|(?P<hs256_secret>{re.escape(HS256_SECRET)})"
)
_STANDARD = set(vars(logging.makeLogRecord({})))

_found: list[str] = []  # what was logged since the running test began (or outside any test)


def _texts(record: logging.LogRecord) -> Iterator[str]:
    try:
        yield record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: its parts, unformatted
        yield f"{record.msg} {record.args}"
    for key, value in vars(record).items():
        if key not in _STANDARD and key != "message":
            yield value if isinstance(value, str) else repr(value)
    if record.exc_info and record.exc_info[1] is not None:
        yield repr(record.exc_info[1])


class SecretGuard(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)

    def emit(self, record: logging.LogRecord) -> None:
        for text in _texts(record):
            if not any(marker in text for marker in _MARKERS):
                continue
            match = _SECRET.search(text)
            if match is not None:
                shown = _SECRET.sub(lambda m: f"<{m.lastgroup}>", text)
                _found.append(f"{record.levelname} {record.name}: a {match.lastgroup} in {shown[:200]!r}")
                return


_guard = SecretGuard()
_gateway_level: int | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _gateway_level
    logging.getLogger().addHandler(_guard)
    gateway_logger = logging.getLogger("gateway")
    _gateway_level = gateway_logger.level
    if gateway_logger.level == logging.NOTSET:
        gateway_logger.setLevel(logging.DEBUG)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_guard)
    if _gateway_level is not None:
        logging.getLogger("gateway").setLevel(_gateway_level)


@pytest.fixture(autouse=True)
def _no_secret_logged() -> Iterator[None]:
    """Fails the test (at teardown) if a secret was logged while it ran."""
    root = logging.getLogger()
    if _guard not in root.handlers:  # something replaced the root's handlers (logs.configure)
        root.addHandler(_guard)
    before = len(_found)
    yield
    found, _found[before:] = _found[before:], []
    if found:
        pytest.fail("secretguard: a secret was logged:\n  " + "\n  ".join(found), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("secretguard: a secret was logged outside any test:", red=True)
            for line in _found:
                reporter.write_line(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
