"""The suite's guard against secrets in logs (tests/secretguard.py), run on a test of its own in
a pytest of its own: a secret logged fails that test, a clean log passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

LEAKY = '''
import logging

def test_clean():
    logging.getLogger("gateway.x").debug("delivery attempt: HTTP 200 (whsec_ signing, Bearer <token>)")

def test_leaks_a_signing_secret():
    logging.getLogger("gateway.x").debug("signed with %s", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

def test_leaks_a_token_in_a_field():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLW9mLWEtdG9rZW4"
    logging.getLogger("aiohttp.access").warning("refused", extra={"authorization": f"Bearer {token}"})
'''


def test_a_secret_in_a_log_record_fails_the_test_that_logged_it(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "pytest", "-p", "secretguard", "-q", "-p", "no:cacheprovider",
         "test_leaky.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    out = done.stdout
    assert done.returncode == 1, out
    assert "3 passed, 2 errors" in out
    assert "ERROR at teardown of test_leaks_a_signing_secret" in out
    assert "ERROR at teardown of test_leaks_a_token_in_a_field" in out
    reported = [line for line in out.splitlines() if ": a " in line and " in '" in line]
    assert any("gateway.x: a signing in" in line for line in reported), out
    assert any("aiohttp.access: a bearer in" in line for line in reported), out
    for line in reported:  # the guard's report does not repeat the secret (pytest's log capture may)
        assert "MfKQ9r8GKYqr" not in line and "c2lnbmF0dXJl" not in line
