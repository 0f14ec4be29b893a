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
from concurrent.futures import ThreadPoolExecutor

OP_REGISTER = 1
OP_FORGET = 2
OP_SYNC = 3
HEADER = struct.Struct("<BQI")  # op, key or request id, count of keys that follow
KEY = struct.Struct("<Q")
ERRNO = struct.Struct("<i")
MAX_MESSAGE_BYTES = 65536
PARALLEL_SYNCS = 8


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
    """Answer requests until the server side closes the socket."""
    descriptors: dict[int, int] = {}
    pool = ThreadPoolExecutor(max_workers=PARALLEL_SYNCS)
    fds = array.array("i")
    while True:
        data, ancillary, _flags, _address = channel.recvmsg(
            MAX_MESSAGE_BYTES, socket.CMSG_SPACE(fds.itemsize)
        )
        if not data:
            return
        op, key, count = HEADER.unpack_from(data)
        if op == OP_REGISTER:
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
        elif op == OP_SYNC:
            keys = [KEY.unpack_from(data, HEADER.size + KEY.size * i)[0] for i in range(count)]
            targets = [descriptors.get(k) for k in keys]
            if len(targets) == 1:
                results = [sync_one(targets[0])]
            else:
                results = list(pool.map(sync_one, targets))
            channel.sendall(
                HEADER.pack(OP_SYNC, key, count) + b"".join(ERRNO.pack(r) for r in results)
            )


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
