"""The operator-hosted authorization flow (opt-in: LUCIDGRANT_EXTERNAL_URL, https:// only),
served on its own listener (LUCIDGRANT_FLOW_PORT), apart from the probes and /metrics.

`GET /authorize/{namespace}/{name}` sends a person to Lucid's consent page for that grant and
sets the browser's flow cookie; `GET /callback` takes Lucid's answer and, under the grant's
refresh lock, exchanges the code and stores the new grant. The signed, browser-bound `state`
that carries the grant through Lucid and back is authstate.py's.

What a stranger on the Internet can do with it is bounded:
- `/authorize` answers every grant that does not await a person (unknown, working, invalid,
  without client Secret, or a client id Lucid refuses with its secret: a grant picks the keys,
  and the id is shown in Lucid's URL) with the same 404 page: it tells nobody what exists;
- `/callback` verifies `state` (signature, expiry, the browser's cookie) before it reads
  anything else of the query; then it shows only known OAuth error codes, in its own words;
- under the lock it goes on only for the same grant object (UID) with the same spec
  (generation) whose state Secret, as the lock's compare-and-swap proved it current, still
  has no live refresh token (or one lacking scopes the spec asks for); and it records the
  state as used on that Secret before Lucid is called (a state works once, on any replica);
- token buckets per client address and per grant, and a cap on outstanding states
  (flowlimit.py), refuse floods with 429 before any Kubernetes or Lucid call; code exchanges
  use their own connection pool, so refreshes never wait behind them;
- with LUCIDGRANT_FLOW_USER_HEADER set (an authenticating proxy in front), a request without
  that header is refused and the person it names is recorded in the Authorized event.

The flow sees the operator through `FlowHost` (flowhost.py), not the whole runtime: tests can
host it with fakes, and the web modules import nothing of the runtime.

Nothing from a request reaches a page unescaped (flowpages.py), and the only redirect goes to
the configured Lucid app URL: no request value chooses where a browser is sent."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from aiohttp import web

from lucidgrant.authstate import (
    COOKIE,
    StateError,
    StateSigner,
    browser_nonce,
    check_browser,
)
from lucidgrant.cache import Key
from lucidgrant.config import Settings
from lucidgrant.flowhost import FlowHost, FlowRefusedError, Redemption
from lucidgrant.flowlimit import KeyedBuckets, OutstandingStates
from lucidgrant.flowpages import (
    HEADERS,
    authorize_url,
    lucid_error_text,
    nothing_here,
    page,
    refused,
    too_many,
)
from lucidgrant.grant import GrantSpec
from lucidgrant.kube import KubeError
from lucidgrant.lucid_answers import (
    ClientCredentials,
    ClientRejectedError,
    InvalidGrantError,
    LucidError,
)
from lucidgrant.names import REAUTH
from lucidgrant.secretdata import digest
from lucidgrant.status import condition_of
from lucidgrant.store import LockBusyError

log = logging.getLogger(__name__)

# Requests in a row before a bucket's rate applies.
BURST = 10
# Outstanding states of one grant at most (LUCIDGRANT_FLOW_MAX_STATES caps them in all).
STATES_PER_GRANT = 16
# The longest identity taken from the proxy's user header.
MAX_USER_LENGTH = 256
# Client credential pairs whose check is remembered (by fingerprint) at most.
CLIENT_VERDICTS = 1024
# How long a pair Lucid refused stays refused without asking again: Lucid may come to accept it
# (a client re-enabled), but a flood of links must cost Lucid one call a minute, not one each.
CLIENT_REFUSED_FOR = 60.0


class AuthFlow:
    def __init__(
        self, host: FlowHost, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        assert settings.external_url  # the flow runs only with one (config checks https://)
        self.host = host
        self.settings = settings
        self.redirect_uri = f"{settings.external_url.rstrip('/')}/callback"
        self.clock = clock
        self._signer: StateSigner | None = None
        self._lock = asyncio.Lock()
        self._grant_locks: dict[Key, asyncio.Lock] = {}
        self._per_client = KeyedBuckets(settings.flow_client_rate, BURST)
        self._per_grant = KeyedBuckets(settings.flow_grant_rate, BURST)
        self._outstanding = OutstandingStates(
            settings.flow_max_states, min(STATES_PER_GRANT, settings.flow_max_states)
        )
        # fingerprint: (accepted, until when the verdict holds), oldest first
        self._client_verdicts: dict[str, tuple[bool, float]] = {}

    async def signer(self) -> StateSigner:
        async with self._lock:
            if self._signer is None:
                key = await self.host.state_key()
                self._signer = StateSigner(key, self.settings.state_ttl, self.clock)
            return self._signer

    async def _signer_or_page(self) -> StateSigner | web.Response:
        try:
            return await self.signer()
        except (KubeError, OSError, ValueError) as exc:
            log.error("authorization flow: no state key: %s", exc)
            return page(
                503,
                "Authorization unavailable",
                "The operator cannot read or create its state key Secret; see its log.",
            )

    async def _client_accepted(self, creds: ClientCredentials) -> bool | web.Response:
        """Whether Lucid takes the pair as a client's; a page if it is down. An acceptance is
        remembered while the operator runs, a refusal for CLIENT_REFUSED_FOR."""
        fingerprint = digest(f"{creds.client_id}\n{creds.client_secret}")
        verdict = self._client_verdicts.get(fingerprint)
        if verdict is not None and self.clock() < verdict[1]:
            return verdict[0]
        try:
            accepted = await self.host.client_accepted(creds)
        except LucidError as exc:
            log.warning("authorization flow: Lucid did not answer a client check: %s", exc)
            return page(503, "Authorization unavailable", "Lucid is not answering; try later.")
        self._client_verdicts.pop(fingerprint, None)
        until = math.inf if accepted else self.clock() + CLIENT_REFUSED_FOR
        self._client_verdicts[fingerprint] = (accepted, until)
        if len(self._client_verdicts) > CLIENT_VERDICTS:
            del self._client_verdicts[next(iter(self._client_verdicts))]
        return accepted

    def _client(self, request: web.Request) -> str:
        """The client's address: the proxy's header when configured (its last hop), else the
        peer's."""
        header = self.settings.flow_address_header
        forwarded = request.headers.get(header, "") if header else ""
        return forwarded.rsplit(",", 1)[-1].strip() or request.remote or "?"

    def _user(self, request: web.Request) -> str | web.Response | None:
        """Who the authenticating proxy says this is; None when no proxy header is configured;
        a 403 page when it is configured and the request lacks it."""
        header = self.settings.flow_user_header
        if not header:
            return None
        user = request.headers.get(header, "").strip()
        if not user or len(user) > MAX_USER_LENGTH or not user.isprintable():
            return page(
                403,
                "Authorization not completed",
                "This request did not come through the authenticating proxy in front of the "
                "operator. Nothing was changed.",
            )
        return user

    def _limited(self, buckets: KeyedBuckets, key: str) -> web.Response | None:
        wait = buckets.take(key, self.clock())
        return too_many(wait) if wait > 0 else None

    async def authorize(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        key = (namespace, name)
        refusal = self._limited(self._per_client, self._client(request)) or self._limited(
            self._per_grant, f"{namespace}/{name}"
        )
        if refusal is not None:
            return refusal
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        record = self.host.grant(key)
        spec = record.spec() if record is not None else None
        if (
            record is None
            or record.body["metadata"].get("deletionTimestamp")
            or not isinstance(spec, GrantSpec)
            or (condition_of(record.body.get("status") or {}, REAUTH) or {}).get("status") != "True"
        ):
            return nothing_here()
        creds = await self.host.client_credentials(key)
        if creds is None:
            return nothing_here()
        accepted = await self._client_accepted(creds)
        if accepted is not True:
            return nothing_here() if accepted is False else accepted
        signer = await self._signer_or_page()
        if isinstance(signer, web.Response):
            return signer
        nonce = browser_nonce(request.cookies.get(COOKIE))
        state, claims = signer.issue(namespace, name, record.uid, record.generation, nonce)
        if not self._outstanding.add(
            f"{namespace}/{name}", claims.nonce, claims.expires_at, self.clock()
        ):
            return too_many(60.0)
        location = authorize_url(
            self.settings.lucid_app_url,
            spec.token_kind,
            creds.client_id,
            self.redirect_uri,
            spec.requested_scopes,
            state,
        )
        log.info("grant %s/%s: sent a person to Lucid's consent page", namespace, name)
        response = web.Response(status=302, headers={**HEADERS, "Location": location})
        response.set_cookie(
            COOKIE,
            nonce,
            max_age=int(self.settings.state_ttl),
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
        )
        return response

    async def callback(self, request: web.Request) -> web.Response:
        refusal = self._limited(self._per_client, self._client(request))
        if refusal is not None:
            return refusal
        query = request.query
        # Nothing else of the query is read before the state is verified.
        state = query.get("state")
        if not state:
            return refused(400, "The request carries no state parameter.")
        signer = await self._signer_or_page()
        if isinstance(signer, web.Response):
            return signer
        try:
            claims = signer.verify(state)
            check_browser(claims, request.cookies.get(COOKIE))
        except StateError as exc:
            return refused(400, str(exc))
        key = (claims.namespace, claims.name)
        label = f"{claims.namespace}/{claims.name}"
        refusal = self._limited(self._per_grant, label)
        if refusal is not None:
            return refusal
        user = self._user(request)
        if isinstance(user, web.Response):
            return user
        error = query.get("error")
        if error is not None:
            self._outstanding.discard(claims.nonce)
            return refused(400, lucid_error_text(error))
        code = query.get("code")
        if not code:
            return refused(400, "Lucid sent no authorization code.")
        if self.host.grant(key) is None:
            return refused(400, f"LucidGrant {label} no longer exists.")
        creds = await self.host.client_credentials(key)
        if creds is None:
            return refused(409, f"The client Secret of LucidGrant {label} is missing or empty.")
        redemption = Redemption(self.host, claims, creds, code, self.redirect_uri, self.clock)
        # One callback of a grant at a time in this process (the refresh lock is per process
        # identity); keys come only from signed states, so this stays as small as the grants.
        lock = self._grant_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                await self.host.authorized(key, redemption, user)
        except FlowRefusedError as exc:
            return refused(exc.status, str(exc))
        except InvalidGrantError:
            return refused(400, "Lucid refused the authorization code (expired or used).")
        except ClientRejectedError:
            log.warning("grant %s: Lucid rejected the client credentials on exchange", label)
            return refused(502, "Lucid rejected the grant's client credentials.")
        except LucidError as exc:
            log.warning("grant %s: code exchange failed: %s", label, exc)
            return refused(502, "Lucid failed to answer the code exchange. Try again shortly.")
        except (KeyError, LockBusyError, KubeError, OSError) as exc:
            log.error("grant %s: the new grant could not be stored: %s", label, type(exc).__name__)
            return page(
                503,
                "Authorization not stored",
                "The operator could not store the grant.",
                "Start again from the grant's authorization link.",
            )
        finally:
            self._outstanding.discard(claims.nonce)
        log.info(
            "grant %s: authorized through the web flow%s", label, f" by {user}" if user else ""
        )
        return page(
            200,
            "Authorized",
            f"LucidGrant {label} is authorized. The operator writes a fresh access token "
            "within seconds. You can close this page.",
        )


def add_routes(app: web.Application, flow: AuthFlow) -> None:
    """Serve the flow on its web app (when external_url is set)."""
    app.router.add_get("/authorize/{namespace}/{name}", flow.authorize)
    app.router.add_get("/callback", flow.callback)
