"""Secret data as Kubernetes stores it (base64), the grant's client credentials read from it,
and one-way fingerprints of values the operator must recognise without keeping them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from lucidgrant.grant import GrantSpec
from lucidgrant.lucid import ClientCredentials


def digest(value: str) -> str:
    """A one-way fingerprint, to recognise a bootstrap value already consumed without keeping it."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def unb64(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def secret_value(secret: Mapping[str, Any] | None, key: str) -> str | None:
    if not secret:
        return None
    return unb64((secret.get("data") or {}).get(key))


def client_credentials(
    secret: Mapping[str, Any] | None, spec: GrantSpec
) -> ClientCredentials | None:
    """The grant's client credentials from its client Secret; None if absent or empty. The one
    place they are read, for the refresh path, the web flow and the laptop command alike."""
    client_id = secret_value(secret, spec.client_id_key)
    client_secret = secret_value(secret, spec.client_secret_key)
    if not client_id or not client_secret:
        return None
    return ClientCredentials(client_id, client_secret)
