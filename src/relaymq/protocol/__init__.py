"""The RelayMQ wire protocol, shared by the server and the SDK.

:mod:`relaymq.protocol.frames` is the one definition of every WebSocket frame
(``docs/protocol.md``): the server and the SDK encode and decode with the same
structs, so a frame cannot change on one side only. The package is pure and
synchronous (bytes in, frames out) and imports nothing of ours except
:mod:`relaymq.errors` and :mod:`relaymq.core.message`, so the SDK stays free of
the server.
"""
