"""An HTTP listener with the limits aiohttp lacks: a deadline for the request head, an idle
timeout and a cap on open connections.

aiohttp has `keepalive_timeout` but no header-read timeout (its `slow_request_timeout` was
removed long ago): a client that opens a connection and sends half a request line holds a
socket, a file descriptor and a handler until it gives up. Four thousand of those exhausted
a 1,024 file limit, after which no probe could connect. So every accepted connection is
wrapped in `_Connection`, a thin asyncio protocol in front of aiohttp's own:

- beyond `max_connections` open connections, a new one is closed at once (its descriptor is
  freed, nothing is read from it);
- a connection must deliver a whole request head within `header_timeout` of being accepted,
  and the next one within `idle_timeout` of the last answer; otherwise it is closed. A
  middleware tells the wrapper when a head has arrived (aiohttp calls it only then) and when
  the answer is done. aiohttp's own keepalive timeout is set to the idle timeout as well."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ListenerLimits:
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_connections: int = 256

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.idle_timeout <= 0 or self.max_connections < 1:
            raise ValueError(
                f"header_timeout={self.header_timeout}, idle_timeout={self.idle_timeout}, "
                f"max_connections={self.max_connections}: timeouts must be above 0 and the "
                "connection cap at least 1"
            )


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's handler inside, with a deadline on the request head."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self.listener = listener
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.listener.admit(self):
            cast(asyncio.Transport, transport).abort()
            return
        self.transport = transport
        self.inner.connection_made(transport)
        self.waiting(self.listener.limits.header_timeout)

    def waiting(self, seconds: float) -> None:
        """A request head is due within `seconds`."""
        self.busy()
        if self.transport is None or self.transport.is_closing():
            return
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def busy(self) -> None:
        """A request is being handled: no deadline on the head."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.transport is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.busy()
        if self.transport is not None:
            self.listener.release(self)
            self.inner.connection_lost(exc)


class Listener:
    """One aiohttp application on one host and port, within `limits`."""

    def __init__(
        self, name: str, app: web.Application, host: str, port: int, limits: ListenerLimits
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.limits = limits
        self._open: dict[asyncio.Protocol, _Connection] = {}
        self._refused = 0
        app.middlewares.append(self._track)
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.idle_timeout)
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        await self._runner.setup()
        server = self._runner.server
        assert server is not None  # set by setup()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self, server()), self.host, self.port
        )
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("serving %s on %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._runner.cleanup()

    def admit(self, conn: _Connection) -> bool:
        if len(self._open) >= self.limits.max_connections:
            self._refused += 1
            if self._refused in (1, 10, 100) or self._refused % 1000 == 0:
                log.warning(
                    "%s: %d connections open (the cap); %d refused so far",
                    self.name,
                    len(self._open),
                    self._refused,
                )
            return False
        self._open[conn.inner] = conn
        return True

    def release(self, conn: _Connection) -> None:
        self._open.pop(conn.inner, None)

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self._open.get(request.protocol)
        if conn is not None:
            conn.busy()
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.waiting(self.limits.idle_timeout)
