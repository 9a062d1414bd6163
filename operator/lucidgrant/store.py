"""Where the refresh token is stored: the operator-owned state Secret, the only copy that
matters. (The access token's Secret for pods is consumer.py's.)

The state Secret also carries the single-flight lock (annotations written with compare-and-swap
on resourceVersion), so that at most one process refreshes a grant at any moment, and the
non-secret facts about the grant (expiries, scopes, whether it is dead) so that a restarted
operator knows everything without calling Lucid."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lucidgrant.cache import SecretReader
from lucidgrant.kube import ConflictError, NotFoundError, error_text
from lucidgrant.lucid import TokenSet
from lucidgrant.names import (
    ANN_ACCESS_EXPIRES,
    ANN_ACCESS_LIFETIME,
    ANN_ACCOUNT_ID,
    ANN_BOOTSTRAP,
    ANN_CONSUMER,
    ANN_DEAD,
    ANN_GRANT,
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
    LABEL_GRANT,
    LABEL_ROLE,
    ROLE_STATE,
    grant_label,
    secret_path,
    state_secret_name,
)
from lucidgrant.secretdata import b64, secret_value
from lucidgrant.wal import Rotation, RotationLog

log = logging.getLogger(__name__)

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


class LockBusyError(Exception):
    """Another process holds the grant's refresh lock; `until` is when it expires."""

    def __init__(self, until: float) -> None:
        super().__init__("another process is refreshing this grant")
        self.until = until


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


class StateStore:
    """Reads and writes state Secrets. Every write is a merge patch carrying the resourceVersion
    it was based on, so that a concurrent writer shows up as a 409 instead of a lost update.
    Every answer goes into the cache at once and comes back parsed."""

    def __init__(
        self,
        secrets: SecretReader,
        holder: str,
        on_store_failure: Callable[[], None] = lambda: None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wal: RotationLog | None = None,
    ) -> None:
        self.secrets = secrets
        self.kube = secrets.kube
        self.holder = holder
        self.on_store_failure = on_store_failure
        self.sleep = sleep
        self.wal = wal

    def _remember(self, secret: Mapping[str, Any]) -> GrantState:
        self.secrets.cache.observe_secret(secret)
        return parse_state(secret)

    async def read(self, namespace: str, grant_name: str) -> GrantState | None:
        """The state Secret as the API server has it now (not the cache's copy)."""
        secret = await self.kube.get(secret_path(namespace, state_secret_name(grant_name)))
        return None if secret is None else self._remember(secret)

    async def current(self, grant: Mapping[str, Any]) -> GrantState:
        """The grant's state Secret through the cache, created (empty) if it does not exist."""
        meta = grant["metadata"]
        known = await self.secrets.get(meta["namespace"], state_secret_name(meta["name"]))
        if known is None:
            return await self.create(grant)
        if why := state_conflict(known, grant):
            raise StateConflict(why)
        return parse_state(known)

    async def create(self, grant: Mapping[str, Any]) -> GrantState:
        meta = grant["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": state_secret_name(meta["name"]),
                "namespace": meta["namespace"],
                "labels": {LABEL_ROLE: ROLE_STATE, LABEL_GRANT: grant_label(meta["name"])},
                "annotations": {ANN_GRANT: meta["name"]},
                "ownerReferences": [owner_reference(grant)],
            },
            "data": {},
        }
        try:
            return self._remember(await self.kube.create(secret_path(meta["namespace"]), body))
        except ConflictError:
            name = state_secret_name(meta["name"])
            secret = await self.kube.get(secret_path(meta["namespace"], name))
            if secret is None:
                raise
            if why := state_conflict(secret, grant):
                raise StateConflict(why) from None
            return self._remember(secret)

    async def _patch(
        self, namespace: str, grant_name: str, rv: str | None, patch: dict[str, Any]
    ) -> GrantState:
        if rv is not None:
            patch.setdefault("metadata", {})["resourceVersion"] = rv
        path = secret_path(namespace, state_secret_name(grant_name))
        return self._remember(await self.kube.patch(path, patch))

    async def acquire_lock(
        self, namespace: str, grant_name: str, state: GrantState, now: float
    ) -> GrantState:
        """Take the refresh lock with compare-and-swap; raise LockBusyError or ConflictError."""
        if state.locked_by_other(self.holder, now):
            raise LockBusyError(state.lock_until or now)
        patch = {
            "metadata": {
                "annotations": {
                    ANN_LOCK_HOLDER: self.holder,
                    ANN_LOCK_UNTIL: f"{now + LOCK_TTL:.3f}",
                }
            }
        }
        return await self._patch(namespace, grant_name, state.resource_version, patch)

    async def release_lock(
        self, namespace: str, grant_name: str, rv: str, extra: Mapping[str, str | None] = {}
    ) -> GrantState | None:
        """Drop the lock (and write `extra` annotations). A conflict means someone else moved
        on; the lock then expires by itself."""
        ann: dict[str, str | None] = {ANN_LOCK_HOLDER: None, ANN_LOCK_UNTIL: None, **extra}
        try:
            return await self._patch(namespace, grant_name, rv, {"metadata": {"annotations": ann}})
        except (ConflictError, NotFoundError):
            return None

    async def save_rotation(
        self, rotation: Rotation, rv: str, *, retry_delay: float = 0.5
    ) -> GrantState:
        """Store a rotated refresh token; the first duty after Lucid answers. The answer holds
        the only live refresh token, so it goes into the write-ahead log first (when there is
        one: a killed process replays it at its next start), and the store retries until it
        succeeds; on a conflict it re-reads and writes again: a newer token cannot exist
        elsewhere, since the refresh that produced ours invalidated the one anybody else could
        have used. Without an access token (a partial answer) the old one, dead now, is
        removed."""
        if self.wal is not None:
            try:
                await self.wal.append(rotation)
            except OSError as exc:  # the store below still happens, as without a log
                self._unlogged(self.wal, rotation, exc)
        attempt = 0
        base_rv: str | None = rv
        while True:
            attempt += 1
            try:
                saved = await self.put_rotation(rotation, base_rv)
                break
            except ConflictError:
                base_rv = None  # ours is the newest: write unconditionally
            except Exception as exc:  # whatever it is, giving up would lose the grant
                self.on_store_failure()
                log.error(
                    "storing the rotated refresh token of %s/%s failed (attempt %d): %s; retrying",
                    rotation.namespace,
                    rotation.name,
                    attempt,
                    error_text(exc),
                )
                await self.sleep(min(retry_delay * attempt, 5.0))
        if self.wal is not None:
            self.wal.mark_stored(rotation)
        return saved

    def log_rotation(self, rotation: Rotation) -> None:
        """Put a rotation in the write-ahead log at once, with nothing awaited: called the
        moment Lucid's answer is parsed. `save_rotation` then syncs it and stores it."""
        if self.wal is not None:
            try:
                self.wal.write(rotation)
            except OSError as exc:
                self._unlogged(self.wal, rotation, exc)

    @staticmethod
    def _unlogged(wal: RotationLog, rotation: Rotation, exc: OSError) -> None:
        log.error(
            "write-ahead log %s failed (%s): storing %s/%s without it",
            wal.path,
            exc.strerror or type(exc).__name__,
            rotation.namespace,
            rotation.name,
        )

    async def put_rotation(self, rotation: Rotation, rv: str | None) -> GrantState:
        """One write of a rotation (compare-and-swap on `rv` unless None). Lucid just rotated,
        so the grant is alive (a mark of a dead grant goes), and whoever holds the refresh lock
        (this process, or a killed one whose log is being replayed) holds a token this rotation
        made dead: the lock guards nothing any more and goes too."""
        ann = {
            **rotation.annotations,
            ANN_ROTATED_AT: f"{rotation.issued_at:.3f}",
            ANN_DEAD: None,
            ANN_LOCK_HOLDER: None,
            ANN_LOCK_UNTIL: None,
        }
        data = {
            KEY_REFRESH: b64(rotation.refresh_token),
            KEY_ACCESS: b64(rotation.access_token) if rotation.access_token else None,
        }
        patch = {"metadata": {"annotations": ann}, "data": data}
        return await self._patch(rotation.namespace, rotation.name, rv, patch)

    async def annotate(
        self, namespace: str, grant_name: str, rv: str | None, annotations: Mapping[str, str | None]
    ) -> GrantState:
        return await self._patch(
            namespace, grant_name, rv, {"metadata": {"annotations": dict(annotations)}}
        )
