"""The server process: one broker, the HTTP app in front of it, and their lifecycle.

Start-up: open the broker (recovering the store) and the security services
(on the very first start this mints an admin API key and prints it once, to
stdout; only its hash is kept), build the app, listen (HTTPS, and mTLS, when
configured).
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
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from relaymq.api.app import create_app
from relaymq.api.http.draining import begin_draining
from relaymq.api.http.protocol import guarded_protocol
from relaymq.api.websocket_protocol import ReadAheadWebSocketProtocol
from relaymq.auth.security import Security
from relaymq.broker import Broker
from relaymq.config import Settings
from relaymq.logging import configure_logging
from relaymq.runtime import freeze_start_up_objects

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

    def __init__(self, settings: Settings, on_built: Callable[[], None] | None = None) -> None:
        """``on_built`` runs once the broker is open and the app is built, before
        the server listens (``relaymq serve`` tunes the garbage collector there)."""
        self.settings = settings
        self._on_built = on_built
        self.app: FastAPI | None = None
        self.started = threading.Event()
        self._uvicorn: uvicorn.Server | None = None
        self._shutdown_requested = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Open the broker, serve until asked to stop, then close the broker."""
        broker = await Broker.open(self.settings.broker_settings())
        security: Security | None = None
        try:
            security = Security.open(self.settings)
            announce_admin_key(await security.bootstrap())
            self.app = create_app(broker, self.settings, security)
            self._uvicorn = DrainingUvicorn(self.uvicorn_config(self.app), self.app)
            if self._on_built is not None:
                self._on_built()
            if self._shutdown_requested:
                return
            await self._serve_until_stopped(sockets)
        finally:
            logger.info("closing the broker")
            await broker.close()
            if security is not None:
                security.close()
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
        """Uvicorn's settings: our loop, limits, timeouts, TLS and logging, no
        config of its own."""
        settings = self.settings
        return uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="none",
            http=guarded_protocol(
                settings.handshake_timeout_seconds,
                settings.max_header_bytes,
                settings.body_timeout_seconds,
            ),
            log_config=None,
            access_log=True,
            limit_concurrency=settings.max_connections,
            timeout_keep_alive=max(1, round(settings.keep_alive_timeout_seconds)),
            timeout_graceful_shutdown=round(settings.shutdown_timeout_seconds),
            # Uvicorn's sans-I/O implementation (what it picks for "auto" since 0.50): one
            # parse and a direct transport write per frame, with write flow control
            # (uvicorn >= 0.52.1); ours reads ahead a few small messages.
            ws=ReadAheadWebSocketProtocol,
            ws_max_size=settings.ws_max_frame_bytes,
            h11_max_incomplete_event_size=settings.max_header_bytes,
            server_header=False,
            lifespan="on",
            **tls_options(settings),
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


def tls_options(settings: Settings) -> dict[str, object]:
    """Uvicorn's TLS options: HTTPS with ``tls_cert``/``tls_key``, and client
    certificates required (mTLS) with ``tls_client_ca``."""
    if settings.tls_cert is None:
        return {}
    options: dict[str, object] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
    }
    if settings.tls_client_ca is not None:
        options["ssl_ca_certs"] = str(settings.tls_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def announce_admin_key(token: str | None) -> None:
    """Print a freshly minted admin key once, to stdout (never to the log)."""
    if token is None:
        return
    print(
        "RelayMQ created an admin API key. It is shown this once; only its hash is kept.\n"
        f"  export RELAYMQ_TOKEN={token}\n",
        file=sys.stdout,
        flush=True,
    )
    logger.info("created the first admin API key (printed to stdout, not logged)")


def run(settings: Settings) -> None:
    """Run a server in this process until SIGTERM or SIGINT (the ``relaymq serve`` body)."""
    configure_logging(settings.log_level, settings.log_format)
    # The broker's and the app's start-up objects (routes, validators, recovered
    # state) live as long as the process: frozen once built, no collection
    # walks them (runtime.py; docs/performance.md, finding 48).
    server = Server(settings, on_built=freeze_start_up_objects)
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
