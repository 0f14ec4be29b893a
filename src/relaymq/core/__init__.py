"""Pure state machines of RelayMQ: no I/O, no asyncio, nothing imported from the rest of the package
except :mod:`relaymq.errors`."""
