"""The fsync worker process, seen from the server: :class:`FsyncProcess`.

Why a process and not a thread: the fsync of every confirmed publish sits on the
latency path, and a CPython thread hands the GIL to and from a busy event loop
badly (the convoy effect: the loop drops and retakes the GIL around every system
call, so a waiting thread rarely gets it). Measured on the 2-core bench machine
at 2,000 msg/s, a pass waited a median 0.74 ms for its fsync thread to start
running, three times the fsync itself. A child process has its own interpreter:
it is woken through a socket in tens of microseconds whatever the loop is doing,
and the loop never blocks.

The child (:mod:`relaymq.store.local.fsync_worker`) holds duplicates of the
segment files' descriptors, passed once with ``SCM_RIGHTS``; ``fdatasync`` on a
duplicate flushes the same file. Requests and answers travel over one
``SOCK_SEQPACKET`` socket pair, so every message arrives whole.

Only Linux-style platforms with ``SOCK_SEQPACKET`` and ``send_fds`` get one;
elsewhere, or when the child cannot start or dies, the committer's threads do
the work (:mod:`relaymq.store.local.commit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

from relaymq.store.local import fsync_worker as wire

logger = logging.getLogger("relaymq.store")

SyncDone = Callable[[list[int] | None], None]  # errno per key, or None: the process died
# Keys per request: a request must fit one SOCK_SEQPACKET message of the worker's size.
MAX_KEYS = (wire.MAX_MESSAGE_BYTES - wire.HEADER.size) // wire.KEY_BYTES


class FsyncProcess:
    """A running fsync worker process. Use from the event loop only."""

    def __init__(self, channel: socket.socket, process: subprocess.Popen[bytes]) -> None:
        self._channel = channel
        self._process = process
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, SyncDone] = {}
        self._next_request = 0
        # Messages the socket had no room for, sent in order once it drains.
        self._outgoing: deque[tuple[bytes, list[int]]] = deque()
        # Answers are read into this one buffer: a fresh 64 KiB ``recv`` per answer
        # costs an allocation and a shrink each time.
        self._answer = bytearray(wire.MAX_MESSAGE_BYTES)
        self.alive = True

    @classmethod
    def start(cls) -> FsyncProcess | None:
        """Start the child, or ``None`` when the platform or the OS does not allow it."""
        if not hasattr(socket, "SOCK_SEQPACKET") or not hasattr(socket, "send_fds"):
            return None
        try:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return None
        try:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(Path(wire.__file__)), str(child.fileno())],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C meant for the server's process group must
                # not kill it first (the server then shuts down and syncs through it).
                start_new_session=True,
            )
        except OSError as error:
            logger.warning("cannot start the fsync worker process (%s); using threads", error)
            parent.close()
            return None
        finally:
            child.close()
        parent.setblocking(False)
        return cls(parent, process)

    @property
    def busy(self) -> bool:
        """Whether a sync request is waiting for its answer."""
        return bool(self._pending)

    def attach(self) -> None:
        """Watch the socket from the running loop (a dead child is noticed at once)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop or not self.alive:
            return
        self._detach()
        loop.add_reader(self._channel.fileno(), self._on_readable)
        self._loop = loop

    def register(self, key: int, descriptor: int) -> None:
        """Give the child a duplicate of ``descriptor`` under ``key``."""
        self._send(wire.HEADER.pack(wire.OP_REGISTER, key, 0), [descriptor])

    def forget(self, key: int) -> None:
        """Make the child close its duplicate of ``key``."""
        self._send(wire.HEADER.pack(wire.OP_FORGET, key, 0), [])

    def sync(self, keys: list[int], done: SyncDone) -> None:
        """``fdatasync`` the files of ``keys`` (at most :data:`MAX_KEYS`); ``done`` is
        called on the event loop with one errno per key (0: synced), or with ``None``
        if the process is or goes dead first."""
        self.attach()
        if not self.alive:
            asyncio.get_running_loop().call_soon(done, None)
            return
        request = self._next_request
        self._next_request += 1
        self._pending[request] = done
        self._send(wire.pack_message(wire.OP_SYNC, request, wire.KEY, keys), [])

    def _send(self, message: bytes, descriptors: list[int]) -> None:
        if not self.alive:
            return
        if self._outgoing:
            self._outgoing.append((message, descriptors))
            return
        try:
            self._send_now(message, descriptors)
        except BlockingIOError:  # the child is busy: queue, and send when it drains
            self._outgoing.append((message, descriptors))
            self.attach()
            assert self._loop is not None
            self._loop.add_writer(self._channel.fileno(), self._drain)
        except OSError as error:
            self._fail(f"cannot write to the fsync worker process: {error}")

    def _send_now(self, message: bytes, descriptors: list[int]) -> None:
        if descriptors:
            socket.send_fds(self._channel, [message], descriptors)
        else:
            self._channel.send(message)

    def _drain(self) -> None:
        while self._outgoing:
            message, descriptors = self._outgoing[0]
            try:
                self._send_now(message, descriptors)
            except BlockingIOError:
                return
            except OSError as error:
                self._fail(f"cannot write to the fsync worker process: {error}")
                return
            self._outgoing.popleft()
        if self._loop is not None:
            self._loop.remove_writer(self._channel.fileno())

    def _on_readable(self) -> None:
        answer = self._answer
        while True:
            try:
                size = self._channel.recv_into(answer)
            except BlockingIOError:
                return
            except OSError as error:
                self._fail(f"the fsync worker process failed: {error}")
                return
            if not size:
                self._fail("the fsync worker process exited")
                return
            _op, request, count = wire.HEADER.unpack_from(answer)
            errnos = list(wire.unpack_items(answer, wire.ERRNO, count))
            done = self._pending.pop(request, None)
            others_pending = bool(self._pending)
            if done is not None:
                done(errnos)
            if not others_pending:
                # No other answer can be waiting (a request ``done`` makes cannot have
                # been answered yet): spare the recv that would only say so.
                return

    def _fail(self, reason: str) -> None:
        """The child is gone: tell every waiting pass (they fall back to threads)."""
        if not self.alive:
            return
        logger.error("%s; fsyncs run on threads from now on", reason)
        self.alive = False
        self._detach()
        self._outgoing.clear()
        pending, self._pending = self._pending, {}
        for done in pending.values():
            done(None)

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._channel.fileno())
                self._loop.remove_writer(self._channel.fileno())
        self._loop = None

    def close(self) -> None:
        """Close the socket (event loop): the child exits when it sees that."""
        self.alive = False
        self._detach()
        self._outgoing.clear()
        self._channel.close()

    def wait(self) -> None:
        """Wait for the closed child to exit (blocking; run it off the event loop)."""
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def errno_error(number: int) -> OSError:
    """The ``OSError`` of an errno the child reported."""
    return OSError(number, os.strerror(number))
