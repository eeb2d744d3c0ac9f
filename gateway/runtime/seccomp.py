"""Layer 4: a seccomp filter, compiled to classic BPF with libseccomp (through `pyseccomp`).

A deny list on top of "allow": node needs a wide, version-dependent set of syscalls, while the
ones that matter to an escape are few and stable. Denied calls fail with an errno (the process
sees a clean error, e.g. `spawn EPERM`), except:

- `clone3` and `io_uring_*` answer ENOSYS, so glibc falls back to `clone` (whose flags the
  filter can see) and libuv to its thread pool;
- syscalls of another ABI (i386, x32) kill the process (libseccomp's bad-arch action).

`execve` stays allowed: bubblewrap installs the filter and then execs node, so the filter must
let that exec through. The sandbox leaves nothing else to exec (no writable or executable file
but node and its libraries, `memfd_create` and `execveat` denied, no fork to exec from).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import importlib
import socket
import tempfile
from typing import Any

CLONE_THREAD = 0x00010000  # clone(2): a thread of the caller, not a new process
TIOCSTI = 0x5412  # ioctl: push a byte into the terminal's input
TIOCLINUX = 0x541C

# Denied with EPERM: new processes, debugging other processes, namespaces and mounts, kernel
# interfaces that have been a source of privilege escalations, host-wide settings, and the
# ways to exec a file the sandbox did not ship.
DENIED = (
    "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "fanotify_init", "lookup_dcookie",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "iopl", "ioperm", "modify_ldt", "uselib", "personality",
    "execveat", "memfd_create", "memfd_secret",
)
NOT_IMPLEMENTED = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")


def _pyseccomp() -> Any:
    """pyseccomp ships no type information, and raises at import without libseccomp."""
    return importlib.import_module("pyseccomp")


@functools.cache
def compile_bpf(*, inet: bool = False) -> bytes:
    """The filter as a BPF program (what bubblewrap's `--seccomp FD` and prctl(2) take).
    `inet`: IPv4 and IPv6 sockets are allowed too (a dependency install: npm speaks TCP to a
    bridge on the loopback of its own network namespace, gateway/runtime/npm_install.py)."""
    sc = _pyseccomp()
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    arch = sc.system_arch()

    def rule(action: int, name: str, *args: Any) -> None:
        if sc.resolve_syscall(arch, name) < 0:  # not a syscall on this architecture
            return
        f.add_rule(action, name, *args)

    for name in DENIED:
        rule(sc.ERRNO(errno.EPERM), name)
    for name in NOT_IMPLEMENTED:
        rule(sc.ERRNO(errno.ENOSYS), name)
    # clone without CLONE_THREAD makes a process (fork, posix_spawn); threads stay allowed.
    rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    # Sockets: Unix only (a later layer gives scripts an HTTP proxy on a Unix socket).
    if inet:
        rule(sc.ERRNO(errno.EAFNOSUPPORT), "socketpair", sc.Arg(0, sc.NE, socket.AF_UNIX))
        for family in range(socket.AF_INET6):  # AF_UNSPEC and the families between INET and INET6
            if family not in (socket.AF_UNIX, socket.AF_INET):
                rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
        rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GT, socket.AF_INET6))
    else:
        for name in ("socket", "socketpair"):
            rule(sc.ERRNO(errno.EAFNOSUPPORT), name, sc.Arg(0, sc.NE, socket.AF_UNIX))
    for request in (TIOCSTI, TIOCLINUX):
        rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_INSTRUCTION_BYTES = 8


class Installer:
    """The child-side step that loads a BPF program into the calling process (for runs without
    bubblewrap; needs `no_new_privs` or CAP_SYS_ADMIN). Everything is allocated here, before
    the fork, so that the child only makes one call."""

    def __init__(self, bpf: bytes) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._program = ctypes.create_string_buffer(bpf, len(bpf))
        self._fprog = _SockFprog(len(bpf) // BPF_INSTRUCTION_BYTES, ctypes.addressof(self._program))

    def __call__(self) -> None:
        if self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter not loaded")
