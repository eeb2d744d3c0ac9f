"""Layer 1: each tenant's processes run as a host uid/gid of their own, taken from a configured
range, with no supplementary groups, no capabilities and `no_new_privs`.

A real host uid (not only a uid inside a user namespace) is what keeps two tenants apart where
the kernel compares credentials: one tenant's process cannot signal, ptrace or read the /proc
entries of another's, and `RLIMIT_NPROC` counts per tenant.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable

from . import SandboxError

PR_SET_NO_NEW_PRIVS = 38  # prctl(2)
PR_CAPBSET_DROP = 24
_CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"

_libc = ctypes.CDLL(None, use_errno=True)


class TenantUids:
    """Hands each tenant its own uid from `[first, first + count)`, the gid being the same number.

    The assignment lives as long as this object: nothing the sandbox writes outlives a process
    (it has no writable filesystem), so a tenant may get another uid after a restart. Two
    gateways on one host need ranges that do not overlap, and no host account may use the range.
    """

    def __init__(self, first: int, count: int) -> None:
        if first < 1000 or count < 1 or first + count > 2**31:
            raise ValueError("uid range must lie in [1000, 2**31)")
        self.first = first
        self.count = count
        self._by_tenant: dict[str, int] = {}
        self._lock = threading.Lock()

    def uid_for(self, tenant: str) -> int:
        with self._lock:
            uid = self._by_tenant.get(tenant)
            if uid is None:
                if len(self._by_tenant) >= self.count:
                    raise SandboxError(f"runtime uid range exhausted ({self.count} tenants)")
                uid = self.first + len(self._by_tenant)
                self._by_tenant[tenant] = uid
            return uid


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_no_new_privs() -> None:
    """After this, no execve can gain privileges (setuid bits, file capabilities)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def privilege_drop(uid: int) -> Callable[[], None]:
    """The child-side step (run between fork and exec, as root) that becomes `uid`:gid `uid`.

    The capability bounding set is emptied first (that needs CAP_SETPCAP); then, as the real,
    effective and saved uids all leave 0, the kernel clears the permitted, effective and ambient
    capabilities.
    """
    with open(_CAP_LAST_CAP_FILE) as f:
        last_cap = int(f.read())

    def drop() -> None:
        for cap in range(last_cap + 1):
            _prctl(PR_CAPBSET_DROP, cap)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        set_no_new_privs()

    return drop
