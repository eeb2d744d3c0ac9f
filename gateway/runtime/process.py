"""One hook's runtime process: node running /runtime/runner.js inside the sandbox, spoken to
over one end of a Unix socket pair (gateway/runtime/wire.py).

Calls may overlap (node is asynchronous); each has its own wall timeout, and a call that runs
out of time kills the process, since its script may be looping where nothing else can stop it:
calls still in flight on it fail too. When the process ends for any reason (crash, the memory
cap's OOM kill, CPU limit, a protocol error), every call in flight fails with the reason: its exit
status (waited for a moment when it ended on its own) and its last line of output (its console, read
on a budget: gateway/runtime/output.py), with the hook's secrets taken out. The channel carries only
what was asked for: one `ready`, then one answer per call made, each frame no larger than the call's
answer may be; anything else is a protocol error, which ends the process.

A kill signals the sandbox's pid 1, which takes every process inside along, and bubblewrap; until
bubblewrap has reported that pid (at once, as it starts) the kill waits for it, at most
`EXIT_WAIT_S` (gateway/runtime/sandbox.py says why). Closing never waits without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GatewayError
from . import wire
from .output import Output
from .sandbox import SandboxConfig, child_pidfd, ended_by, prepare, read_sandbox_pid

log = logging.getLogger("gateway.runtime")

RUNNER = "runner.js"  # in the runtime folder, /runtime inside the sandbox
# A frame larger than a call's answer may be ends the process: an answer's body is at most the call's
# `body_cap` bytes, each of which JSON may escape into at most FRAME_ESCAPING in the frame (a control
# character as \u00XX), and FRAME_SLACK_BYTES hold the rest. Before any call only `ready` may come.
FRAME_ESCAPING = 6
FRAME_SLACK_BYTES = 4096
MAX_ABANDONED = 1024  # calls given up (a caller gone) whose late answer is still let through, at most
EXIT_GRACE_S = 1.0  # the channel ended on its own: how long the exit status may take before a kill
EXIT_WAIT_S = 5.0  # after SIGKILL, how long to wait for the exit status before giving up on it
MAX_SECRET_VALUES = 256  # secret values remembered to take out of the output, at most
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc/<pid>/stat's CPU times
OUTPUT_WAIT_S = 1.0  # after the exit, how long to wait for the last output (kept for the reason)


class RuntimeFailure(GatewayError):  # noqa: N818 - a failure the attempt records, as the transport's
    """A call to a hosted hook that got no answer; the message is the attempt's error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Answer:
    """What the hook's compiler answered, as webtask would have over HTTP."""

    status: int
    body: bytes


class HookProcess:
    """A started process (it may still be compiling the script when `start` returns)."""

    def __init__(self, hook_id: str, digest: str, proc: asyncio.subprocess.Process, channel: wire.Channel,
                 cleanup: Callable[[], None], info: socket.socket | None = None,
                 output: Output | None = None) -> None:
        self.hook_id = hook_id
        self.digest = digest  # of the script and point it runs: a new version is a new process
        self.calls = 0
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.retiring = False  # killed once its calls in flight are done (recycled, replaced)
        self.cpu_checked = time.monotonic()  # when the supervisor last read its CPU time
        self._proc = proc
        self._channel = channel
        self._cleanup = cleanup
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        # The hook's secrets as last encoded for a call: a hook's view hands every call the same
        # mapping until its secrets change, so they are encoded once, not once per call.
        self._secrets: Mapping[str, str] | None = None
        self._secrets_json = "{}"
        self._secret_values: set[str] = set()  # every secret value its calls had: kept out of reasons
        self._abandoned: dict[int, None] = {}  # calls given up unanswered: a late answer is no violation
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._output = output
        self._killed_because: str | None = None
        self._kill_due = False  # a SIGKILL is owed, sent once the sandbox's pid 1 is known
        self._sandbox_pidfd: int | None = None  # the sandbox's pid 1 (bubblewrap's --info-fd)
        self._sandbox_pid: int | None = None
        self._node_pid: int | None = None if info is not None else proc.pid  # node, for its CPU time
        # Signalled through a pidfd: Popen.send_signal first polls, reaping the child under
        # asyncio's child watcher, which then reports a made-up exit status (255).
        self._pidfd: int | None = _pidfd(proc.pid)
        self._give_up: asyncio.TimerHandle | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._learning = asyncio.ensure_future(self._learn_sandbox(info))
        self._learning.add_done_callback(self._learned)
        self._ending: asyncio.Future[None] | None = None
        channel.bind(self._message, self._lost)

    @classmethod
    async def start(
        cls,
        config: SandboxConfig,
        *,
        hook_id: str,
        digest: str,
        uid: int | None,
        runtime_dir: Path,
        hook_dir: Path,
        compiler: str,
        cleanup: Callable[[], None],
        node_modules: Path | None = None,
    ) -> HookProcess:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        output: Output | None = None
        try:
            output, output_fd = await Output.open()
            try:
                launch = prepare(config, uid=uid, runtime_dir=runtime_dir, hook_dir=hook_dir,
                                 entry=runtime_dir / RUNNER, args=[compiler, str(child.fileno())],
                                 node_modules=node_modules)
                kwargs = launch.popen_kwargs()
                kwargs["pass_fds"] = (*kwargs["pass_fds"], child.fileno())
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *launch.argv, stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd, **kwargs,
                    )
                except BaseException:
                    launch.close()
                    raise
                finally:
                    launch.started()
            finally:
                os.close(output_fd)  # the child's now: the pipe ends when the process has
            child.close()
            channel = wire.Channel(FRAME_SLACK_BYTES)
            await asyncio.get_running_loop().create_unix_connection(lambda: channel, sock=parent)
        except BaseException:
            child.close()
            parent.close()
            if output is not None:
                output.close()
            cleanup()
            raise

        def done() -> None:
            launch.close()
            cleanup()

        return cls(hook_id, digest, proc, channel, done, launch.info, output)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def ready(self) -> bool:
        """The script is compiled: calls are answered without waiting for the start."""
        return self._ready.done()

    @property
    def alive(self) -> bool:
        """Serving: not ended, nor being killed."""
        return self._killed_because is None and not self.ended.done()

    async def call(self, body: bytes, secrets: Mapping[str, str], timeout_s: float, body_cap: int,
                   *, timeout_ms: int | None = None) -> Answer:
        """`timeout_ms`: the call's whole timeout, for the message (`timeout_s` is what is left)."""
        if not self.alive:
            raise RuntimeFailure(self._killed_because or self.ended.result())
        call_id = next(self._ids)
        future: asyncio.Future[Answer] = self._loop.create_future()
        self._pending[call_id] = future
        self.calls += 1
        self.in_flight += 1
        self.last_used = time.monotonic()
        # One timer that fails the future: cheaper per call than asyncio.timeout and a shield.
        timer = self._loop.call_later(timeout_s, _expire, future)
        if (frame_cap := body_cap * FRAME_ESCAPING + FRAME_SLACK_BYTES) > self._channel.max_bytes:
            self._channel.max_bytes = frame_cap  # (the same for every call but in tests)
        try:
            if secrets is not self._secrets:
                self._secrets, self._secrets_json = secrets, wire.encode_secrets(dict(secrets))
                self._remember_secrets(secrets)
            self._channel.send(wire.encode_call(call_id, body.decode("utf-8", "replace"), self._secrets_json))
            try:
                answer = await future
            except _TimedOut:
                ms = timeout_ms if timeout_ms is not None else round(timeout_s * 1000)
                state = "answering" if self._ready.done() else "starting (compiling the script)"
                reason = f"timed out after {ms} ms while {state}; the hook's process was stopped"
                self.kill(f"another call to the hook timed out after {ms} ms and its process was stopped")
                raise RuntimeFailure(reason) from None
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)
            if not future.done() or future.cancelled() or future.exception() is not None:
                self._abandon(call_id)
            self.in_flight -= 1
            self.last_used = time.monotonic()
        if len(answer.body) > body_cap:
            raise RuntimeFailure(f"answer larger than {body_cap} bytes")
        return answer

    def _remember_secrets(self, secrets: Mapping[str, str]) -> None:
        """Secret values are taken out of what the process printed before it goes into a reason."""
        if len(self._secret_values) + len(secrets) > MAX_SECRET_VALUES:
            self._secret_values.clear()  # (a hook whose secrets change without end: the latest ones)
        self._secret_values.update(v for v in secrets.values() if isinstance(v, str))

    def _abandon(self, call_id: int) -> None:
        """The call ended unanswered (its caller gone, or out of time): its answer may still come."""
        self._abandoned[call_id] = None
        if len(self._abandoned) > MAX_ABANDONED:
            del self._abandoned[next(iter(self._abandoned))]

    def cpu_time(self) -> float | None:
        """The CPU seconds node has used (what RLIMIT_CPU counts: its threads'), from /proc; None
        when it is not known (yet): bubblewrap has not said where the sandbox is, or node ended."""
        pid = self._node_pid
        if pid is None:
            if self._sandbox_pid is None:
                return None
            try:  # node is the one child of the sandbox's pid 1
                with open(f"/proc/{self._sandbox_pid}/task/{self._sandbox_pid}/children", "rb") as f:
                    found = f.read().split()
            except OSError:
                return None
            if len(found) != 1:
                return None
            pid = self._node_pid = int(found[0])
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()  # from "state" on: utime, stime are 12th, 13th
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except (OSError, ValueError, IndexError):
            return None

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether the script compiled and the process serves, within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.wait([self._ready, self.ended], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        return self._ready.done() and not self.ended.done()

    def kill(self, because: str) -> None:
        """Stop the process now; calls in flight fail with `because`."""
        if self._killed_because is None:
            self._killed_because = because
        self._sigkill()

    def _sigkill(self) -> None:
        """SIGKILL the sandbox's pid 1 (every process inside goes with it) and bubblewrap.

        bubblewrap's --die-with-parent holds inside only once the sandbox is set up: SIGKILL to
        bubblewrap alone before that would leave the sandbox running, holding its end of the
        socket, and this process would never end. So while bubblewrap has not yet said which pid
        the sandbox has, the kill waits for it (`_learned`), at most EXIT_WAIT_S."""
        self._kill_due = True
        if not self._learning.done():
            if self._give_up is None:
                self._give_up = asyncio.get_running_loop().call_later(EXIT_WAIT_S, self._learning.cancel)
            return
        for pidfd in (self._sandbox_pidfd, self._pidfd):
            if pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)

    async def _learn_sandbox(self, info: socket.socket | None) -> None:
        """Read bubblewrap's report of the sandbox's pid 1 (it writes it and closes at once)."""
        if info is None:
            return
        pid = await read_sandbox_pid(info)
        if pid is not None:
            self._sandbox_pidfd = child_pidfd(pid, self._proc.pid)
            if self._sandbox_pidfd is not None:
                self._sandbox_pid = pid

    def _learned(self, _: object) -> None:
        if self._give_up is not None:
            self._give_up.cancel()
        if self._kill_due:
            self._sigkill()

    def _message(self, message: dict[str, Any]) -> None:
        """A message from the process, as wire.Channel cut it out; a ProtocolError ends the process."""
        if message.get("ready") is True:
            if self._ready.done():
                raise wire.ProtocolError("ready twice")
            self._ready.set_result(None)
            return
        call_id, status, body = message.get("id"), message.get("status"), message.get("body")
        if (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
                or not isinstance(body, str)):
            raise wire.ProtocolError("an answer without a status and a body")
        # The script may write on its channel too: an id that is no number (a list cannot
        # even be looked up) ends the process, as any broken frame does.
        if not isinstance(call_id, int) or isinstance(call_id, bool):
            raise wire.ProtocolError("an answer without a call's id")
        future = self._pending.get(call_id)
        if future is None:  # a call given up may still be answered, once; else no call was made
            if call_id not in self._abandoned:
                raise wire.ProtocolError("an answer to no call")
            del self._abandoned[call_id]
            return
        if not future.done():  # (a lone surrogate only a forged frame has)
            future.set_result(Answer(status, body.encode("utf-8", "replace")))

    def _lost(self, reason: str | None) -> None:
        """The channel ended (once): `reason` says how the process broke the protocol, if it did."""
        bad = None if reason is None else f"the hook's process broke the protocol ({reason}) and was stopped"
        self._ending = asyncio.ensure_future(self._end(bad))

    async def _end(self, bad: str | None) -> None:
        if bad is not None:
            self.kill(bad)
        returncode: int | None = None
        if self._killed_because is None:
            # The channel ended on its own: the process is most likely exiting (node closes it a
            # moment before bubblewrap can report its status), and its status says why.
            with contextlib.suppress(TimeoutError):
                returncode = await asyncio.wait_for(self._proc.wait(), EXIT_GRACE_S)
        self._sigkill()  # whatever ended the stream, the process goes too
        if returncode is None:
            with contextlib.suppress(TimeoutError):  # bounded: the kill waits EXIT_WAIT_S at most too
                returncode = await asyncio.wait_for(self._proc.wait(), 2 * EXIT_WAIT_S)
        if self._output is not None:  # the last output, for the reason
            self._output.unlimit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._output.ended), OUTPUT_WAIT_S)
            self._output.close()
        self._learning.cancel()
        await asyncio.wait([self._learning])  # off the info socket before the cleanup closes it
        for pidfd in (self._sandbox_pidfd, self._pidfd):
            if pidfd is not None:
                os.close(pidfd)
        self._sandbox_pidfd = self._pidfd = None
        self._channel.close()
        try:
            self._cleanup()
        except OSError:
            log.exception("cleaning up after the runtime process of hook %s failed", self.hook_id)
        reason = self._killed_because or self._exit_reason(returncode)
        if not self.ended.done():
            self.ended.set_result(reason)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeFailure(reason))
        log.info("runtime process of hook %s ended: %s", self.hook_id, reason)

    def _exit_reason(self, returncode: int | None) -> str:
        if returncode is None:
            what = "stopped answering"
        elif (sig := ended_by(returncode)) is not None:
            if sig == signal.SIGKILL:
                what = "was killed (SIGKILL: its memory cap, or its CPU time ran out)"
            elif sig == signal.SIGXCPU:
                what = "ran out of CPU time (SIGXCPU)"
            else:
                what = f"was killed by {_signal_name(sig)}"
        else:
            what = f"exited with status {returncode}"
        tail = self._output.tail(self._secret_values) if self._output is not None else ""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        hint = next((ln for ln in reversed(lines) if "memory" in ln.lower() or "error" in ln.lower()),
                    lines[-1] if lines else "")
        return f"the hook's process {what}" + (f": {hint[:200]}" if hint else "")

    async def close(self) -> None:
        """Kill the process and wait until it is cleaned up, or give up on it: never unbounded."""
        self.kill("the hook's process was stopped")
        if not await self._wait_ended(3 * EXIT_WAIT_S):
            # Something still holds the other end of the socket: stop reading it, which ends too.
            log.warning("runtime process of hook %s did not end when killed; abandoning it", self.hook_id)
            self._channel.abort()
            await self._wait_ended(2 * EXIT_WAIT_S + OUTPUT_WAIT_S)
        if self._output is not None:  # the output's pipe may still be held by something
            self._output.close()
        if self._ending is not None:
            self._ending.cancel()
            await asyncio.wait([self._ending])

    async def _wait_ended(self, timeout_s: float) -> bool:
        await asyncio.wait([self.ended], timeout=timeout_s)
        return self.ended.done()


class _TimedOut(Exception):  # noqa: N818 - internal: set on a call's future by its timer
    """A call's wall timeout ran out."""


def _expire(future: asyncio.Future[Answer]) -> None:
    if not future.done():
        future.set_exception(_TimedOut())


def _pidfd(pid: int) -> int | None:
    """A pidfd of our child `pid` (not reaped yet: it has just started); None if it ended."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
