"""Bounded inputs from Lucid: each test performs the attack against LucidClient (in-process
through httpx.MockTransport, or a loopback server that drips) and would pass it before the
limits existed. No exception may carry a token."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from aiohttp import web

from lucidgrant.lucid import MAX_ANSWER_BYTES, MAX_DEADLINE, AnswerTooLarge, LucidClient
from lucidgrant.lucid_answers import (
    ClientCredentials,
    LucidError,
    TransientError,
    parse_token_response,
)
from lucidgrant.state_secret import LOCK_TTL

CREDS = ClientCredentials("client-id", "cs_SECRET")
OLD_REFRESH = "lrt_OLD"
# Secrets that must never show up in an exception's text.
SECRETS = ("cs_SECRET", OLD_REFRESH, "lat_NEW", "lrt_NEW")
CHUNK = 4096


def answer(expires_in: float = 3600, **extra: object) -> dict[str, object]:
    return {
        "access_token": "lat_NEW",
        "refresh_token": "lrt_NEW",
        "expires_in": expires_in,
        "scopes": ["offline_access"],
        "token_type": "bearer",
        **extra,
    }


class Sent:
    """A body sent in chunks, counting what the client pulled."""

    def __init__(self, body: bytes, pause: float = 0.0) -> None:
        self.body = body
        self.pause = pause
        self.pulled = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), CHUNK):
            if self.pause:
                await asyncio.sleep(self.pause)
            self.pulled += CHUNK
            yield self.body[i : i + CHUNK]


def client(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: float
) -> tuple[LucidClient, list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    observe = lambda endpoint, status, _took: seen.append((endpoint, status))  # noqa: E731
    return LucidClient(http, "https://lucid.test", observe=observe, **kwargs), seen


@asynccontextmanager
async def token_endpoint(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A token endpoint over real HTTP on loopback; yields Lucid's base URL."""
    app = web.Application()
    app.router.add_post("/oauth2/token", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def assert_no_secret(exc: BaseException) -> None:
    text = f"{exc} {exc!r} {exc.args!r}"
    for secret in SECRETS:
        assert secret not in text


async def refresh_fails(lucid: LucidClient) -> LucidError:
    with pytest.raises(LucidError) as caught:
        # Bounded so that a client without a deadline fails this test instead of hanging it.
        await asyncio.wait_for(lucid.refresh(CREDS, OLD_REFRESH), 10)
    assert_no_secret(caught.value)
    return caught.value


# -- size -----------------------------------------------------------------------------------


async def test_a_huge_answer_is_refused_after_the_cap_not_read_whole() -> None:
    # A valid token answer padded to 32 MiB: read whole, it parses and is believed.
    padding = "x" * (32 * 1024 * 1024)
    sent = Sent(json.dumps(answer(padding=padding)).encode())
    lucid, seen = client(lambda _req: httpx.Response(200, content=sent.chunks()))
    exc = await refresh_fails(lucid)
    assert isinstance(exc, AnswerTooLarge) and isinstance(exc, TransientError)
    assert exc.status == 200
    assert sent.pulled <= MAX_ANSWER_BYTES + CHUNK
    assert seen == [("token_refresh", 200)]


async def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    sent = Sent(b"{" + b" " * (MAX_ANSWER_BYTES + 10) + b"}")
    headers = {"Content-Length": str(len(sent.body))}
    lucid, _ = client(lambda _req: httpx.Response(200, headers=headers, content=sent.chunks()))
    assert isinstance(await refresh_fails(lucid), AnswerTooLarge)
    assert sent.pulled == 0


async def test_a_huge_error_page_is_refused_too() -> None:
    sent = Sent(b"<html>" + b"maintenance " * 1_000_000 + b"</html>")
    lucid, _ = client(lambda _req: httpx.Response(503, content=sent.chunks()))
    exc = await refresh_fails(lucid)
    assert isinstance(exc, AnswerTooLarge) and exc.status == 503
    assert sent.pulled <= MAX_ANSWER_BYTES + CHUNK


async def test_a_compressed_answer_is_refused_instead_of_inflated() -> None:
    # 16 MiB of zeros inside a valid token answer, 16 KiB on the wire: a gzip bomb.
    body = gzip.compress(json.dumps(answer(padding="0" * (16 * 1024 * 1024))).encode())
    assert len(body) < MAX_ANSWER_BYTES
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body)

    lucid, _ = client(handler)
    assert isinstance(await refresh_fails(lucid), AnswerTooLarge)
    assert requests[0].headers["Accept-Encoding"] == "identity"


async def test_an_answer_at_the_cap_is_still_read() -> None:
    body = json.dumps(answer()).encode()
    body = body[:-1] + b" " * (MAX_ANSWER_BYTES - len(body)) + b"}"
    assert len(body) == MAX_ANSWER_BYTES
    lucid, _ = client(lambda _req: httpx.Response(200, content=Sent(body).chunks()))
    tokens = await lucid.refresh(CREDS, OLD_REFRESH)
    assert tokens.refresh_token == "lrt_NEW"


# -- time -----------------------------------------------------------------------------------


async def test_a_dripping_answer_ends_at_the_deadline() -> None:
    # One chunk every 0.1 s for 10 s in all; httpx's per-read timeouts never fire on it.
    sent = Sent(json.dumps(answer(padding="x" * (100 * CHUNK))).encode(), pause=0.1)
    lucid, seen = client(lambda _req: httpx.Response(200, content=sent.chunks()), deadline=0.5)
    t0 = time.monotonic()
    exc = await refresh_fails(lucid)
    assert 0.4 < time.monotonic() - t0 < 3
    assert isinstance(exc, TransientError) and "0.5s" in str(exc)
    assert seen == [("token_refresh", 0)]


async def test_a_real_server_dripping_one_byte_at_a_time_is_cut_at_the_deadline() -> None:
    """Over real HTTP on loopback, with httpx's own timeouts set as the operator sets them:
    each byte resets the read timeout, so only the overall deadline ends the call."""
    dripped = 0

    async def drip(request: web.Request) -> web.StreamResponse:
        nonlocal dripped
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for byte in json.dumps(answer()).encode():
            await response.write(bytes([byte]))
            dripped += 1
            await asyncio.sleep(0.05)
        return response

    async with token_endpoint(drip) as url, httpx.AsyncClient(timeout=1.0) as http:
        lucid = LucidClient(http, url, deadline=0.5)
        t0 = time.monotonic()
        exc = await refresh_fails(lucid)
        elapsed = time.monotonic() - t0
    assert isinstance(exc, TransientError)
    assert 0.4 < elapsed < 3
    assert 0 < dripped < len(json.dumps(answer()))


def test_the_deadline_ends_inside_the_refresh_lock() -> None:
    # A refresh holds the lock over at most three Lucid calls (refresh, introspection, the
    # confirming refresh); with margin left for the Kubernetes writes.
    assert 3 * MAX_DEADLINE < LOCK_TTL
    http = httpx.AsyncClient()
    with pytest.raises(ValueError, match="LUCIDGRANT_LUCID_TIMEOUT"):
        LucidClient(http, deadline=LOCK_TTL)
    with pytest.raises(ValueError, match="LUCIDGRANT_LUCID_TIMEOUT"):
        LucidClient(http, deadline=0)


# -- lifetimes ------------------------------------------------------------------------------


@pytest.mark.parametrize("expires_in", [1, 0.001, 59.9])
async def test_a_lifetime_below_the_floor_is_taken_as_the_floor(expires_in: float) -> None:
    body = json.dumps(answer(expires_in=expires_in)).encode()
    lucid, _ = client(lambda _req: httpx.Response(200, content=body))
    tokens = await lucid.refresh(CREDS, OLD_REFRESH)
    assert tokens.expires_in == 60.0
    assert tokens.access_expires_at - tokens.issued_at == 60.0


async def test_the_floor_is_configurable_and_longer_lifetimes_are_kept() -> None:
    body = json.dumps(answer(expires_in=5)).encode()
    lucid, _ = client(lambda _req: httpx.Response(200, content=body), min_expires_in=1.0)
    assert (await lucid.refresh(CREDS, OLD_REFRESH)).expires_in == 5.0
    assert parse_token_response(answer(expires_in=3600), 0).expires_in == 3600.0
