"""The reconcile of one grant, start to end: snapshot -> decide -> act -> publish.

1. `_snapshot` reads what the decision needs, through the cache (snapshot.py; a routine
   refresh reads nothing from the API server).
2. `decide` (decide.py, pure) says what to do and why.
3. `_act` does it: for a refresh, the Lucid gate -> lock -> the rate limit's turn -> Lucid ->
   store the rotated token first (refresh.py), then the consumer Secret (consumer.py); deletion
   goes to deletion.py.
4. The grant's bookkeeping (`Facts`) is replaced in one place, `_finish`, and status, metrics
   and events go out (publish.py).

The work queue guarantees that one process never reconciles the same grant twice at once; the
lock in the state Secret extends that to every process.

Over 300 lines on purpose: this is the one path a reader follows from start to end, and each
step's I/O already lives in the module named for it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from lucidgrant import timing
from lucidgrant.cache import GrantRecord, Key, SecretReader
from lucidgrant.consumer import ConsumerSecrets
from lucidgrant.decide import (
    Action,
    Decision,
    Snapshot,
    decide,
    expiry_wake,
    facts_for,
    missing_scopes,
    routine_refresh_at,
)
from lucidgrant.deletion import Deletion
from lucidgrant.failures import after_failure, after_kube_error
from lucidgrant.grant import GrantSpec
from lucidgrant.kube import KubeClient, KubeError, error_text
from lucidgrant.lucid import LucidClient
from lucidgrant.lucid_answers import ClientCredentials, TransientError
from lucidgrant.lucid_gates import LucidGates
from lucidgrant.lucid_health import unavailable_message
from lucidgrant.metrics import Metrics
from lucidgrant.names import EVENT_RECOVERED, REFRESH_NOW, Reason, grant_path
from lucidgrant.publish import AuthorizationURL, Progress, Publisher
from lucidgrant.refresh import CONFIRM_DELAY, Failed, LockWait, Redemption, Refresher
from lucidgrant.replay import handover_window_left
from lucidgrant.secretdata import digest
from lucidgrant.snapshot import SnapshotReader
from lucidgrant.store import StateStore
from lucidgrant.timing import Sleep

log = logging.getLogger(__name__)


# The longest wait for the rate limit's turn with the grant's lock held: a 429's pause is
# waited out with the lock free (state_secret.LOCK_TTL covers this and three Lucid deadlines).
ADMIT_WITHIN = 5.0

# Reasons a Secret outside the Secret watch's selection may cause (timing.UNWATCHED_RECHECK).
_SECRET_PROBLEMS = (Reason.SECRET_CONFLICT, Reason.SECRET_NOT_MARKED)


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        lucid: LucidClient,
        secrets: SecretReader,
        store: StateStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
        authorization_url: AuthorizationURL = lambda grant: None,
        confirm_delay: float = CONFIRM_DELAY,
        operator_namespace: str | None = None,
        gates: LucidGates | None = None,
    ) -> None:
        self.kube = kube
        self.cache = secrets.cache
        self.store = store
        self.reader = SnapshotReader(secrets, store)
        self.metrics = metrics
        self.clock = clock
        # When this replica took the leader Lease (None: no leader election, or standing by).
        self.took_lease_at: float | None = None
        self.rand = rand
        self.refresher = Refresher(store, lucid, clock, confirm_delay=confirm_delay, sleep=sleep)
        self.consumer = ConsumerSecrets(kube, secrets, store, operator_namespace)
        self.deletion = Deletion(kube, lucid, secrets, sleep=sleep)
        self.publisher = Publisher(kube, self.cache, metrics, clock, authorization_url)
        self.gates = gates or LucidGates(lucid, metrics, "", clock=clock, sleep=sleep)

    # -- the one path ----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """Bring one grant up to date; return when it wants to run again (None: on events)."""
        record = self.cache.grants.get(key)
        if record is None:
            return None
        progress = Progress(record.facts)
        try:
            snap = await self._snapshot(key, record)
            decision = decide(snap)
            if decision.action is Action.FINALIZE:
                await self.deletion.finalize(record.body, snap.spec)
                return None
            progress.facts = facts_for(snap)
            await self._act(key, record, snap, decision, progress)
        except (KubeError, OSError) as exc:
            self.metrics.refreshes.labels("store_error").inc()
            log.warning(
                "grant %s/%s: Kubernetes API call failed: %s; retrying", *key, error_text(exc)
            )
            verdict = after_kube_error(exc, now=self.clock(), rand=self.rand())
            if verdict.evict is not None:
                self.cache.secrets.pop(verdict.evict, None)
            progress.problem = (verdict.reason, verdict.message)
            progress.next_at = verdict.next_at
        at = await self._finish(key, record, progress)
        if progress.problem is not None and progress.problem[0] in _SECRET_PROBLEMS:
            # Not in the status's next refresh time: a look, not a refresh.
            recheck = self.clock() + timing.UNWATCHED_RECHECK
            at = recheck if at is None else min(at, recheck)
        return at

    async def _snapshot(self, key: Key, record: GrantRecord) -> Snapshot:
        facts = record.facts
        if self.gates.reopened(key):  # Lucid is back: the backoff of the outage is void
            facts = replace(facts, retry_at=None)
        return await self.reader.read(key, record, facts, self.clock())

    async def client_credentials(self, key: Key) -> ClientCredentials | None:
        """The grant's client credentials (for the authorization web flow)."""
        record = self.cache.grants.get(key)
        spec = record.spec() if record is not None else None
        if not isinstance(spec, GrantSpec):
            return None
        return (await self.reader.client(key[0], spec)).creds

    # -- acting on the decision ---------------------------------------------------------------

    async def _act(
        self, key: Key, record: GrantRecord, snap: Snapshot, decision: Decision, p: Progress
    ) -> None:
        p.state = snap.state
        p.bootstrap_given = snap.bootstrap is not None
        p.say(decision.reason, decision.message)
        action = decision.action
        if action is Action.REPORT:
            return
        assert isinstance(snap.spec, GrantSpec) and p.state is not None
        spec = snap.spec
        answered = action in (Action.REFRESH, Action.AWAIT_PERSON)
        p.state = await self.deletion.sync_finalizer(record.body, spec) or p.state
        if action is Action.SUSPEND:
            p.suspended = True
            return
        if action is Action.HOLD:
            p.next_at = expiry_wake(p.state, snap.now)
        elif action is Action.WAIT:
            p.next_at = decision.at
        elif action in (Action.ADOPT, Action.REFRESH):
            held = await self._refresh(key, record, snap, p, adopt=action is Action.ADOPT)
            answered = not held  # a held request waits with the grant for Lucid's return
        if snap.refresh_now and answered:
            # Answered: by a refresh, or by the news that only a person can help (a routine
            # refresh may have found the grant dead while the request was on its way).
            await self._clear_refresh_now(key)
        if action is not Action.HOLD and p.reauth is None:
            p.reauth = missing_scopes(spec, p.state) if p.state else None
        result = await self.consumer.sync(record.body, spec, p.state)
        p.consumer_written = result.written
        p.state = result.state or p.state
        if result.problem:
            p.problem = result.problem
        if result.again:
            p.next_at = self.clock()

    def _hold(self, key: Key, creds: ClientCredentials, p: Progress, since: float) -> None:
        """Lucid is down: no call; the grant waits for the gate to reopen, which wakes it."""
        assert p.state is not None
        live = p.state.access_expires_at if p.state.access_token else None
        self.gates.park(key, creds, live, p.state.access_token)
        p.facts = replace(p.facts, retry_at=None)
        p.say(Reason.PROVIDER_UNAVAILABLE, unavailable_message(since))

    async def _refresh(
        self, key: Key, record: GrantRecord, snap: Snapshot, p: Progress, *, adopt: bool
    ) -> bool:
        """Gate -> lock -> the rate limit's turn -> Lucid -> store the rotated token -> what it
        means. True when the grant is held because Lucid is down (no call made)."""
        assert p.state is not None and snap.client is not None
        assert isinstance(snap.spec, GrantSpec)
        spec = snap.spec
        since = self.gates.closed_since(snap.client)
        if since is not None:
            self._hold(key, snap.client, p, since)
            return True
        adopting = digest(snap.bootstrap) if adopt and snap.bootstrap else None
        if adopt:
            log.info("grant %s/%s: adopting a new authorization", *key)
            p.facts = replace(p.facts, retry_at=None)
        locked = await self.refresher.lock(key, p.state)
        if isinstance(locked, LockWait):
            p.adoption_deferred = adopt
            if locked.until is not None:
                self.metrics.refreshes.labels("lock_busy").inc()
                p.next_at = locked.until + 0.5
            else:
                p.state = locked.fresh or p.state
                p.next_at = self.clock() + 0.2 + self.rand()
            return False
        # Each call's turn is taken under the lock, just before it, so that the time writes
        # take cannot bunch calls the bucket spaced out (an adoption's introspection too).
        turn = partial(self.gates.admit, snap.client, within=ADMIT_WITHIN)
        wait = await turn()
        since = self.gates.closed_since(snap.client)
        if wait or since is not None:
            p.state = await self.refresher.release(key, locked, {}) or locked
            if since is not None:
                self._hold(key, snap.client, p, since)
                return True
            p.adoption_deferred = adopt
            p.next_at = self.clock() + wait
            return False
        code = snap.bootstrap if adopt and spec.code_ref is not None else None
        result = await self.refresher.refresh(
            key,
            record.uid,
            locked,
            snap.client,
            refresh_token=None if code else (snap.bootstrap if adopt else locked.refresh_token),
            code=code,
            redirect_uri=spec.redirect_uri or "",
            adopting=adopting,
            turn=turn,
        )
        live = locked.access_expires_at if locked.access_token else None
        if isinstance(result, Failed):
            self.gates.observe(key, snap.client, result.error, live, None)
            await self._failed(key, record, spec, snap, result, p)
            return False
        self.gates.observe(key, snap.client, None, live, result.state.access_token)
        p.state = result.state
        self.metrics.refreshes.labels("success").inc()
        was_failing = p.facts.failures > 0
        p.facts = p.facts.after_success()
        p.next_at = routine_refresh_at(p.state, spec, record.jitter, self.clock())
        if adopt:
            await self.publisher.event(
                record.body, "Normal", Reason.AUTHORIZED, "Adopted a new authorization."
            )
        elif was_failing:
            await self.publisher.event(
                record.body, "Normal", EVENT_RECOVERED, "Refreshed again after failures."
            )
        p.announced = adopt or was_failing
        return False

    async def _failed(
        self,
        key: Key,
        record: GrantRecord,
        spec: GrantSpec,
        snap: Snapshot,
        failed: Failed,
        p: Progress,
    ) -> None:
        now = self.clock()
        verdict = after_failure(
            failed.error,
            spec,
            failed.state,
            p.facts,
            grant=key,
            adopting=failed.adopting,
            client_rv=snap.client_rv,
            now=now,
            rand=self.rand(),
            doubt_for=handover_window_left(now, self.took_lease_at),
        )
        if verdict.metric:
            self.metrics.refreshes.labels(verdict.metric).inc()
        p.facts = verdict.facts
        p.next_at = verdict.next_at
        if verdict.keeps_grant and verdict.reason is not None:
            p.problem = (verdict.reason, verdict.message)
        else:
            p.say(verdict.reason, verdict.message)
        if isinstance(failed.error, TransientError):
            log.warning("grant %s/%s: refresh failed: %s", *key, verdict.facts.last_error)
        elif verdict.reason is not None and verdict.reason.fatal:
            log.warning(
                "grant %s/%s: %s confirmed; a person must authorize again", *key, verdict.reason
            )
        if verdict.event:
            event = verdict.event
            await self.publisher.event(record.body, event.kind, event.reason, event.message)
        released = await self.refresher.release(key, failed.state, verdict.release)
        p.state = released or failed.state

    async def _clear_refresh_now(self, key: Key) -> None:
        patch = {"metadata": {"annotations": {REFRESH_NOW: None}}}
        try:
            self.cache.observe_grant(await self.kube.patch(grant_path(*key), patch))
        except KubeError as exc:
            log.warning("grant %s/%s: could not clear %s: %s", *key, REFRESH_NOW, exc)

    # -- the end: bookkeeping, status, metrics --------------------------------------------------

    async def _finish(self, key: Key, record: GrantRecord, p: Progress) -> float | None:
        """The one place where the grant's cached bookkeeping changes; then publish."""
        record.facts = p.facts
        if p.adoption_deferred and not (p.state and p.state.refresh_token):
            return p.next_at  # nothing to say yet: the adoption is tried when its wait ends
        try:
            return await self.publisher.publish(key, record, p)
        except (KubeError, OSError) as exc:
            log.warning("grant %s/%s: status not written: %s", *key, exc)
            retry = self.clock() + timing.backoff_delay(2, self.rand())
            return retry if p.next_at is None else min(p.next_at, retry)

    async def authorized(self, key: Key, redemption: Redemption, by: str | None) -> None:
        """Store a grant obtained by the web flow, under the refresh lock (`redemption` checks
        there that the grant still wants it and exchanges the code); `by` is who authorized,
        when an authenticating proxy said so."""
        record = self.cache.grants.get(key)
        creds = await self.client_credentials(key)
        if record is None or creds is None:
            raise KeyError(key)
        state = await self.store.current(record.body)
        await self.refresher.store_authorized(key, record.uid, state, creds, redemption)
        record.facts = record.facts.after_success()
        who = f"{by} authorized" if by else "A person authorized"
        await self.publisher.event(
            record.body, "Normal", Reason.AUTHORIZED, f"{who} the grant in the web flow."
        )
