"""The database cannot be written (SPEC: nothing accepted is lost): a full disk, a lock held by
another process past `[database] busy_timeout`, a file made immutable, PostgreSQL's disk full.
Meanwhile ingest answers `503` with `Retry-After` (never a `202` it cannot keep, never a `500`),
blocking points keep answering from the cached view, `/readyz` says why; when the fault clears
the gateway recovers by itself, and what was accepted before is delivered.

The faults are real: each test mounts a small file system of its own (a size-limited tmpfs, or a
loopback ext4 image for `chattr +i`), which needs root. Without root the tests are skipped, or
fail when `TEST_STORAGE_FAULTS=required` (CI runs as root and sets it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Receiver
from pgserver import PostgresServer, find_bindir
from sqlite_lock import Lock

PUR = "post-user-registration"
CE = "credentials-exchange"
CE_EVENT = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
PAD_BYTES = 64 * 1024  # per event: a few of them need more pages than a full disk has
MAX_EVENTS = 200  # sent into a full disk until one is refused (bounded)
WAIT_S = 20.0  # every wait for recovery is bounded by this

REQUIRED = os.environ.get("TEST_STORAGE_FAULTS") == "required"


def event(n: int, pad: int = 0) -> dict[str, Any]:
    return {"user": {"id": f"u{n}", "user_metadata": {"pad": os.urandom(pad // 2).hex()}},
            "context": {"connection": {"id": "con_1", "name": "db"}}}


def _unavailable(message: str) -> None:
    if REQUIRED:
        pytest.fail(f"{message} (TEST_STORAGE_FAULTS=required)", pytrace=False)
    pytest.skip(message)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)  # noqa: S603


@contextlib.contextmanager
def small_filesystem(where: Path, size_mb: int, *, ext4: bool = False) -> Iterator[Path]:
    """A file system of `size_mb` mounted on `where`: tmpfs, or an ext4 image on a loop device."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _unavailable("the storage-fault tests mount a small file system of their own: they need root")
    where.mkdir()
    image = where.with_suffix(".img")
    try:
        if ext4:
            with image.open("wb") as f:
                f.truncate(size_mb << 20)
            _run("mkfs.ext4", "-q", "-F", str(image))
            _run("mount", "-o", "loop", str(image), str(where))
        else:
            _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where))
    except (OSError, subprocess.CalledProcessError) as exc:
        _unavailable(f"could not mount a small file system: {exc} {getattr(exc, 'stderr', b'')!r}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=30)  # noqa: S603, S607
        image.unlink(missing_ok=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; removing it frees the space."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(OSError):
            for _ in range(1 << 16):  # bounded: 4 GiB, far above any of these file systems
                os.write(fd, chunk)
        with contextlib.suppress(OSError):  # what is left is smaller than a chunk
            for _ in range(1 << 16):
                os.write(fd, b"\0" * 512)
    finally:
        os.close(fd)
    return filler


async def gated_receiver(make_receiver: Callable[..., Any]) -> tuple[Receiver, asyncio.Event]:
    """A receiver that answers (200) only once the gate is open: attempts stay in flight."""
    gate = asyncio.Event()

    async def respond(request: web.Request, received: object, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(gate.wait(), timeout=WAIT_S * 2)
        return web.json_response({"status": "success", "data": {"scope": ["read", "extra"]}})

    return await make_receiver(respond), gate


async def until(check: Callable[[], Any], what: str) -> Any:
    end = time.monotonic() + WAIT_S
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < end, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.1)


async def survives(gw: Gateway, make_receiver: Callable[..., Any], *, start: Callable[[], Any],
                   clear: Callable[[], Any], reason: str, pad: int = 0) -> None:
    """The scenario every fault goes through (see the module's docstring)."""
    await gw.create_tenant("acme")
    rx, gate = await gated_receiver(make_receiver)
    blocking_rx = await make_receiver(lambda r, rec, s: _claims())
    await gw.create_hook(name="ce", triggerId=CE, url=blocking_rx.url(), enabled=True)
    await gw.create_hook(name="pur", url=rx.url(), enabled=True)
    assert (await gw.forward(CE, CE_EVENT)).status == 200  # the tenant's view is cached now
    accepted: list[str] = []
    for n in range(3):  # accepted before the fault, and in flight while it lasts
        resp = await gw.forward(PUR, event(n))
        assert resp.status == 202, await resp.text()
        accepted.append((await resp.json())["deliveries"][0]["deliveryId"])
    await rx.wait_for(3)

    await start()
    refused = None
    for n in range(MAX_EVENTS):
        resp = await gw.forward(PUR, event(100 + n, pad))
        if resp.status != 202:
            refused = resp
            break
        accepted.append((await resp.json())["deliveries"][0]["deliveryId"])  # kept: it must arrive
    assert refused is not None, f"{MAX_EVENTS} events were all accepted while the database could not write"
    assert refused.status == 503, await refused.text()
    assert int(refused.headers["Retry-After"]) >= 1
    body = await refused.json()
    assert body["statusCode"] == 503 and reason in body["message"], body
    blocking = await gw.forward(CE, CE_EVENT)  # logins go on
    assert blocking.status == 200
    assert (await blocking.json())["data"]["scope"] == ["read", "extra"]
    ready = await gw.client.get("/readyz")
    assert ready.status == 503
    assert reason in (await ready.json())["message"]
    gate.set()  # the attempts in flight end now: their outcomes cannot be recorded yet
    await rx.wait_for(3)
    await asyncio.sleep(0.5)

    await clear()

    async def is_ready() -> bool:
        return (await gw.client.get("/readyz")).status == 200

    await until(is_ready, "/readyz says ready again")  # no event needed: the gateway probes itself
    resp = await gw.forward(PUR, event(999))
    assert resp.status == 202, await resp.text()
    accepted.append((await resp.json())["deliveries"][0]["deliveryId"])
    for delivery_id in accepted:
        await gw.wait_delivery(delivery_id, status="succeeded", timeout=WAIT_S)


async def _claims() -> web.StreamResponse:
    return web.json_response({"status": "success", "data": {"scope": ["read", "extra"]}})


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "fs", 8) as where:
        yield where


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "fs", 16, ext4=True) as where:
        yield where


@pytest.mark.sqlite_only
async def test_sqlite_disk_full_answers_503_and_recovers_when_space_is_freed(
    small_disk, make_gateway, make_settings, make_receiver
) -> None:
    gw = await make_gateway(make_settings(database={"url": f"sqlite:///{small_disk / 'gateway.db'}"}))
    filler: list[Path] = []

    async def start() -> None:
        filler.append(fill(small_disk))

    async def clear() -> None:
        filler[0].unlink()

    await survives(gw, make_receiver, start=start, clear=clear, reason="disk full", pad=PAD_BYTES)


@pytest.mark.sqlite_only
async def test_sqlite_locked_by_another_process_answers_503_and_recovers_when_released(
    tmp_path, make_gateway, make_settings, make_receiver
) -> None:
    path = tmp_path / "gateway.db"
    gw = await make_gateway(make_settings(database={"url": f"sqlite:///{path}", "busy_timeout": "200ms"}))
    lock = Lock(path)
    try:
        await survives(gw, make_receiver, start=lock.take, clear=lock.release, reason="database locked")
    finally:
        lock.kill()
        if lock.proc is not None:
            await lock.proc.wait()


@pytest.mark.sqlite_only
async def test_sqlite_file_made_immutable_answers_503_and_recovers_when_writable(
    ext4_disk, make_gateway, make_settings, make_receiver
) -> None:
    # Root ignores file modes, and a file system with files open for writing cannot be remounted
    # read-only: an immutable file (`chattr +i`, which ext4 enforces on open files) is the fault.
    path = ext4_disk / "gateway.db"
    gw = await make_gateway(make_settings(database={"url": f"sqlite:///{path}"}))
    files = [path, path.with_name("gateway.db-wal")]

    async def start() -> None:
        for f in files:
            _run("chattr", "+i", str(f))

    async def clear() -> None:
        for f in files:
            _run("chattr", "-i", str(f))

    try:
        await survives(gw, make_receiver, start=start, clear=clear, reason="disk I/O error")
    finally:
        for f in files:
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("chattr", "-i", str(f))


@pytest.fixture
def postgres_on_small_disk() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own whose data directory is on a 96 MB tmpfs."""
    bindir = find_bindir()
    if bindir is None:
        _unavailable("PostgreSQL's server programs were not found")
    assert bindir is not None
    mount_point = Path(tempfile.mkdtemp(prefix="gwpgfs-"))  # not under tmp_path: its user must reach it
    mount_point.chmod(0o755)
    with small_filesystem(mount_point / "fs", 96) as where:
        server = PostgresServer(bindir, data=where / "data")  # start() gives `where` to its user
        try:
            server.start()
            yield server
        finally:
            server.stop()
    shutil.rmtree(mount_point, ignore_errors=True)


async def test_postgres_disk_full_answers_503_and_recovers_when_space_is_freed(
    database_backend, postgres_on_small_disk, make_gateway, make_settings, make_receiver
) -> None:
    if database_backend != "postgres":
        pytest.skip("PostgreSQL's disk full: runs once, on the postgres parametrization")
    server = postgres_on_small_disk
    url = await server.create_database(prefix="full")
    gw = await make_gateway(make_settings(database={"url": url, "migrate": "auto"}))
    filler: list[Path] = []

    async def start() -> None:
        filler.append(fill(server.data.parent))

    async def clear() -> None:
        filler[0].unlink()
        # PostgreSQL may have stopped (a PANIC when its WAL could not be written): an operator
        # starts it again; `pg_ctl start` of a running server fails, which is fine here.
        with contextlib.suppress(subprocess.CalledProcessError):
            server.resume()

    await survives(gw, make_receiver, start=start, clear=clear, reason="disk full", pad=PAD_BYTES)


async def test_postgres_readyz_stays_not_ready_while_disk_full_despite_idle_claims(
    database_backend, postgres_on_small_disk, make_gateway, make_settings, make_receiver
) -> None:
    if database_backend != "postgres":
        pytest.skip("PostgreSQL's disk full: runs once, on the postgres parametrization")
    server = postgres_on_small_disk
    url = await server.create_database(prefix="ready")
    gw = await make_gateway(make_settings(database={"url": url, "migrate": "auto"}))
    await gw.create_tenant("acme")
    rx = await make_receiver()
    await gw.create_hook(name="pur", url=rx.url(), enabled=True)
    db: Any = gw.engine.store.db  # type: ignore[attr-defined]

    filler: list[Path] = [fill(server.data.parent)]
    try:
        refused = None
        for n in range(MAX_EVENTS):
            resp = await gw.forward(PUR, event(n, PAD_BYTES))
            if resp.status != 202:
                refused = resp
                break
        assert refused is not None and refused.status == 503, "the full disk refused no event"
        assert "disk full" in (await refused.json())["message"]

        # The engine keeps claiming (nothing is due): transactions that commit without needing room.
        committed = db.batches

        async def claims_committed() -> bool:
            return bool(db.batches >= committed + 3)

        await until(claims_committed, "the engine's idle claims commit on the full disk")
        ready = await gw.client.get("/readyz")
        assert ready.status == 503, "ready while the disk is still full"
        assert "disk full" in (await ready.json())["message"]
    finally:
        for f in filler:
            f.unlink()
        with contextlib.suppress(subprocess.CalledProcessError):  # in case PostgreSQL stopped (PANIC)
            server.resume()

    async def is_ready() -> bool:
        return (await gw.client.get("/readyz")).status == 200

    await until(is_ready, "/readyz says ready again once space is freed")
