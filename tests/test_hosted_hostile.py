"""Hostile scripts through hooks (issue 16, "What it must show"): each attack is a real hook with a
`script` of one tenant, called through the gateway on a blocking point (and, for some, on an
asynchronous one) while a hook of ANOTHER tenant is called over and over, with a secret of its
own.

Each attack ends as a recorded failed attempt; where the script catches what it tried and answers
with its loot (as an attacker would, in the token's claims), the answer and the recorded attempt
show it got nothing. Meanwhile the other tenant's hook answers every call correctly, from the same
process throughout, and the gateway lives.

Every layer is on, as in production; tests/test_sandbox.py shows each layer alone. Needs what
tests/test_hosted_hooks.py needs (skipped without it, failed with TEST_SANDBOX=required).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Gateway
from test_hosted_hooks import EXTENSION_SECRET, children, event_of, runtime_settings, sandbox_host

from gateway.runtime.hosting import RUNTIME_DIR
from gateway.runtime.supervisor import SCRIPT_FILE, Supervisor
from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only
__all__ = ["sandbox_host"]  # the fixture, imported for this module's tests

UID_FIRST = 1_700_000  # a range of this file's own (test_sandbox: 1_500_000, test_hosted_hooks: 1_600_000)
VICTIM, EVIL = "victim", "evil"
VICTIM_SECRET = "victim-secret-" + os.urandom(12).hex()  # noqa: S105 - a test value, new each run
MAX_BYSTANDER_CALLS = 2000  # the other tenant's calls during one attack, at most
BYSTANDER_PAUSE_S = 0.02  # between two of its calls (pacing only; nothing waits on it)
MAX_WAITS = 2000  # polls of 10 ms for the other tenant's next answer after an attack, at most
LOOT = "https://example.com/loot"
BLOCKING, ASYNC = "credentials-exchange", "post-user-registration"
KEY_CLAIM = "https://example.com/key"

# The other tenant's hook: answers with its own secret.
VICTIM_SCRIPT = """module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/key': context.webtask.secrets.VICTIM_KEY });
};"""

# The script's entry point per extensibility point.
HEADS = {
    "credentials-exchange": "module.exports = function (client, scope, audience, context, cb) {\n",
    "post-user-registration": "module.exports = function (user, context, cb) {\n",
}
# Tries each action, keeping what it got or the error's code; the script answers with the loot.
GRAB = """
const loot = {};
const grab = (name, action) => {
  try { loot[name] = { got: String(action()).slice(0, 4000) }; }
  catch (e) { loot[name] = { refused: String((e && (e.code || e.name)) || e) }; }
};
"""


def script(point: str, body: str, **values: Any) -> str:
    """A hook script for `point` whose function runs `body`; each NAME in `values` is replaced by
    the value as a JavaScript literal."""
    for name, value in values.items():
        body = body.replace(name, json.dumps(value))
    return HEADS[point] + body + "\n};\n"


@dataclass
class Arena:
    """A gateway running hosted hooks; tenant `victim` has a hook with a secret, tenant `evil`
    the attacks."""

    gw: Gateway
    supervisor: Supervisor
    victim: str  # the victim's hook id
    answers: list[dict[str, Any]] = field(default_factory=list)

    def folder_of(self, hook_id: str) -> Path:
        """The host folder of the hook's live process (the supervisor's base_dir/<hook>-<n>)."""
        (folder,) = self.supervisor.base_dir.glob(f"{hook_id}-*")
        return folder

    async def sibling_folder(self) -> Path:
        """The folder of another hook of the evil tenant (same tenant, so the same uid), once its
        pre-warmed process has it."""
        resp = await self.gw.client.post("/api/v2/hooks", headers=self.gw.auth(EVIL), json={
            "name": "sibling", "triggerId": "pre-user-registration", "enabled": True,
            "script": "module.exports = function (user, context, cb) { cb(null, {}); };"})
        assert resp.status == 201, await resp.text()
        sibling = (await resp.json())["id"]
        for _ in range(MAX_WAITS):
            if sibling in self.supervisor.live():
                break
            await asyncio.sleep(0.01)
        return self.folder_of(sibling)

    def victim_pids(self) -> dict[str, int]:
        """The victim's bubblewrap, its sandbox's pid 1 and node, as host pids."""
        bwrap = self.supervisor.live()[self.victim]
        (init,) = children(bwrap)
        (node,) = children(init)
        return {"bwrap": bwrap, "sandbox init": init, "node": node}

    async def victim_answer(self) -> dict[str, Any]:
        resp = await self.gw.forward("credentials-exchange", event_of("credentials-exchange"), tenant=VICTIM)
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        assert answer["status"] == "success" and answer["data"][KEY_CLAIM] == VICTIM_SECRET, answer
        return answer

    @contextlib.asynccontextmanager
    async def meanwhile(self) -> AsyncIterator[None]:
        """The victim's hook is called over and over while the body runs, and once more at least
        after it; every call must answer correctly, from the same process, as before."""
        before = self.victim_pids()
        answers = self.answers

        async def keep_calling(stop: asyncio.Event) -> None:
            for _ in range(MAX_BYSTANDER_CALLS):
                if stop.is_set():
                    return
                answers.append(await self.victim_answer())
                await asyncio.sleep(BYSTANDER_PAUSE_S)

        stop = asyncio.Event()
        calling = asyncio.ensure_future(keep_calling(stop))
        try:
            yield
            seen = len(answers)
            for _ in range(MAX_WAITS):
                if len(answers) > seen or calling.done():
                    break
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await calling  # raises what a wrong answer raised
        assert len(answers) > seen, "the other tenant's hook stopped answering"
        assert self.victim_pids() == before, "the other tenant's process was killed or replaced"

    async def hostile_hook(self, point: str, js: str, **fields: Any) -> dict[str, Any]:
        body = {"name": "hostile", "triggerId": point, "script": js, "enabled": True, **fields}
        resp = await self.gw.client.post("/api/v2/hooks", json=body, headers=self.gw.auth(EVIL))
        assert resp.status == 201, await resp.text()
        hook: dict[str, Any] = await resp.json()
        await self.gw.add_secrets(hook["id"], {"auth0-extension-secret": EXTENSION_SECRET, "OWN": "evil-own"},
                                  EVIL)
        return hook

    async def attack(self, point: str, js: str, **fields: Any) -> Outcome:
        """Create the hostile hook and trigger its point once, while the victim is called."""
        hook = await self.hostile_hook(point, js, **fields)
        async with self.meanwhile():
            resp = await self.gw.forward(point, event_of(point), tenant=EVIL)
            assert resp.status == (200 if point == BLOCKING else 202), await resp.text()
            got: dict[str, Any] = await resp.json()
            if point == BLOCKING:
                delivery = await self.gw.only_delivery(hook["id"], EVIL)
            else:
                (created,) = got["deliveries"]
                delivery = await self.gw.wait_delivery(created["deliveryId"], attempts=1, tenant=EVIL)
        assert VICTIM_SECRET not in json.dumps([got, delivery]), "the attacker got the other tenant's secret"
        return Outcome(hook["id"], got if point == BLOCKING else None, delivery["attempts"][0])


@dataclass
class Outcome:
    hook_id: str
    answer: dict[str, Any] | None  # what a blocking point's caller got (None: an asynchronous point)
    attempt: dict[str, Any]  # the first attempt, as recorded


@pytest.fixture
async def arena(sandbox_host: None, make_gateway: Callable[..., Awaitable[Gateway]],
                make_settings: Callable[..., Settings]) -> Arena:
    # [egress] as by default (no loopback allowed): a script's way out through the egress proxy is
    # refused for the host's own ports too.
    settings = make_settings(runtime=runtime_settings(uid_first=UID_FIRST, recycle_calls=1_000_000),
                             egress={"allow_cidrs": []})
    gw = await make_gateway(settings)
    supervisor = gw.svc.registry.hosting.supervisor
    assert supervisor is not None, gw.svc.registry.hosting.refusal
    await gw.create_tenant(VICTIM)
    await gw.create_tenant(EVIL)
    resp = await gw.client.post("/api/v2/hooks", headers=gw.auth(VICTIM), json={
        "name": "victim", "triggerId": "credentials-exchange", "script": VICTIM_SCRIPT, "enabled": True})
    assert resp.status == 201, await resp.text()
    victim = (await resp.json())["id"]
    await gw.add_secrets(victim, {"auth0-extension-secret": EXTENSION_SECRET, "VICTIM_KEY": VICTIM_SECRET},
                         VICTIM)
    arena = Arena(gw, supervisor, victim)
    await arena.victim_answer()  # its process is up
    return arena


def assert_failed(outcome: Outcome, *reasons: str) -> None:
    """The attack is a failed attempt whose recorded error names one of `reasons`; a blocking
    caller got the chain's error."""
    if outcome.answer is not None:
        assert outcome.answer["status"] == "error", outcome
        assert outcome.answer["data"]["name"] == "ServerError", outcome
    error = outcome.attempt["error"]
    assert error and any(r in error for r in reasons), outcome.attempt


def accepted(listener: socket.socket) -> int:
    """How many connections a non-blocking listener holds, waiting to be accepted (closed here)."""
    for count in range(100):
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
    return 100


def loot_of(outcome: Outcome) -> dict[str, Any]:
    """The loot a script answered with: the answer and the recorded attempt hold the same."""
    attempt = outcome.attempt
    assert attempt["statusCode"] == 200 and attempt["error"] is None, attempt
    recorded = json.loads(attempt["responseBody"])
    assert recorded["status"] == "success", recorded
    loot: dict[str, Any] = recorded["data"][LOOT]
    if outcome.answer is not None:
        assert outcome.answer["data"][LOOT] == loot
    return loot


def refused_all(outcome: Outcome) -> dict[str, Any]:
    """The loot, once every action in it was refused."""
    loot = loot_of(outcome)
    got = {name: result for name, result in loot.items() if "refused" not in result}
    assert not got, f"the attack got something: {got}"
    return loot


# --- attacks that end as failed attempts ----------------------------------------------------------

# Refused by node's permissions ("Access to this API has been restricted"), or, were they bypassed,
# by a lower layer: no such file, a read-only file system, no permission, no new process.
DENIED = ("ERR_ACCESS_DENIED", "restricted", "ENOENT", "EROFS", "EACCES", "EPERM")
KILLED = ("killed", "allocation failed", "out of memory")



def answering(expression: str) -> str:
    """A script body that answers with what `expression` got, in a claim."""
    return f"cb(null, {{ 'https://example.com/got': String({expression}) }});"


ATTACKS: dict[str, tuple[str, int | None, tuple[str, ...]]] = {
    # name: (script body, the hook's timeoutMs or None, what the recorded error names)
    "read /etc/passwd": (answering("require('fs').readFileSync('/etc/passwd', 'utf8')"), None, DENIED),
    "read another hook's folder": (
        answering("require('fs').readFileSync(VICTIM_FOLDER + '/script.js', 'utf8')"), None, DENIED),
    "read a folder of another hook of the same tenant": (
        answering("require('fs').readFileSync(SIBLING_FOLDER + '/script.js', 'utf8')"), None, DENIED),
    "spawn a process": (answering("require('child_process').execSync('id')"), None, DENIED),
    "mainModule child_process": (answering("process.mainModule.require('child_process').execSync('id')"),
                                 None, DENIED),
    "spawn through the process binding": (  # node's internal spawn, under its permission checks
        "const pipe = { type: 'pipe', readable: true, writable: true };\n"
        "const r = process.binding('spawn_sync').spawn({ file: '/bin/sh', args: ['sh', '-c', 'id'],\n"
        "  stdio: [pipe, pipe, pipe] });\n"
        "if (r.error) throw Object.assign(new Error('spawn failed: errno ' + r.error), { code: 'ESPAWN' });\n"
        + answering("r.output"), None, (*DENIED, "spawn failed")),
    "connect to a local port": (  # the connection's error comes asynchronously and is not handled
        "require('net').connect(PORT, '127.0.0.1').on('connect', () => cb(null, {}));", None,
        ("ECONNREFUSED", "EAFNOSUPPORT", "ENETUNREACH", "EPERM", "EACCES")),
    "loop forever": ("for (;;) {}", 1000, ("timed out after 1000 ms",)),
    "block forever": ("Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);", 1000,
                      ("timed out after 1000 ms",)),
    "allocate until memory runs out": ("const kept = []; for (;;) kept.push(Buffer.alloc(16 << 20, 1));",
                                       20_000, KILLED),
    "fork bomb: child_process.fork": (
        "for (let i = 0; i < 100000; i++) require('child_process').fork('/hook/script.js');", None, DENIED),
    "fork bomb: workers": (
        "const { Worker } = require('worker_threads');\n"
        "for (let i = 0; i < 100000; i++) new Worker('for (;;) {}', { eval: true });",
        None, (*DENIED, *KILLED)),
    "fork bomb: deep recursion": ("const down = (n) => down(n + 1) + 1; down(0);", None,
                                  ("Maximum call stack size exceeded",)),
    "fork bomb: promise flood": ("const flood = () => Promise.resolve().then(flood); flood();", 2000,
                                 ("timed out after 2000 ms", *KILLED)),
    "throws": ("throw new Error('thrown by hook');", None, ("thrown by hook",)),
}
ASYNC_ATTACKS = ("read another hook's folder", "loop forever", "allocate until memory runs out",
                 "connect to a local port")


@pytest.mark.parametrize(("point", "attack"),
                         [(BLOCKING, a) for a in ATTACKS] + [(ASYNC, a) for a in ASYNC_ATTACKS])
async def test_an_attack_is_a_recorded_failed_attempt_while_another_tenant_answers(
    arena: Arena, point: str, attack: str
) -> None:
    body, timeout_ms, reasons = ATTACKS[attack]
    listener = socket.create_server(("127.0.0.1", 0))  # records whether anything connected
    listener.setblocking(False)
    try:
        sibling = str(await arena.sibling_folder()) if "SIBLING_FOLDER" in body else ""
        js = script(point, body, VICTIM_FOLDER=str(arena.folder_of(arena.victim)), SIBLING_FOLDER=sibling,
                    PORT=listener.getsockname()[1])
        outcome = await arena.attack(point, js, **({"timeoutMs": timeout_ms} if timeout_ms else {}))
        assert accepted(listener) == 0
    finally:
        listener.close()
    assert_failed(outcome, *reasons)
    recorded = json.dumps([outcome.answer, outcome.attempt])
    assert "root:x:0:0" not in recorded and "uid=" not in recorded and "VICTIM_KEY" not in recorded
    if outcome.attempt["statusCode"] is None and point == BLOCKING:  # no answer: its process was killed
        assert outcome.hook_id not in arena.supervisor.live()


# --- attacks whose script catches what it tried and answers with its loot ----------------------------

SECRETS = GRAB + """
const fs = require('fs');
grab('context.webtask.secrets', () => { const s = Object.keys(context.webtask.secrets).sort().join(',');
  if (s !== 'OWN,auth0-extension-secret') return s; throw { code: 'only its own: ' + s }; });
grab('process.env', () => { const k = Object.keys(process.env).sort().join(',');
  if (k !== 'LANG,NODE_ENV,PWD,TZ') return JSON.stringify(process.env); throw { code: 'only ' + k }; });
for (const pid of ['self', 1, 2, 3].concat(PIDS)) {
  for (const file of ['environ', 'cmdline', 'mem', 'maps']) {
    grab('/proc/' + pid + '/' + file, () => fs.readFileSync('/proc/' + pid + '/' + file));
  }
}
grab('the other hook folder', () => fs.readdirSync(VICTIM_FOLDER));
grab('the other hook script', () => fs.readFileSync(VICTIM_FOLDER + '/script.js', 'utf8'));
grab('the hooks folder', () => fs.readdirSync(BASE));
grab('the process binding', () => process.binding('fs').readFileUtf8(VICTIM_FOLDER + '/script.js', 0));
grab('the inspector', () => require('inspector').open(0));
grab('other channels', () => { const found = [];
  for (let fd = 3; fd < 64; fd++) { try { if (fs.fstatSync(fd).isSocket()) found.push(fd); } catch (e) {} }
  if (found.length === 1) throw { code: 'only its own channel' }; return found.join(','); });
cb(null, { 'https://example.com/loot': loot });
"""

WRITE = GRAB + """
const fs = require('fs');
for (const dir of ['/hook', '/tmp', '/', '/runtime', BASE, VICTIM_FOLDER, '/proc/self']) {
  const path = (dir === '/' ? '' : dir) + '/' + NAME;
  grab('write ' + path, () => fs.writeFileSync(path, 'pwned'));
  grab('binding ' + path, () => process.binding('fs').writeFileUtf8(path + '.b', 'pwned', 0o1101, 0o644));
  grab('open ' + path, () => fs.openSync(path, 'wx'));
  grab('mkdir ' + path, () => fs.mkdirSync(path + '.d'));
}
grab('a report file', () => { const file = process.report.writeReport('/hook/' + NAME + '.report');
  if (fs.existsSync(file)) return file; throw { code: 'no report written' }; });
cb(null, { 'https://example.com/loot': loot });
"""

SIGNALS = GRAB + """
for (const [name, pid] of Object.entries(PIDS)) {
  grab('SIGKILL ' + name, () => process.kill(pid, 'SIGKILL'));
  grab('SIGSTOP ' + name, () => process.kill(pid, 'SIGSTOP'));
  grab('the inspector of ' + name, () => process._debugProcess(pid));
}
grab('SIGKILL every process', () => process.kill(-1, 'SIGKILL'));
cb(null, { 'https://example.com/loot': loot });
"""


async def test_another_tenants_secret_is_out_of_reach(arena: Arena) -> None:
    """Its secret lives only in its own process (sent per call over its own channel): not in any
    environment, file or folder the attacker can reach."""
    pids = arena.victim_pids()
    js = script(BLOCKING, SECRETS, PIDS=list(pids.values()), VICTIM_FOLDER=str(arena.folder_of(arena.victim)),
                BASE=str(arena.supervisor.base_dir))
    loot = refused_all(await arena.attack(BLOCKING, js))
    assert loot["context.webtask.secrets"] == {"refused": "only its own: OWN,auth0-extension-secret"}
    assert loot["process.env"] == {"refused": "only LANG,NODE_ENV,PWD,TZ"}
    assert loot["other channels"] == {"refused": "only its own channel"}
    assert {loot[f"/proc/{pid}/environ"]["refused"] for pid in pids.values()} <= {*DENIED, "ENOENT"}


async def test_nothing_a_script_writes_reaches_the_host(arena: Arena) -> None:
    """To its own folder (/hook), /tmp, /, the runtime, or the host paths of the hooks' folders."""
    name = "pwned-" + os.urandom(6).hex()
    base = arena.supervisor.base_dir
    victim_folder = arena.folder_of(arena.victim)
    outcome = await arena.attack(BLOCKING, script(BLOCKING, WRITE, NAME=name, BASE=str(base),
                                                  VICTIM_FOLDER=str(victim_folder)))
    loot = refused_all(outcome)
    assert len(loot) == 7 * 4 + 1, loot
    own = arena.folder_of(outcome.hook_id)  # its process lives on: the folder it had at /hook
    assert (own / SCRIPT_FILE).read_text().startswith(HEADS[BLOCKING])
    assert (victim_folder / SCRIPT_FILE).read_text() == VICTIM_SCRIPT
    for where in (Path(tempfile.gettempdir()), Path("/"), RUNTIME_DIR):
        assert not list(where.glob(f"{name}*")), where
    assert not list(base.rglob(f"{name}*"))


@pytest.mark.parametrize("point", [BLOCKING, ASYNC])
async def test_signals_reach_no_other_process(arena: Arena, point: str) -> None:
    """Kill, stop or debug the gateway, the other tenant's processes (their host pids, read through
    the supervisor) or every process at once: each is refused, and they all keep running."""
    pids = {"the gateway": os.getpid(), **arena.victim_pids()}
    js = script(point, SIGNALS, PIDS=pids)
    loot = refused_all(await arena.attack(point, js))
    assert {result["refused"] for result in loot.values()} <= {"ESRCH", "EPERM"}, loot
    assert len(loot) == 3 * len(pids) + 1


CONNECT = r"""
const net = require('net');
const loot = {};
const url = 'http://127.0.0.1:' + PORT + '/';
const answered = (r) => { r.body && r.body.cancel && r.body.cancel(); if (r.ok) return 'HTTP ' + r.status;
  throw { code: 'HTTP ' + r.status }; };
const routes = {
  'net.connect': () => new Promise((ok, no) => {
    const s = net.connect(PORT, '127.0.0.1');
    s.on('connect', () => { s.destroy(); ok('connected'); });
    s.on('error', no);
  }),
  'CONNECT through the egress proxy': () => new Promise((ok, no) => {
    const s = net.connect('/hook/egress.sock');
    let head = '';
    const target = '127.0.0.1:' + PORT;
    s.on('connect', () => s.write('CONNECT ' + target + ' HTTP/1.1\r\nHost: ' + target + '\r\n\r\n'));
    s.on('data', (d) => {
      head += d;
      if (!head.includes('\r\n')) return;
      s.destroy();
      const line = head.split('\r\n')[0];
      if (/^HTTP\/1\.[01] 2/.test(line)) ok(line); else no({ code: line });
    });
    s.on('end', () => no({ code: 'closed' }));
    s.on('error', no);
  }),
  'fetch': () => fetch(url).then(answered),
  'http.get': () => new Promise((ok, no) => {
    require('http').get(url, (r) => { r.resume(); if (r.statusCode < 300) ok('HTTP ' + r.statusCode);
      else no({ code: 'HTTP ' + r.statusCode }); }).on('error', no);
  }),
  'udp': () => new Promise((ok, no) => {
    const u = require('dgram').createSocket('udp4');
    u.on('error', no);
    u.send('x', PORT, '127.0.0.1', (e) => { u.close(); if (e) no(e); else ok('sent'); });
  }),
};
const reason = (e) => String((e && (e.code || (e.cause && (e.cause.code || e.cause.message)) || e.message))
  || e);
const late = () => new Promise((ok, no) => setTimeout(() => no({ code: 'no answer' }), 3000));
const within = (p) => Promise.race([p, late()]);
Promise.all(Object.entries(routes).map(([name, route]) => within(Promise.resolve().then(route)).then(
  (got) => { loot[name] = { got: String(got) }; },
  (e) => { loot[name] = { refused: reason(e) }; })))
  .then(() => cb(null, { 'https://example.com/loot': loot }));
"""


async def test_a_port_on_the_hosts_loopback_sees_no_connection(arena: Arena) -> None:
    """Directly (TCP, UDP), or through the gateway's egress proxy (a raw CONNECT, fetch, http) with
    [egress]'s default policy: listeners on the host's 127.0.0.1 see nothing."""
    tcp = socket.create_server(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", port))
        tcp.setblocking(False)
        udp.setblocking(False)
        loot = loot_of(await arena.attack(BLOCKING, script(BLOCKING, CONNECT, PORT=port)))
        assert accepted(tcp) == 0
        with pytest.raises(BlockingIOError):  # no datagram arrived
            udp.recv(64)
    finally:
        tcp.close()
        udp.close()
    assert set(loot) == {"net.connect", "CONNECT through the egress proxy", "fetch", "http.get", "udp"}
    got = {name: result for name, result in loot.items() if "refused" not in result and name != "udp"}
    assert not got, f"the attack got something: {got}"  # (a datagram "sent" inside reaches nothing)


# Writes a frame of its own on its channel to the gateway (its descriptor is in its argv).
FORGE = """
const fd = process.argv.slice(2).map(Number).find((n) => Number.isInteger(n) && n > 2);
const json = Buffer.from(FRAME);
const head = Buffer.alloc(4);
head.writeUInt32BE(json.length, 0);
require('fs').writeSync(fd, Buffer.concat([head, json]));
"""
FORGED = {
    # an answer whose id is no call's, and cannot be one: the process broke the protocol
    "an id that is a list": ('{"id":[1],"status":200,"body":"forged"}', "broke the protocol"),
    # an answer to its own call whose body holds half a UTF-16 pair (node never sends one)
    "a lone surrogate": ('{"id":1,"status":200,"body":"\\ud800"}', "answer is not JSON"),
}


@pytest.mark.parametrize("forged", list(FORGED))
async def test_a_forged_frame_fails_its_own_call_and_leaves_nothing_behind(arena: Arena, forged: str) -> None:
    """The gateway reads what a script writes on its channel as untrusted: a frame that breaks the
    protocol stops that process at once, failing its call, and everything it had (folder, cgroup,
    proxy) is released, as for any process that ends; a forged answer to its own call is read as
    any answer, and fails it."""
    frame, reason = FORGED[forged]
    outcome = await arena.attack(BLOCKING, script(BLOCKING, FORGE, FRAME=frame), timeoutMs=30_000)
    assert_failed(outcome, reason)
    if outcome.attempt["statusCode"] is None:
        assert outcome.hook_id not in arena.supervisor.live()
        for _ in range(MAX_WAITS):  # its folder goes once the process has ended
            if not list(arena.supervisor.base_dir.glob(f"{outcome.hook_id}-*")):
                break
            await asyncio.sleep(0.01)
        assert not list(arena.supervisor.base_dir.glob(f"{outcome.hook_id}-*"))
