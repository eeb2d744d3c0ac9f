"""One hook's runtime process: node running /runtime/runner.js inside the sandbox, spoken to
over one end of a Unix socket pair (gateway/runtime/wire.py).

Calls may overlap (node is asynchronous); each has its own wall timeout, and a call that runs
out of time kills the process, since its script may be looping where nothing else can stop it:
calls still in flight on it fail too. When the process ends for any reason (crash, the memory
cap's OOM kill, CPU limit, a protocol error), every call in flight fails with the reason.

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

from ..errors import GatewayError
from . import wire
from .sandbox import INFO_MAX_BYTES, SandboxConfig, child_pidfd, ended_by, prepare, sandbox_pid

log = logging.getLogger("gateway.runtime")

RUNNER = "runner.js"  # in the runtime folder, /runtime inside the sandbox
MAX_FRAME_BYTES = 8 << 20  # an answer frame larger than this ends the process (answers are far smaller)
OUTPUT_TAIL_BYTES = 2048  # the last bytes of the process's stdout and stderr, kept for the crash reason
EXIT_WAIT_S = 5.0  # after SIGKILL, how long to wait for the exit status before giving up on it
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

    def __init__(self, hook_id: str, digest: str, proc: asyncio.subprocess.Process,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 cleanup: Callable[[], None], info: socket.socket | None = None) -> None:
        self.hook_id = hook_id
        self.digest = digest  # of the script and point it runs: a new version is a new process
        self.calls = 0
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.retiring = False  # killed once its calls in flight are done (recycled, replaced)
        self._proc = proc
        self._reader = reader
        self._writer = writer
        self._cleanup = cleanup
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tail = b""
        self._killed_because: str | None = None
        self._kill_due = False  # a SIGKILL is owed, sent once the sandbox's pid 1 is known
        self._sandbox_pidfd: int | None = None  # the sandbox's pid 1 (bubblewrap's --info-fd)
        # Signalled through a pidfd: Popen.send_signal first polls, reaping the child under
        # asyncio's child watcher, which then reports a made-up exit status (255).
        self._pidfd: int | None = _pidfd(proc.pid)
        self._give_up: asyncio.TimerHandle | None = None
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._learning = asyncio.ensure_future(self._learn_sandbox(info))
        self._learning.add_done_callback(self._learned)
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._drain_output())]

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
    ) -> HookProcess:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            launch = prepare(config, uid=uid, runtime_dir=runtime_dir, hook_dir=hook_dir,
                             entry=runtime_dir / RUNNER, args=[compiler, str(child.fileno())])
            kwargs = launch.popen_kwargs()
            kwargs["pass_fds"] = (*kwargs["pass_fds"], child.fileno())
            try:
                proc = await asyncio.create_subprocess_exec(
                    *launch.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, **kwargs,
                )
            except BaseException:
                launch.close()
                raise
            finally:
                launch.started()
            child.close()
            reader, writer = await asyncio.open_unix_connection(sock=parent)
        except BaseException:
            child.close()
            parent.close()
            cleanup()
            raise

        def done() -> None:
            launch.close()
            cleanup()

        return cls(hook_id, digest, proc, reader, writer, done, launch.info)

    @property
    def pid(self) -> int:
        return self._proc.pid

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
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self.calls += 1
        self.in_flight += 1
        self.last_used = time.monotonic()
        try:
            self._writer.write(wire.encode(
                {"id": call_id, "body": body.decode("utf-8", "replace"), "secrets": dict(secrets)}
            ))
            try:
                async with asyncio.timeout(timeout_s):
                    answer = await asyncio.shield(future)
            except TimeoutError:
                ms = timeout_ms if timeout_ms is not None else round(timeout_s * 1000)
                state = "answering" if self._ready.done() else "starting (compiling the script)"
                reason = f"timed out after {ms} ms while {state}; the hook's process was stopped"
                self.kill(f"another call to the hook timed out after {ms} ms and its process was stopped")
                raise RuntimeFailure(reason) from None
        finally:
            self._pending.pop(call_id, None)
            self.in_flight -= 1
            self.last_used = time.monotonic()
        if len(answer.body) > body_cap:
            raise RuntimeFailure(f"answer larger than {body_cap} bytes")
        return answer

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
        info.setblocking(False)
        loop = asyncio.get_running_loop()
        data = b""
        with contextlib.suppress(OSError):
            while len(data) < INFO_MAX_BYTES and (chunk := await loop.sock_recv(info, INFO_MAX_BYTES)):
                data += chunk
        pid = sandbox_pid(data)
        if pid is not None:
            self._sandbox_pidfd = child_pidfd(pid, self._proc.pid)

    def _learned(self, _: object) -> None:
        if self._give_up is not None:
            self._give_up.cancel()
        if self._kill_due:
            self._sigkill()

    async def _read(self) -> None:
        bad: str | None = None
        try:
            while True:
                message = await wire.read_frame(self._reader, MAX_FRAME_BYTES)
                if message is None:
                    break
                if message.get("ready") is True:
                    if not self._ready.done():
                        self._ready.set_result(None)
                    continue
                status, body = message.get("status"), message.get("body")
                if (not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
                        or not isinstance(body, str)):
                    raise wire.ProtocolError("an answer without a status and a body")
                future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if future is not None and not future.done():
                    future.set_result(Answer(status, body.encode()))
        except wire.ProtocolError as exc:
            bad = f"the hook's process broke the protocol ({exc}) and was stopped"
        except (OSError, ValueError):
            pass
        await self._end(bad)

    async def _drain_output(self) -> None:
        stream = self._proc.stdout
        if stream is None:
            return
        with contextlib.suppress(OSError, ValueError):
            while chunk := await stream.read(4096):
                self._tail = (self._tail + chunk)[-OUTPUT_TAIL_BYTES:]

    async def _end(self, bad: str | None) -> None:
        if bad is not None:
            self.kill(bad)
        self._sigkill()  # whatever ended the stream, the process goes too
        returncode: int | None = None
        with contextlib.suppress(TimeoutError):  # bounded: the kill waits EXIT_WAIT_S at most too
            returncode = await asyncio.wait_for(self._proc.wait(), 2 * EXIT_WAIT_S)
        with contextlib.suppress(TimeoutError):  # the last output, for the reason
            await asyncio.wait_for(asyncio.shield(self._tasks[1]), OUTPUT_WAIT_S)
        self._learning.cancel()
        await asyncio.wait([self._learning])  # off the info socket before the cleanup closes it
        for pidfd in (self._sandbox_pidfd, self._pidfd):
            if pidfd is not None:
                os.close(pidfd)
        self._sandbox_pidfd = self._pidfd = None
        self._writer.close()
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
        lines = [ln.strip() for ln in self._tail.decode("utf-8", "replace").splitlines() if ln.strip()]
        hint = next((ln for ln in reversed(lines) if "memory" in ln.lower() or "error" in ln.lower()),
                    lines[-1] if lines else "")
        return f"the hook's process {what}" + (f": {hint[:200]}" if hint else "")

    async def close(self) -> None:
        """Kill the process and wait until it is cleaned up, or give up on it: never unbounded."""
        self.kill("the hook's process was stopped")
        if not await self._wait_ended(3 * EXIT_WAIT_S):
            # Something still holds the other end of the socket: stop reading it, which ends too.
            log.warning("runtime process of hook %s did not end when killed; abandoning it", self.hook_id)
            self._writer.transport.abort()
            await self._wait_ended(2 * EXIT_WAIT_S + OUTPUT_WAIT_S)
        for task in self._tasks:  # the output's reader may still wait on a pipe something holds
            task.cancel()
        await asyncio.wait(self._tasks)

    async def _wait_ended(self, timeout_s: float) -> bool:
        await asyncio.wait([self.ended], timeout=timeout_s)
        return self.ended.done()


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
