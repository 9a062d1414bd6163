"""Leader election on a coordination.k8s.io Lease, so that two replicas are safe and useful:
one refreshes, the other waits and takes over when the leader stops renewing.

kopf's peering only pauses operators by priority (replicas of equal priority all freeze), so it
is not used. Expiry is judged as client-go does: by how long this process has seen the same
record unchanged on its own monotonic clock, so clock skew between nodes does not matter. The
per-grant lock in each state Secret still guards the moment of a hand-over."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lucidgrant.kube import ConflictError, Kube, KubeError
from lucidgrant.names import lease_path

log = logging.getLogger(__name__)


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        on_change: Callable[[bool], None],
    ) -> None:
        self.kube = kube
        self.path = lease_path(namespace, name)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.on_change = on_change
        self.leader = False
        self._seen: tuple[Any, ...] | None = None
        self._seen_at = time.monotonic()

    def _body(self, lease: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = _now_micro()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            spec["acquireTime"] = lease["spec"].get("acquireTime", now)
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if lease:
            meta["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def try_once(self) -> bool:
        """One round: create, renew or take over the Lease if we may; True if we lead now."""
        lease = await self.kube.get(self.path)
        if lease is None:
            try:
                await self.kube.create(lease_path(self.namespace), self._body(None, 0))
                return True
            except ConflictError:
                return False
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        expired = time.monotonic() - self._seen_at > float(
            spec.get("leaseDurationSeconds") or self.duration
        )
        if holder not in (self.identity, None, "") and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        try:
            await self.kube.request("PUT", self.path, self._body(lease, transitions))
        except ConflictError:
            return False
        return True

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            log.info(
                "%s leadership (Lease %s/%s)",
                "took" if leader else "lost",
                self.namespace,
                self.name,
            )
            self.on_change(leader)

    async def run(self) -> None:
        while True:
            try:
                self._set(await self.try_once())
            except (KubeError, OSError) as exc:
                log.warning("leader election: %s", exc)
                self._set(False)
            # Renew well within the duration; standbys poll at the same pace.
            await asyncio.sleep(self.duration / 3)

    async def release(self) -> None:
        """Give the Lease up at shutdown so that the standby takes over at once."""
        if not self.leader:
            return
        lease = await self.kube.get(self.path)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            body = self._body(lease, int(lease["spec"].get("leaseTransitions") or 0))
            body["spec"]["holderIdentity"] = None
            try:
                await self.kube.request("PUT", self.path, body)
            except KubeError as exc:
                log.warning("could not release the Lease: %s", exc)
        self._set(False)
