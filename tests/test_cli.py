"""The `gateway` command: token, tenant create, and `serve --demo` as the README runs it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import jwt
import pytest

from gateway import cli
from gateway import settings as settings_mod

ROOT = Path(__file__).resolve().parent.parent
SECRET = "cli-test-secret-that-is-long-enough-for-hs256"


def write_config(tmp_path: Path, port: int = 8080) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[server]\nport = {port}\n[database]\nurl = "sqlite:///{tmp_path / "gw.db"}"\n'
        f'[auth]\nhs256_secret = "{SECRET}"\n'
    )
    return path


def test_token_prints_a_token_the_gateway_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    code = cli.main(
        [
            "token",
            "--tenant",
            "acme",
            "--scope",
            "read:hooks create:hooks",
            "--ttl",
            "2h",
            "--config",
            str(config),
        ]
    )
    assert code == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="hooks-gateway")
    assert claims["tenant"] == "acme"
    assert claims["scope"] == "read:hooks create:hooks"
    assert 7100 <= claims["exp"] - claims["iat"] <= 7200
    from gateway.auth import TokenVerifier

    principal = TokenVerifier(settings_mod.load(config, environ={})).verify(token)
    assert principal.tenant == "acme"


def test_token_without_tenant_needs_the_operator_scope(tmp_path: Path) -> None:
    assert cli.main(["token", "--scope", "read:hooks", "--config", str(write_config(tmp_path))]) == 2


def test_tenant_create_stores_the_tenant_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    assert cli.main(["tenant", "create", "acme", "--name", "Acme", "--config", config]) == 0
    assert "created" in capsys.readouterr().out
    assert cli.main(["tenant", "create", "acme", "--config", config]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["tenant", "create", "Not_Valid", "--config", config]) == 2


def test_a_bad_config_key_stops_with_a_message_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nprot = 1\n[auth]\nhs256_secret = "x"\n')
    assert cli.main(["token", "--tenant", "a", "--scope", "read:hooks", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "prot" in err and str(config) in err


def test_config_example_documents_every_settings_key() -> None:
    """Every key of the settings object appears in config.example.toml (set or commented)."""
    text = (ROOT / "config.example.toml").read_text()
    settings_mod.load(ROOT / "config.example.toml", environ={})  # and it loads as it is
    section = None
    documented: set[tuple[str, str]] = set()
    for line in text.splitlines():
        head = re.match(r"^\s*\[([a-z.]+)\]", line)
        if head:
            section = head.group(1)
            continue
        key = re.match(r"^\s*#?\s*([a-z_0-9]+)\s*=", line)
        if key and section:
            documented.add((section, key.group(1)))
    import dataclasses

    expected = {
        (name, f.name)
        for name, cls in settings_mod.SECTIONS.items()
        for f in dataclasses.fields(cls)
        if not (name == "egress" and f.name == "regions")
    }
    assert expected - documented == set()
    assert ("egress.regions", "us") in documented
    assert tomllib.loads(text)["egress"]["regions"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_demo_creates_the_demo_tenant_and_prints_working_tokens(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 30
        while "OPERATOR_TOKEN=" not in banner and time.monotonic() < deadline:
            banner += proc.stdout.readline().decode()
        token = re.search(r"export TOKEN=(\S+)", banner)
        assert token, banner
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("gateway did not become ready")
        req = urllib.request.Request(
            f"{base}/api/v2/hooks", headers={"Authorization": f"Bearer {token.group(1)}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == []
            assert resp.headers["X-RateLimit-Limit"]
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert json.loads(resp.read()) == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_lifts_the_open_files_limit_so_hanging_receivers_cannot_use_up_the_sockets() -> None:
    # In a child process: lower the soft limit as many hosts have it, then call what serve calls.
    code = (
        "import resource\n"
        "from gateway.cli import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "now = raise_open_files_limit()\n"
        "print(now, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)  # noqa: S603 - our own code
    now, soft, hard = (int(x) for x in out.stdout.split())
    assert now == soft
    assert soft == hard or hard > 256 and soft > 256
