"""The Lucid connection pool (lucid_pool.py): few idle connections, and httpcore's per-request
`import sniffio` answered without a search of sys.path. What they save is measured by the
outage benchmark, not here; here, that they hold and that calls still work."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

import httpcore._synchronization
import pytest
from aiohttp import web

from lucidgrant.lucid_pool import KEEP_IDLE, lucid_http

from .test_lucid_limits import token_endpoint


async def test_a_burst_leaves_only_keep_idle_connections_open():
    connections: set[asyncio.BaseTransport] = set()

    async def token(request: web.Request) -> web.Response:
        assert request.transport is not None
        connections.add(request.transport)
        await asyncio.sleep(0.05)  # long enough for the calls to overlap
        return web.json_response({"ok": True})

    def still_open() -> int:
        return sum(1 for c in connections if not c.is_closing())

    async with token_endpoint(token) as base, lucid_http(5.0, 32) as http:
        url = f"{base}/oauth2/token"
        answers = await asyncio.gather(*(http.post(url, data={"a": "b"}) for _ in range(32)))
        assert all(a.status_code == 200 for a in answers)
        assert len(connections) > KEEP_IDLE, "the burst used more than the idle few"

        async def closed_down_to_idle() -> None:
            while still_open() > KEEP_IDLE:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(closed_down_to_idle(), 5)
        assert (await http.post(url)).status_code == 200  # and the pool still serves


async def test_the_absence_of_sniffio_is_recorded_and_httpcore_still_knows_its_loop():
    # If a dependency ever brings sniffio, the shortcut is moot: this says so.
    assert importlib.util.find_spec("sniffio") is None, "sniffio is installed"
    lucid_http(5.0, 1)
    assert sys.modules["sniffio"] is None
    with pytest.raises(ModuleNotFoundError):
        import sniffio  # noqa: F401
    assert httpcore._synchronization.current_async_library() == "asyncio"
