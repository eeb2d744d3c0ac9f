"""A SQLite file's write lock held by another process (`BEGIN EXCLUSIVE`), for the tests of a
database the gateway cannot write to: taken and released when the test says."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

WAIT_S = 20.0  # bound of every wait for the holder

LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
conn.execute("COMMIT")
"""


class Lock:
    """The SQLite file's write lock, held by another process until `release()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: asyncio.subprocess.Process | None = None

    async def take(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCK_HOLDER, str(self.path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=WAIT_S)
        assert line.strip() == b"locked"

    async def release(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert await asyncio.wait_for(self.proc.wait(), timeout=WAIT_S) == 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
