"""Where the refresh token is stored: the operator-owned state Secret, the only copy that
matters, read and written here; what it holds is state_secret.py's. (The access token's
Secret for pods is consumer.py's.)

The state Secret also carries the single-flight lock (annotations written with compare-and-swap
on resourceVersion), so that at most one process refreshes a grant at any moment, and the
non-secret facts about the grant (expiries, scopes, whether it is dead) so that a restarted
operator knows everything without calling Lucid."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lucidgrant.cache import SecretReader
from lucidgrant.kube import ConflictError, NotFoundError, error_text
from lucidgrant.names import (
    ANN_DEAD,
    ANN_GRANT,
    ANN_LOCK_HOLDER,
    ANN_LOCK_UNTIL,
    ANN_ROTATED_AT,
    KEY_ACCESS,
    KEY_REFRESH,
    LABEL_GRANT,
    LABEL_ROLE,
    ROLE_STATE,
    grant_label,
    secret_path,
    state_secret_name,
)
from lucidgrant.secretdata import b64
from lucidgrant.state_secret import (
    LOCK_TTL,
    GrantState,
    StateConflict,
    owner_reference,
    parse_state,
    state_conflict,
)
from lucidgrant.wal import Rotation, RotationLog

log = logging.getLogger(__name__)


class LockBusyError(Exception):
    """Another process holds the grant's refresh lock; `until` is when it expires."""

    def __init__(self, until: float) -> None:
        super().__init__("another process is refreshing this grant")
        self.until = until


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
