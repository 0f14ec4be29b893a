"""The fsync worker process: the child side of :mod:`relaymq.store.local.fsync_process`.

Run as a script (``python -I -S fsync_worker.py SOCKET_FD``): it imports nothing of
RelayMQ, so it starts in a few milliseconds. It reads requests from a
``SOCK_SEQPACKET`` socket shared with the server process and answers each one:

* ``register`` (one file descriptor attached): keep the descriptor under a key;
* ``forget``: close the descriptor of a key;
* ``sync``: ``fdatasync`` the descriptors of some keys (in parallel when there are
  several) and answer with one errno per key (0 for success).

It exits when the socket closes, which happens when the server exits or is killed.
The wire format is defined here and in ``fsync_process.py``, and nowhere else.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

OP_REGISTER = 1
OP_FORGET = 2
OP_SYNC = 3
HEADER = struct.Struct("<BQI")  # op, key or request id, count of items that follow
# The items after the header (struct format characters): a sync request's keys, its
# answer's errnos (0: synced).
KEY = "Q"
ERRNO = "i"
KEY_BYTES = struct.calcsize(f"<{KEY}")
MAX_MESSAGE_BYTES = 65536
PARALLEL_SYNCS = 8


def pack_message(op: int, key: int, item: str, items: Sequence[int]) -> bytes:
    """A message: the header (``op``, ``key`` and how many items), then ``items``, each
    packed as the format character ``item`` (:data:`KEY` or :data:`ERRNO`)."""
    return struct.pack(f"{HEADER.format}{len(items)}{item}", op, key, len(items), *items)


def unpack_items(data: bytes | bytearray, item: str, count: int) -> tuple[int, ...]:
    """The ``count`` items (format character ``item``) after the header of ``data``."""
    return struct.unpack_from(f"<{count}{item}", data, HEADER.size)


def sync_one(descriptor: int | None) -> int:
    """``fdatasync`` one descriptor; the errno of a failure, or 0."""
    if descriptor is None:
        return errno.EBADF  # a key this process does not hold
    try:
        os.fdatasync(descriptor)
    except OSError as error:
        return error.errno or errno.EIO
    return 0


def serve(channel: socket.socket) -> None:
    """Answer requests until the server side closes the socket.

    It runs once per fsync pass, after a sleep that left its caches cold, so each
    request is read into one reused buffer and handled with few objects."""
    descriptors: dict[int, int] = {}
    pool = ThreadPoolExecutor(max_workers=PARALLEL_SYNCS)
    fds = array.array("i")
    ancillary_bytes = socket.CMSG_SPACE(fds.itemsize)
    data = bytearray(MAX_MESSAGE_BYTES)
    while True:
        size, ancillary, _flags, _address = channel.recvmsg_into([data], ancillary_bytes)
        if not size:
            return
        op, key, count = HEADER.unpack_from(data)
        if op == OP_SYNC:
            keys = unpack_items(data, KEY, count)
            if count == 1:
                results = [sync_one(descriptors.get(keys[0]))]
            else:
                results = list(pool.map(sync_one, [descriptors.get(k) for k in keys]))
            channel.sendall(pack_message(OP_SYNC, key, ERRNO, results))
        elif op == OP_REGISTER:
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    old = descriptors.pop(key, None)
                    if old is not None:
                        os.close(old)
                    descriptors[key] = received[0]
        elif op == OP_FORGET:
            descriptor = descriptors.pop(key, None)
            if descriptor is not None:
                os.close(descriptor)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
