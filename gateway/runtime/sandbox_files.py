"""Files a sandbox left in a tmpfs of its own, read back by the gateway once it has ended.

A dependency install's npm writes only into size-capped tmpfs mounts inside its sandbox
(bubblewrap's `--size N --tmpfs`): the host's disk takes nothing while it runs, however far a
small tarball expands. The gateway holds the sandbox's mount namespace (a descriptor of
/proc/<pid>/ns/mnt, taken before the sandbox may run anything), which keeps those mounts after
every process inside has ended. A helper process then joins the namespace (setns needs a
single-threaded process, which the gateway is not) and hands back a descriptor of the folder;
the gateway measures it and copies it out, entry by entry, never following a link (a link's
target would be resolved against the gateway's root, not the sandbox's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
HELPER_TIMEOUT_S = 10.0  # the helper that opens the folder inside the namespace
MAX_DEPTH = 128  # folders nested deeper than this in what is read back are refused
COPY_CHUNK = 1 << 20
# Joins the namespaces passed (a user namespace first: -1 when the caller is root and needs none),
# opens the folder there and sends its descriptor back on the socket. Only the standard library.
_HELPER = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
for fd, kind in ((int(sys.argv[1]), 0x10000000), (int(sys.argv[2]), 0x00020000)):
    if fd >= 0 and libc.setns(fd, kind) != 0:
        sys.exit(3)
folder = os.open(sys.argv[3], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
socket.send_fds(socket.socket(fileno=int(sys.argv[4])), [b"."], [folder])
"""


class ReadBackError(Exception):
    """The sandbox's files could not be read back, or were not what may be copied."""


@dataclass
class HeldNamespace:
    """A sandbox's mount namespace (and, for a gateway that is not root, its user namespace),
    held open: its mounts outlive the sandbox's processes until `close`."""

    mount: int
    user: int = -1
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def of(cls, pid: int) -> HeldNamespace:
        """The namespaces of `pid` (`OSError` once it has ended)."""
        user = -1 if os.geteuid() == 0 else os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC), user)
        except BaseException:
            if user >= 0:
                os.close(user)
            raise

    async def open_folder(self, path: str) -> int:
        """A descriptor of the folder `path` inside the namespace (`ReadBackError` if none)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            fds = [fd for fd in (self.user, self.mount, theirs.fileno()) if fd >= 0]
            helper = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", _HELPER, str(self.user), str(self.mount), path,
                str(theirs.fileno()), pass_fds=fds, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            theirs.close()
            try:
                async with asyncio.timeout(HELPER_TIMEOUT_S):
                    await helper.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    helper.kill()
                await helper.wait()
            if helper.returncode != 0:
                raise ReadBackError(f"the sandbox's {path} could not be opened")
            ours.setblocking(False)
            try:
                _, received, _, _ = socket.recv_fds(ours, 1, 1)
            except OSError:
                received = []
            if len(received) != 1:
                for fd in received:
                    os.close(fd)
                raise ReadBackError(f"the sandbox's {path} could not be opened")
            return received[0]
        finally:
            ours.close()
            theirs.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in (self.mount, self.user):
                if fd >= 0:
                    os.close(fd)


def used_bytes(folder_fd: int) -> int:
    """What the filesystem holding `folder_fd` (a tmpfs of the sandbox's) has in use."""
    st = os.fstatvfs(folder_fd)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def copy_tree(source_fd: int, dest: Path, *, max_entries: int, max_bytes: int) -> None:
    """Everything under the folder `source_fd` copied into the empty folder `dest`: folders, files
    and links (as links); at most `max_entries` entries, `max_bytes` of file contents, folders
    nested `MAX_DEPTH` deep; anything else is a `ReadBackError` (what was copied stays for the
    caller to remove)."""
    budget = _Budget(max_entries, max_bytes)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        _copy_folder(source_fd, dest_fd, budget, depth=0)
    finally:
        os.close(dest_fd)


@dataclass
class _Budget:
    entries: int
    bytes: int

    def take(self, entries: int = 0, size: int = 0) -> None:
        self.entries -= entries
        self.bytes -= size
        if self.entries < 0:
            raise ReadBackError("too many files")
        if self.bytes < 0:
            raise ReadBackError("too many bytes")


def _copy_folder(src: int, dst: int, budget: _Budget, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ReadBackError(f"folders nested more than {MAX_DEPTH} deep")
    with os.scandir(src) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        budget.take(entries=1)
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o755, dir_fd=dst)
            inner_src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src)
            try:
                inner_dst = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst)
                try:
                    _copy_folder(inner_src, inner_dst, budget, depth + 1)
                finally:
                    os.close(inner_dst)
            finally:
                os.close(inner_src)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(name, src, dst, budget)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        else:
            raise ReadBackError("something other than files, folders and links")


def _copy_file(name: str, src: int, dst: int, budget: _Budget) -> None:
    reading = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src)
    try:
        writing = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dst)
        try:
            while chunk := os.read(reading, COPY_CHUNK):
                budget.take(size=len(chunk))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(writing, view):]
        finally:
            os.close(writing)
    finally:
        os.close(reading)
