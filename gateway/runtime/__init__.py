"""Hosted hooks: a tenant's Node.js script run inside a layered sandbox.

    probe.py     what the host offers (bubblewrap, user namespaces, cgroups, seccomp, node)
    users.py     layer 1: a host uid/gid per tenant, no new privileges, no capabilities
    limits.py    layer 2: rlimits, and a cgroup (memory, pids) per process where the host has them
    sandbox.py   layer 3: the bubblewrap command line (namespaces, read-only binds, clean env),
                 layer 5: Node's permission flags, and the launch that puts all layers together
    seccomp.py   layer 4: the syscall filter, compiled to BPF

    package_specs.py  what a hook's `dependencies` may name (registry packages and versions only)
    dependencies.py   the installed sets: content-addressed, installed once, read-only, shared
    npm_install.py    one `npm install --ignore-scripts`, sandboxed, the registry its only way out
    sandbox_files.py  what an install left in its sandbox's tmpfs, read back once it has ended

docs/RUNTIME.md has the threat model and what each layer stops.
"""

from __future__ import annotations

from ..errors import GatewayError


class SandboxError(GatewayError):
    """The sandbox cannot start a process (a missing host feature, an exhausted uid range)."""
