"""``vega-emu fleet``'s parent process: worker processes that each run a shard of the fleet.

``async with FleetSupervisor(plans, password=...) as sup`` starts one ``python -m
device.fleet.shard`` per :class:`ShardPlan` and returns when every worker reports its nodes
connected: while the broker is down that is when it comes back (or ``start_timeout_s``), and
cancelling the entry stops the workers. A worker that cannot start (its nodes refused for good,
a broken model) raises :class:`FleetError` and the others are stopped. Each worker is watched by
a task the supervisor owns: a worker that dies (a crash, SIGKILL, the OOM killer) is logged at
once with its exit status and restarted after a backoff, and its nodes resume from their
databases (a node commits every event before it acknowledges the batch, so nothing is lost or
learned twice). A worker that exits with :data:`~device.fleet.shard.EXIT_CONFIG` would fail the
same way again (a broken model, a refused password): the supervisor sets ``failed`` and stops
restarting it. Leaving the context sends SIGTERM to every worker, waits for their clean stop,
and kills what is left after ``stop_grace_s``; :meth:`FleetSupervisor.kill` kills them at once.

Workers run in sessions of their own: a Ctrl-C in the terminal reaches the parent only, which
stops them (a worker that got the terminal's SIGINT and the parent's SIGTERM would take them for
the "second signal" that stops it at once). The password reaches the workers in their
environment, never on a command line; the plan goes on their standard input, which stays open:
a worker whose supervisor disappears, even killed with SIGKILL, sees end of file and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from broker.backoff import Backoff
from broker.url import ENV_PASSWORD
from device.aio import cancel_and_wait
from device.fleet.errors import FleetError
from device.fleet.shard import EXIT_CONFIG, ShardPlan
from device.fleet.shard import STOP_GRACE_S as WORKER_STOP_GRACE_S

log = logging.getLogger(__name__)

#: Seconds the supervisor waits for its workers' clean stop before it kills them: a little more
#: than a worker gives itself before it ends at once.
STOP_GRACE_S = WORKER_STOP_GRACE_S + 0.5
#: Seconds :meth:`FleetSupervisor.kill` waits for the killed workers to be gone.
KILL_WAIT_S = 1.0


@dataclass(slots=True)
class Worker:
    """One worker process and its history."""

    plan: ShardPlan
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # exit status of each end (-N: signal N)

    @property
    def label(self) -> str:
        ids = self.plan.devices
        return f"worker {self.plan.worker} ({ids[0][0]}..{ids[-1][0]}, {len(ids)} nodes)"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class FleetSupervisor:
    """Start, watch, restart and stop the worker processes of a fleet."""

    def __init__(
        self,
        plans: Sequence[ShardPlan],
        *,
        password: str | None = None,
        start_timeout_s: float | None = None,
        stop_grace_s: float = STOP_GRACE_S,
        backoff: Backoff | None = None,
    ) -> None:
        if not plans:
            raise ValueError("a fleet needs at least one worker plan")
        self.workers = [Worker(p) for p in plans]
        self.password = password
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self.failed = asyncio.Event()  # a worker failed for good; see ``failure``
        self.failure: str | None = None
        self._backoff = backoff or Backoff(initial_s=1.0, cap_s=30.0)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def nodes(self) -> int:
        return sum(len(w.plan.devices) for w in self.workers)

    @property
    def restarts(self) -> int:
        return sum(max(0, w.starts - 1) for w in self.workers)

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(self.start_timeout_s), asyncio.TaskGroup() as group:
                for worker in self.workers:
                    group.create_task(self._start(worker), name=f"start {worker.label}")
        except BaseException as exc:
            await self._stop_all()
            if isinstance(exc, TimeoutError):
                raise FleetError(
                    f"the workers did not connect their nodes within {self.start_timeout_s:g} s"
                ) from None
            if isinstance(exc, BaseExceptionGroup):  # the first worker that could not start
                raise exc.exceptions[0] from None
            raise
        self._tasks = [
            asyncio.create_task(self._watch(w), name=f"fleet {w.label}") for w in self.workers
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        for task in self._tasks:
            await cancel_and_wait(task)
        await self._stop_all()

    # -- processes ---------------------------------------------------------------------------

    async def _start(self, worker: Worker) -> None:
        """Start ``worker`` and wait for its ``{"ready": N}`` line; :class:`FleetError` if not."""
        env = dict(os.environ)
        env.pop(ENV_PASSWORD, None)
        if self.password is not None:
            env[ENV_PASSWORD] = self.password
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "device.fleet.shard",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # signals from the terminal reach the parent only
        )
        worker.process = proc
        worker.starts += 1
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(worker.plan.to_json().encode() + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        try:
            ready = json.loads(line)["ready"] if line else None
        except (ValueError, KeyError, TypeError):
            ready = None
        if ready != len(worker.plan.devices):
            code = await proc.wait()
            worker.exits.append(code)
            raise FleetError(f"{worker.label} did not start (exit status {code}); its log is above")

    async def _watch(self, worker: Worker) -> None:
        """Restart ``worker`` whenever it dies, until the fleet stops or it fails for good."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            worker.exits.append(code)
            if self._stopping:
                return
            if code == EXIT_CONFIG:
                self.failure = f"{worker.label} failed for good (exit status {code}); see its log"
                log.error("%s", self.failure)
                self.failed.set()
                return
            log.error(
                "%s died (%s); restarting it, its nodes resume from their databases",
                worker.label,
                _describe(code),
            )
            while True:
                await asyncio.sleep(self._backoff.next_delay())
                try:
                    await self._start(worker)
                except (FleetError, OSError) as exc:
                    log.error("%s: restart failed: %s", worker.label, exc)
                    continue
                self._backoff.reset()
                log.warning("%s restarted (pid %s)", worker.label, worker.pid)
                break

    def kill(self) -> None:
        """Kill every worker now (SIGKILL) and wait, up to :data:`KILL_WAIT_S`, until they are
        gone: for a parent that must end at once, so that none outlives it. Safe to call from
        a signal handler or another thread. Their nodes resume from their databases."""
        pids = []
        for worker in self.workers:
            proc = worker.process
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                    pids.append(proc.pid)
        deadline = time.monotonic() + KILL_WAIT_S
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    ended, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # reaped already (by asyncio's child watcher)
                    break
                if ended:
                    break
                time.sleep(0.01)

    async def _stop_all(self) -> None:
        running = [
            w.process
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        ]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.stop_grace_s):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.error(
                        "worker pid %d did not stop in %.1f s; killing it",
                        proc.pid,
                        self.stop_grace_s,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
        for w in self.workers:
            if w.process is not None and w.process.stdin is not None:
                w.process.stdin.close()


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


__all__ = ["FleetSupervisor", "Worker"]
