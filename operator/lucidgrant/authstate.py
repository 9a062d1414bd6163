"""The `state` of the operator-hosted authorization flow: signed, expiring, single use.

`state` carries the grant's identity through Lucid and back. It is
`v1.<payload>.<signature>`: the payload is URL-safe base64 of JSON with the namespace, name,
UID, generation, expiry and a random nonce, and the signature is HMAC-SHA256 over
`v1.<payload>` with a key that only the operator holds. A state is accepted once (its nonce is
remembered until it expires), only before it expires (10 minutes by default), and only while
the grant is the same object (UID) with the same spec (generation) as when the link was made.

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
_VERSION = "v1"


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
