"""Group commit: making appended records durable with as few fsyncs as possible.

This module owns who runs the fsyncs (the fsync worker process, else threads)
and the policy of :class:`FsyncPolicy`:

* ``batch``: an append that has written its records registers its partition
  and waits for the next *pass*. A pass fsyncs every registered partition's
  dirty files once (and their directory when a segment was created), while
  appends that arrive meanwhile queue for the pass after. So N concurrent
  appends cost about two fsyncs, not N. ``sync_now`` (close) joins the next
  batch pass whatever the policy.
* ``always``: every append runs a pass of its own; passes of one partition
  run one at a time, in call order, those of different partitions in parallel.
* ``never``: nothing here is called on the append path; ``close`` syncs.

The hand-off is on the latency path of every confirmed publish. A pass that
needs only ``fdatasync`` of active segments goes to the fsync worker process
(:mod:`.fsync_process`: no GIL to win back from a busy event loop); any other
pass, and every pass when there is no worker, goes to up to
``PARALLEL_FSYNCS`` threads (fsyncs of different files overlap on the device).
Either way one callback comes back to the loop and calls each waiting append's
``done`` callback directly (:meth:`GroupCommitter.schedule`: no executor
futures, tasks or ``gather`` in between); after a long stall, with thousands
waiting, a slice at a time (:class:`OutcomeQueue`).

The partition side of a pass is :class:`Syncable`: ``prepare_sync`` (event loop,
snapshot what is written and pin the files), ``datasync_target`` (whether the
worker process can do it), ``run_sync`` (fsync thread, blocking fsyncs) and
``finish_sync`` (event loop, publish or roll back).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from relaymq.store.base import AppendDone, FsyncPolicy, settle_waiter
from relaymq.store.local.fsync_process import MAX_KEYS, FsyncProcess, errno_error

logger = logging.getLogger("relaymq.store")

FsyncObserver = Callable[[float], None]
PARALLEL_FSYNCS = 8
# A pass that made many appends durable tells them a slice of about this long at a
# time, and the event loop serves its sockets in between. Telling them all in one
# step (their results, ids and confirms cost some 20 us each) held every delivery
# behind it: 11 ms after a 0.5 s stall at 10,000 msg/s (docs/performance.md,
# finding 48).
TELL_SLICE_SECONDS = 0.0005

Results = dict["Syncable", "BaseException | None"]
PassDone = Callable[[Results], None]


class Syncable(Protocol):
    """A partition log as the committer sees it."""

    def prepare_sync(self) -> Any:
        """Snapshot the written state and pin the files to fsync (event loop)."""
        ...

    def run_sync(self, job: Any) -> None:
        """fsync what ``job`` names (fsync thread; raises ``OSError``)."""
        ...

    def finish_sync(self, job: Any, error: OSError | None) -> BaseException | None:
        """Publish (or roll back after ``error``) and return the error appends should see."""
        ...

    def datasync_target(self, job: Any) -> tuple[object, int] | None:
        """``(file, descriptor)`` when all ``job`` needs is an ``fdatasync`` of that one
        file (the common case), else ``None``."""
        ...


class SyncPass:
    """One pass in flight: its logs and jobs, the errors the threads found, and who
    to tell. Threads count ``pending_groups`` down; the last one calls back."""

    __slots__ = ("done", "errors", "jobs", "lock", "logs", "loop", "pending_groups", "started")

    def __init__(
        self, logs: list[Syncable], jobs: list[Any], loop: asyncio.AbstractEventLoop, done: PassDone
    ) -> None:
        self.logs = logs
        self.jobs = jobs
        self.errors: list[OSError | None] = [None] * len(logs)
        self.pending_groups = 0
        self.lock = threading.Lock()
        self.started = time.perf_counter()
        self.loop = loop
        self.done = done

    def run_group(self, group: int, groups: int) -> bool:
        """fsync the logs of one group (fsync thread); ``True`` if it was the last group."""
        for index in range(group, len(self.logs), groups):
            try:
                self.logs[index].run_sync(self.jobs[index])
            except OSError as error:
                self.errors[index] = error
            except Exception as error:  # a bug: roll back rather than confirm unsynced data
                logger.exception("fsync of %r failed", self.logs[index])
                self.errors[index] = OSError(errno.EIO, f"fsync failed: {error!r}")
        with self.lock:
            self.pending_groups -= 1
            return self.pending_groups == 0


class OutcomeQueue:
    """The outcomes of finished passes, told to their waiting appends in pass order,
    a slice of :data:`TELL_SLICE_SECONDS` per event-loop step.

    A pass with few appends is told at once, in the step that finished it. Only
    a backlog (a long fsync stall let thousands of appends pile up) is spread over
    steps, so the loop reads publishes and sends deliveries between slices. Later
    passes queue behind, so appends always hear in the order they were made
    durable. A failed pass is the exception: it is told in the step that rolled
    its log back, with everything queued before it, so that no append can take a
    rolled-back offset before the failure is known (the stream stops a partition
    whose early-delivered messages were rolled back, and must do so before the
    next append there; ``docs/architecture.md``)."""

    def __init__(self, on_idle: Callable[[], None]) -> None:
        self._outcomes: deque[tuple[list[AppendDone], BaseException | None]] = deque()
        self._told = 0  # how many of the first outcome's waiters were told
        self._failures = 0  # queued outcomes that are errors
        self._scheduled = False  # the next slice waits for the next event-loop step
        # A completion that tells another outcome (or finishes a pass) while a slice
        # runs only queues it: the running slice tells it in turn.
        self._running = False
        self._on_idle = on_idle

    @property
    def idle(self) -> bool:
        """Whether every outcome was told."""
        return not self._outcomes

    def tell(self, waiters: list[AppendDone], error: BaseException | None) -> None:
        """Tell ``waiters`` their pass's outcome: now, unless earlier ones still wait
        for their turn (then after them; a failure still in this step)."""
        self._outcomes.append((waiters, error))
        if error is not None:
            self._failures += 1
        if not self._running and (error is not None or not self._scheduled):
            self._tell_slice()

    def _scheduled_slice(self) -> None:
        self._scheduled = False
        self._tell_slice()

    def _tell_slice(self) -> None:
        # A failure may run a slice while one is scheduled: that one stays scheduled
        # (and finds the rest, or nothing), so a step never runs two slices.
        self._running = True
        try:
            self._tell_until(time.perf_counter() + TELL_SLICE_SECONDS)
        finally:
            self._running = False
        if self._outcomes:
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._scheduled_slice)
        else:
            self._on_idle()

    def _tell_until(self, deadline: float) -> None:
        """Tell waiters in order until ``deadline``, but never stop before a queued
        failure was told."""
        outcomes = self._outcomes
        while outcomes:
            waiters, error = outcomes[0]
            if self._told < len(waiters):
                done = waiters[self._told]
                self._told += 1
                try:
                    done(error)
                except Exception:  # one append's bug must not stop the others
                    logger.exception("an append's completion failed")
            if self._told >= len(waiters):
                outcomes.popleft()
                self._told = 0
                if error is not None:
                    self._failures -= 1
            if not self._failures and time.perf_counter() >= deadline:
                return


class GroupCommitter:
    """Runs fsync passes for every partition of one store on its own threads."""

    def __init__(self, policy: FsyncPolicy, observer: FsyncObserver | None = None) -> None:
        self.policy = policy
        self._observer = observer
        self._process: FsyncProcess | None = None
        # The file each log's descriptor in the worker process belongs to, and its key.
        self._registered: dict[Syncable, tuple[object, int]] = {}
        self._next_key = 0
        self._work: queue.SimpleQueue[tuple[SyncPass, int, int] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle_threads = 0
        self._threads_lock = threading.Lock()
        # batch: appends waiting for the next pass, per log; and whether a pass runs.
        self._waiting: dict[Syncable, list[AppendDone]] = {}
        self._batch_running = False
        # Passes that must not overlap others of their log (always, sync_now): per log
        # with one in flight, the callbacks of the passes queued behind it.
        self._serial: dict[Syncable, deque[PassDone]] = {}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._outcomes = OutcomeQueue(self._wake_idle_waiters)
        self.passes = 0

    async def start_process(self) -> None:
        """Start the fsync worker process (see :mod:`.fsync_process`); without one,
        or once it died, passes run on threads."""
        if self.policy is not FsyncPolicy.NEVER and self._process is None:
            self._process = await asyncio.to_thread(FsyncProcess.start)
            if self._process is not None:
                self._process.attach()

    def schedule(self, log: Syncable, done: AppendDone) -> None:
        """Call ``done`` once everything ``log`` has written so far is fsynced (per
        the policy): from the pass's completion on the event loop, with ``None``, or
        with what the log's ``finish_sync`` chose (e.g. ``StorageFull``) if the pass
        failed for ``log``. No task or future in between: an append's caller resumes
        one loop step after its pass, however many callbacks are ready, or, behind
        a backlog of earlier outcomes, in a later slice (:class:`OutcomeQueue`)."""
        if self.policy is FsyncPolicy.ALWAYS:
            self._run_serial(log, lambda results: self._outcomes.tell([done], results[log]))
        else:
            self._waiting.setdefault(log, []).append(done)
            if not self._batch_running:
                self._start_batch()

    async def sync_now(self, logs: list[Syncable]) -> None:
        """One pass over ``logs`` whatever the policy (close and shutdown use it). It is
        the next batch pass: after the one running, and never starved by appends."""
        loop = asyncio.get_running_loop()
        waiters: list[tuple[Syncable, asyncio.Future[BaseException | None]]] = []
        for log in logs:
            waiter: asyncio.Future[BaseException | None] = loop.create_future()
            self._waiting.setdefault(log, []).append(partial(settle_waiter, waiter))
            waiters.append((log, waiter))
        if not self._batch_running:
            self._start_batch()
        for log, waiter in waiters:
            error = await waiter
            self.forget(log)
            if error is not None:
                raise error

    async def close(self) -> None:
        """Wait for the passes in flight and stop the threads."""
        loop = asyncio.get_running_loop()
        while self._batch_running or self._serial or not self._outcomes.idle:
            await self._until_idle(loop)
        with self._threads_lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._work.put(None)
        for thread in threads:
            thread.join()
        if self._process is not None:
            process, self._process = self._process, None
            process.close()
            await asyncio.to_thread(process.wait)

    # -- batch passes -------------------------------------------------------------------

    def _start_batch(self) -> None:
        waiting, self._waiting = self._waiting, {}
        self._batch_running = True
        self._launch(list(waiting), partial(self._batch_done, waiting))

    def _batch_done(self, waiting: dict[Syncable, list[AppendDone]], results: Results) -> None:
        self._batch_running = False
        if self._waiting:
            self._start_batch()  # appends that wrote meanwhile: the next pass, at once
        for log, waiters in waiting.items():
            self._outcomes.tell(waiters, results[log])

    # -- passes one at a time per log (always) ---------------------------------------------

    def _run_serial(self, log: Syncable, done: PassDone) -> None:
        queued = self._serial.get(log)
        if queued is not None:
            queued.append(done)
            return
        self._serial[log] = deque()
        self._launch([log], lambda results: self._serial_done(log, done, results))

    def _serial_done(self, log: Syncable, done: PassDone, results: Results) -> None:
        done(results)
        queued = self._serial[log]
        if queued:
            following = queued.popleft()
            self._launch([log], lambda results: self._serial_done(log, following, results))
            return
        del self._serial[log]
        self._wake_idle_waiters()  # close() waits for the passes to end

    # -- running a pass ---------------------------------------------------------------------

    def _launch(self, logs: list[Syncable], done: PassDone) -> None:
        """Snapshot ``logs`` and hand their fsyncs to the worker process or the
        threads; ``done`` gets each log's outcome on the event loop."""
        loop = asyncio.get_running_loop()
        try:
            jobs = [log.prepare_sync() for log in logs]
        except Exception as error:
            logger.exception("preparing an fsync pass failed")
            loop.call_soon(done, dict.fromkeys(logs, error))
            return
        sync_pass = SyncPass(logs, jobs, loop, done)
        keys = self._process_keys(logs, jobs)
        if keys is not None:
            assert self._process is not None
            self._process.sync(keys, partial(self._process_done, sync_pass))
        else:
            self._run_on_threads(sync_pass)

    def _run_on_threads(self, sync_pass: SyncPass) -> None:
        groups = min(len(sync_pass.logs), PARALLEL_FSYNCS)
        sync_pass.pending_groups = groups
        self._ensure_threads(groups)
        for group in range(groups):
            self._work.put((sync_pass, group, groups))

    def _process_keys(self, logs: list[Syncable], jobs: list[Any]) -> list[int] | None:
        """The worker-process keys to ``fdatasync`` for a pass, registering files the
        process does not hold yet; ``None``: the pass needs the threads."""
        process = self._process
        if process is None or not process.alive or len(logs) > MAX_KEYS:
            return None
        if self.policy is FsyncPolicy.ALWAYS and process.busy:
            return None  # the child syncs one request at a time: keep partitions parallel
        keys = []
        for log, job in zip(logs, jobs, strict=True):
            target = log.datasync_target(job)
            if target is None:
                return None  # files registered so far stay: later passes use them
            file, descriptor = target
            registered = self._registered.get(log)
            if registered is None or registered[0] is not file:
                if registered is not None:
                    process.forget(registered[1])
                key = self._next_key
                self._next_key += 1
                process.register(key, descriptor)
                self._registered[log] = (file, key)
                registered = (file, key)
            keys.append(registered[1])
        return keys

    def _process_done(self, sync_pass: SyncPass, errnos: list[int] | None) -> None:
        """The worker process answered (event loop); if it died, the threads redo the pass."""
        if errnos is None:
            self._registered.clear()
            self._run_on_threads(sync_pass)
            return
        if any(errnos):
            # The threads' own fsync is the authority: a real write-back error shows there
            # too (and rolls back); a key the child lost does not fail the appends.
            for log, number in zip(sync_pass.logs, errnos, strict=True):
                if number:
                    logger.warning("the fsync worker process failed: %s", errno_error(number))
                    self.forget(log)
            self._run_on_threads(sync_pass)
            return
        self._finish(sync_pass)

    def forget(self, log: Syncable) -> None:
        """Close the worker process's descriptor of ``log``'s file (the log rolled its
        segment, rolled back or is closing: the file may be deleted soon)."""
        registered = self._registered.pop(log, None)
        if registered is not None and self._process is not None:
            self._process.forget(registered[1])

    def _ensure_threads(self, wanted: int) -> None:
        """Start fsync threads until ``wanted`` are idle or the limit is reached."""
        with self._threads_lock:
            while self._idle_threads < wanted and len(self._threads) < PARALLEL_FSYNCS:
                thread = threading.Thread(
                    target=self._work_forever,
                    name=f"relaymq-fsync-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                self._idle_threads += 1
                thread.start()

    def _work_forever(self) -> None:
        """An fsync thread: run pass groups until told to stop."""
        while (item := self._work.get()) is not None:
            self._run_group(*item)
            # Not held while idle: the last pass would keep its logs (a deleted
            # stream's, with their segments and recent messages) alive until the next.
            del item

    def _run_group(self, sync_pass: SyncPass, group: int, groups: int) -> None:
        with self._threads_lock:
            self._idle_threads -= 1
        last = sync_pass.run_group(group, groups)
        with self._threads_lock:
            self._idle_threads += 1
        if last:
            # A closed loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                sync_pass.loop.call_soon_threadsafe(self._finish, sync_pass)

    def _finish(self, sync_pass: SyncPass) -> None:
        """A pass's fsyncs are done (event loop): publish or roll back, then tell."""
        self.passes += 1
        if self._observer is not None:
            self._observer(time.perf_counter() - sync_pass.started)
        results: Results = {}
        for log, job, error in zip(sync_pass.logs, sync_pass.jobs, sync_pass.errors, strict=True):
            try:
                results[log] = log.finish_sync(job, error)
            except Exception as failure:  # a bug; the appends must still hear of it
                logger.exception("finishing an fsync pass failed")
                results[log] = failure
        sync_pass.done(results)

    # -- waiting for quiet ------------------------------------------------------------------

    async def _until_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def _wake_idle_waiters(self) -> None:
        if not self._idle_waiters:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
