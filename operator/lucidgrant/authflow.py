"""The operator-hosted authorization flow (opt-in: LUCIDGRANT_EXTERNAL_URL).

`GET /authorize/{namespace}/{name}` sends a person to Lucid's consent page for that grant;
`GET /callback` takes Lucid's answer, exchanges the code with the grant's client credentials and
hands the new grant to the engine, which stores it under the same lock as a refresh.

`state` carries the grant's identity through Lucid and back. It is
`v1.<payload>.<signature>`: the payload is URL-safe base64 of JSON with the namespace, name,
UID, generation, expiry and a random nonce, and the signature is HMAC-SHA256 over
`v1.<payload>` with a key that only the operator holds. A state is accepted once (its nonce is
remembered until it expires), only before it expires (10 minutes by default), and only while
the grant is the same object (UID) with the same spec (generation) as when the link was made.

The HMAC key comes from LUCIDGRANT_STATE_KEY (at least 32 characters) when set, otherwise from
the Secret `lucidgrant-state-key` (key `key`) in the operator's namespace, which the operator
creates with 32 random bytes on first use. Every replica reads the same Secret, so a state made
by one is verified by any other.

Nothing from a request reaches a page unescaped, and the only redirect goes to the configured
Lucid app URL: no request value chooses where a browser is sent."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from aiohttp import web

from lucidgrant.grant import GrantSpec
from lucidgrant.kube import ConflictError, KubeError
from lucidgrant.lucid import ClientRejectedError, InvalidGrantError, LucidError
from lucidgrant.names import LABEL_APP, LABEL_ROLE, REAUTH, ROLE_KEY, secret_path
from lucidgrant.status import condition_of
from lucidgrant.store import LockBusyError

if TYPE_CHECKING:
    from lucidgrant.runtime import Runtime

log = logging.getLogger(__name__)

STATE_KEY_SECRET = "lucidgrant-state-key"
STATE_KEY_FIELD = "key"
STATE_KEY_ENV = "LUCIDGRANT_STATE_KEY"
STATE_TTL_ENV = "LUCIDGRANT_STATE_TTL"
DEFAULT_STATE_TTL = 600.0
MIN_KEY_BYTES = 32
MAX_STATE_LENGTH = 1024
_VERSION = "v1"


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


# -- state ---------------------------------------------------------------------------------


class StateError(Exception):
    """A state that must be refused; the message is fixed text, safe to show."""


@dataclass(frozen=True)
class StateClaims:
    namespace: str
    name: str
    uid: str
    generation: int
    expires_at: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateSigner:
    """Issues and checks signed, expiring, single-use `state` values."""

    def __init__(
        self, key: bytes, ttl: float = DEFAULT_STATE_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the state key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.ttl = ttl
        self.clock = clock
        self._used: dict[str, float] = {}  # nonce -> expiry

    def __repr__(self) -> str:
        return "StateSigner(<key redacted>)"

    def _sign(self, signed_part: str) -> str:
        return _b64(hmac.new(self._key, signed_part.encode(), hashlib.sha256).digest())

    def issue(self, namespace: str, name: str, uid: str, generation: int) -> str:
        payload = {
            "ns": namespace,
            "n": name,
            "uid": uid,
            "g": generation,
            "exp": round(self.clock() + self.ttl, 3),
            "nonce": secrets.token_urlsafe(16),
        }
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signed_part = f"{_VERSION}.{body}"
        return f"{signed_part}.{self._sign(signed_part)}"

    def verify(self, state: str) -> StateClaims:
        """Check the signature and the expiry (not the single use: see `consume`)."""
        parts = state.split(".")
        if len(state) > MAX_STATE_LENGTH or len(parts) != 3 or parts[0] != _VERSION:
            raise StateError("The state parameter is malformed.")
        signed_part = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signed_part).encode(), parts[2].encode()):
            raise StateError("The state parameter is not signed by this operator.")
        try:
            payload = json.loads(_unb64(parts[1]))
            claims = StateClaims(
                namespace=str(payload["ns"]),
                name=str(payload["n"]),
                uid=str(payload["uid"]),
                generation=int(payload["g"]),
                expires_at=float(payload["exp"]),
                nonce=str(payload["nonce"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise StateError("The state parameter is malformed.") from None
        if self.clock() >= claims.expires_at:
            raise StateError("This authorization link has expired.")
        return claims

    def consume(self, claims: StateClaims) -> None:
        """Mark the state used; refuse one used before. Nonces are kept until they expire."""
        now = self.clock()
        for nonce, expires in list(self._used.items()):
            if expires <= now:
                del self._used[nonce]
        if claims.nonce in self._used:
            raise StateError("This authorization link has already been used.")
        self._used[claims.nonce] = claims.expires_at


async def load_state_key(runtime: Runtime) -> bytes:
    """The HMAC key: LUCIDGRANT_STATE_KEY, else the operator's Secret (created if absent)."""
    from_env = os.environ.get(STATE_KEY_ENV)
    if from_env:
        return from_env.encode()
    namespace = runtime.settings.pod_namespace
    path = secret_path(namespace)
    for _ in range(3):
        secret = await runtime.kube.get(secret_path(namespace, STATE_KEY_SECRET))
        if secret is not None:
            encoded = (secret.get("data") or {}).get(STATE_KEY_FIELD) or ""
            try:
                return base64.b64decode(encoded, validate=True)
            except (ValueError, binascii.Error):
                raise ValueError(f"Secret {STATE_KEY_SECRET} holds no valid key") from None
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": STATE_KEY_SECRET,
                "namespace": namespace,
                "labels": {LABEL_APP: "lucidgrant", LABEL_ROLE: ROLE_KEY},
            },
            "data": {STATE_KEY_FIELD: base64.b64encode(os.urandom(32)).decode()},
        }
        try:
            await runtime.kube.create(path, body)
            log.info("created the state key Secret %s/%s", namespace, STATE_KEY_SECRET)
        except ConflictError:
            pass  # another replica made it first: read theirs
    raise ValueError(f"Secret {STATE_KEY_SECRET} could not be read or created")


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


class AuthFlow:
    def __init__(self, runtime: Runtime, ttl: float | None = None) -> None:
        self.runtime = runtime
        self.ttl = ttl if ttl is not None else float(os.environ.get(STATE_TTL_ENV) or 0) or None
        self._signer: StateSigner | None = None
        self._lock = asyncio.Lock()

    @property
    def redirect_uri(self) -> str:
        external = self.runtime.settings.external_url or ""
        return f"{external.rstrip('/')}/callback"

    async def signer(self) -> StateSigner:
        async with self._lock:
            if self._signer is None:
                key = await load_state_key(self.runtime)
                self._signer = StateSigner(key, self.ttl or DEFAULT_STATE_TTL)
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
        record = self.runtime.cache.grants.get((namespace, name))
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
        creds = await self.runtime.engine.client_credentials((namespace, name))
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
            self.runtime.settings.lucid_app_url,
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
        record = self.runtime.cache.grants.get(key)
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
        creds = await self.runtime.engine.client_credentials(key)
        if creds is None:
            return _refused(400, f"The client Secret of LucidGrant {label} is missing or empty.")
        try:
            signer.consume(claims)
        except StateError as exc:
            return _refused(400, str(exc))
        try:
            tokens = await self.runtime.lucid.exchange_code(creds, code, self.redirect_uri)
        except InvalidGrantError:
            return _refused(400, "Lucid refused the authorization code (expired or used).")
        except ClientRejectedError:
            log.warning("grant %s: Lucid rejected the client credentials on exchange", label)
            return _refused(502, "Lucid rejected the grant's client credentials.")
        except LucidError as exc:
            log.warning("grant %s: code exchange failed: %s", label, exc)
            return _refused(502, "Lucid failed to answer the code exchange. Try again shortly.")
        try:
            await self.runtime.engine.adopt_tokens(key, tokens)
        except (KeyError, LockBusyError, KubeError, OSError) as exc:
            log.error("grant %s: the new grant could not be stored: %s", label, type(exc).__name__)
            return page(
                503,
                "Authorization not stored",
                "Lucid granted access, but the operator could not store the grant.",
                "Start again from the grant's authorization link.",
            )
        self.runtime.queue.wake(key)
        log.info("grant %s: authorized through the web flow", label)
        return page(
            200,
            "Authorized",
            f"LucidGrant {label} is authorized. The operator writes a fresh access token "
            "within seconds. You can close this page.",
        )


def add_routes(app: web.Application, runtime: Runtime, **options: Any) -> AuthFlow:
    """Serve the flow on the operator's web app (called when external_url is set)."""
    flow = AuthFlow(runtime, **options)
    app.router.add_get("/authorize/{namespace}/{name}", flow.authorize)
    app.router.add_get("/callback", flow.callback)
    return flow
