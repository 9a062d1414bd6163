"""The Lucid OAuth client: token exchange, refresh, introspection and revocation over HTTP, each
within a deadline and a size cap; what the answers mean is lucid_answers.py's.

No exception raised here carries a token, a client secret or a response body: bodies may echo
what was sent, and exception texts end up in logs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import httpx

from lucidgrant.lucid_answers import (
    MIN_EXPIRES_IN,
    ClientCredentials,
    ClientRejectedError,
    Introspection,
    PartialAnswerError,
    TokenSet,
    TransientError,
    classify_error,
    json_object,
    parse_token_response,
)

DEFAULT_API_URL = "https://api.lucid.co"
DEFAULT_APP_URL = "https://lucid.app"

Endpoint = Literal["token_refresh", "token_code", "introspect", "revoke"]

# Lucid's answers are small JSON objects (well under 2 KiB); anything bigger is refused unread,
# so that a broken or hostile peer cannot fill the pod's memory.
MAX_ANSWER_BYTES = 64 * 1024
# Every Lucid call, connect to last body byte, ends within its deadline. Up to three calls happen
# under one refresh lock (refresh, introspection, the confirming refresh), after a wait of at
# most reconcile.ADMIT_WITHIN (5 s) for the rate limit, and the lock lives
# state_secret.LOCK_TTL = 60 s: all of it must end well before that, or another replica could
# take the lock while this one still waits for an answer that rotates the grant.
MAX_DEADLINE = 15.0
DEFAULT_DEADLINE = 10.0


# What the refresh path does with a token answer (or a partial one) the moment it is parsed:
# append it to the write-ahead log, since Lucid has rotated and the answer is all there is.
Keep = Callable[["TokenSet | PartialAnswerError"], None]
T = TypeVar("T")


class AnswerTooLarge(TransientError):
    """Lucid's answer exceeds MAX_ANSWER_BYTES; it was not read further."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"Lucid's answer (HTTP {status}) exceeds {MAX_ANSWER_BYTES} bytes: refused",
            status=status,
        )


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, or AnswerTooLarge as soon as it passes the cap. Encoded bodies are refused
    unread: identity was asked for, and a small compressed body can inflate without bound, so
    the bytes counted here are the bytes received."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    declared = response.headers.get("Content-Length", "")
    if encoding != "identity" or (declared.isdigit() and int(declared) > MAX_ANSWER_BYTES):
        raise AnswerTooLarge(response.status_code)
    # The transport's stream, not aiter_bytes(): that one releases the connection (awaiting,
    # so the event loop turns) as soon as the last byte is in, before the caller can keep the
    # answer. The `stream()` context releases it afterwards. (Identity only: raw is the body.)
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("an async HTTP client is needed")
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(response.status_code)
    return bytes(body)


class LucidClient:
    """Calls Lucid's OAuth endpoints. `observe` is called once per HTTP exchange with the
    endpoint, the HTTP status (0 when no answer came) and the seconds it took (for metrics).
    Each call ends within `deadline` seconds, answer read, and reads at most MAX_ANSWER_BYTES;
    token lifetimes below `min_expires_in` are raised to it."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str = DEFAULT_API_URL,
        observe: Any = None,
        *,
        deadline: float = DEFAULT_DEADLINE,
        min_expires_in: float = MIN_EXPIRES_IN,
    ) -> None:
        if not 0 < deadline <= MAX_DEADLINE:
            raise ValueError(
                f"the Lucid call deadline (LUCIDGRANT_LUCID_TIMEOUT) is {deadline}s: set it "
                f"above 0 and at most {MAX_DEADLINE}s, so that a refresh ends inside its lock"
            )
        self._http = http
        self._api = api_url.rstrip("/")
        self._observe = observe
        self._deadline = deadline
        self._min_expires_in = min_expires_in
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def settled(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, until no call is in flight. At shutdown: an answer
        on its way may carry a rotation, kept (logged) as it arrives."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    async def _post(
        self,
        endpoint: Endpoint,
        path: str,
        answer: Callable[[httpx.Response, float], T],
        *,
        json_body: Any = None,
        form: Any = None,
    ) -> T:
        """POST, read the answer whole within the deadline and the size cap, and hand it to
        `answer` (with when the request was sent) as a response holding the body read and only
        the headers that are used. `answer` runs the moment the last byte is read: before the
        connection is released (which awaits) and before any metric, so that a token answer
        can be put in the write-ahead log with nothing awaited in between."""
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._exchange(endpoint, path, answer, json_body, form)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _exchange(
        self,
        endpoint: Endpoint,
        path: str,
        answer: Callable[[httpx.Response, float], T],
        json_body: Any,
        form: Any,
    ) -> T:
        started = time.time()
        t0 = time.perf_counter()
        status = 0
        answered: list[T] = []
        try:
            async with asyncio.timeout(self._deadline):
                async with self._http.stream(
                    "POST",
                    f"{self._api}{path}",
                    json=json_body,
                    data=form,
                    headers={"Accept-Encoding": "identity"},
                ) as streamed:
                    status = streamed.status_code
                    body = await _read_capped(streamed)
                    retry_after = streamed.headers.get("Retry-After")
                    headers = {} if retry_after is None else {"Retry-After": retry_after}
                    try:
                        answered.append(
                            answer(httpx.Response(status, headers=headers, content=body), started)
                        )
                    finally:
                        self._record(endpoint, status, t0)
        except AnswerTooLarge:
            self._record(endpoint, status, t0)
            raise
        # TimeoutError is the overall deadline; TimeoutException one of httpx's per-phase ones.
        except (TimeoutError, httpx.TimeoutException) as exc:
            if answered:  # only releasing the connection overran: the answer stands
                return answered[0]
            self._record(endpoint, 0, t0)
            raise TransientError(
                f"Lucid did not answer within {self._deadline:g}s ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            if answered:
                return answered[0]
            self._record(endpoint, 0, t0)
            raise TransientError(f"could not reach Lucid ({type(exc).__name__})") from None
        return answered[0]

    def _record(self, endpoint: Endpoint, status: int, t0: float) -> None:
        if self._observe is not None:
            self._observe(endpoint, status, time.perf_counter() - t0)

    async def _token(self, endpoint: Endpoint, body: dict[str, str], keep: Keep | None) -> TokenSet:
        def answer(response: httpx.Response, started: float) -> TokenSet:
            if response.status_code >= 300:
                raise classify_error(response, time.time())
            parsed = json_object(response)
            if parsed is None:
                raise TransientError(
                    "Lucid answered with a body that is not JSON", status=response.status_code
                )
            try:
                tokens = parse_token_response(parsed, started, self._min_expires_in)
            except PartialAnswerError as partial:
                if keep is not None:
                    keep(partial)
                raise
            if keep is not None:
                keep(tokens)
            return tokens

        return await self._post(endpoint, "/oauth2/token", answer, json_body=body)

    async def refresh(
        self, client: ClientCredentials, refresh_token: str, keep: Keep | None = None
    ) -> TokenSet:
        """Refresh; `keep` gets the answer (or the partial answer) as soon as it is parsed."""
        return await self._token(
            "token_refresh",
            {
                "refresh_token": refresh_token,
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "grant_type": "refresh_token",
            },
            keep,
        )

    async def exchange_code(
        self, client: ClientCredentials, code: str, redirect_uri: str, keep: Keep | None = None
    ) -> TokenSet:
        return await self._token(
            "token_code",
            {
                "code": code,
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
            },
            keep,
        )

    async def _token_call(
        self, endpoint: Endpoint, path: str, client: ClientCredentials, token: str
    ) -> tuple[httpx.Response, float]:
        """Introspect and revoke take the same form: the client's credentials and one token."""

        def answer(response: httpx.Response, started: float) -> tuple[httpx.Response, float]:
            if response.status_code >= 300:
                raise classify_error(response, time.time())
            return response, started

        form = {
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "token": token,
        }
        return await self._post(endpoint, path, answer, form=form)

    async def introspect(self, client: ClientCredentials, token: str) -> Introspection:
        response, started = await self._token_call(
            "introspect", "/oauth2/token/introspect", client, token
        )
        body = json_object(response)
        if body is None or not isinstance(body.get("active"), bool):
            raise TransientError("Lucid's introspection answer is malformed")
        if not body["active"]:
            return Introspection(active=False)
        expires_in = body.get("expires_in")
        expires_at = (
            started + float(expires_in)
            if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
            else None
        )
        scope = body.get("scope")
        return Introspection(
            active=True,
            expires_at=expires_at,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
        )

    async def accepts_client(self, client: ClientCredentials) -> bool:
        """Whether Lucid takes the pair as a client's: introspecting a token no client holds
        authenticates the client and learns nothing else."""
        try:
            await self.introspect(client, "lucidgrant-client-check")
        except ClientRejectedError:
            return False
        return True

    async def revoke(self, client: ClientCredentials, token: str) -> None:
        await self._token_call("revoke", "/oauth2/token/revoke", client, token)
