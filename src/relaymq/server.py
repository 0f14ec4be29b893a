"""The server process: one broker, the HTTP app in front of it, and their lifecycle.

Start-up: open the broker (recovering the store), build the app, listen.
Shutdown (SIGTERM or SIGINT, or :meth:`Server.request_shutdown`): uvicorn stops
accepting connections, open long-polls return empty at once (see
:mod:`relaymq.api.http.draining`), other requests get up to
``shutdown_timeout_seconds`` to finish, then the broker is closed, which
flushes, fsyncs and checkpoints.
The process then exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from relaymq.api.app import create_app
from relaymq.api.http.draining import begin_draining
from relaymq.broker import Broker
from relaymq.config import Settings
from relaymq.logging import configure_logging

logger = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainingUvicorn(uvicorn.Server):
    """Uvicorn that releases the app's long-polls the moment shutdown begins, so
    they end with an empty answer instead of holding the shutdown up."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Release long-polls, then shut down as uvicorn does."""
        begin_draining(self.app)
        await super().shutdown(sockets)


class Server:
    """Owns one broker and the uvicorn server that serves its HTTP app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: FastAPI | None = None
        self.started = threading.Event()
        self._uvicorn: uvicorn.Server | None = None
        self._shutdown_requested = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Open the broker, serve until asked to stop, then close the broker."""
        broker = await Broker.open(self.settings.broker_settings())
        try:
            self.app = create_app(broker, self.settings)
            self._uvicorn = DrainingUvicorn(self.uvicorn_config(self.app), self.app)
            if self._shutdown_requested:
                return
            await self._serve_until_stopped(sockets)
        finally:
            logger.info("closing the broker")
            await broker.close()
            logger.info("broker closed")

    async def _serve_until_stopped(self, sockets: list[socket.socket] | None) -> None:
        """Run uvicorn, flagging :attr:`started` once it listens."""
        assert self._uvicorn is not None
        server_task = asyncio.create_task(self._uvicorn.serve(sockets=sockets))
        while not self._uvicorn.started and not server_task.done():
            await asyncio.sleep(0.01)
        if self._uvicorn.started:
            self.started.set()
        await server_task

    def uvicorn_config(self, app: FastAPI) -> uvicorn.Config:
        """Uvicorn's settings: our loop, limits and logging, no config of its own."""
        return uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            loop="none",
            log_config=None,
            access_log=True,
            limit_concurrency=self.settings.max_connections,
            timeout_graceful_shutdown=round(self.settings.shutdown_timeout_seconds),
            ws_max_size=self.settings.ws_max_frame_bytes,
            server_header=False,
            lifespan="on",
        )

    def request_shutdown(self) -> None:
        """Ask the server to stop (thread-safe: it only sets a flag uvicorn polls)."""
        self._shutdown_requested = True
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    @property
    def bound_port(self) -> int | None:
        """The TCP port actually listened on (useful with port 0), once started."""
        if self._uvicorn is None or not self._uvicorn.servers:
            return None
        for server in self._uvicorn.servers:
            for listener in server.sockets:
                return listener.getsockname()[1]
        return None


def run(settings: Settings) -> None:
    """Run a server in this process until SIGTERM or SIGINT (the ``relaymq serve`` body)."""
    configure_logging(settings.log_level, settings.log_format)
    server = Server(settings)
    with handled_shutdown_signals(lambda: server.request_shutdown()):
        run_event_loop(server.serve())
    logger.info("stopped")


def run_event_loop(main: object) -> None:
    """Run a coroutine on uvloop (the asyncio default loop where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for Windows
        asyncio.run(main)  # type: ignore[arg-type]
        return
    uvloop.run(main)  # type: ignore[arg-type]


@contextmanager
def handled_shutdown_signals(on_signal: Callable[[], None]) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into a graceful shutdown instead of a sudden death.

    While uvicorn serves it installs its own handlers and, when it stops,
    re-raises the signal it caught; our handlers receive that and only ask for
    shutdown again, so the broker is always closed and the exit status stays 0.
    """

    def handle(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        on_signal()

    previous = {number: signal.signal(number, handle) for number in SHUTDOWN_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
