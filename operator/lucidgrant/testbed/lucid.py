"""An emulator of Lucid's OAuth 2.0 endpoints (authorize pages, token, introspect, revoke), built
from the facts table in DESIGN.md, with switchable faults and short token lifetimes so that tests,
the demo and the benchmark can run many rotations per minute on loopback.

One server answers both the "app" pages (`/oauth2/authorize...`) and the "api" endpoints
(`/oauth2/token...`), so the operator's app and api base URLs can both point at it. Tests drive it
in-process through the Python API; other processes use the JSON control API under `/_emulator/`.
Differences from the real Lucid are listed in LUCID.md next to this file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import json
import math
import random
import secrets
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from aiohttp import web
from yarl import URL

Kind = Literal["user", "account"]
Subject = int | str
FailureBody = Literal["json", "html", "malformed", "empty"]

# Prefixes make every issued secret recognizable, so tests can scan logs and events for leaks.
ACCESS_PREFIX = "lat_"
REFRESH_PREFIX = "lrt_"
CODE_PREFIX = "lac_"

INVALID_GRANT: dict[str, str] = {
    "error": "invalid_grant",
    "error_description": "Invalid client id, client secret, or refresh token",
}
INVALID_CODE: dict[str, str] = {
    "error": "invalid_grant",
    "error_description": "Invalid, expired or already used authorization code",
}
INVALID_CLIENT: dict[str, str] = {
    "error": "invalid_client",
    "error_description": "Invalid client id or client secret",
}
DISABLED_CLIENT: dict[str, str] = {
    "error": "invalid_client",
    "error_description": "This client has been disabled",
}

MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Lucid is down for maintenance</title></head>"
    "<body><h1>We'll be back soon</h1><p>Lucid is undergoing scheduled maintenance.</p>"
    "</body></html>"
)
ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>Error</title></head>"
    "<body><h1>Something went wrong</h1></body></html>"
)
# A 200 answer cut off mid-way, as a proxy that drops the connection would leave it.
TRUNCATED_JSON = '{"access_token": "lat_trunc'

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class _Client:
    client_id: str
    client_secret: str
    redirect_uris: frozenset[str] | None
    disabled: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    kind: Kind
    subject: Subject
    expires_at: float
    used: bool = False


class RefreshRecord(NamedTuple):
    """One successful refresh: when it happened and when the access token it replaced expired
    (a benchmark reads punctuality as `previous_access_expires_at - at`)."""

    grant_id: str
    at: float
    previous_access_expires_at: float


@dataclass
class _Grant:
    id: str
    client_id: str
    kind: Kind
    subject: Subject
    scopes: tuple[str, ...]
    created_at: float
    access_token: str = ""
    access_expires_at: float = 0.0
    refresh_token: str | None = None
    refresh_expires_at: float | None = None
    rotations: int = 0
    revoked: bool = False
    refreshes: list[RefreshRecord] = field(default_factory=list)


@dataclass(frozen=True)
class GrantInfo:
    """A snapshot of one grant, safe to keep while the server goes on rotating it."""

    id: str
    client_id: str
    kind: Kind
    subject: Subject
    scopes: tuple[str, ...]
    created_at: float
    access_token: str
    access_expires_at: float
    refresh_token: str | None
    refresh_expires_at: float | None
    rotations: int
    revoked: bool
    refreshes: tuple[RefreshRecord, ...]


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    body: FailureBody


def _json(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def _html(status: int, page: str) -> web.Response:
    return web.Response(status=status, text=page, content_type="text/html")


def _error_page(message: str) -> web.Response:
    page = (
        "<!DOCTYPE html><html><head><title>Authorization error</title></head>"
        f"<body><h1>Authorization error</h1><p>{html.escape(message)}</p></body></html>"
    )
    return _html(400, page)


class LucidEmulator:
    """Lucid's OAuth endpoints on loopback. Public methods may be called from any thread."""

    def __init__(
        self,
        access_ttl: float = 3600.0,
        refresh_ttl: float = 180 * 86400.0,
        code_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.code_ttl = code_ttl
        self.clock = clock
        self.auto_consent = True
        # Lucid's docs show numeric user ids (`"user_id": 1001`); account ids are assumed alike.
        self.consenting_user_id: Subject = 1001
        self.consenting_account_id: Subject = 2002
        # Lucid's reference pages document 403 for bad client credentials, DESIGN.md says 401 or
        # 403: tests may switch this to check that the operator copes with both.
        self.bad_client_status = 401

        self.calls: Counter[tuple[str, int]] = Counter()
        self.refresh_count = 0
        self.invalid_grant_count = 0
        self.flaky_invalid_grant_count = 0

        # The server's loop thread and test threads both mutate state; one lock keeps each
        # request's read-check-rotate step atomic. It is never held across an await.
        self._lock = threading.RLock()
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        # Old tokens stay indexed after rotation so grant_of() and revocation still find them.
        self._by_access: dict[str, _Grant] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._secrets: set[str] = set()
        self._refresh_log: list[RefreshRecord] = []
        self._grant_seq = 0

        self._outage_until = -math.inf
        self._failures: deque[_Failure] = deque()
        self._slow_seconds = 0.0
        self._slow_remaining: int | None = None
        self._slow_process_first = False
        self._flaky_probability = 0.0
        self._flaky_rng = random.Random()
        self._flaky_next = 0
        self._partial_next = 0

        self._runner: web.AppRunner | None = None
        self._url = ""

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/oauth2/authorize", self._authorize_user)
        app.router.add_get("/oauth2/authorizeAccount", self._authorize_account)
        app.router.add_post("/oauth2/authorize/consent", self._consent)
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_post("/oauth2/token/introspect", self._introspect)
        app.router.add_post("/oauth2/token/revoke", self._revoke)
        app.router.add_get("/_emulator/stats", self._ctl_stats)
        app.router.add_get("/_emulator/refreshes", self._ctl_refreshes)
        app.router.add_post("/_emulator/clients", self._ctl_clients)
        app.router.add_post("/_emulator/grants", self._ctl_grants)
        app.router.add_post("/_emulator/lookup", self._ctl_lookup)
        app.router.add_post("/_emulator/revoke", self._ctl_revoke)
        app.router.add_post("/_emulator/expire", self._ctl_expire)
        app.router.add_post("/_emulator/faults", self._ctl_faults)
        # No access log: it costs time at benchmark rates and adds nothing the counters lack.
        # A short shutdown timeout so that stop() does not wait for a slow-fault answer.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.create_server((host, port), family=_family(host))
        await web.SockSite(runner, sock).start()
        self._runner = runner
        bound_port = sock.getsockname()[1]
        self._url = (
            f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("the emulator is not started")
        return self._url

    # ---------------------------------------------------------------- clients and grants

    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: list[str] | None = None
    ) -> None:
        """Register an OAuth client; `redirect_uris=None` accepts any redirect URI."""
        with self._lock:
            uris = None if redirect_uris is None else frozenset(redirect_uris)
            self._clients[client_id] = _Client(client_id, client_secret, uris)
            self._secrets.add(client_secret)

    def disable_client(self, client_id: str, disabled: bool = True) -> None:
        """As a Lucid admin disabling the app: every endpoint answers 401 invalid_client."""
        with self._lock:
            self._clients[client_id].disabled = disabled

    def issue_grant(self, client_id: str, scopes: list[str], kind: Kind = "user") -> dict[str, Any]:
        """Create a grant as if a person had consented and the code was exchanged; returns the
        token response that `/oauth2/token` would have given."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            now = self.clock()
            grant = self._new_grant(client_id, _kind(kind), self._subject(kind), tuple(scopes), now)
            return self._token_body(grant, now)

    def issue_code(
        self, client_id: str, redirect_uri: str, scopes: list[str], kind: Kind = "user"
    ) -> str:
        """An authorization code as the authorize page would have redirected with."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            return self._new_code(client_id, redirect_uri, tuple(scopes), _kind(kind))

    def revoke_grant_of(self, token: str) -> str | None:
        """Revoke the grant that any token (even a rotated-away one) belongs to; its id or None."""
        with self._lock:
            grant = self._grant_by_token(token)
            if grant is None:
                return None
            grant.revoked = True
            return grant.id

    def expire_token(self, token: str) -> bool:
        """Make the current access or refresh token, or an unused code, expire now."""
        with self._lock:
            now = self.clock()
            grant = self._by_access.get(token)
            if grant is not None and grant.access_token == token:
                grant.access_expires_at = now
                return True
            grant = self._by_refresh.get(token)
            if grant is not None and grant.refresh_token == token:
                grant.refresh_expires_at = now
                return True
            code = self._codes.get(token)
            if code is not None:
                code.expires_at = now
                return True
            return False

    def grant_of(self, token: str) -> str | None:
        with self._lock:
            grant = self._grant_by_token(token)
            return None if grant is None else grant.id

    def grant_info(self, grant_id: str) -> GrantInfo:
        with self._lock:
            return _snapshot(self._grants[grant_id])

    def grant_infos(self) -> list[GrantInfo]:
        with self._lock:
            return [_snapshot(grant) for grant in self._grants.values()]

    def all_issued_secrets(self) -> set[str]:
        """Every access token, refresh token and code ever issued, and every client secret."""
        with self._lock:
            return set(self._secrets)

    def live_refresh_tokens(self) -> set[str]:
        with self._lock:
            now = self.clock()
            return {
                grant.refresh_token
                for grant in self._grants.values()
                if grant.refresh_token is not None and self._refresh_live(grant, now)
            }

    def refresh_records(self, since: int = 0) -> list[RefreshRecord]:
        """Successful refreshes in order, from index `since` (for incremental polling)."""
        with self._lock:
            return self._refresh_log[since:]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            return {
                "calls": [
                    {"endpoint": endpoint, "status": status, "count": count}
                    for (endpoint, status), count in sorted(self.calls.items())
                ],
                "refresh_count": self.refresh_count,
                "invalid_grant_count": self.invalid_grant_count,
                "flaky_invalid_grant_count": self.flaky_invalid_grant_count,
                "grants": len(self._grants),
                "live_refresh_tokens": sum(
                    1 for grant in self._grants.values() if self._refresh_live(grant, now)
                ),
                "clock": now,
                "faults": {
                    "outage_until": self._outage_until if now < self._outage_until else None,
                    "pending_failures": len(self._failures),
                    "slow_seconds": self._slow_seconds,
                    "slow_remaining": self._slow_remaining,
                    "flaky_probability": self._flaky_probability,
                    "flaky_next": self._flaky_next,
                },
            }

    # ---------------------------------------------------------------- faults

    def outage(self, seconds: float) -> None:
        """Answer 503 with an HTML maintenance page for `seconds` of the emulator's clock."""
        self.outage_until(self.clock() + float(seconds))

    def outage_until(self, t: float) -> None:
        with self._lock:
            self._outage_until = float(t)

    def end_outage(self) -> None:
        with self._lock:
            self._outage_until = -math.inf

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        body: FailureBody = "json",
    ) -> None:
        """Answer the next `n` requests with `status` instead of processing them. Retry-After
        is sent rounded up to whole seconds, the only delay form HTTP defines."""
        if body not in ("json", "html", "malformed", "empty"):
            raise ValueError(f"unknown failure body {body!r}")
        failure = _Failure(int(status), None if retry_after is None else float(retry_after), body)
        with self._lock:
            self._failures.extend([failure] * int(n))

    def malformed_next(self, n: int = 1) -> None:
        self.fail_next(n, 200, body="malformed")

    def html_next(self, n: int = 1) -> None:
        self.fail_next(n, 200, body="html")

    def slow(self, seconds: float, n: int | None = None, process_first: bool = False) -> None:
        """Delay the next `n` answers (all while set, if None) by `seconds` of real time.

        By default the request is processed after the delay, and not at all if the client has
        gone (timed out) by then: a timeout costs the client nothing. With `process_first` the
        grant is rotated before the delay, so a client that times out loses the new tokens, the
        worst case a real network can produce."""
        with self._lock:
            self._slow_seconds = float(seconds)
            self._slow_remaining = None if n is None else int(n)
            self._slow_process_first = bool(process_first)

    def flaky_invalid_grant(self, probability: float, seed: int | None = None) -> None:
        """Answer a live refresh token with 400 invalid_grant at this rate, without rotating."""
        with self._lock:
            self._flaky_probability = float(probability)
            self._flaky_rng = random.Random(seed)

    def flaky_invalid_grant_next(self, n: int = 1) -> None:
        with self._lock:
            self._flaky_next = int(n)

    def partial_answer_next(self, n: int = 1) -> None:
        """Rotate as usual but answer without `access_token`: the worst malformed answer, since
        the new refresh token in it is the only live one."""
        with self._lock:
            self._partial_next = int(n)

    def clear_faults(self) -> None:
        with self._lock:
            self._outage_until = -math.inf
            self._failures.clear()
            self._slow_seconds = 0.0
            self._slow_remaining = None
            self._slow_process_first = False
            self._flaky_probability = 0.0
            self._flaky_next = 0
            self._partial_next = 0

    # ---------------------------------------------------------------- internals

    def _subject(self, kind: str) -> Subject:
        return self.consenting_account_id if kind == "account" else self.consenting_user_id

    def _issue(self, prefix: str) -> str:
        secret = prefix + secrets.token_urlsafe(32)
        self._secrets.add(secret)
        return secret

    def _new_code(
        self, client_id: str, redirect_uri: str, scopes: tuple[str, ...], kind: Kind
    ) -> str:
        code = self._issue(CODE_PREFIX)
        self._codes[code] = _Code(
            client_id, redirect_uri, scopes, kind, self._subject(kind), self.clock() + self.code_ttl
        )
        return code

    def _new_grant(
        self, client_id: str, kind: Kind, subject: Subject, scopes: tuple[str, ...], now: float
    ) -> _Grant:
        self._grant_seq += 1
        grant = _Grant(f"g-{self._grant_seq}", client_id, kind, subject, scopes, now)
        self._grants[grant.id] = grant
        self._mint(grant, now)
        return grant

    def _mint(self, grant: _Grant, now: float) -> None:
        """Give the grant a fresh access token, and a fresh refresh token when offline_access was
        granted; each token's lifetime runs from its own creation."""
        grant.access_token = self._issue(ACCESS_PREFIX)
        grant.access_expires_at = now + self.access_ttl
        self._by_access[grant.access_token] = grant
        if "offline_access" in grant.scopes:
            grant.refresh_token = self._issue(REFRESH_PREFIX)
            grant.refresh_expires_at = now + self.refresh_ttl
            self._by_refresh[grant.refresh_token] = grant

    def _grant_by_token(self, token: str) -> _Grant | None:
        return self._by_access.get(token) or self._by_refresh.get(token)

    @staticmethod
    def _refresh_live(grant: _Grant, now: float) -> bool:
        return (
            not grant.revoked
            and grant.refresh_token is not None
            and grant.refresh_expires_at is not None
            and now < grant.refresh_expires_at
        )

    def _token_body(self, grant: _Grant, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": grant.access_token}
        if grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
        body.update(
            client_id=grant.client_id,
            # Rounded down: a client that trusts expires_in must never believe in a dead token.
            expires_in=max(0, int(grant.access_expires_at - now)),
            expires=int(grant.access_expires_at * 1000),
            scopes=list(grant.scopes),
            token_type="bearer",
        )
        body["account_id" if grant.kind == "account" else "user_id"] = grant.subject
        return body

    def _authenticate(self, fields: dict[str, str]) -> tuple[str, web.Response | None]:
        client = self._clients.get(fields.get("client_id", ""))
        if client is None or client.client_secret != fields.get("client_secret"):
            return "", _json(self.bad_client_status, INVALID_CLIENT, NO_STORE)
        if client.disabled:
            return "", _json(self.bad_client_status, DISABLED_CLIENT, NO_STORE)
        return client.client_id, None

    # ---------------------------------------------------------------- fault plumbing

    def _take_delay(self) -> tuple[float, bool]:
        with self._lock:
            if self._slow_seconds <= 0 or self._slow_remaining == 0:
                return 0.0, False
            if self._slow_remaining is not None:
                self._slow_remaining -= 1
            return self._slow_seconds, self._slow_process_first

    def _fault_response(self) -> web.Response | None:
        if self.clock() < self._outage_until:
            return _html(503, MAINTENANCE_PAGE)
        if not self._failures:
            return None
        failure = self._failures.popleft()
        if failure.body == "html":
            response = _html(failure.status, ERROR_PAGE)
        elif failure.body == "malformed":
            response = web.Response(
                status=failure.status, text=TRUNCATED_JSON, content_type="application/json"
            )
        elif failure.body == "empty":
            response = web.Response(status=failure.status)
        else:
            error = "rate_limit_exceeded" if failure.status == 429 else "server_error"
            response = _json(failure.status, {"error": error, "error_description": "Try later"})
        if failure.retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(failure.retry_after))
        return response

    def _flaky_hit(self) -> bool:
        if self._flaky_next > 0:
            self._flaky_next -= 1
            return True
        return self._flaky_probability > 0 and self._flaky_rng.random() < self._flaky_probability

    async def _serve(
        self, request: web.Request, endpoint: str, answer: Callable[[], web.Response]
    ) -> web.Response:
        """Answer a token, introspect or revoke request through the fault switches; count it."""
        delay, process_first = self._take_delay()
        if delay and process_first:
            response = self._answer(endpoint, answer)
            await asyncio.sleep(delay)
            return response
        if delay:
            await asyncio.sleep(delay)
            if request.transport is None or request.transport.is_closing():
                # The client gave up: nothing is processed; 499 as nginx logs it.
                with self._lock:
                    self.calls[(endpoint, 499)] += 1
                return web.Response(status=499)
        return self._answer(endpoint, answer)

    def _answer(self, endpoint: str, answer: Callable[[], web.Response]) -> web.Response:
        with self._lock:
            response = self._fault_response() or answer()
            self.calls[(endpoint, response.status)] += 1
            return response

    # ---------------------------------------------------------------- authorize pages

    async def _authorize_user(self, request: web.Request) -> web.Response:
        return self._authorize(request, "user")

    async def _authorize_account(self, request: web.Request) -> web.Response:
        return self._authorize(request, "account")

    def _authorize(self, request: web.Request, kind: Kind) -> web.Response:
        query = request.query
        with self._lock:
            response = self._check_redirect(query.get("client_id", ""), query.get("redirect_uri"))
            if response is None:
                redirect_uri = query["redirect_uri"]
                state = query.get("state")
                if query.get("response_type") != "code":
                    response = _redirect(redirect_uri, state, error="unsupported_response_type")
                elif self.auto_consent:
                    response = self._approve(
                        query["client_id"], redirect_uri, query.get("scope", ""), state, kind
                    )
                else:
                    response = _consent_page(query, kind)
            self.calls[("authorize", response.status)] += 1
            return response

    async def _consent(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        with self._lock:
            # The form comes back from the browser, so it is checked again like a fresh request.
            response = self._check_redirect(fields.get("client_id", ""), fields.get("redirect_uri"))
            if response is None:
                redirect_uri, state = fields["redirect_uri"], fields.get("state")
                kind = fields.get("kind")
                if kind not in ("user", "account"):
                    response = _error_page("Unknown token kind.")
                elif fields.get("decision") == "approve":
                    scope = fields.get("scope", "")
                    response = self._approve(
                        fields["client_id"], redirect_uri, scope, state, _kind(kind)
                    )
                else:
                    response = _redirect(redirect_uri, state, error="access_denied")
            self.calls[("authorize", response.status)] += 1
            return response

    def _check_redirect(self, client_id: str, redirect_uri: str | None) -> web.Response | None:
        # Never redirect to an unverified URI: that would hand codes to whoever asked.
        client = self._clients.get(client_id)
        if client is None:
            return _error_page("Unknown client.")
        if client.disabled:
            return _error_page("This application has been disabled.")
        if not redirect_uri:
            return _error_page("Missing redirect_uri.")
        if client.redirect_uris is not None and redirect_uri not in client.redirect_uris:
            return _error_page("The redirect_uri is not registered for this application.")
        return None

    def _approve(
        self, client_id: str, redirect_uri: str, scope: str, state: str | None, kind: Kind
    ) -> web.Response:
        code = self._new_code(client_id, redirect_uri, tuple(scope.split()), kind)
        return _redirect(redirect_uri, state, code=code)

    # ---------------------------------------------------------------- api endpoints

    async def _token(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        grant_type = None if fields is None else fields.get("grant_type")
        endpoint = {"authorization_code": "token_code", "refresh_token": "token_refresh"}.get(
            grant_type or "", "token"
        )
        return await self._serve(request, endpoint, lambda: self._token_answer(fields))

    def _token_answer(self, fields: dict[str, str] | None) -> web.Response:
        if fields is None:
            return _json(400, {"error": "invalid_request", "error_description": "Bad body"})
        client_id, refused = self._authenticate(fields)
        if refused is not None:
            return refused
        grant_type = fields.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(client_id, fields)
        if grant_type == "refresh_token":
            return self._refresh(client_id, fields.get("refresh_token", ""))
        return _json(400, {"error": "unsupported_grant_type", "error_description": "Bad type"})

    def _exchange_code(self, client_id: str, fields: dict[str, str]) -> web.Response:
        code = self._codes.get(fields.get("code", ""))
        now = self.clock()
        if (
            code is None
            or code.used
            or code.client_id != client_id
            or code.redirect_uri != fields.get("redirect_uri")
            or now >= code.expires_at
        ):
            return _json(400, INVALID_CODE, NO_STORE)
        code.used = True
        grant = self._new_grant(client_id, code.kind, code.subject, code.scopes, now)
        return _json(200, self._token_body(grant, now), NO_STORE)

    def _refresh(self, client_id: str, token: str) -> web.Response:
        grant = self._by_refresh.get(token)
        now = self.clock()
        if (
            grant is None
            or grant.client_id != client_id
            or grant.refresh_token != token
            or not self._refresh_live(grant, now)
        ):
            self.invalid_grant_count += 1
            return _json(400, INVALID_GRANT, NO_STORE)
        if self._flaky_hit():
            self.invalid_grant_count += 1
            self.flaky_invalid_grant_count += 1
            return _json(400, INVALID_GRANT, NO_STORE)
        record = RefreshRecord(grant.id, now, grant.access_expires_at)
        self._mint(grant, now)  # replaces both tokens at once: the old pair is dead from here on
        grant.rotations += 1
        grant.refreshes.append(record)
        self._refresh_log.append(record)
        self.refresh_count += 1
        body = self._token_body(grant, now)
        if self._partial_next > 0:
            self._partial_next -= 1
            del body["access_token"]
        return _json(200, body, NO_STORE)

    async def _introspect(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        return await self._serve(request, "introspect", lambda: self._introspect_answer(fields))

    def _client_and_token(self, fields: dict[str, str] | None) -> tuple[str, str] | web.Response:
        """Introspect and revoke take the same form: client credentials and one token."""
        if fields is None:
            return _json(400, {"error": "invalid_request", "error_description": "Bad body"})
        client_id, refused = self._authenticate(fields)
        if refused is not None:
            return refused
        return client_id, fields.get("token", "")

    def _introspect_answer(self, fields: dict[str, str] | None) -> web.Response:
        checked = self._client_and_token(fields)
        if isinstance(checked, web.Response):
            return checked
        client_id, token = checked
        now = self.clock()
        expires_at: float | None = None
        grant = self._by_access.get(token)
        if grant is not None and grant.access_token == token:
            expires_at = grant.access_expires_at
        else:
            grant = self._by_refresh.get(token)
            if grant is not None and grant.refresh_token == token:
                expires_at = grant.refresh_expires_at
        if (
            grant is None
            or expires_at is None
            or grant.revoked
            or grant.client_id != client_id
            or now >= expires_at
        ):
            return _json(200, {"active": False})
        subject_key = "account_id" if grant.kind == "account" else "user_id"
        return _json(
            200,
            {
                "active": True,
                "client_id": grant.client_id,
                "expires_in": max(0, int(expires_at - now)),
                "expires": int(expires_at * 1000),
                "scope": " ".join(grant.scopes),
                "token_type": "bearer",
                subject_key: grant.subject,
            },
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        fields = await _read_fields(request)
        return await self._serve(request, "revoke", lambda: self._revoke_answer(fields))

    def _revoke_answer(self, fields: dict[str, str] | None) -> web.Response:
        checked = self._client_and_token(fields)
        if isinstance(checked, web.Response):
            return checked
        client_id, token = checked
        grant = self._grant_by_token(token)
        # As RFC 7009: an unknown or rotated-away token is answered 200 too, and changes nothing.
        if (
            grant is not None
            and grant.client_id == client_id
            and token in (grant.access_token, grant.refresh_token)
        ):
            grant.revoked = True
        return web.Response(status=200)

    # ---------------------------------------------------------------- control API

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return _json(200, self.stats())

    async def _ctl_refreshes(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _json(400, {"error": "since must be an integer"})
        records = self.refresh_records(since)
        return _json(200, {"records": [list(r) for r in records], "next": since + len(records)})

    async def _ctl_clients(self, request: web.Request) -> web.Response:
        body = await _read_control(request)
        redirect_uris = body.get("redirect_uris")
        if redirect_uris is not None and not isinstance(redirect_uris, list):
            return _json(400, {"error": "redirect_uris must be a list or null"})
        try:
            self.add_client(body["client_id"], body["client_secret"], redirect_uris)
            if body.get("disabled"):
                self.disable_client(body["client_id"])
        except (KeyError, TypeError) as exc:
            return _json(400, {"error": f"bad client: {exc}"})
        return _json(200, {"client_id": body["client_id"]})

    async def _ctl_grants(self, request: web.Request) -> web.Response:
        body = await _read_control(request)
        try:
            token = self.issue_grant(
                body["client_id"], list(body["scopes"]), body.get("kind", "user")
            )
        except (KeyError, TypeError, ValueError) as exc:
            return _json(400, {"error": f"bad grant: {exc}"})
        return _json(200, token)

    async def _ctl_lookup(self, request: web.Request) -> web.Response:
        grant_id = self.grant_of(str((await _read_control(request)).get("token", "")))
        if grant_id is None:
            return _json(404, {"error": "unknown token"})
        return _json(200, dataclasses.asdict(self.grant_info(grant_id)))

    async def _ctl_revoke(self, request: web.Request) -> web.Response:
        grant_id = self.revoke_grant_of(str((await _read_control(request)).get("token", "")))
        if grant_id is None:
            return _json(404, {"error": "unknown token"})
        return _json(200, {"grant_id": grant_id})

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        if not self.expire_token(str((await _read_control(request)).get("token", ""))):
            return _json(404, {"error": "unknown or dead token"})
        return _json(200, {})

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        """`{"fault": name, ...arguments}`, name one of the fault methods, "clear" included."""
        body = await _read_control(request)
        switches: dict[str, Callable[..., None]] = {
            "outage": self.outage,
            "outage_until": self.outage_until,
            "end_outage": self.end_outage,
            "fail_next": self.fail_next,
            "malformed_next": self.malformed_next,
            "html_next": self.html_next,
            "slow": self.slow,
            "flaky_invalid_grant": self.flaky_invalid_grant,
            "flaky_invalid_grant_next": self.flaky_invalid_grant_next,
            "partial_answer_next": self.partial_answer_next,
            "clear": self.clear_faults,
        }
        switch = switches.get(str(body.pop("fault", "")))
        if switch is None:
            return _json(400, {"error": f"fault must be one of {sorted(switches)}"})
        try:
            switch(**body)
        except (TypeError, ValueError) as exc:
            return _json(400, {"error": f"bad fault arguments: {exc}"})
        return _json(200, self.stats()["faults"])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _kind(kind: str) -> Kind:
    if kind == "user":
        return "user"
    if kind == "account":
        return "account"
    raise ValueError(f"kind must be user or account, not {kind!r}")


def _snapshot(grant: _Grant) -> GrantInfo:
    return GrantInfo(
        id=grant.id,
        client_id=grant.client_id,
        kind=grant.kind,
        subject=grant.subject,
        scopes=grant.scopes,
        created_at=grant.created_at,
        access_token=grant.access_token,
        access_expires_at=grant.access_expires_at,
        refresh_token=grant.refresh_token,
        refresh_expires_at=grant.refresh_expires_at,
        rotations=grant.rotations,
        revoked=grant.revoked,
        refreshes=tuple(grant.refreshes),
    )


def _redirect(redirect_uri: str, state: str | None, **params: str) -> web.Response:
    if state is not None:
        params["state"] = state
    location = str(URL(redirect_uri).update_query(params))
    return web.Response(status=302, headers={"Location": location})


def _consent_page(query: Mapping[str, str], kind: Kind) -> web.Response:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(query.get(name, ""))}">'
        for name in ("client_id", "redirect_uri", "scope", "state")
    )
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in query.get("scope", "").split())
    page = (
        "<!DOCTYPE html><html><head><title>Authorize application</title></head><body>"
        f"<h1>Allow {html.escape(query.get('client_id', ''))} to access your Lucid "
        f"{kind}?</h1><ul>{scopes}</ul>"
        f'<form method="post" action="/oauth2/authorize/consent">{hidden}'
        f'<input type="hidden" name="kind" value="{kind}">'
        '<button type="submit" name="decision" value="approve">Approve</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form></body></html>"
    )
    return _html(200, page)


async def _read_fields(request: web.Request) -> dict[str, str] | None:
    """The string fields of a JSON or form body; None when the body is neither."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        data = json.loads(await request.text())
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {key: value for key, value in data.items() if isinstance(value, str)}


async def _read_control(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = json.loads(await request.text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    emulator = LucidEmulator(
        access_ttl=args.access_ttl, refresh_ttl=args.refresh_ttl, code_ttl=args.code_ttl
    )
    emulator.auto_consent = not args.manual_consent
    for spec in args.client:
        client_id, _, client_secret = spec.partition(":")
        emulator.add_client(client_id, client_secret)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await emulator.start(args.host, args.port)
    try:
        print(emulator.url, flush=True)
        await stopping.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lucidgrant.testbed.lucid",
        description="Serve the Lucid OAuth emulator; prints its URL once listening.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--access-ttl", type=float, default=3600.0, help="seconds")
    parser.add_argument("--refresh-ttl", type=float, default=180 * 86400.0, help="seconds")
    parser.add_argument("--code-ttl", type=float, default=300.0, help="seconds")
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="register a client that accepts any redirect URI (repeatable)",
    )
    parser.add_argument(
        "--manual-consent", action="store_true", help="show a consent page instead of approving"
    )
    asyncio.run(_serve_until_signalled(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
