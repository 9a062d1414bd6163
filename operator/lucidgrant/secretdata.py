"""Secret data as Kubernetes stores it (base64), the grant's client credentials read from it,
and one-way fingerprints of values the operator must recognise without keeping them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from lucidgrant.grant import GrantSpec
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.names import LABEL_ROLE, ROLE_CLIENT


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


def marked(secret: Mapping[str, Any] | None) -> bool:
    """Whether a person marked the Secret for lucidgrant to read (an Opaque Secret labelled
    lucidgrant.dev/role=client). The API server defaults an absent type to Opaque."""
    if not secret:
        return False
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_ROLE) == ROLE_CLIENT and secret.get("type", "Opaque") == "Opaque"


def mark_command(namespace: str, name: str) -> str:
    return f"kubectl label secret {name} -n {namespace} {LABEL_ROLE}={ROLE_CLIENT}"


def secret_value(secret: Mapping[str, Any] | None, key: str) -> str | None:
    if not secret:
        return None
    return unb64((secret.get("data") or {}).get(key))


def client_credentials(
    secret: Mapping[str, Any] | None, spec: GrantSpec
) -> ClientCredentials | None:
    """The grant's client credentials from its client Secret; None if absent or empty. The one
    place they are read, for the refresh path, the web flow and the laptop command alike.
    None for a Secret nobody marked for lucidgrant: its values are never read."""
    if not marked(secret):
        return None
    client_id = secret_value(secret, spec.client_id_key)
    client_secret = secret_value(secret, spec.client_secret_key)
    if not client_id or not client_secret:
        return None
    return ClientCredentials(client_id, client_secret)
