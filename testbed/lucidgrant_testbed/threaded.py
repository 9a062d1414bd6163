"""Run an asyncio service (an emulator) on its own event loop in a background thread, so that
synchronous tests and the demo can use it while the operator runs in another process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Service(Protocol):
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=Service)
T = TypeVar("T")


class ServiceThread:
    """Owns the loop and thread of one running service."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run a coroutine function on the service's loop and wait for its result."""

        async def runner() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@contextmanager
def running_in_thread(
    service: S, host: str = "127.0.0.1", port: int = 0
) -> Iterator[tuple[S, ServiceThread]]:
    """Start `service` on a background loop; stop it (closing its connections) on exit."""
    thread = ServiceThread()
    try:
        thread.call(lambda: service.start(host, port))
        yield service, thread
    finally:
        try:
            thread.call(service.stop)
        finally:
            thread.close()
