"""Deletion: the finalizer, and revoking the grant at Lucid when deletionPolicy is Revoke.

Only grants with deletionPolicy Revoke carry the finalizer: the others need nothing done at
deletion (the state and consumer Secrets are owned by the grant and go by garbage collection),
and a finalizer is a write per grant plus a grant that cannot go while the operator is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from lucidgrant.cache import Cache, SecretReader
from lucidgrant.grant import GrantSpec, SpecError
from lucidgrant.kube import JSON_PATCH, KubeClient, KubeError
from lucidgrant.lucid import ClientCredentials, LucidClient, LucidError
from lucidgrant.names import FINALIZER, grant_path, state_secret_name
from lucidgrant.secretdata import client_credentials
from lucidgrant.store import parse_state
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

    async def sync_finalizer(self, grant: Mapping[str, Any], spec: GrantSpec) -> None:
        """Add the finalizer to grants with deletionPolicy Revoke, remove it from the others."""
        finalizers = finalizers_of(grant)
        want = spec.deletion_policy == "Revoke"
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self._patch_finalizers(grant, finalizers, new)

    async def finalize(self, grant: Mapping[str, Any], spec: GrantSpec | SpecError) -> None:
        """Revoke at Lucid (a few tries: a grant must not stay forever because Lucid is down),
        then let the grant go."""
        finalizers = finalizers_of(grant)
        if FINALIZER not in finalizers:
            return
        meta = grant["metadata"]
        key = (meta["namespace"], meta["name"])
        state_secret = await self.secrets.get(key[0], state_secret_name(key[1]))
        state = parse_state(state_secret) if state_secret else None
        if isinstance(spec, GrantSpec) and state and state.refresh_token and not state.dead_reason:
            client = await self.secrets.get(key[0], spec.client_secret_name)
            creds = client_credentials(client, spec)
            if creds is None:
                log.warning("grant %s/%s: no client credentials to revoke with", *key)
            else:
                await self._revoke(key, creds, state.refresh_token)
        try:
            await self._patch_finalizers(
                grant, finalizers, [f for f in finalizers if f != FINALIZER]
            )
        except KubeError as exc:
            log.warning("grant %s/%s: finalizer not removed yet: %s", *key, exc)

    async def _revoke(self, key: tuple[str, str], creds: ClientCredentials, token: str) -> None:
        for attempt in range(1, REVOKE_ATTEMPTS + 1):
            try:
                await self.lucid.revoke(creds, token)
                log.info("grant %s/%s: revoked at Lucid", *key)
                return
            except LucidError as exc:
                log.warning("grant %s/%s: revoke attempt %d failed: %s", *key, attempt, exc)
                if attempt < REVOKE_ATTEMPTS:
                    await self.sleep(min(2.0**attempt, 10.0))

    async def _patch_finalizers(
        self, grant: Mapping[str, Any], old: list[str], new: list[str]
    ) -> None:
        """A JSON patch with a `test` of the old list: a concurrent change fails it (422)
        instead of being overwritten."""
        meta = grant["metadata"]
        ops: list[dict[str, Any]] = (
            [{"op": "test", "path": "/metadata/finalizers", "value": old}] if old else []
        )
        ops.append(
            {"op": "add" if not old else "replace", "path": "/metadata/finalizers", "value": new}
        )
        body = await self.kube.patch(
            grant_path(meta["namespace"], meta["name"]), ops, content_type=JSON_PATCH
        )
        self.cache.observe_grant(body)
