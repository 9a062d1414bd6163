"""The operator-hosted authorization flow (opt-in: LUCIDGRANT_EXTERNAL_URL).

`GET /authorize/{namespace}/{name}` sends a person to Lucid's consent page for that grant;
`GET /callback` takes Lucid's answer, exchanges the code with the grant's client credentials and
hands the new grant to the operator, which stores it under the same lock as a refresh. The
signed `state` that carries the grant through Lucid and back is authstate.py's.

The flow sees the operator through `FlowHost`, five calls, not the whole runtime: tests can
host it with fakes, and the web modules import nothing of the runtime.

Nothing from a request reaches a page unescaped, and the only redirect goes to the configured
Lucid app URL: no request value chooses where a browser is sent."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Iterable
from typing import Literal, Protocol
from urllib.parse import quote, urlencode

from aiohttp import web

from lucidgrant.authstate import DEFAULT_STATE_TTL, StateError, StateSigner
from lucidgrant.cache import GrantRecord, Key
from lucidgrant.grant import GrantSpec
from lucidgrant.kube import KubeError
from lucidgrant.lucid import (
    ClientCredentials,
    ClientRejectedError,
    InvalidGrantError,
    LucidError,
    TokenSet,
)
from lucidgrant.names import REAUTH
from lucidgrant.status import condition_of
from lucidgrant.store import LockBusyError

log = logging.getLogger(__name__)


def authorize_url(
    app_url: str,
    token_kind: Literal["user", "account"],
    client_id: str,
    redirect_uri: str,
    scopes: Iterable[str],
    state: str,
) -> str:
    """Lucid's authorize page for a grant (user or account token), always under `app_url`."""
    path = "/oauth2/authorize" if token_kind == "user" else "/oauth2/authorizeAccount"
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "response_type": "code",
            "prompt": "consent",
        },
        quote_via=quote,
    )
    return f"{app_url.rstrip('/')}{path}?{query}"


# -- pages -----------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}h1{font-size:1.4rem}code{background:#f3f3f3;padding:0 .2rem}"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def page(status: int, title: str, *paragraphs: str) -> web.Response:
    """A small HTML page; every piece of text is escaped here, so callers pass plain text."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    text = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        status=status, text=text, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


def _refused(status: int, why: str, *more: str) -> web.Response:
    return page(
        status,
        "Authorization not completed",
        why,
        *more,
        "Nothing was changed. Start again from the grant's authorization link.",
    )


def _clip(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


# -- the flow ----------------------------------------------------------------------------------


class FlowHost(Protocol):
    """What the flow needs from the operator, and no more."""

    def grant(self, key: Key) -> GrantRecord | None:
        """The grant as the operator's cache has it."""

    async def client_credentials(self, key: Key) -> ClientCredentials | None: ...

    async def exchange_code(
        self, creds: ClientCredentials, code: str, redirect_uri: str
    ) -> TokenSet: ...

    async def authorized(self, key: Key, tokens: TokenSet) -> None:
        """Store the new grant under the refresh lock and wake the grant; raises KeyError,
        LockBusyError, KubeError or OSError when it could not be stored."""

    async def state_key(self) -> bytes:
        """The HMAC key of `state` (authstate.load_state_key)."""


class AuthFlow:
    def __init__(
        self, host: FlowHost, external_url: str, lucid_app_url: str, ttl: float | None = None
    ) -> None:
        self.host = host
        self.redirect_uri = f"{external_url.rstrip('/')}/callback"
        self.lucid_app_url = lucid_app_url
        self.ttl = ttl or DEFAULT_STATE_TTL
        self._signer: StateSigner | None = None
        self._lock = asyncio.Lock()

    async def signer(self) -> StateSigner:
        async with self._lock:
            if self._signer is None:
                self._signer = StateSigner(await self.host.state_key(), self.ttl)
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

    async def authorize(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        label = f"{namespace}/{name}"
        record = self.host.grant((namespace, name))
        if record is None or record.body["metadata"].get("deletionTimestamp"):
            return page(404, "No such grant", f"This operator knows no LucidGrant {label}.")
        spec = record.spec()
        if not isinstance(spec, GrantSpec):
            return page(409, "Grant not ready", f"The spec of {label} is invalid: {spec}.")
        reauth = condition_of(record.body.get("status") or {}, REAUTH) or {}
        if reauth.get("status") != "True":
            return page(
                409,
                "No authorization needed",
                f"LucidGrant {label} does not need a person now, so this link does nothing.",
                "To replace a working grant on purpose, run "
                f"kubectl lucidgrant authorize {name} -n {namespace}.",
            )
        creds = await self.host.client_credentials((namespace, name))
        if creds is None:
            return page(
                409,
                "Client credentials missing",
                f"The client Secret {spec.client_secret_name} of {label} is missing or empty.",
            )
        signer = await self._signer_or_page()
        if isinstance(signer, web.Response):
            return signer
        state = signer.issue(namespace, name, record.uid, record.generation)
        location = authorize_url(
            self.lucid_app_url,
            spec.token_kind,
            creds.client_id,
            self.redirect_uri,
            spec.requested_scopes,
            state,
        )
        log.info("grant %s: sent a person to Lucid's consent page", label)
        return web.Response(status=302, headers={**_HEADERS, "Location": location})

    async def callback(self, request: web.Request) -> web.Response:
        query = request.query
        error = query.get("error")
        if error is not None:
            description = query.get("error_description", "")
            return _refused(
                400,
                f"Lucid did not grant access: {_clip(error, 80)}.",
                *([f"Lucid said: {_clip(description)}"] if description else []),
            )
        state = query.get("state")
        if not state:
            return _refused(400, "The request carries no state parameter.")
        signer = await self._signer_or_page()
        if isinstance(signer, web.Response):
            return signer
        try:
            claims = signer.verify(state)
        except StateError as exc:
            return _refused(400, str(exc))
        code = query.get("code")
        if not code:
            return _refused(400, "Lucid sent no authorization code.")
        key = (claims.namespace, claims.name)
        label = f"{claims.namespace}/{claims.name}"
        record = self.host.grant(key)
        if record is None or record.body["metadata"].get("deletionTimestamp"):
            return _refused(400, f"LucidGrant {label} no longer exists.")
        if record.uid != claims.uid:
            return _refused(
                400, f"LucidGrant {label} was deleted and created again since this link was made."
            )
        if record.generation != claims.generation:
            return _refused(
                400, f"The spec of LucidGrant {label} changed since this link was made."
            )
        creds = await self.host.client_credentials(key)
        if creds is None:
            return _refused(400, f"The client Secret of LucidGrant {label} is missing or empty.")
        try:
            signer.consume(claims)
        except StateError as exc:
            return _refused(400, str(exc))
        try:
            tokens = await self.host.exchange_code(creds, code, self.redirect_uri)
        except InvalidGrantError:
            return _refused(400, "Lucid refused the authorization code (expired or used).")
        except ClientRejectedError:
            log.warning("grant %s: Lucid rejected the client credentials on exchange", label)
            return _refused(502, "Lucid rejected the grant's client credentials.")
        except LucidError as exc:
            log.warning("grant %s: code exchange failed: %s", label, exc)
            return _refused(502, "Lucid failed to answer the code exchange. Try again shortly.")
        try:
            await self.host.authorized(key, tokens)
        except (KeyError, LockBusyError, KubeError, OSError) as exc:
            log.error("grant %s: the new grant could not be stored: %s", label, type(exc).__name__)
            return page(
                503,
                "Authorization not stored",
                "Lucid granted access, but the operator could not store the grant.",
                "Start again from the grant's authorization link.",
            )
        log.info("grant %s: authorized through the web flow", label)
        return page(
            200,
            "Authorized",
            f"LucidGrant {label} is authorized. The operator writes a fresh access token "
            "within seconds. You can close this page.",
        )


def add_routes(app: web.Application, flow: AuthFlow) -> None:
    """Serve the flow on the operator's web app (when external_url is set)."""
    app.router.add_get("/authorize/{namespace}/{name}", flow.authorize)
    app.router.add_get("/callback", flow.callback)
