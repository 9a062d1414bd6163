"""Everything one operator process holds: clients, cache, reconciler, work queue and web
server, built at start-up and closed at shutdown. The kopf handlers only feed it events.

It is also what the web modules see of the operator, through their narrow protocols:
`authflow.FlowHost` and `web.Probes`."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx
from prometheus_client import generate_latest

from lucidgrant.authflow import AuthFlow
from lucidgrant.authstate import load_state_key
from lucidgrant.cache import Cache, GrantRecord, Key, SecretReader, key_of
from lucidgrant.config import Settings
from lucidgrant.flowhost import Redemption
from lucidgrant.grant import GrantSpec
from lucidgrant.kube import Kube
from lucidgrant.leader import LeaderElector
from lucidgrant.listener import Listener, ListenerLimits
from lucidgrant.lucid import LucidClient
from lucidgrant.lucid_answers import ClientCredentials, TokenSet
from lucidgrant.lucid_gates import LucidGates
from lucidgrant.lucid_pool import lucid_http
from lucidgrant.metrics import Metrics
from lucidgrant.names import READY, REAUTH
from lucidgrant.reconcile import Reconciler
from lucidgrant.replay import replay
from lucidgrant.resync import Resync
from lucidgrant.status import condition_of
from lucidgrant.store import StateStore
from lucidgrant.wal import Rotation, RotationLog
from lucidgrant.web import make_flow_app, make_probe_app
from lucidgrant.workqueue import WorkQueue

log = logging.getLogger(__name__)

# Connections of the web flow's own pool to Lucid (code exchanges only).
FLOW_CONNECTIONS = 4


def open_wal(directory: str | None) -> tuple[RotationLog | None, list[Rotation]]:
    """The write-ahead log and what a previous process left in it. Without a directory, or with
    one that cannot be used, none: the operator then runs as without the log, and says so."""
    if directory is None:
        return None, []
    wal = RotationLog(directory)
    try:
        return wal, wal.open()
    except OSError as exc:
        log.error(
            "write-ahead log in %s cannot be used (%s): running without it, so a killed process "
            "can lose a refresh token Lucid rotated; fix the volume or unset LUCIDGRANT_WAL_DIR",
            directory,
            exc.strerror or type(exc).__name__,
        )
        return None, []


class Runtime:
    def __init__(self, settings: Settings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = Metrics()
        self.cache = Cache()
        self.http = lucid_http(settings.lucid_timeout, settings.concurrency)
        self.lucid = self._lucid_client(self.http)
        # The web flow's code exchanges have a pool of their own: a flood of callbacks must
        # never hold the connections that refreshes need.
        self.flow_http = lucid_http(settings.lucid_timeout, FLOW_CONNECTIONS)
        self.flow_lucid = self._lucid_client(self.flow_http)
        secrets = SecretReader(self.cache, kube)
        self.wal, self._to_replay = open_wal(settings.wal_dir)
        self.store = StateStore(
            secrets,
            settings.identity,
            on_store_failure=self.metrics.refreshes.labels("store_error").inc,
            wal=self.wal,
        )
        self.gates = LucidGates(
            self.lucid,
            self.metrics,
            settings.lucid_api_url,
            rate=settings.lucid_rate,
            burst=settings.lucid_burst,
        )
        self.reconciler = Reconciler(
            kube,
            self.lucid,
            secrets,
            self.store,
            self.metrics,
            authorization_url=self.authorization_url,
            operator_namespace=settings.pod_namespace,
            gates=self.gates,
        )
        self.queue = WorkQueue(self.reconciler.reconcile, concurrency=settings.concurrency)
        self.gates.wake = self.queue.wake
        self.flow = AuthFlow(self, settings) if settings.external_url else None
        self.started = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._work: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self.elector: LeaderElector | None = None
        if settings.leader_election:
            self.queue.active.clear()
            self.elector = LeaderElector(
                kube,
                settings.pod_namespace,
                settings.lease_name,
                settings.identity,
                settings.lease_duration,
                self._leading,
            )
        self.metrics.leader.set(0 if self.elector else 1)

    def _lucid_client(self, http: httpx.AsyncClient) -> LucidClient:
        return LucidClient(
            http,
            self.settings.lucid_api_url,
            observe=self.metrics.observe_lucid,
            deadline=self.settings.lucid_timeout,
            min_expires_in=self.settings.min_token_lifetime,
        )

    async def start(self) -> None:
        s = self.settings
        limits = ListenerLimits(s.header_timeout, s.idle_timeout, s.http_max_connections)
        self._listeners.append(
            Listener("probes and metrics", make_probe_app(self), s.http_host, s.http_port, limits)
        )
        if self.flow is not None:
            flow_app = make_flow_app(self.flow)
            flow_limits = replace(limits, max_connections=s.flow_max_connections)
            self._listeners.append(
                Listener("web flow", flow_app, s.flow_host, s.flow_port, flow_limits)
            )
        for listener in self._listeners:
            await listener.start()
        self._work = asyncio.create_task(self._replay_then_run(), name="work queue")
        self._tasks.append(self._work)
        if self.elector is not None:
            self._tasks.append(asyncio.create_task(self.elector.run(), name="leader election"))
        resync = Resync(self.kube, self.cache, self.on_grant, self.on_secret, s.selector)
        self._tasks.append(asyncio.create_task(resync.run(s.resync_interval), name="resync"))
        self.started = True
        log.info("lucidgrant started as %s", self.settings.identity)

    async def _replay_then_run(self) -> None:
        """Whether or not this replica leads, its own write-ahead log is replayed before it
        refreshes anything: the log may hold the only copy of some refresh tokens."""
        if self.wal is not None and self._to_replay:
            await replay(self._to_replay, self.wal, self.store)
            self._to_replay = []
        await self.queue.run()

    def _leading(self, leader: bool) -> None:
        self.metrics.leader.set(1 if leader else 0)
        self.reconciler.took_lease_at = self.reconciler.clock() if leader else None
        if leader:
            self.queue.active.set()
        else:
            # A standby's per-grant series would go stale: only the leader exports them.
            self.queue.active.clear()
            for key in self.cache.grants:
                self.metrics.forget_grant(*key)

    async def stop(self) -> None:
        """Stop starting refreshes and let the write-ahead log drain, within the grace period:
        the refreshes in flight store their tokens, and so does a replay still under way. The
        Lease is released only if nothing is left in the log: a token still there is stored
        only by this container's next start, and the standby, taking over at once, would
        refresh that grant with the token Lucid made dead."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.shutdown_grace
        left = await self.queue.stop(self.settings.shutdown_grace)
        if left:
            log.error("%d reconciles still running at shutdown", left)
        if self._work is not None:  # a replay under way ends within the grace period too
            await asyncio.wait({self._work}, timeout=max(0.0, until - loop.time()))
        # A Lucid call still under way may have rotated a grant: its answer, logged as it
        # arrives, is worth one call's deadline more, rather than cut off by closing the client.
        await self.lucid.settled(self.settings.lucid_timeout)
        unstored = len(self.wal.pending) if self.wal is not None else 0
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.gates.stop()
        if self.elector is not None and unstored:
            log.error(
                "%d rotated refresh token(s) not stored at shutdown stay in the write-ahead log "
                "for this container's next start; the Lease is left to expire, not released",
                unstored,
            )
        elif self.elector is not None:
            await self.elector.release()
        for listener in self._listeners:
            await listener.stop()
        if self.wal is not None:
            self.wal.close()  # what is not stored yet stays in it for the next start
        await self.http.aclose()
        await self.flow_http.aclose()
        await self.kube.close()

    def authorization_url(self, grant: Mapping[str, Any]) -> str | None:
        """Where a person authorizes this grant, when the operator hosts the web flow."""
        if not self.settings.external_url:
            return None
        meta = grant["metadata"]
        return (
            f"{self.settings.external_url.rstrip('/')}/authorize/{meta['namespace']}/{meta['name']}"
        )

    # -- fed by the kopf handlers ------------------------------------------------------------

    def on_grant(self, event_type: str, body: dict[str, Any]) -> None:
        key = key_of(body)
        labels = (body.get("metadata") or {}).get("labels") or {}
        mine = all(labels.get(k) == v for k, v in self.settings.selector.items())
        if event_type == "DELETED" or not mine:  # a grant relabelled away is another shard's
            if key in self.cache.grants:
                self.cache.forget_grant(key)
                self.queue.forget(key)
                self.gates.forget(key)
                self.metrics.forget_grant(*key)
            return
        self.cache.observe_grant(body)
        self.queue.wake(key)

    def on_secret(self, event_type: str, body: dict[str, Any]) -> None:
        if self.cache.observe_secret(body, deleted=event_type == "DELETED"):
            for key in self.cache.grants_of_secret(body):
                if key in self.cache.grants:
                    self.queue.wake(key)

    # -- what the web flow sees (authflow.FlowHost) -------------------------------------------

    def grant(self, key: Key) -> GrantRecord | None:
        return self.cache.grants.get(key)

    async def client_credentials(self, key: Key) -> ClientCredentials | None:
        return await self.reconciler.client_credentials(key)

    async def client_accepted(self, creds: ClientCredentials) -> bool:
        return await self.flow_lucid.accepts_client(creds)

    async def exchange_code(
        self, creds: ClientCredentials, code: str, redirect_uri: str
    ) -> TokenSet:
        return await self.flow_lucid.exchange_code(creds, code, redirect_uri)

    async def authorized(self, key: Key, redemption: Redemption, by: str | None) -> None:
        await self.reconciler.authorized(key, redemption, by)
        self.queue.wake(key)

    async def state_key(self) -> bytes:
        return await load_state_key(self.kube, self.settings.pod_namespace)

    # -- what the probes see (web.Probes) -------------------------------------------------------

    def stalled_for(self, now: float) -> float:
        """Seconds since the work queue last finished anything, if work is overdue; else 0."""
        overdue = [at for at in (self.queue.due_at(k) for k in self.cache.grants) if at]
        if not overdue or min(overdue) > now - 1.0:
            return 0.0
        return now - self.queue.last_progress

    def metrics_text(self) -> bytes:
        self._count_grants()
        return bytes(generate_latest(self.metrics.registry))

    def _count_grants(self) -> None:
        counts: Counter[str] = Counter()
        for record in self.cache.grants.values():
            status = record.body.get("status") or {}
            spec = record.spec()
            if not isinstance(spec, GrantSpec):
                counts["invalid"] += 1
            elif spec.suspend:
                counts["suspended"] += 1
            elif (condition_of(status, REAUTH) or {}).get("status") == "True":
                counts["reauthorization_required"] += 1
            elif (condition_of(status, READY) or {}).get("status") == "True":
                counts["ready"] += 1
            else:
                counts["not_ready"] += 1
        for state in ("ready", "not_ready", "reauthorization_required", "suspended", "invalid"):
            self.metrics.grants.labels(state).set(counts[state])
