"""Group commit: making appended records durable with as few fsyncs as possible.

This module owns the fsync thread and the policy of :class:`FsyncPolicy`:

* ``batch``: an append that has written its records registers its partition
  and waits for the next *pass*. A pass fsyncs every registered partition's
  dirty files once (and their directory when a segment was created), in one
  worker thread, while appends that arrive meanwhile queue for the pass after.
  So N concurrent appends cost about two fsyncs, not N.
* ``always``: every append runs a pass of its own; passes of one partition
  run one at a time, in call order, those of different partitions in parallel.
* ``never``: nothing here is called on the append path; ``close`` syncs.

A pass spreads its partitions over up to ``PARALLEL_FSYNCS`` threads: fsyncs
of different files overlap on the device, so one pass over many partitions
costs little more than one over a single partition.

The partition side of a pass is :class:`Syncable`: ``prepare_sync`` (event loop,
snapshot what is written and pin the files), ``run_sync`` (worker thread,
blocking fsyncs) and ``finish_sync`` (event loop, publish or roll back).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from relaymq.store.base import FsyncPolicy

FsyncObserver = Callable[[float], None]
PARALLEL_FSYNCS = 8


class Syncable(Protocol):
    """A partition log as the committer sees it."""

    def prepare_sync(self) -> Any:
        """Snapshot the written state and pin the files to fsync (event loop)."""
        ...

    def run_sync(self, job: Any) -> None:
        """fsync what ``job`` names (worker thread; raises ``OSError``)."""
        ...

    def finish_sync(self, job: Any, error: OSError | None) -> BaseException | None:
        """Publish (or roll back after ``error``) and return the error appends should see."""
        ...


class GroupCommitter:
    """Runs fsync passes for every partition of one store on one dedicated thread."""

    def __init__(self, policy: FsyncPolicy, observer: FsyncObserver | None = None) -> None:
        self.policy = policy
        self._observer = observer
        self._executor = ThreadPoolExecutor(
            max_workers=PARALLEL_FSYNCS, thread_name_prefix="relaymq-fsync"
        )
        # Under ``always`` one partition's passes must not overlap (see finish_sync).
        self._log_locks: weakref.WeakKeyDictionary[Syncable, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._waiting: dict[Syncable, None] = {}
        self._next_pass: asyncio.Future[dict[Syncable, BaseException | None]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self.passes = 0

    async def commit(self, log: Syncable) -> None:
        """Return once everything ``log`` has written so far is fsynced (per the policy).

        Raises what the log's ``finish_sync`` chose (e.g. ``StorageFull``) if the pass
        covering this call failed for ``log``.
        """
        if self.policy is FsyncPolicy.ALWAYS:
            # Shielded so a cancelled append still lets its pass finish and unpin files.
            pass_task = asyncio.get_running_loop().create_task(self._run_locked_pass(log))
            results = await asyncio.shield(pass_task)
        else:
            results = await asyncio.shield(self._join_next_pass(log))
        error = results.get(log)
        if error is not None:
            raise error

    async def sync_now(self, logs: list[Syncable]) -> None:
        """One pass over ``logs`` whatever the policy (close and shutdown use it), after
        the pass already running, so passes of one partition never overlap."""
        for log in logs:
            pass_task = asyncio.get_running_loop().create_task(self._run_locked_pass(log))
            error = (await asyncio.shield(pass_task)).get(log)
            if error is not None:
                raise error

    async def _run_locked_pass(self, log: Syncable) -> dict[Syncable, BaseException | None]:
        lock = self._log_locks.setdefault(log, asyncio.Lock())
        async with lock:
            while self._runner is not None and not self._runner.done():
                await asyncio.shield(self._runner)
            return await self._run_pass([log])

    def _join_next_pass(
        self, log: Syncable
    ) -> asyncio.Future[dict[Syncable, BaseException | None]]:
        self._waiting[log] = None
        if self._next_pass is None:
            self._next_pass = asyncio.get_running_loop().create_future()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run_passes())
        return self._next_pass

    async def _run_passes(self) -> None:
        """Run passes back to back while appends keep queueing for one."""
        while self._waiting:
            logs = list(self._waiting)
            self._waiting.clear()
            future = self._next_pass
            self._next_pass = None
            assert future is not None
            try:
                results = await self._run_pass(logs)
            except asyncio.CancelledError:
                future.cancel()
                if self._next_pass is not None:
                    self._next_pass.cancel()
                raise
            except Exception as error:
                # Fail this pass's appends, but keep running: appends that already
                # joined the next pass would otherwise wait forever.
                future.set_exception(error)
                continue
            future.set_result(results)

    async def _run_pass(self, logs: list[Syncable]) -> dict[Syncable, BaseException | None]:
        jobs = [log.prepare_sync() for log in logs]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        groups = min(len(logs), PARALLEL_FSYNCS)
        group_errors = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._executor, _sync_all, logs[group::groups], jobs[group::groups]
                )
                for group in range(groups)
            )
        )
        errors: list[OSError | None] = [None] * len(logs)
        for group, found in enumerate(group_errors):
            errors[group::groups] = found
        self.passes += 1
        if self._observer is not None:
            self._observer(time.perf_counter() - started)
        return {
            log: log.finish_sync(job, error)
            for log, job, error in zip(logs, jobs, errors, strict=True)
        }

    async def close(self) -> None:
        """Wait for a running pass and stop the thread."""
        if self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)
        self._executor.shutdown(wait=True)


def _sync_all(logs: list[Syncable], jobs: list[Any]) -> list[OSError | None]:
    """The blocking part of a pass: each log's fsyncs, one failure not stopping the rest."""
    errors: list[OSError | None] = []
    for log, job in zip(logs, jobs, strict=True):
        try:
            log.run_sync(job)
        except OSError as error:
            errors.append(error)
        else:
            errors.append(None)
    return errors
