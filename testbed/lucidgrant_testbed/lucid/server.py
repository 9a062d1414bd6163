"""The Lucid emulator's HTTP server: Lucid's authorize pages and token, introspect and revoke
endpoints over the grant book, every answer passing through the fault switches, plus a JSON
control API under `/_emulator/` for other processes.

One server answers both the "app" pages (`/oauth2/authorize...`) and the "api" endpoints
(`/oauth2/token...`), so the operator's app and api base URLs can both point at it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from lucidgrant_testbed.lucid.faults import Faults
from lucidgrant_testbed.lucid.pages import (
    NO_STORE,
    consent_page,
    error_page,
    json_answer,
    read_control,
    read_fields,
    redirect,
)
from lucidgrant_testbed.lucid.state import (
    INVALID_CODE,
    INVALID_GRANT,
    GrantBook,
    Kind,
    as_kind,
)

BAD_BODY = {"error": "invalid_request", "error_description": "Bad body"}


class LucidEmulator(GrantBook):
    """Lucid's OAuth endpoints on loopback. Public methods may be called from any thread."""

    def __init__(
        self,
        access_ttl: float = 3600.0,
        refresh_ttl: float = 180 * 86400.0,
        code_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(access_ttl, refresh_ttl, code_ttl, clock)
        self.faults = Faults(clock)
        self.auto_consent = True
        # Lucid's reference pages document 403 for bad client credentials, others 401: tests
        # may switch this to check that the operator copes with both.
        self.bad_client_status = 401
        # Called once per token, introspect or revoke request as it arrives, before any fault or
        # delay: lets a test count calls made during a fault even if answered after it.
        self.on_arrival: Callable[[], None] | None = None
        # Called with (endpoint, body) once a token, introspect or revoke answer has been handed
        # to the socket (on loopback: it is in the client's receive buffer): lets a test tell an
        # answer still inside Lucid from one the client had but did not act on.
        self.on_answered: Callable[[str, bytes], None] | None = None
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
        app.router.add_post("/oauth2/token/revoke", self._revoke_endpoint)
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
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
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
                "live_refresh_tokens": self._live_count(now),
                "clock": now,
                "faults": self.faults.snapshot(now),
            }

    # ---------------------------------------------------------------- serving through faults

    async def _serve(
        self, request: web.Request, endpoint: str, answer: Callable[[], web.Response]
    ) -> web.Response:
        """Answer a token, introspect or revoke request through the fault switches; count it."""
        if self.on_arrival is not None:
            self.on_arrival()
        delay, process_first = self.faults.take_delay()
        if delay and process_first:
            response = self._answer(endpoint, answer)
            await asyncio.sleep(delay)
            return await self._sent(request, endpoint, response)
        if delay:
            await asyncio.sleep(delay)
            if request.transport is None or request.transport.is_closing():
                # The client gave up: nothing is processed; 499 as nginx logs it.
                with self._lock:
                    self.calls[(endpoint, 499)] += 1
                return web.Response(status=499)
        return await self._sent(request, endpoint, self._answer(endpoint, answer))

    async def _sent(
        self, request: web.Request, endpoint: str, response: web.Response
    ) -> web.Response:
        """Write the answer out here rather than after the handler returns, to tell
        `on_answered` when it left (aiohttp does not write a prepared answer twice)."""
        if self.on_answered is None:
            return response
        await response.prepare(request)
        await response.write_eof()
        body = response.body
        self.on_answered(endpoint, body if isinstance(body, bytes) else b"")
        return response

    def _answer(self, endpoint: str, answer: Callable[[], web.Response]) -> web.Response:
        with self._lock:
            response = self.faults.take_failure() or answer()
            self.calls[(endpoint, response.status)] += 1
            return response

    def _client_or_refusal(self, fields: dict[str, str]) -> str | web.Response:
        client = self._client_of(fields)
        if isinstance(client, dict):
            return json_answer(self.bad_client_status, client, NO_STORE)
        return client

    # ---------------------------------------------------------------- authorize pages

    async def _authorize_user(self, request: web.Request) -> web.Response:
        return self._authorize(request, "user")

    async def _authorize_account(self, request: web.Request) -> web.Response:
        return self._authorize(request, "account")

    def _authorize(self, request: web.Request, kind: Kind) -> web.Response:
        query = request.query
        with self._lock:
            refusal = self._redirect_refusal(query.get("client_id", ""), query.get("redirect_uri"))
            if refusal is not None:
                response = error_page(refusal)
            else:
                redirect_uri = query["redirect_uri"]
                state = query.get("state")
                if query.get("response_type") != "code":
                    response = redirect(redirect_uri, state, error="unsupported_response_type")
                elif self.auto_consent:
                    response = self._approve(
                        query["client_id"], redirect_uri, query.get("scope", ""), state, kind
                    )
                else:
                    response = consent_page(query, kind)
            self.calls[("authorize", response.status)] += 1
            return response

    async def _consent(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        with self._lock:
            # The form comes back from the browser, so it is checked again like a fresh request.
            refusal = self._redirect_refusal(
                fields.get("client_id", ""), fields.get("redirect_uri")
            )
            if refusal is not None:
                response = error_page(refusal)
            else:
                redirect_uri, state = fields["redirect_uri"], fields.get("state")
                kind = fields.get("kind")
                if kind not in ("user", "account"):
                    response = error_page("Unknown token kind.")
                elif fields.get("decision") == "approve":
                    scope = fields.get("scope", "")
                    response = self._approve(
                        fields["client_id"], redirect_uri, scope, state, as_kind(kind)
                    )
                else:
                    response = redirect(redirect_uri, state, error="access_denied")
            self.calls[("authorize", response.status)] += 1
            return response

    def _approve(
        self, client_id: str, redirect_uri: str, scope: str, state: str | None, kind: Kind
    ) -> web.Response:
        code = self._new_code(client_id, redirect_uri, tuple(scope.split()), kind)
        return redirect(redirect_uri, state, code=code)

    # ---------------------------------------------------------------- api endpoints

    async def _token(self, request: web.Request) -> web.Response:
        fields = await read_fields(request)
        grant_type = None if fields is None else fields.get("grant_type")
        endpoint = {"authorization_code": "token_code", "refresh_token": "token_refresh"}.get(
            grant_type or "", "token"
        )
        return await self._serve(request, endpoint, lambda: self._token_answer(fields))

    def _token_answer(self, fields: dict[str, str] | None) -> web.Response:
        if fields is None:
            return json_answer(400, BAD_BODY)
        client_id = self._client_or_refusal(fields)
        if isinstance(client_id, web.Response):
            return client_id
        grant_type = fields.get("grant_type")
        if grant_type == "authorization_code":
            body = self._exchange_code(client_id, fields)
            if body is None:
                return json_answer(400, INVALID_CODE, NO_STORE)
            return json_answer(200, body, NO_STORE)
        if grant_type == "refresh_token":
            return self._refresh(client_id, fields.get("refresh_token", ""))
        return json_answer(
            400, {"error": "unsupported_grant_type", "error_description": "Bad type"}
        )

    def _refresh(self, client_id: str, token: str) -> web.Response:
        now = self.clock()
        grant = self._refreshable(client_id, token, now)
        if grant is None:
            self.invalid_grant_count += 1
            return json_answer(400, INVALID_GRANT, NO_STORE)
        if self.faults.take_flaky():
            self.invalid_grant_count += 1
            self.flaky_invalid_grant_count += 1
            return json_answer(400, INVALID_GRANT, NO_STORE)
        body = self._rotate(grant, now)
        if self.faults.take_partial():
            del body["access_token"]
        return json_answer(200, body, NO_STORE)

    def _client_and_token(self, fields: dict[str, str] | None) -> tuple[str, str] | web.Response:
        """Introspect and revoke take the same form: client credentials and one token."""
        if fields is None:
            return json_answer(400, BAD_BODY)
        client_id = self._client_or_refusal(fields)
        if isinstance(client_id, web.Response):
            return client_id
        return client_id, fields.get("token", "")

    async def _introspect(self, request: web.Request) -> web.Response:
        fields = await read_fields(request)
        return await self._serve(request, "introspect", lambda: self._introspect_answer(fields))

    def _introspect_answer(self, fields: dict[str, str] | None) -> web.Response:
        checked = self._client_and_token(fields)
        if isinstance(checked, web.Response):
            return checked
        return json_answer(200, self._introspection(*checked))

    async def _revoke_endpoint(self, request: web.Request) -> web.Response:
        fields = await read_fields(request)
        return await self._serve(request, "revoke", lambda: self._revoke_answer(fields))

    def _revoke_answer(self, fields: dict[str, str] | None) -> web.Response:
        checked = self._client_and_token(fields)
        if isinstance(checked, web.Response):
            return checked
        # As RFC 7009: an unknown or rotated-away token is answered 200 too.
        self._revoke(*checked)
        return web.Response(status=200)

    # ---------------------------------------------------------------- control API

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return json_answer(200, self.stats())

    async def _ctl_refreshes(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return json_answer(400, {"error": "since must be an integer"})
        records = self.refresh_records(since)
        return json_answer(
            200, {"records": [list(r) for r in records], "next": since + len(records)}
        )

    async def _ctl_clients(self, request: web.Request) -> web.Response:
        body = await read_control(request)
        redirect_uris = body.get("redirect_uris")
        if redirect_uris is not None and not isinstance(redirect_uris, list):
            return json_answer(400, {"error": "redirect_uris must be a list or null"})
        try:
            self.add_client(body["client_id"], body["client_secret"], redirect_uris)
            if body.get("disabled"):
                self.disable_client(body["client_id"])
        except (KeyError, TypeError) as exc:
            return json_answer(400, {"error": f"bad client: {exc}"})
        return json_answer(200, {"client_id": body["client_id"]})

    async def _ctl_grants(self, request: web.Request) -> web.Response:
        body = await read_control(request)
        try:
            token = self.issue_grant(
                body["client_id"], list(body["scopes"]), body.get("kind", "user")
            )
        except (KeyError, TypeError, ValueError) as exc:
            return json_answer(400, {"error": f"bad grant: {exc}"})
        return json_answer(200, token)

    async def _ctl_lookup(self, request: web.Request) -> web.Response:
        grant_id = self.grant_of(str((await read_control(request)).get("token", "")))
        if grant_id is None:
            return json_answer(404, {"error": "unknown token"})
        return json_answer(200, dataclasses.asdict(self.grant_info(grant_id)))

    async def _ctl_revoke(self, request: web.Request) -> web.Response:
        grant_id = self.revoke_grant_of(str((await read_control(request)).get("token", "")))
        if grant_id is None:
            return json_answer(404, {"error": "unknown token"})
        return json_answer(200, {"grant_id": grant_id})

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        if not self.expire_token(str((await read_control(request)).get("token", ""))):
            return json_answer(404, {"error": "unknown or dead token"})
        return json_answer(200, {})

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        """`{"fault": name, ...arguments}`, name one of the fault switches, "clear" included."""
        body = await read_control(request)
        switches = self.faults.switches()
        switch = switches.get(str(body.pop("fault", "")))
        if switch is None:
            return json_answer(400, {"error": f"fault must be one of {sorted(switches)}"})
        try:
            switch(**body)
        except (TypeError, ValueError) as exc:
            return json_answer(400, {"error": f"bad fault arguments: {exc}"})
        return json_answer(200, self.faults.snapshot(self.clock()))
