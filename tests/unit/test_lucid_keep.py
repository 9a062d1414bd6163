"""A token answer is handed to `keep` (the write-ahead log) the moment its last byte is read:
before the event loop turns even once, before the metric, before the connection is released.
A process killed once Lucid's answer is in is then killed with the answer in its log. Over real
HTTP on loopback, so that httpx and httpcore release the connection as they do in the operator
(awaiting a lock: a turn of the loop)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from aiohttp import web

from lucidgrant.lucid import Keep, LucidClient
from lucidgrant.lucid_answers import PartialAnswerError, TokenSet

from .test_lucid_limits import CREDS, OLD_REFRESH, answer, token_endpoint


class Watched(httpx.AsyncByteStream):
    """The transport's answer stream, noting when its end was read, when it was closed, and
    the first turn of the event loop after the end."""

    def __init__(self, inner: httpx.AsyncByteStream, events: list[str]) -> None:
        self.inner = inner
        self.events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self.inner:
            yield part
        self.events.append("read")
        asyncio.get_running_loop().call_soon(self.events.append, "loop turned")

    async def aclose(self) -> None:
        self.events.append("closed")
        await self.inner.aclose()


class WatchingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=Watched(response.stream, self.events),
            extensions=response.extensions,
        )


@asynccontextmanager
async def lucid(body: dict[str, object], events: list[str]) -> AsyncIterator[LucidClient]:
    async def token(_request: web.Request) -> web.Response:
        return web.json_response(body)

    observe = lambda *_: events.append("metric")  # noqa: E731
    async with (
        token_endpoint(token) as url,
        httpx.AsyncClient(transport=WatchingTransport(events)) as http,
    ):
        yield LucidClient(http, url, observe=observe)


def keeper(events: list[str], kept: list[TokenSet | PartialAnswerError]) -> Keep:
    def keep(answer: TokenSet | PartialAnswerError) -> None:
        events.append("kept")
        kept.append(answer)

    return keep


def assert_kept_first(events: list[str]) -> None:
    assert events[:3] == ["read", "kept", "metric"], events
    assert events.index("kept") < events.index("closed"), events
    assert events.index("kept") < events.index("loop turned"), events


async def test_the_answer_is_kept_before_anything_else_happens() -> None:
    events: list[str] = []
    kept: list[TokenSet | PartialAnswerError] = []
    async with lucid(answer(), events) as client:
        tokens = await client.refresh(CREDS, OLD_REFRESH, keeper(events, kept))
        await asyncio.sleep(0)  # the loop turns here at the latest
    assert kept == [tokens] and tokens.refresh_token == "lrt_NEW"
    assert_kept_first(events)


async def test_a_partial_answer_is_kept_too() -> None:
    events: list[str] = []
    kept: list[TokenSet | PartialAnswerError] = []
    async with lucid(answer(access_token=None), events) as client:
        with pytest.raises(PartialAnswerError) as partial:
            await client.refresh(CREDS, OLD_REFRESH, keeper(events, kept))
        await asyncio.sleep(0)
    assert kept == [partial.value] and partial.value.refresh_token == "lrt_NEW"
    assert_kept_first(events)
