"""The `state` of the operator-hosted authorization flow: signed, expiring, bound to the browser
that started the flow, and used once across every replica.

`state` carries the grant's identity through Lucid and back. It is
`v1.<payload>.<signature>`: the payload is URL-safe base64 of JSON with the namespace, name,
UID, generation, expiry, a random nonce and the SHA-256 of the browser's nonce, and the
signature is HMAC-SHA256 over `v1.<payload>` with a key that only the operator holds.

The browser's nonce lives in the cookie `__Host-lucidgrant-flow` (Secure, HttpOnly,
SameSite=Lax, Path=/: no subdomain can set or read it), set by `/authorize`; `/callback`
refuses a state whose browser hash does not match the cookie it receives, so a callback URL
lured into another person's browser, or replayed without the cookie, does nothing.

Used states are recorded in `ledger` form (`record_use`) in an annotation of the grant's state
Secret, written under the grant's refresh lock before the code is exchanged: every replica sees
it, and a state used on one is refused on all. Only SHA-256 prefixes of nonces are kept, each
until its state expires, and at most MAX_USED of them.

The HMAC key comes from LUCIDGRANT_STATE_KEY (at least 32 characters) when set, otherwise from
the Secret `lucidgrant-state-key` (key `key`) in the operator's namespace, which the operator
creates with 32 random bytes on first use. Every replica reads the same Secret, so a state made
by one is verified by any other."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from lucidgrant.kube import ConflictError, KubeClient
from lucidgrant.names import LABEL_APP, LABEL_ROLE, ROLE_KEY, secret_path

log = logging.getLogger(__name__)

STATE_KEY_SECRET = "lucidgrant-state-key"
STATE_KEY_FIELD = "key"
STATE_KEY_ENV = "LUCIDGRANT_STATE_KEY"
DEFAULT_STATE_TTL = 600.0
MIN_KEY_BYTES = 32
MAX_STATE_LENGTH = 1024
COOKIE = "__Host-lucidgrant-flow"
# Used states remembered per grant: more open at once are refused until some expire.
MAX_USED = 64
_VERSION = "v1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


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
    browser: str  # SHA-256 of the browser's nonce


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(text: str) -> str:
    return _b64(hashlib.sha256(text.encode()).digest())


def browser_nonce(cookie: str | None) -> str:
    """The browser's nonce: the one its cookie holds, else a new one. One browser keeps one
    nonce, so that links of several grants opened side by side all work."""
    if cookie and _NONCE.fullmatch(cookie):
        return cookie
    return secrets.token_urlsafe(32)


def check_browser(claims: StateClaims, cookie: str | None) -> None:
    """Refuse a state that the browser presenting it did not start."""
    if not cookie or not hmac.compare_digest(_digest(cookie), claims.browser):
        raise StateError(
            "This authorization was started in another browser, or this browser did not keep "
            "its cookie."
        )


class StateSigner:
    """Issues and checks signed, expiring `state` values (single use: see `record_use`)."""

    def __init__(
        self, key: bytes, ttl: float = DEFAULT_STATE_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the state key must have at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.ttl = ttl
        self.clock = clock

    def __repr__(self) -> str:
        return "StateSigner(<key redacted>)"

    def _sign(self, signed_part: str) -> str:
        return _b64(hmac.new(self._key, signed_part.encode(), hashlib.sha256).digest())

    def issue(
        self, namespace: str, name: str, uid: str, generation: int, browser: str
    ) -> tuple[str, StateClaims]:
        """A new state for the browser whose nonce is `browser`, and its claims."""
        claims = StateClaims(
            namespace=namespace,
            name=name,
            uid=uid,
            generation=generation,
            expires_at=round(self.clock() + self.ttl, 3),
            nonce=secrets.token_urlsafe(16),
            browser=_digest(browser),
        )
        payload = {
            "ns": claims.namespace,
            "n": claims.name,
            "uid": claims.uid,
            "g": claims.generation,
            "exp": claims.expires_at,
            "nonce": claims.nonce,
            "b": claims.browser,
        }
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signed_part = f"{_VERSION}.{body}"
        return f"{signed_part}.{self._sign(signed_part)}", claims

    def verify(self, state: str) -> StateClaims:
        """Check the signature and the expiry (not the browser: see `check_browser`)."""
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
                browser=str(payload["b"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise StateError("The state parameter is malformed.") from None
        if self.clock() >= claims.expires_at:
            raise StateError("This authorization link has expired.")
        return claims


def record_use(ledger: str | None, claims: StateClaims, now: float) -> str:
    """The ledger of used states (an annotation's value) with this one added and the expired
    ones dropped. Raises StateError if the state was used before, or if MAX_USED states of the
    grant are used and unexpired (refusing is safe; forgetting one would allow its replay)."""
    try:
        loaded = json.loads(ledger) if ledger else {}
    except ValueError:
        loaded = {}
    entries = {
        str(k): float(v)
        for k, v in (loaded.items() if isinstance(loaded, dict) else ())
        if isinstance(v, int | float) and v > now
    }
    used = _digest(claims.nonce)[:22]
    if used in entries:
        raise StateError("This authorization link has already been used.")
    if len(entries) >= MAX_USED:
        raise StateError("Too many authorizations of this grant were tried; try again later.")
    entries[used] = round(claims.expires_at)
    return json.dumps(entries, separators=(",", ":"), sort_keys=True)


async def load_state_key(kube: KubeClient, namespace: str) -> bytes:
    """The HMAC key: LUCIDGRANT_STATE_KEY, else the operator's Secret (created if absent)."""
    from_env = os.environ.get(STATE_KEY_ENV)
    if from_env:
        return from_env.encode()
    path = secret_path(namespace)
    for _ in range(3):
        secret = await kube.get(secret_path(namespace, STATE_KEY_SECRET))
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
            await kube.create(path, body)
            log.info("created the state key Secret %s/%s", namespace, STATE_KEY_SECRET)
        except ConflictError:
            pass  # another replica made it first: read theirs
    raise ValueError(f"Secret {STATE_KEY_SECRET} could not be read or created")
