"""A throwaway PostgreSQL server for the tests: `initdb` into a temporary directory, `pg_ctl
start` listening only on a Unix socket in that directory (no TCP port to race for), one
database per test, `pg_ctl stop` at the end. No Docker, no service.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user (Debian's
package creates it), else as `nobody`. For the tests durability is switched off (`fsync=off`): a
test server loses nothing a test needs when the machine does not crash.

`TEST_PG_BINDIR` names the folder of `initdb` and `pg_ctl`; by default the newest
`/usr/lib/postgresql/*/bin`, else the `PATH`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

PORT = 5432  # only names the socket file: the server listens on no TCP port
STARTUP_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The folder of PostgreSQL's server programs, or None when they are not installed."""
    configured = os.environ.get("TEST_PG_BINDIR")
    if configured:
        return Path(configured) if (Path(configured) / "initdb").exists() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _version_key(path: str) -> tuple[int, ...]:
    version = path.split("/")[-3]
    return tuple(int(p) for p in version.split(".") if p.isdigit())


_REMOVERS: list[subprocess.Popen[bytes]] = []


class PostgresServer:
    """One server in a temporary directory; `start()`, `url(db)`, `stop()`."""

    def __init__(self, bindir: Path, *, durable: bool = False, data: Path | None = None) -> None:
        self.bindir = bindir
        self.durable = durable  # the benchmarks' server: fsync and synchronous commits on
        self.launcher: list[str] = []  # put before `pg_ctl start` (the benchmarks: `taskset -c ...`)
        self.root = Path(tempfile.mkdtemp(prefix="gwpg-"))  # short: a socket path has ~100 bytes
        # `data`: where initdb puts the cluster (a test's own small file system), if not in `root`
        self.data = data or self.root / "data"
        self.sockets = self.root
        self.log = self.root / "server.log"
        self._user: str | None = None
        self._names = itertools.count(1)
        self._options = ""
        self.started = False
        self.template: str | None = None

    # -- the server -------------------------------------------------------------------------

    def start(self) -> None:
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            pw = pwd.getpwnam(self._user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.data.parent, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "-N"]
        # A default collation that is not byte order, as most installations have: the store must
        # not depend on it (its keys are declared COLLATE "C").
        try:
            self._run([*initdb, "--locale-provider=icu", "--icu-locale=en", "--locale=C.UTF-8"])
        except subprocess.CalledProcessError:
            shutil.rmtree(self.data, ignore_errors=True)
            self._run([*initdb, "--locale=C.UTF-8"])
        durability = (["-c shared_buffers=256MB", "-c max_wal_size=2GB"] if self.durable else
                      ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                       "-c shared_buffers=32MB"])
        options = " ".join([
            "-c listen_addresses=''",
            f"-c unix_socket_directories={self.sockets}",
            f"-c port={PORT}",
            "-c max_connections=300",
            *durability,
        ])
        self._options = options
        self.resume()

    def halt(self) -> None:
        """Stop the server and keep its data (the database "goes away"); `resume` brings it back."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        self.started = False

    def resume(self) -> None:
        self._run([*self.launcher, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                   "-w", "-t", str(STARTUP_TIMEOUT_S), "-o", self._options, "start"])
        self.started = True

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                           "stop"])
            self.started = False
        # Removed by a process of its own, not waited for: a server that held a database per test
        # of a whole run is thousands of files, and deleting them inside the last test's teardown
        # once took longer than that test's timeout.
        # Kept here, never waited for: the removal may outlive the test run.
        _REMOVERS.append(subprocess.Popen(["rm", "-rf", "--", str(self.root)],  # noqa: S603, S607
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))

    def _run(self, argv: list[str]) -> None:
        if self._user is not None:
            n = len(self.launcher) if argv[:len(self.launcher)] == self.launcher else 0
            argv = [*argv[:n], "runuser", "-u", self._user, "--", *argv[n:]]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S, check=False)  # noqa: S603
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout,
                                                f"{result.stderr}\n{log[-2000:]}")

    # -- databases --------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.sockets}&port={PORT}"

    def new_name(self, prefix: str = "t") -> str:
        return f"{prefix}_{os.getpid()}_{next(self._names)}"

    async def create_database(self, *, template: str | None = None, prefix: str = "t") -> str:
        """A new empty database (or a copy of `template`); returns its URL."""
        import asyncpg  # noqa: PLC0415

        name = self.new_name(prefix)
        conn = await asyncpg.connect(self.url())
        try:
            clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else " TEMPLATE template0"
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()
        return self.url(name)


    def create_database_sync(self, *, template: str | None = None, prefix: str = "t") -> str:
        """`create_database` for callers outside an event loop, or inside one that must not
        wait on it (a fixture): run on a loop of its own in a thread."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.create_database(template=template, prefix=prefix)).result()

    def migrated_template(self) -> str:
        """A database with the gateway's schema, made once: new databases are copies of it."""
        if self.template is None:
            url = self.create_database_sync(prefix="template")

            async def migrate() -> None:
                from gateway.store.postgres import PostgresStore  # noqa: PLC0415

                await PostgresStore(url).migrate()

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, migrate()).result()
            self.template = urlsplit(url).path.lstrip("/")
        return self.template


REQUIRED = os.environ.get("TEST_POSTGRES") == "required"  # CI sets it: a skip there would hide a gap


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started server, stopped afterwards. Where PostgreSQL is not installed the test is
    skipped, or fails when `TEST_POSTGRES=required`; a server that does not start fails it."""
    import pytest  # noqa: PLC0415 - this module is a test helper

    bindir = find_bindir()
    if bindir is None:
        message = ("PostgreSQL's server programs (initdb, pg_ctl) were not found under"
                   " /usr/lib/postgresql/*/bin or on PATH: install the Debian package `postgresql`"
                   " or set TEST_PG_BINDIR")
        if REQUIRED:
            pytest.fail(f"{message} (TEST_POSTGRES=required)", pytrace=False)
        pytest.skip(message)
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"the test PostgreSQL server did not start: {exc}\n{getattr(exc, 'stderr', '')}",
                    pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")
