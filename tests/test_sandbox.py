"""The hosted hooks' sandbox (gateway/runtime/): real node inside the real layers.

Each layer is first shown alone (the others off) stopping what it is there for, then hostile
scripts run with every layer on and end failing or killed, with the reason visible in the exit
status or stderr. Needs root, bubblewrap, user namespaces, node 20+ and libseccomp: without them
the tests are skipped, or fail when `TEST_SANDBOX=required` (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from gateway.runtime.limits import Limits, detect_cgroups
from gateway.runtime.probe import probe
from gateway.runtime.sandbox import Layers, SandboxConfig, ended_by, prepare
from gateway.runtime.users import TenantUids

REQUIRED = os.environ.get("TEST_SANDBOX") == "required"  # CI sets it
NODE = shutil.which("node") or "/usr/bin/node"
BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"
RUN_TIMEOUT_S = 30.0  # the wall kill of a test's script; every script ends well before
UIDS = TenantUids(1_500_000, 100)
TENANT_A, TENANT_B = "tenant-a", "tenant-b"
NONE = Layers(uid=False, limits=False, namespaces=False, seccomp=False, node_permissions=False)
LIMITS = Limits(cpu_seconds=1, memory_mib=128, pids=32)

# Prints what each attempt gave (`{"name": result or error code}`), for the one-layer tests.
TRY = """
const results = {};
function attempt(name, action) {
  try { results[name] = action(); } catch (e) { results[name] = e.code || String(e); }
}
process.on('exit', () => console.log(JSON.stringify(results)));
"""


@pytest.fixture(scope="module")
def host() -> SandboxConfig:
    """The sandbox's configuration on this host, once the host is known to run it."""
    missing = []
    if os.geteuid() != 0:
        missing.append("the tests must run as root (they start scripts as other uids)")
    else:
        support = probe(SandboxConfig(node=NODE, bwrap=BWRAP), probe_uid=UIDS.uid_for("probe"))
        missing += support.missing
    if missing:
        message = "; ".join(missing)
        if REQUIRED:
            pytest.fail(f"{message} (TEST_SANDBOX=required)", pytrace=False)
        pytest.skip(f"{message} (set TEST_SANDBOX=required to fail instead)")
    return SandboxConfig(node=NODE, bwrap=BWRAP, limits=LIMITS, cgroups=detect_cgroups())


@pytest.fixture
def cgroup_host(host: SandboxConfig) -> SandboxConfig:
    if host.cgroups is None:
        message = "no writable memory/pids cgroup on this host"
        if REQUIRED:
            pytest.fail(f"{message} (TEST_SANDBOX=required)", pytrace=False)
        pytest.skip(message)
    return host


@pytest.fixture
def folders() -> Iterator[Path]:
    """A world-traversable folder (the tenants' uids must reach their hook folders)."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    base.chmod(0o755)
    (base / "runtime").mkdir(mode=0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def hook_folder(base: Path, name: str, files: dict[str, str]) -> Path:
    folder = base / name
    folder.mkdir(mode=0o755)
    for file, text in files.items():
        (folder / file).write_text(text)
        (folder / file).chmod(0o644)
    return folder


@dataclass
class Ended:
    returncode: int
    stdout: str
    stderr: str

    def results(self) -> dict[str, object]:
        assert self.stdout, f"no output; status {self.returncode}, stderr: {self.stderr[-500:]}"
        parsed: dict[str, object] = json.loads(self.stdout.splitlines()[-1])
        return parsed


class Started:
    """A sandboxed script running in the background (the victim of the signalling tests)."""

    def __init__(self, config: SandboxConfig, base: Path, tenant: str, js: str) -> None:
        hook = hook_folder(base, f"hook-{tenant}-{len(list(base.iterdir()))}", {"main.js": js})
        self.launch = prepare(config, uid=UIDS.uid_for(tenant) if config.layers.uid else None,
                              runtime_dir=base / "runtime", hook_dir=hook, entry=hook / "main.js")
        self.proc = subprocess.Popen(  # noqa: S603 - the sandbox's own argv
            self.launch.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            **self.launch.popen_kwargs(),
        )
        self.launch.started()

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"ready\n"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=RUN_TIMEOUT_S)
        self.launch.close()


def run(config: SandboxConfig, base: Path, js: str, *, tenant: str = TENANT_A) -> Ended:
    """Run `js` as the main script of a new hook folder of `tenant`, to its end."""
    started = Started(config, base, tenant, js)
    try:
        out, err = started.proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        started.stop()
        pytest.fail("a sandboxed script outlived the test's wall timeout")
    finally:
        started.launch.close()
    return Ended(started.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def only(config: SandboxConfig, **on: bool) -> SandboxConfig:
    return replace(config, layers=replace(NONE, **on))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener of the test's own; a script that reached it leaves a connection
    in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def accepted_nothing(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# --- every layer on: a sound script still works --------------------------------------------


def test_a_well_behaved_script_runs_with_every_layer_on(host: SandboxConfig, folders: Path) -> None:
    ended = run(host, folders, TRY + """
attempt('own file', () => require('fs').readFileSync(__filename, 'utf8').length > 0);
attempt('hash', () => require('crypto').createHash('sha256').update('x').digest('hex').slice(0, 8));
attempt('random', () => require('crypto').randomBytes(8).length);
attempt('uid', () => process.getuid());
attempt('env', () => Object.keys(process.env).sort().join(','));
""")
    assert ended.returncode == 0, ended.stderr
    assert ended.results() == {"own file": True, "hash": "2d711642", "random": 8,
                               "uid": UIDS.uid_for(TENANT_A), "env": "LANG,NODE_ENV,PWD,TZ"}


# --- each layer alone ------------------------------------------------------------------------


def test_uid_layer_alone_runs_without_capabilities_or_new_privileges(
    host: SandboxConfig, folders: Path
) -> None:
    ended = run(only(host, uid=True), folders, TRY + """
const status = require('fs').readFileSync('/proc/self/status', 'utf8');
for (const key of ['Uid', 'Gid', 'Groups', 'CapEff', 'CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs'])
  results[key] = status.match(new RegExp('^' + key + ':[ \\t]*(.*)$', 'm'))[1].trim();
attempt('chown', () => require('fs').chownSync(__filename, 0, 0));
""")
    uid = "\t".join([str(UIDS.uid_for(TENANT_A))] * 4)  # real, effective, saved, filesystem
    assert ended.results() == {"Uid": uid, "Gid": uid, "Groups": "", "CapEff": "0000000000000000",
                               "CapPrm": "0000000000000000", "CapBnd": "0000000000000000",
                               "CapAmb": "0000000000000000", "NoNewPrivs": "1", "chown": "EPERM"}


def test_uid_layer_alone_stops_signalling_another_tenants_process(host: SandboxConfig, folders: Path) -> None:
    config = only(host, uid=True)
    victim = Started(config, folders, TENANT_B, "console.log('ready'); setTimeout(() => {}, 25000);")
    try:
        victim.wait_ready()
        ended = run(config, folders, TRY + f"""
attempt('other tenant', () => process.kill({victim.proc.pid}, 'SIGKILL'));
attempt('the gateway', () => process.kill({os.getpid()}, 0));
""")
        assert ended.results() == {"other tenant": "EPERM", "the gateway": "EPERM"}
        assert victim.proc.poll() is None, "the other tenant's process was killed"
    finally:
        victim.stop()
    assert UIDS.uid_for(TENANT_A) != UIDS.uid_for(TENANT_B)


def test_limits_alone_stop_a_cpu_loop(host: SandboxConfig, folders: Path) -> None:
    ended = run(only(host, limits=True), folders, "for (;;) {}")
    assert ended_by(ended.returncode) in (signal.SIGXCPU, signal.SIGKILL)


def test_limits_alone_stop_a_memory_hog_by_address_space(host: SandboxConfig, folders: Path) -> None:
    config = replace(only(host, limits=True), cgroups=None,
                     limits=replace(LIMITS, address_space_mib=1024, memory_mib=None))
    ended = run(config, folders, """
const kept = [];
for (let i = 0; i < 1000; i++) kept.push(Buffer.alloc(16 << 20, 1));
console.log('ESCAPED');
""")
    assert ended.returncode != 0 and "ESCAPED" not in ended.stdout
    assert "Array buffer allocation failed" in ended.stderr or "out of memory" in ended.stderr


def test_limits_alone_stop_a_memory_hog_by_cgroup(cgroup_host: SandboxConfig, folders: Path) -> None:
    config = replace(only(cgroup_host, limits=True), limits=replace(LIMITS, memory_mib=96))
    ended = run(config, folders, """
const kept = [];
for (let i = 0; i < 1000; i++) kept.push(Buffer.alloc(16 << 20, 1));
console.log('ESCAPED');
""")
    assert ended_by(ended.returncode) == signal.SIGKILL, ended.stderr  # the cgroup's OOM killer


def test_limits_alone_stop_a_fork_bomb_by_cgroup(cgroup_host: SandboxConfig, folders: Path) -> None:
    ended = run(only(cgroup_host, limits=True), folders, TRY + """
const { spawn } = require('child_process');
results.started = 0; results.refused = [];
for (let i = 0; i < 40; i++) {
  try {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' });
    if (child.pid) results.started++;
    child.on('error', (e) => results.refused.push(e.code));
  } catch (e) { results.refused.push(e.code); }
}
setTimeout(() => process.exit(0), 200);
""")
    results = ended.results()
    assert isinstance(results["refused"], list) and "EAGAIN" in results["refused"]
    assert isinstance(results["started"], int) and results["started"] < 40


def test_limits_alone_stop_big_files_and_many_open_files(host: SandboxConfig, folders: Path) -> None:
    writable = folders / "writable"
    writable.mkdir()
    ended = run(only(host, limits=True), folders, TRY + f"""
attempt('big file', () => require('fs').writeFileSync('{writable}/big', Buffer.alloc(2 << 20)));
attempt('open files', () => {{ for (let i = 0; i < 1000; i++) require('fs').openSync(__filename, 'r'); }});
""")
    assert ended.results() == {"big file": "EFBIG", "open files": "EMFILE"}
    assert (writable / "big").stat().st_size <= LIMITS.file_size_mib << 20


def test_bubblewrap_alone_hides_the_host_and_the_network(
    host: SandboxConfig, folders: Path, listener: socket.socket
) -> None:
    other = hook_folder(folders, "other-hook", {"secret.js": "module.exports = 'other tenant'"})
    port = listener.getsockname()[1]
    ended = run(only(host, namespaces=True), folders, TRY + f"""
const fs = require('fs');
attempt('passwd', () => fs.readFileSync('/etc/passwd', 'utf8'));
attempt('other hook', () => fs.readFileSync('{other}/secret.js', 'utf8'));
attempt('root', () => fs.readdirSync('/').sort().join(','));
attempt('write hook', () => fs.writeFileSync('/hook/x.js', 'x'));
attempt('write tmp', () => fs.writeFileSync('/tmp/x', 'x'));
attempt('shell', () => {{ const r = require('child_process').spawnSync('/bin/sh', ['-c', 'id']);
                          return r.error ? r.error.code : r.status; }});
attempt('gateway pid', () => process.kill({os.getpid()}, 0));
require('net').connect({port}, '127.0.0.1')
  .on('connect', () => {{ results.connect = 'connected'; process.exit(0); }})
  .on('error', (e) => {{ results.connect = e.code; }});
""")
    assert ended.results() == {
        "passwd": "ENOENT", "other hook": "ENOENT", "root": "hook,lib,lib64,runtime,usr",
        "write hook": "EROFS", "write tmp": "ENOENT", "shell": "ENOENT", "gateway pid": "ESRCH",
        "connect": "ECONNREFUSED",
    }
    assert accepted_nothing(listener)


def test_seccomp_alone_stops_new_processes_and_network_sockets(
    host: SandboxConfig, folders: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    ended = run(only(host, seccomp=True), folders, TRY + f"""
const cp = require('child_process');
attempt('spawn', () => {{ const r = cp.spawnSync('/bin/true'); return r.error ? r.error.code : r.status; }});
attempt('execSync', () => cp.execSync('true'));
const {{ Worker }} = require('worker_threads');  // a thread: clone with CLONE_THREAD stays allowed
new Worker('0', {{ eval: true }}).on('exit', (code) => {{ results['worker thread'] = code; }});
const unix = require('net').createServer().listen('\\0sandbox-test-' + process.pid, () => {{
  results['unix socket'] = 'listening'; unix.close();
}});
require('net').connect({port}, '127.0.0.1')
  .on('connect', () => {{ results.connect = 'connected'; process.exit(0); }})
  .on('error', (e) => {{ results.connect = e.code; }});
""")
    assert ended.results() == {"spawn": "EPERM", "execSync": "EPERM", "worker thread": 0,
                               "unix socket": "listening", "connect": "EAFNOSUPPORT"}
    assert accepted_nothing(listener)


def test_node_permissions_alone_stop_files_processes_and_workers(host: SandboxConfig, folders: Path) -> None:
    ended = run(only(host, node_permissions=True), folders, TRY + """
const fs = require('fs');
attempt('passwd', () => fs.readFileSync('/etc/passwd', 'utf8'));
attempt('write', () => fs.writeFileSync(__dirname + '/x.js', 'x'));
attempt('spawn', () => require('child_process').spawnSync('/bin/true'));
attempt('mainModule', () => process.mainModule.require('child_process').execSync('id'));
attempt('worker', () => new (require('worker_threads').Worker)('0', { eval: true }));
""")
    assert ended.results() == {"passwd": "ERR_ACCESS_DENIED", "write": "ERR_ACCESS_DENIED",
                               "spawn": "ERR_ACCESS_DENIED", "mainModule": "ERR_ACCESS_DENIED",
                               "worker": "ERR_ACCESS_DENIED"}


# --- every layer on: hostile scripts ----------------------------------------------------------

HOSTILE = {
    "read /etc/passwd": "console.log(require('fs').readFileSync('/etc/passwd', 'utf8'))",
    "read another hook": "console.log(require('fs').readFileSync(process.argv[2], 'utf8'))",
    "write a file": "require('fs').writeFileSync(__dirname + '/planted.js', 'x')",
    "spawn a process": "require('child_process').spawnSync('/bin/sh', ['-c', 'echo ESCAPED'])",
    "mainModule child_process": "process.mainModule.require('child_process').execSync('id')",
    "fork bomb": "for (;;) require('child_process').fork(__filename)",
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_hostile_script_fails_with_every_layer_on(host: SandboxConfig, folders: Path, attack: str) -> None:
    other = hook_folder(folders, "other-hook", {"secret.js": "ESCAPED"})
    js = HOSTILE[attack].replace("process.argv[2]", json.dumps(str(other / "secret.js")))
    ended = run(host, folders, js + "\nconsole.log('ESCAPED');")
    assert ended.returncode == 1 and "ESCAPED" not in ended.stdout
    assert "ERR_ACCESS_DENIED" in ended.stderr
    assert not list(folders.glob("**/planted.js"))


def test_connecting_to_a_local_port_fails_with_every_layer_on(
    host: SandboxConfig, folders: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    ended = run(host, folders, f"require('net').connect({port}, '127.0.0.1').on('connect', () => "
                               "console.log('ESCAPED'));")
    assert ended.returncode == 1 and "ESCAPED" not in ended.stdout
    assert "EAFNOSUPPORT" in ended.stderr
    assert accepted_nothing(listener)


def test_a_cpu_loop_is_killed_with_every_layer_on(host: SandboxConfig, folders: Path) -> None:
    ended = run(host, folders, "for (;;) {}")
    assert ended_by(ended.returncode) in (signal.SIGXCPU, signal.SIGKILL)


def test_a_memory_hog_is_stopped_with_every_layer_on(host: SandboxConfig, folders: Path) -> None:
    ended = run(host, folders, """
const kept = [];
for (let i = 0; i < 1000; i++) kept.push(Buffer.alloc(16 << 20, 1));
console.log('ESCAPED');
""")
    assert ended.returncode != 0 and "ESCAPED" not in ended.stdout
    assert ended_by(ended.returncode) == signal.SIGKILL or "allocation failed" in ended.stderr


def test_signalling_another_tenant_fails_with_every_layer_on(host: SandboxConfig, folders: Path) -> None:
    victim = Started(host, folders, TENANT_B, "console.log('ready'); setTimeout(() => {}, 25000);")
    try:
        victim.wait_ready()
        ended = run(host, folders, f"process.kill({victim.proc.pid}, 'SIGKILL'); console.log('ESCAPED');")
        assert ended.returncode == 1 and "ESCAPED" not in ended.stdout
        assert "ESRCH" in ended.stderr  # another pid namespace: the victim is not even visible
        assert victim.proc.poll() is None
    finally:
        victim.stop()


def test_cgroup_is_removed_when_the_process_ends(cgroup_host: SandboxConfig, folders: Path) -> None:
    hook = hook_folder(folders, "hook", {"main.js": "for (;;) {}"})
    launch = prepare(cgroup_host, uid=UIDS.uid_for(TENANT_A), runtime_dir=folders / "runtime",
                     hook_dir=hook, entry=hook / "main.js")
    assert launch.cgroup is not None
    cgroup_folders = list(launch.cgroup.folders)
    proc = subprocess.Popen(launch.argv, **launch.popen_kwargs())  # noqa: S603 - the sandbox's argv
    launch.started()
    proc.kill()
    proc.wait(timeout=RUN_TIMEOUT_S)
    launch.close()
    assert cgroup_folders and not any(f.exists() for f in cgroup_folders)


def test_probe_names_what_is_missing(folders: Path) -> None:
    support = probe(SandboxConfig(node=str(folders / "no-node"), bwrap=str(folders / "no-bwrap")),
                    probe_uid=UIDS.uid_for("probe"))
    assert not support.ready
    assert any(m.startswith("node: no executable") for m in support.missing)
    assert any(m.startswith("bubblewrap: no ") for m in support.missing)
    assert "unavailable" in support.report()


def test_tenant_uids_are_distinct_and_bounded() -> None:
    uids = TenantUids(2_000_000, 2)
    assert uids.uid_for("a") != uids.uid_for("b")
    assert uids.uid_for("a") == uids.uid_for("a")
    with pytest.raises(Exception, match="exhausted"):
        uids.uid_for("c")
