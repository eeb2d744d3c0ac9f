"""`gateway demo` (`make run`): run as a user runs it, in a process of its own, to the end of its
tour; then serving, as `make run` leaves it, until Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SECRET = "demo-test-secret-that-is-long-enough-for-hs256"


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "demo.db"}"\n'
                    f'[auth]\nhs256_secret = "{SECRET}"\n')
    return path


def demo_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "demo", "--config", str(config), "--port", "0", *extra]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def run_once(tmp_path: Path, config: Path) -> str:
    done = subprocess.run(demo_command(config, "--once"), capture_output=True, text=True, timeout=120,  # noqa: S603
                          env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def receiver_section(out: str, point: str) -> list[str]:
    """The lines under a receiver's heading in "what the receivers got"."""
    lines = out.split("what the receivers got", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(point))
    section = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        section.append(line.strip())
    return section


def test_the_demo_shows_each_receiver_doing_its_job(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = run_once(tmp_path, config)

    # The auth server's side: the claim is in the token, the blocked domain's signup is denied,
    # and both asynchronous deliveries arrive although the receiver answered 429 first.
    assert 'claim added: https://demo.example.com/plan = "gold"' in out
    assert re.search(r"signup of alice@example\.com\n\s+-> signup allowed", out), out
    assert re.search(r"signup of mallory@blocked\.example\n\s+-> signup denied: \"Signups from "
                     r"blocked\.example are not accepted\.\" \(PreUserRegistrationError\)", out), out
    assert re.search(r"-> all 2 delivered; dlv_\w+ despite a 429", out), out

    # What each receiver got, every request verified.
    assert receiver_section(out, "credentials-exchange")[0].endswith("1 request")
    assert receiver_section(out, "pre-user-registration")[1:] == [
        'alice@example.com: allowed, user_metadata.plan = "trial"',
        "mallory@blocked.example: denied (domain blocked.example)",
    ]
    post = receiver_section(out, "post-user-registration")
    assert post[0].endswith("3 requests")
    assert post[1] == "alice@example.com: answered 429 (Retry-After: 1)"
    assert sorted(post[2:]) == ["alice@example.com: welcomed", "bob@example.com: welcomed"]
    assert "signature did not verify" not in out

    base = re.search(r"the demo on (http://127\.0\.0\.1:\d+)", out)
    assert base and f"dashboard: {base.group(1)}/dashboard" in out
    assert re.search(r"export TOKEN=eyJ[\w-]+\.[\w-]+\.[\w-]+\n", out)

    # A second run on the same database points the same hooks at its own receivers.
    again = run_once(tmp_path, config)
    assert 'claim added: https://demo.example.com/plan = "gold"' in again
    assert re.search(r"-> all 2 delivered", again), again


def test_the_demo_keeps_serving_with_the_token_it_printed_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(demo_command(write_config(tmp_path)), stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.DEVNULL, env=clean_env(), cwd=tmp_path, text=True)
    try:
        assert proc.stdout is not None
        out = ""
        deadline = time.monotonic() + 60
        while "serving until Ctrl-C" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
        assert "serving until Ctrl-C" in out, out
        base = re.search(r"the demo on (http://127\.0\.0\.1:\d+)", out)
        token = re.search(r"export TOKEN=(\S+)", out)
        assert base and token
        request = urllib.request.Request(f"{base.group(1)}/api/v2/hooks",
                                         headers={"Authorization": f"Bearer {token.group(1)}"})
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - the demo on loopback
            hooks = json.loads(resp.read())
        assert sorted((h["name"], h["triggerId"], h["enabled"]) for h in hooks) == [
            ("demo-add-claim", "credentials-exchange", True),
            ("demo-screen-signups", "pre-user-registration", True),
            ("demo-welcome", "post-user-registration", True),
        ]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
