"""The listener's limits over real sockets on loopback: the connection cap, the deadline for a
request head, the idle timeout; requests within the limits are served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from lucidgrant.listener import Listener, ListenerLimits

HALF_A_HEAD = b"GET /x HTTP/1.1\r\nHost: t\r\n"


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@asynccontextmanager
async def serving(limits: ListenerLimits) -> AsyncIterator[Listener]:
    app = web.Application()
    app.router.add_get("/x", ok)
    listener = Listener("test", app, "127.0.0.1", 0, limits)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection within `seconds` (it sends nothing first)."""
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_half_open_requests_are_capped_and_closed_at_the_head_deadline():
    limits = ListenerLimits(header_timeout=0.5, idle_timeout=5, max_connections=5)
    async with serving(limits) as listener:
        conns = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(12)]
        for _, writer in conns:
            writer.write(HALF_A_HEAD)
        t0 = time.monotonic()
        # Past the cap, connections are closed at once.
        refused = await asyncio.gather(*(closed_within(r, 0.3) for r, _ in conns[5:]))
        assert all(refused)
        assert listener.open_connections == 5
        held = await asyncio.gather(*(closed_within(r, 5) for r, _ in conns[:5]))
        assert all(held)
        assert 0.4 <= time.monotonic() - t0 < 3
        assert listener.open_connections == 0
        # A whole request is served once the half-open ones are gone.
        assert (await get(listener.port)).startswith(b"HTTP/1.1 200")
        for _, writer in conns:
            writer.close()


async def test_a_head_dripped_byte_by_byte_does_not_outlive_the_deadline():
    async with serving(ListenerLimits(header_timeout=0.5, idle_timeout=5)) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        t0 = time.monotonic()
        closed = asyncio.ensure_future(closed_within(reader, 5))
        for byte in HALF_A_HEAD:
            if closed.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
        assert await closed
        assert time.monotonic() - t0 < 2
        writer.close()


async def test_an_idle_keepalive_connection_is_closed_and_busy_ones_are_not_cut():
    async with serving(ListenerLimits(header_timeout=5, idle_timeout=0.5)) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for _ in range(3):  # three requests on one connection, each within the idle timeout
            writer.write(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.wait_for(reader.readexactly(2), 5)
            await asyncio.sleep(0.2)
        t0 = time.monotonic()
        assert await closed_within(reader, 5)
        assert time.monotonic() - t0 < 2
        writer.close()


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError, match="timeouts must be above 0"):
        ListenerLimits(header_timeout=0)
