"""Deletion: the finalizer, and revoking the grant at Lucid when deletionPolicy is Revoke.

Only grants with deletionPolicy Revoke carry the finalizer: the others need nothing done at
deletion (the state and consumer Secrets are owned by the grant and go by garbage collection),
and a finalizer is a write per grant plus a grant that cannot go while the operator is down.

Their state Secret carries it too, because the refresh token needed to revoke lives there and
other deletions reach it first: Foreground deletion (Argo CD's prune) has the garbage collector
delete the dependents before the owner, and namespace deletion deletes Secrets at once while
the grant waits for its finalizer. With the finalizer the Secret only gets a deletionTimestamp
and keeps its token until the grant is finalized."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from lucidgrant.cache import Cache, SecretReader
from lucidgrant.grant import GrantSpec, SpecError
from lucidgrant.kube import JSON_PATCH, KubeClient, KubeError
from lucidgrant.lucid import LucidClient
from lucidgrant.lucid_answers import ClientCredentials, LucidError
from lucidgrant.names import FINALIZER, grant_path, secret_path, state_secret_name
from lucidgrant.secretdata import client_credentials
from lucidgrant.state_secret import GrantState, parse_state
from lucidgrant.timing import Sleep

log = logging.getLogger(__name__)

REVOKE_ATTEMPTS = 3


def finalizers_of(grant: Mapping[str, Any]) -> list[str]:
    return list(grant["metadata"].get("finalizers") or [])


class Deletion:
    def __init__(
        self,
        kube: KubeClient,
        lucid: LucidClient,
        secrets: SecretReader,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.kube = kube
        self.lucid = lucid
        self.secrets = secrets
        self.sleep = sleep

    @property
    def cache(self) -> Cache:
        return self.secrets.cache

    async def sync_finalizer(self, grant: Mapping[str, Any], spec: GrantSpec) -> GrantState | None:
        """Add the finalizer to grants with deletionPolicy Revoke and to their state Secret,
        remove it from the others. Returns the state if its Secret changed (a new
        resourceVersion the refresh lock must start from)."""
        want = spec.deletion_policy == "Revoke"
        await self._mark_grant(grant, want)
        meta = grant["metadata"]
        state = await self.secrets.get(meta["namespace"], state_secret_name(meta["name"]))
        if state is None or state["metadata"].get("deletionTimestamp"):
            return None
        held = await self._hold(state, want)
        return None if held is None else parse_state(held)

    async def _hold(self, secret: Mapping[str, Any], want: bool) -> dict[str, Any] | None:
        """Put the finalizer on the Secret or take it off; the Secret, if it changed."""
        meta = secret["metadata"]
        body = await self._set_finalizer(secret, secret_path(meta["namespace"], meta["name"]), want)
        if body is not None:
            self.cache.observe_secret(body)
        return body

    async def _mark_grant(self, grant: Mapping[str, Any], want: bool) -> None:
        meta = grant["metadata"]
        body = await self._set_finalizer(grant, grant_path(meta["namespace"], meta["name"]), want)
        if body is not None:
            self.cache.observe_grant(body)

    async def _set_finalizer(
        self, obj: Mapping[str, Any], path: str, want: bool
    ) -> dict[str, Any] | None:
        finalizers = finalizers_of(obj)
        if want == (FINALIZER in finalizers):
            return None
        return await self.kube.patch(
            path, _finalizers_patch(finalizers, want), content_type=JSON_PATCH
        )

    async def finalize(self, grant: Mapping[str, Any], spec: GrantSpec | SpecError) -> None:
        """Revoke at Lucid (a few tries: a grant must not stay forever because Lucid is down),
        then let the grant go."""
        finalizers = finalizers_of(grant)
        if FINALIZER not in finalizers:
            return
        meta = grant["metadata"]
        key = (meta["namespace"], meta["name"])
        # Read afresh: deciding to revoke (or to say it could not) on a stale copy is wrong.
        state_secret = await self.kube.get(secret_path(key[0], state_secret_name(key[1])))
        state = parse_state(state_secret) if state_secret else None
        if state is None:
            # No state Secret and never refreshed: never authorized, nothing to revoke.
            if (grant.get("status") or {}).get("lastRefreshTime"):
                _not_revoked(key, "its state Secret was deleted before the grant")
        elif isinstance(spec, GrantSpec) and state.refresh_token and not state.dead_reason:
            client = await self.secrets.get(key[0], spec.client_secret_name)
            creds = client_credentials(client, spec)
            if creds is None:
                # Namespace deletion takes the client Secret at once.
                _not_revoked(key, f"its client Secret {spec.client_secret_name!r} is gone or empty")
            elif not await self._revoke(key, creds, state.refresh_token):
                _not_revoked(key, "Lucid did not answer the revocation")
        try:
            if state_secret is not None:
                await self._hold(state_secret, False)
            await self._mark_grant(grant, False)
        except KubeError as exc:
            log.warning("grant %s/%s: finalizer not removed yet: %s", *key, exc)

    async def _revoke(self, key: tuple[str, str], creds: ClientCredentials, token: str) -> bool:
        for attempt in range(1, REVOKE_ATTEMPTS + 1):
            try:
                await self.lucid.revoke(creds, token)
                log.info("grant %s/%s: revoked at Lucid", *key)
                return True
            except LucidError as exc:
                log.warning("grant %s/%s: revoke attempt %d failed: %s", *key, attempt, exc)
                if attempt < REVOKE_ATTEMPTS:
                    await self.sleep(min(2.0**attempt, 10.0))
        return False


def _not_revoked(key: tuple[str, str], why: str) -> None:
    """Said loudly: deletionPolicy Revoke was asked for and the grant lives on at Lucid."""
    log.error(
        "grant %s/%s: NOT revoked at Lucid (deletionPolicy Revoke): %s; the grant stays valid at "
        "Lucid until its refresh token expires: revoke it there (or remove the app's access)",
        *key,
        why,
    )


def _finalizers_patch(finalizers: list[str], want: bool) -> list[dict[str, Any]]:
    """A JSON patch adding our finalizer (with a `test` of the list it extends) or removing it
    (with a `test` of its position only: the garbage collector may drop its own finalizer
    meanwhile). A concurrent change fails the test (422) instead of being overwritten."""
    path = "/metadata/finalizers"
    if not want:
        at = f"{path}/{finalizers.index(FINALIZER)}"
        return [{"op": "test", "path": at, "value": FINALIZER}, {"op": "remove", "path": at}]
    if not finalizers:
        return [{"op": "add", "path": path, "value": [FINALIZER]}]
    return [
        {"op": "test", "path": path, "value": finalizers},
        {"op": "add", "path": f"{path}/-", "value": FINALIZER},
    ]
