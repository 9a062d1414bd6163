"""The state Secret's content, without any I/O: `GrantState` read from it, the annotations a
rotation writes, and whether a Secret of that name is the grant's at all. Reading and writing
it (the lock, a rotation stored first) is store.py's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lucidgrant.lucid_answers import TokenSet
from lucidgrant.names import (
    ANN_ACCESS_EXPIRES,
    ANN_ACCESS_LIFETIME,
    ANN_ACCOUNT_ID,
    ANN_BOOTSTRAP,
    ANN_CONSUMER,
    ANN_DEAD,
    ANN_LAST_REFRESH,
    ANN_LOCK_HOLDER,
    ANN_LOCK_UNTIL,
    ANN_REFRESH_EXPIRES,
    ANN_REFRESH_LIFETIME,
    ANN_REFRESH_SOURCE,
    ANN_ROTATED_AT,
    ANN_SCOPES,
    ANN_TOKEN_TYPE,
    ANN_USED_STATES,
    ANN_USER_ID,
    API_VERSION,
    KEY_ACCESS,
    KEY_REFRESH,
    KIND,
    LABEL_ROLE,
    ROLE_STATE,
)
from lucidgrant.secretdata import secret_value

# Refresh tokens live 180 days from their creation (Lucid's documented lifetime).
REFRESH_TOKEN_LIFETIME = 180 * 86400.0
LOCK_TTL = 60.0


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def owner_reference(grant: Mapping[str, Any]) -> dict[str, Any]:
    meta = grant["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


@dataclass(frozen=True)
class GrantState:
    """The state Secret, parsed. Absent fields are None."""

    resource_version: str
    refresh_token: str | None = None
    access_token: str | None = None
    token_type: str = "bearer"
    access_expires_at: float | None = None
    access_lifetime: float | None = None
    refresh_expires_at: float | None = None
    refresh_expiry_source: str = "Issued"
    refresh_lifetime: float | None = None
    scopes: tuple[str, ...] = ()
    user_id: str | None = None
    account_id: str | None = None
    bootstrap_digest: str | None = None
    dead_reason: str | None = None
    last_refresh_at: float | None = None
    rotated_at: float | None = None
    lock_holder: str | None = None
    lock_until: float | None = None
    consumer_name: str | None = None
    used_states: str | None = None  # the web flow's ledger (authstate.record_use)
    # The UID of the grant that owns the Secret (its controller reference).
    owner_uid: str | None = None

    def __repr__(self) -> str:
        return f"GrantState(rv={self.resource_version}, dead={self.dead_reason})"

    def locked_by_other(self, holder: str, now: float) -> bool:
        return bool(
            self.lock_holder
            and self.lock_holder != holder
            and self.lock_until is not None
            and self.lock_until > now
        )


def parse_state(secret: Mapping[str, Any]) -> GrantState:
    meta = secret.get("metadata") or {}
    ann: Mapping[str, str] = meta.get("annotations") or {}
    return GrantState(
        resource_version=str(meta.get("resourceVersion", "")),
        refresh_token=secret_value(secret, KEY_REFRESH),
        access_token=secret_value(secret, KEY_ACCESS),
        token_type=ann.get(ANN_TOKEN_TYPE, "bearer"),
        access_expires_at=_float(ann.get(ANN_ACCESS_EXPIRES)),
        access_lifetime=_float(ann.get(ANN_ACCESS_LIFETIME)),
        refresh_expires_at=_float(ann.get(ANN_REFRESH_EXPIRES)),
        refresh_expiry_source=ann.get(ANN_REFRESH_SOURCE, "Issued"),
        refresh_lifetime=_float(ann.get(ANN_REFRESH_LIFETIME)),
        scopes=tuple(ann.get(ANN_SCOPES, "").split()),
        user_id=ann.get(ANN_USER_ID) or None,
        account_id=ann.get(ANN_ACCOUNT_ID) or None,
        bootstrap_digest=ann.get(ANN_BOOTSTRAP) or None,
        dead_reason=ann.get(ANN_DEAD) or None,
        last_refresh_at=_float(ann.get(ANN_LAST_REFRESH)),
        rotated_at=_float(ann.get(ANN_ROTATED_AT) or ann.get(ANN_LAST_REFRESH)),
        lock_holder=ann.get(ANN_LOCK_HOLDER) or None,
        lock_until=_float(ann.get(ANN_LOCK_UNTIL)),
        consumer_name=ann.get(ANN_CONSUMER) or None,
        used_states=ann.get(ANN_USED_STATES) or None,
        owner_uid=next(
            (
                ref.get("uid")
                for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == KIND and ref.get("controller")
            ),
            None,
        ),
    )


def token_annotations(
    tokens: TokenSet, refresh_expires_at: float, refresh_source: str
) -> dict[str, str | None]:
    """The non-secret facts of a rotation, for the state Secret's annotations."""
    return {
        ANN_ACCESS_EXPIRES: f"{tokens.access_expires_at:.3f}",
        ANN_ACCESS_LIFETIME: f"{tokens.expires_in:.3f}",
        ANN_REFRESH_EXPIRES: f"{refresh_expires_at:.3f}",
        ANN_REFRESH_SOURCE: refresh_source,
        ANN_SCOPES: " ".join(tokens.scopes),
        ANN_USER_ID: tokens.user_id,
        ANN_ACCOUNT_ID: tokens.account_id,
        ANN_TOKEN_TYPE: tokens.token_type,
        ANN_LAST_REFRESH: f"{tokens.issued_at:.3f}",
        ANN_DEAD: None,
    }


class StateConflict(Exception):
    """A Secret named like the grant's state Secret that is not this grant's: never adopted."""


def state_conflict(secret: Mapping[str, Any], grant: Mapping[str, Any]) -> str | None:
    """Why an existing Secret is not the grant's state Secret (label and owner UID checked: a
    Secret of that name may be a person's, or a deleted namesake's not yet collected)."""
    meta = secret.get("metadata") or {}
    gmeta = grant["metadata"]
    name = meta.get("name")
    if (meta.get("labels") or {}).get(LABEL_ROLE) != ROLE_STATE:
        why = f"it lacks the label {LABEL_ROLE}={ROLE_STATE}"
    elif not any(r.get("uid") == gmeta.get("uid") for r in meta.get("ownerReferences") or []):
        why = "it is not owned by this grant (an owner reference with the grant's UID)"
    else:
        return None
    return (
        f"Secret {name!r} has the name of this grant's state Secret but {why}, so the operator "
        f"does not use it: delete or rename it (`kubectl delete secret {name} -n "
        f"{gmeta['namespace']}`) and the operator creates its own."
    )
