"""Installed sets of hooks' dependencies: content-addressed, installed once, then read-only.

A set (a hook's `dependencies`, gateway/runtime/package_specs.py) lives in
`<[runtime] dependencies_dir>/<key>/` (package.json, package-lock.json, node_modules/), where
the key is the sha256 of the set, node's major version and the registry: every hook with the
same set shares one folder, bound read-only at /hook/node_modules in its sandbox.

An install (gateway/runtime/npm_install.py) writes only a size-capped tmpfs inside its sandbox;
once npm has succeeded within `[runtime] max_install_mib`, and the sets installed here leave
room for it under `max_dependencies_mib`, it is copied into a temporary folder beside the others
and renamed into place once checked: so a folder under its key is always a whole install.
Everything in it is root's; it is measured (`max_install_mib`, `max_packages` from the
lockfile, `MAX_FILES`) and made read-only (folders 0o555, files 0o444). One install runs per
key at a time in this process, the others wait for it; another gateway (on PostgreSQL) installs
its own copy the first time it needs the set, and two processes sharing the folder keep
whichever rename came first.

Sets no hook uses are removed by `sweep`: those that no hook of the database names (read after
the sweep began), that no process of the gateway has bound (`bound`, the supervisor's), that no
save holds (`held`, from its install until its hook is stored) and that nothing asked for since
the sweep began. Each gateway sweeps its own folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..egress import IPNetwork
from ..settings import RuntimeSettings, Settings
from ..store.database import sqlite_path
from .egress_proxy import EgressProxy, ProxyCaps
from .limits import MIB
from .npm_install import BRIDGE, PROXY_SOCKET, InstallFailure, NpmSandbox, npm_dir, registry_authority
from .npm_install import run as run_npm
from .package_specs import Dependencies
from .sandbox import SandboxConfig

log = logging.getLogger("gateway.runtime")

DEFAULT_FOLDER = "hook-dependencies"  # beside the SQLite file, or under data/ (PostgreSQL)
LOCKFILE = "package-lock.json"
MODULES = "node_modules"
TEMPORARY_PREFIX = ".install-"  # a folder being installed (left by a crash: removed at start)
REMOVING_PREFIX = ".removing-"  # a set being removed by a sweep (left by a crash: removed at start)
KEY = re.compile(r"[0-9a-f]{64}")  # an installed set's folder name
LEFTOVER_AFTER_TIMEOUTS, LEFTOVER_MARGIN_S = 2, 60.0  # ... once older than 2 install_timeouts + 1 min
MAX_FILES = 100_000  # files and folders in an installed set at most
READ_ONLY_FOLDER, READ_ONLY_FILE = 0o555, 0o444  # an installed set's, root's
NODE_VERSION_TIMEOUT_S = 10.0
TUNNEL_IDLE_S = 30.0  # the install's egress proxy closes a tunnel quiet for this long
TUNNEL_BYTES_FACTOR = 4  # ... and one that carried this many times max_install_mib (+ 64 MiB)
TUNNELS = 16  # ... and keeps at most this many open (npm: --maxsockets=8)
INSTALLS_AT_ONCE = 2  # npm runs at once at most (each may take ~1 GiB); the others wait their turn
INSTALLS_QUEUED_PER_TENANT = 4  # installs of one tenant's sets running or waiting; more are refused
SWEEPS_IN_A_ROW = 3  # sweeps asked for while one runs are done once more, up to this many in a row


InUse = Callable[[], Awaitable[Iterable[Dependencies]]]  # the sets the database's hooks name
Bound = Callable[[], Iterable[Path]]  # the node_modules folders the supervisor's processes have bound


def settled_dir(settings: Settings) -> Path:
    """`[runtime] dependencies_dir`, or its default: beside the SQLite database file, else data/."""
    configured = settings.runtime.dependencies_dir
    if configured:
        return Path(configured).resolve()
    url = settings.database.url
    if url.startswith("sqlite://"):
        path = sqlite_path(url)
        if path != ":memory:":
            return Path(path).resolve().parent / DEFAULT_FOLDER
    return Path("data", DEFAULT_FOLDER).resolve()


async def open_store(r: RuntimeSettings, root: Path, config: SandboxConfig, *, uid: int | None,
                     runtime_dir: Path, allow_cidrs: Sequence[IPNetwork],
                     connect_timeout_s: float) -> DependencyStore:
    """The store `[runtime]` asks for, in `root`, its installs run as `uid` with `config`'s layers;
    `InstallFailure` when npm (or the CA file) is not there."""
    if r.npm_cafile and not await asyncio.to_thread(os.path.isfile, r.npm_cafile):
        raise InstallFailure("[runtime] npm_cafile is not a file")
    box = NpmSandbox(config=config, npm_dir=npm_dir(r.npm), bridge=runtime_dir / BRIDGE,
                     registry=r.npm_registry, cafile=Path(r.npm_cafile) if r.npm_cafile else None,
                     timeout_s=float(r.install_timeout),
                     max_install_mib=r.max_install_mib, uid=uid)
    major = await asyncio.to_thread(node_major, config.node)
    bounds = Bounds(r.max_install_mib, r.max_packages, total_mib=r.max_dependencies_mib)
    return await asyncio.to_thread(DependencyStore.open, root, box, node_major=major, bounds=bounds,
                                   allow_cidrs=allow_cidrs, connect_timeout_s=connect_timeout_s)


def node_major(node: str) -> str:
    out = subprocess.run([node, "--version"], capture_output=True, text=True,  # noqa: S603 - the configured node
                         timeout=NODE_VERSION_TIMEOUT_S, check=False)
    match = re.match(r"v(\d+)\.", out.stdout.strip())
    return match[1] if match else "unknown"


def key_of(deps: Dependencies, *, node_major: str, registry: str) -> str:
    canonical = json.dumps({"dependencies": dict(deps), "node": node_major, "registry": registry},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Bounds:
    max_mib: int
    max_packages: int
    max_files: int = MAX_FILES
    total_mib: int = 1024  # every installed set together ([runtime] max_dependencies_mib)


class DependencyStore:
    """The installed sets under `root`; `modules(deps)` is the node_modules folder of a set,
    installed first when missing (`InstallFailure` says why it could not be)."""

    def __init__(self, root: Path, box: NpmSandbox, *, node_major: str, bounds: Bounds,
                 allow_cidrs: Sequence[IPNetwork], connect_timeout_s: float = 5.0) -> None:
        self.root = root
        self.box = box
        self.node_major = node_major
        self.bounds = bounds
        self.allow_cidrs = tuple(allow_cidrs)
        self.connect_timeout_s = connect_timeout_s
        # (tenant, key) -> its install: each tenant's installs wait in a lane of their own, one at
        # a time, so one tenant's slow installs hold at most one of the INSTALLS_AT_ONCE turns.
        self._installing: dict[tuple[str, str], asyncio.Future[Path]] = {}
        self._lanes: dict[str, asyncio.Lock] = {}
        self._turns = asyncio.Semaphore(INSTALLS_AT_ONCE)
        self._sizes: dict[str, int] = {}  # key -> bytes, of the sets in `root` (measured at open)
        self._reserved = 0  # bytes of installs being copied in
        self._holds: Counter[str] = Counter()  # key -> saves holding it (`held`)
        self._touched: set[str] | None = None  # while a sweep runs: keys asked for or held since it began
        self._sweeping: asyncio.Future[None] | None = None
        self._sweep_again = False
        self._pending: set[str] = set()  # keys no hook names that the last sweep kept (bound, held)
        self._last_sweep: tuple[InUse, Bound] | None = None
        self._resweeps: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def open(cls, root: Path, box: NpmSandbox, *, node_major: str, bounds: Bounds,
             allow_cidrs: Sequence[IPNetwork], connect_timeout_s: float = 5.0) -> DependencyStore:
        """The store in `root` (made by the first install), without what a crashed install left
        there: a temporary folder older than any install can last (another gateway sharing the
        folder may be installing into a younger one)."""
        horizon = time.time() - LEFTOVER_AFTER_TIMEOUTS * box.timeout_s - LEFTOVER_MARGIN_S
        for leftover in root.glob(f"{TEMPORARY_PREFIX}*") if root.is_dir() else ():
            with contextlib.suppress(OSError):
                if leftover.lstat().st_mtime < horizon:
                    shutil.rmtree(leftover, ignore_errors=True)
        for leftover in root.glob(f"{REMOVING_PREFIX}*") if root.is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True)
        store = cls(root, box, node_major=node_major, bounds=bounds, allow_cidrs=allow_cidrs,
                    connect_timeout_s=connect_timeout_s)
        store._sizes = {key: _measure(root / key) for key in _installed_keys(root)}
        return store

    def folder(self, deps: Dependencies) -> Path:
        return self.root / key_of(deps, node_major=self.node_major, registry=self.box.registry)

    def total_bytes(self) -> int:
        """What the installed sets take (as measured when installed), and installs being copied in."""
        return sum(self._sizes.values()) + self._reserved

    async def modules(self, deps: Dependencies, *, tenant: str = "") -> Path:
        """The set's node_modules (bound read-only at /hook/node_modules), installed if missing;
        the install is `tenant`'s (at most INSTALLS_QUEUED_PER_TENANT of them at once). A set a
        sweep removed while its install was being waited for is installed again."""
        folder = self.folder(deps)
        self._touch(folder.name)
        for _ in range(2):
            if (folder / LOCKFILE).is_file():
                break
            await self._installed_once(deps, folder, tenant)
        if (folder / LOCKFILE).is_file():
            self._touch(folder.name)  # the caller binds it before it next yields (the supervisor)
            return folder / MODULES
        raise InstallFailure("the dependencies were removed as soon as they were installed: try again")

    @contextlib.contextmanager
    def held(self, deps: Dependencies) -> Iterator[None]:
        """No sweep removes the set while the block runs (a save: from its install until its hook
        is stored), nor a sweep under way when it ends."""
        key = self.folder(deps).name
        self._holds[key] += 1
        self._touch(key)
        try:
            yield
        finally:
            self._holds[key] -= 1
            if self._holds[key] <= 0:
                del self._holds[key]
            self._touch(key)

    def _touch(self, key: str) -> None:
        if self._touched is not None:
            self._touched.add(key)

    async def _installed_once(self, deps: Dependencies, folder: Path, tenant: str) -> Path:
        lane = (tenant, folder.name)
        installing = self._installing.get(lane)
        if installing is None:
            if sum(1 for owner, _ in self._installing if owner == tenant) >= INSTALLS_QUEUED_PER_TENANT:
                raise InstallFailure(f"at most {INSTALLS_QUEUED_PER_TENANT} installs of a tenant's "
                                     "dependencies run or wait at once: try again once one is done")
            # Not the caller's task: a caller that goes away leaves the install to the others.
            installing = asyncio.ensure_future(self._install_in_turn(deps, folder, tenant))
            self._installing[lane] = installing
            installing.add_done_callback(self._installed)
        return await asyncio.shield(installing)

    def _installed(self, future: asyncio.Future[Path]) -> None:
        for lane, installing in list(self._installing.items()):
            if installing is future:
                del self._installing[lane]
                if not any(owner == lane[0] for owner, _ in self._installing):
                    self._lanes.pop(lane[0], None)
        if not future.cancelled():
            future.exception()  # retrieved here too: every caller may have gone

    async def close(self) -> None:
        """Stop installs under way (their temporary folders are removed), and sweeps."""
        self._closed = True
        sweeps = [*self._resweeps, *([self._sweeping] if self._sweeping is not None else [])]
        for sweep in sweeps:
            sweep.cancel()
        await asyncio.gather(*sweeps, return_exceptions=True)
        futures = list(self._installing.values())
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)

    # -- one install ------------------------------------------------------------------------

    async def _install_in_turn(self, deps: Dependencies, folder: Path, tenant: str) -> Path:
        """The install, once it is the tenant's turn and one of the gateway's; nothing is made
        while it waits, and a set another tenant installed meanwhile is taken as it is."""
        async with self._lanes.setdefault(tenant, asyncio.Lock()), self._turns:
            if (folder / LOCKFILE).is_file():
                return folder
            return await self._install(deps, folder)

    async def _install(self, deps: Dependencies, folder: Path) -> Path:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o711)  # noqa: S103 - tenants' uids traverse it to their set; none may list it
        except OSError as exc:
            raise InstallFailure(f"[runtime] dependencies_dir cannot be made: {exc.strerror}") from None
        problem = _reachability_problem(self.root)
        if problem is not None:
            raise InstallFailure(problem)
        self._check_room(0)  # full already: no install at all
        work = self.root / f"{TEMPORARY_PREFIX}{folder.name[:16]}-{secrets.token_hex(4)}"
        work.mkdir(mode=0o711)
        try:
            project, egress, manifest = work / "project", work / "egress", work / "package.json"
            project.mkdir(mode=0o700)
            egress.mkdir(mode=0o711)
            content = {"name": "hook-dependencies", "version": "0.0.0", "private": True,
                       "dependencies": dict(deps)}
            manifest.write_text(json.dumps(content, indent=2) + "\n")  # copied into the sandbox's tmpfs
            uid = self.box.uid
            proxy = await EgressProxy.start(egress / PROXY_SOCKET, allow_cidrs=self.allow_cidrs,
                                            caps=self._caps(), only=[registry_authority(self.box.registry)],
                                            owner=(uid, uid) if uid is not None else None)
            try:
                async with run_npm(self.box, manifest, egress) as installed:
                    await proxy.close()
                    self._check_room(installed.used)
                    self._reserved += installed.used
                    try:
                        await asyncio.to_thread(installed.copy_into, project, max_files=self.bounds.max_files)
                        size = await asyncio.to_thread(self._seal, project)
                    finally:
                        self._reserved -= installed.used
            finally:
                await proxy.close()
            try:
                os.rename(project, folder)
            except OSError:
                if not (folder / LOCKFILE).is_file():  # another process's rename won: theirs is as good
                    raise
            self._sizes[folder.name] = size
            log.info("installed dependencies %s (%d packages) in %s", folder.name[:12], len(deps), self.root)
            return folder
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise InstallFailure(f"the install could not be set up or stored: {why}") from None
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _caps(self) -> ProxyCaps:
        return ProxyCaps(connections=TUNNELS, connect_timeout_s=self.connect_timeout_s,
                         bytes_per_tunnel=(TUNNEL_BYTES_FACTOR * self.bounds.max_mib + 64) * MIB,
                         idle_timeout_s=TUNNEL_IDLE_S, lifetime_s=self.box.timeout_s)

    def _check_room(self, more: int) -> None:
        """`InstallFailure` unless `more` bytes fit beside the sets installed here."""
        limit = self.bounds.total_mib * MIB
        if self.total_bytes() + more > limit or self.total_bytes() >= limit:
            raise InstallFailure(f"the dependencies installed on this gateway would take more than "
                                 f"{self.bounds.total_mib} MiB ([runtime] max_dependencies_mib); sets no "
                                 "hook uses any more are removed")

    def _seal(self, project: Path) -> int:
        """Root's and read-only, within the bounds (else `InstallFailure`): its size. Runs once the
        install's processes are gone; nothing is followed through a link."""
        entries = _take_over(project, self.bounds.max_files)
        # What the gateway reads or binds by name must be what it seems: a link there (npm's code
        # is led by the registry's answers) would have root chmod, and bubblewrap bind, its target.
        for name, kind, what in ((LOCKFILE, stat.S_ISREG, "file"), (MODULES, stat.S_ISDIR, "folder")):
            with contextlib.suppress(FileNotFoundError):
                if not kind(os.lstat(project / name).st_mode):
                    raise InstallFailure(f"npm left {name} as something other than a {what}")
        lockfile = project / LOCKFILE
        try:
            packages = json.loads(lockfile.read_text()).get("packages", {})
        except (OSError, ValueError, AttributeError):
            raise InstallFailure("npm wrote no usable lockfile") from None
        count = sum(1 for path in packages if path) if isinstance(packages, dict) else 0
        if count > self.bounds.max_packages:
            raise InstallFailure(f"the dependencies come to {count} packages, more than "
                                 f"{self.bounds.max_packages} ([runtime] max_packages)")
        size = sum(max(st.st_size, st.st_blocks * 512) for _, st in entries if stat.S_ISREG(st.st_mode))
        if size > self.bounds.max_mib * MIB:
            raise InstallFailure(f"the installed dependencies take {size / MIB:.1f} MiB, more than "
                                 f"{self.bounds.max_mib} MiB ([runtime] max_install_mib)")
        (project / MODULES).mkdir(exist_ok=True)  # a set of packages with no files still binds
        # Readable by every tenant's uid (the packages are public), writable by none.
        for path, st in entries:
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, READ_ONLY_FOLDER)
            elif stat.S_ISREG(st.st_mode):
                os.chmod(path, READ_ONLY_FILE)
        os.chmod(project / MODULES, READ_ONLY_FOLDER)
        os.chmod(project, READ_ONLY_FOLDER)
        return size

    # -- removing sets no hook uses -------------------------------------------------------------

    async def sweep(self, in_use: InUse, bound: Bound = tuple) -> None:
        """Remove the sets that no hook `in_use` names (the database's, read now), no process has
        `bound` (their node_modules folders), no save holds and nothing asked for meanwhile. A
        sweep asked for while one runs is done after it (once for all of them). A set kept only
        because a process had bound it is swept again once the last such process has ended."""
        self._last_sweep = (in_use, bound)
        if self._sweeping is not None and not self._sweeping.done():
            self._sweep_again = True
            await asyncio.shield(self._sweeping)
            return
        self._sweeping = asyncio.ensure_future(self._sweeps(in_use, bound))
        await asyncio.shield(self._sweeping)

    def unbound(self, modules: Path) -> None:
        """A process that had bound `modules` has ended (the supervisor's call)."""
        if modules.parent.name in self._pending and self._last_sweep is not None and not self._closed:
            task = asyncio.ensure_future(self.sweep(*self._last_sweep))
            self._resweeps.add(task)
            task.add_done_callback(self._resweeps.discard)

    async def _sweeps(self, in_use: InUse, bound: Bound) -> None:
        for _ in range(SWEEPS_IN_A_ROW):
            self._sweep_again = False
            await self._sweep_once(in_use, bound)
            if not self._sweep_again:
                return

    async def _sweep_once(self, in_use: InUse, bound: Bound) -> None:
        self._touched = set()
        try:
            named = {self.folder(deps).name for deps in await in_use()}
            # From here to the renames nothing yields: what a process binds, a save holds, an
            # install makes or anyone asked for since the database was read is all known.
            keep = named | self._touched | set(self._holds) | {key for _, key in self._installing}
            keep |= {path.parent.name for path in bound()}
            doomed: list[Path] = []
            unnamed = _installed_keys(self.root) - named
            self._pending = unnamed & keep
            for key in unnamed - keep:
                gone = self.root / f"{REMOVING_PREFIX}{key[:16]}-{secrets.token_hex(4)}"
                try:
                    os.rename(self.root / key, gone)  # no longer found: a later use installs it again
                except OSError:
                    continue
                self._sizes.pop(key, None)
                doomed.append(gone)
        finally:
            self._touched = None
        for gone in doomed:
            await asyncio.to_thread(shutil.rmtree, gone, True)
        if doomed:
            log.info("removed %d installed dependency sets no hook uses from %s", len(doomed), self.root)
        # Sets another process put here are counted, those removed by others forgotten.
        known = set(self._sizes)
        found = await asyncio.to_thread(
            lambda: {key: _measure(self.root / key) for key in _installed_keys(self.root) - known})
        for key in list(self._sizes):
            if not (self.root / key / LOCKFILE).is_file():
                del self._sizes[key]
        for key, size in found.items():
            self._sizes.setdefault(key, size)


def _installed_keys(root: Path) -> set[str]:
    """The keys of the whole sets in `root` (their folders have a lockfile)."""
    try:
        names = os.listdir(root)
    except OSError:
        return set()
    return {name for name in names if KEY.fullmatch(name) and os.path.isfile(root / name / LOCKFILE)}


def _measure(folder: Path) -> int:
    """The bytes an installed set's files take, as `_seal` measures them."""
    total = 0
    for top, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                if stat.S_ISREG(st.st_mode):
                    total += max(st.st_size, st.st_blocks * 512)
    return total


def _take_over(top: Path, max_files: int) -> list[tuple[str, os.stat_result]]:
    """Every entry under `top` (itself included) made root's, with its lstat; only folders,
    files and links are kept (anything else is an `InstallFailure`)."""
    entries: list[tuple[str, os.stat_result]] = []

    def own(path: str) -> None:
        os.lchown(path, 0, 0)
        st = os.lstat(path)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise InstallFailure("the install made something other than files, folders and links")
        entries.append((path, st))
        if len(entries) > max_files:
            raise InstallFailure(f"the installed dependencies hold more than {max_files} files")

    own(str(top))
    for folder, dirs, files in os.walk(top):  # links to folders are listed in dirs, never entered
        for name in (*dirs, *files):
            own(os.path.join(folder, name))
    return entries


def _reachability_problem(root: Path) -> str | None:
    """Why tenants' uids could not reach the installed sets (bubblewrap binds them as that uid)."""
    for folder in (root, *root.parents):
        with contextlib.suppress(OSError):
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return ("dependencies cannot be used on this gateway: [runtime] dependencies_dir must be "
                        "reachable by the tenants' uids (each folder above it world-traversable, o+x)")
    return None
