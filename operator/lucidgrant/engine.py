"""The reconcile of one grant: everything from "this grant woke up" to "status written",
including where a refresh starts (`Engine._refresh`). Data flows one way: cache -> decision ->
Lucid -> state Secret (first) -> consumer Secret -> status, metrics and events.

The scheduler guarantees that one process never reconciles the same grant twice at once; the
lock in the state Secret extends that to every process."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lucidgrant import timing
from lucidgrant.cache import Cache, GrantRecord, Key
from lucidgrant.events import post_event
from lucidgrant.grant import OFFLINE_ACCESS, GrantSpec, SpecError
from lucidgrant.kube import JSON_PATCH, ConflictError, Kube, KubeError
from lucidgrant.lucid import (
    ClientCredentials,
    ClientRejectedError,
    InvalidGrantError,
    LucidClient,
    LucidError,
    PartialAnswerError,
    ScopesRejectedError,
    TokenSet,
    TransientError,
)
from lucidgrant.metrics import Metrics
from lucidgrant.names import (
    ANN_ACCESS_EXPIRES,
    ANN_BOOTSTRAP,
    ANN_CONSUMER,
    ANN_DEAD,
    ANN_REFRESH_EXPIRES,
    ANN_REFRESH_LIFETIME,
    ANN_REFRESH_SOURCE,
    FINALIZER,
    READY,
    REAUTH,
    REFRESH_NOW,
    Reason,
    grant_path,
    secret_path,
    state_secret_name,
)
from lucidgrant.status import (
    Outcome,
    awaiting_authorization,
    condition_of,
    dead_grant,
    desired_status,
    status_diff,
)
from lucidgrant.store import (
    REFRESH_TOKEN_LIFETIME,
    GrantState,
    LockBusyError,
    StateStore,
    consumer_conflict,
    consumer_data,
    digest,
    parse_state,
    secret_value,
    token_annotations,
    write_consumer,
)
from lucidgrant.timing import rfc3339

log = logging.getLogger(__name__)

# One invalid_grant alone is weak evidence (users report flaky ones): confirm after this delay.
CONFIRM_DELAY = 2.0
REVOKE_ATTEMPTS = 3


@dataclass
class Step:
    """The running result of a reconcile, turned into an Outcome at the end."""

    state: GrantState | None = None
    consumer_written: bool = False
    problem: tuple[str, str] | None = None
    reauth: tuple[str, str] | None = None
    next_at: float | None = None
    refreshed: bool = False


class Engine:
    def __init__(
        self,
        kube: Kube,
        lucid: LucidClient,
        cache: Cache,
        metrics: Metrics,
        *,
        holder: str,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        authorization_url: Callable[[Mapping[str, Any]], str | None] = lambda grant: None,
        confirm_delay: float = CONFIRM_DELAY,
    ) -> None:
        self.kube = kube
        self.lucid = lucid
        self.cache = cache
        self.metrics = metrics
        self.store = StateStore(
            kube, holder, on_store_failure=metrics.refreshes.labels("store_error").inc
        )
        self.clock = clock
        self.rand = rand
        self.authorization_url = authorization_url
        self.confirm_delay = confirm_delay

    # -- reading through the cache ---------------------------------------------------------

    async def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret from the cache; read from the API server only the first time it matters."""
        key = (namespace, name)
        known, secret = self.cache.secret(key)
        if known:
            return secret
        fetched = await self.kube.get(secret_path(namespace, name))
        if fetched is None:
            self.cache.secrets[key] = None
            return None
        self.cache.observe_secret(fetched)
        # The watch may have brought a newer version while we read.
        return self.cache.secret(key)[1] or fetched

    async def client_credentials(self, key: Key) -> ClientCredentials | None:
        """The grant's client credentials from its client Secret (for the authorization flow)."""
        record = self.cache.grants.get(key)
        spec = record.spec() if record is not None else None
        if not isinstance(spec, GrantSpec):
            return None
        secret = await self._secret(key[0], spec.client_secret_name)
        client_id = secret_value(secret, spec.client_id_key)
        client_secret = secret_value(secret, spec.client_secret_key)
        if not client_id or not client_secret:
            return None
        return ClientCredentials(client_id, client_secret)

    def _remember(self, secret: dict[str, Any]) -> GrantState:
        self.cache.observe_secret(secret)
        return parse_state(secret)

    # -- the reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: Key) -> float | None:
        """Bring one grant up to date; return when it wants to run again (None: on events only)."""
        record = self.cache.grants.get(key)
        if record is None:
            return None
        if record.body["metadata"].get("deletionTimestamp"):
            await self._finalize(key, record)
            return None
        spec = record.spec()
        step = Step()
        if isinstance(spec, SpecError):
            step.problem = ("InvalidSpec", f"The spec is invalid: {spec}")
            await self._publish(key, record, step, suspended=False)
            return None
        await self._sync_finalizer(record, spec)
        if spec.suspend:
            step.state = await self._state(key, record)
            step.consumer_written = False
            await self._publish(key, record, step, suspended=True)
            return None
        try:
            await self._work(key, record, spec, step)
        except (KubeError, OSError) as exc:
            self.metrics.refreshes.labels("store_error").inc()
            what = exc if isinstance(exc, KubeError) else type(exc).__name__
            log.warning("grant %s/%s: Kubernetes API call failed: %s; retrying", *key, what)
            step.problem = ("KubernetesUnavailable", "A Kubernetes API call failed; retrying.")
            step.next_at = self.clock() + timing.backoff_delay(2, self.rand())
        try:
            await self._publish(key, record, step, suspended=False)
        except (KubeError, OSError) as exc:
            log.warning("grant %s/%s: status not written: %s", *key, exc)
            retry = self.clock() + timing.backoff_delay(2, self.rand())
            step.next_at = retry if step.next_at is None else min(step.next_at, retry)
        return step.next_at

    async def _state(self, key: Key, record: GrantRecord) -> GrantState:
        secret = await self._secret(key[0], state_secret_name(key[1]))
        if secret is None:
            secret = await self.store.create(record.body)
        return self._remember(secret)

    async def _client(
        self, key: Key, spec: GrantSpec, step: Step
    ) -> tuple[ClientCredentials, str] | None:
        secret = await self._secret(key[0], spec.client_secret_name)
        client_id = secret_value(secret, spec.client_id_key)
        client_secret = secret_value(secret, spec.client_secret_key)
        if secret is None or not client_id or not client_secret:
            missing = (
                "Secret"
                if secret is None
                else f"keys {spec.client_id_key}/{spec.client_secret_key} in Secret"
            )
            step.problem = (
                "MissingSecret",
                f"The client {missing} {spec.client_secret_name!r} is missing or empty.",
            )
            return None
        rv = str(secret["metadata"].get("resourceVersion", ""))
        return ClientCredentials(client_id, client_secret), rv

    async def _work(self, key: Key, record: GrantRecord, spec: GrantSpec, step: Step) -> None:
        state = step.state = await self._state(key, record)
        client = await self._client(key, spec, step)
        if client is None:
            step.next_at = self._expiry_wake(state)
            await self._sync_consumer(key, record, spec, step)
            return
        creds, client_rv = client
        if record.client_rejected_rv is not None:
            if record.client_rejected_rv == client_rv:
                step.problem = (
                    "ClientRejected",
                    f"Lucid rejected the client credentials in Secret {spec.client_secret_name!r}; "
                    "fix them there (the next change is tried at once).",
                )
                step.next_at = self._expiry_wake(state)
                await self._sync_consumer(key, record, spec, step)
                return
            record.client_rejected_rv = None
        bootstrap = await self._bootstrap_value(key, spec)
        if bootstrap is not None and digest(bootstrap) != state.bootstrap_digest:
            await self._adopt(key, record, spec, creds, state, bootstrap, step)
        elif state.dead_reason:
            step.reauth = dead_grant(state.dead_reason, spec)
        elif state.refresh_token is None:
            step.reauth = awaiting_authorization(spec)
        else:
            await self._maybe_refresh(key, record, spec, creds, step)
        if (
            step.state
            and step.state.refresh_token
            and not step.state.dead_reason
            and not step.reauth
        ):
            missing = set(spec.scopes) - set(step.state.scopes) - {OFFLINE_ACCESS}
            if missing and step.state.scopes:
                step.reauth = (
                    "ScopesChanged",
                    f"The grant lacks scopes {', '.join(sorted(missing))}: a refresh can never "
                    "widen scopes, so a person must authorize again.",
                )
        await self._sync_consumer(key, record, spec, step)

    def _expiry_wake(self, state: GrantState | None) -> float | None:
        """Wake when the access token expires, so that Ready turns false on time."""
        if state and state.access_expires_at and state.access_expires_at > self.clock():
            return state.access_expires_at + 0.5
        return None

    async def _bootstrap_value(self, key: Key, spec: GrantSpec) -> str | None:
        ref = spec.bootstrap_ref
        if ref is None:
            return None
        return secret_value(await self._secret(key[0], ref.name), ref.key) or None

    # -- refreshing ------------------------------------------------------------------------

    async def _maybe_refresh(
        self, key: Key, record: GrantRecord, spec: GrantSpec, creds: ClientCredentials, step: Step
    ) -> None:
        state = step.state
        assert state is not None
        now = self.clock()
        forced = REFRESH_NOW in (record.body["metadata"].get("annotations") or {})
        due = self.due_at(record, spec, state)
        if record.retry_at is not None and not forced:
            due = record.retry_at
        if forced or now >= due:
            await self._refresh(key, record, spec, creds, step, state.refresh_token or "")
            if forced:
                await self._clear_refresh_now(key)
        else:
            step.next_at = due
            if record.last_error:
                step.problem = ("ProviderUnavailable", record.last_error)

    def due_at(self, record: GrantRecord, spec: GrantSpec, state: GrantState) -> float:
        if state.access_expires_at is None or not state.access_token:
            return self.clock()
        lifetime = state.access_lifetime or 3600.0
        return timing.refresh_due_at(
            state.access_expires_at, lifetime, spec.refresh_before, record.jitter
        )

    async def _locked(self, key: Key, state: GrantState, step: Step) -> GrantState | None:
        """Take the single-flight lock; None (with step.next_at set) if someone else has it."""
        now = self.clock()
        try:
            return self._remember(await self.store.acquire_lock(*key, state, now))
        except LockBusyError as busy:
            self.metrics.refreshes.labels("lock_busy").inc()
            step.next_at = busy.until + 0.5
        except ConflictError:
            # Our copy was stale: re-read and try again shortly (the watch may also bring it).
            fresh = await self.store.read(*key)
            if fresh is not None:
                step.state = self._remember(fresh)
            step.next_at = now + 0.2 + self.rand()
        return None

    async def _refresh(
        self,
        key: Key,
        record: GrantRecord,
        spec: GrantSpec,
        creds: ClientCredentials,
        step: Step,
        refresh_token: str,
        *,
        adopt_digest: str | None = None,
        code: str | None = None,
    ) -> None:
        """Where a refresh starts: lock, call Lucid, store the rotated token first, then the rest.
        With `code`, the same path exchanges an authorization code instead."""
        assert step.state is not None
        locked = await self._locked(key, step.state, step)
        if locked is None:
            return
        step.state = locked
        try:
            if code is not None:
                tokens = await self.lucid.exchange_code(creds, code, spec.redirect_uri or "")
            else:
                tokens = await self._refresh_confirmed(key, creds, refresh_token, adopt_digest)
        except PartialAnswerError as exc:
            # Lucid rotated: keep its refresh token, then fail like any transient error.
            ann: dict[str, str | None] = {ANN_ACCESS_EXPIRES: f"{self.clock():.3f}"}
            if adopt_digest is not None:
                ann.update({ANN_BOOTSTRAP: adopt_digest, ANN_DEAD: None})
            saved = await self.store.save_rotation(
                *key, step.state.resource_version, exc.refresh_token, None, ann
            )
            step.state = self._remember(saved)
            await self._failed(key, record, spec, creds, step, exc, None)
            return
        except LucidError as exc:
            await self._failed(key, record, spec, creds, step, exc, adopt_digest)
            return
        await self._rotated(key, record, spec, step, tokens, adopt_digest)

    async def _refresh_confirmed(
        self, key: Key, creds: ClientCredentials, refresh_token: str, adopt_digest: str | None
    ) -> TokenSet:
        """Refresh. One invalid_grant is weak evidence (users report flaky ones), so before it is
        believed: re-read the stored token (another writer may have rotated it), ask Lucid's
        introspection whether the token is alive (then the answer was flaky: retry later), and
        try once more after a short pause."""
        try:
            return await self.lucid.refresh(creds, refresh_token)
        except InvalidGrantError:
            if adopt_digest is None:
                fresh = await self.store.read(*key)
                if fresh is not None:
                    stored = self._remember(fresh)
                    if stored.refresh_token and stored.refresh_token != refresh_token:
                        raise _RotatedElsewhereError("the stored refresh token changed") from None
            if await self._reported_alive(creds, refresh_token):
                raise TransientError(
                    "Lucid answered invalid_grant for a refresh token its introspection "
                    "reports active"
                ) from None
            await asyncio.sleep(self.confirm_delay)
            return await self.lucid.refresh(creds, refresh_token)

    async def _reported_alive(self, creds: ClientCredentials, token: str) -> bool:
        """Whether introspection says the token is active; False when it cannot tell."""
        try:
            return (await self.lucid.introspect(creds, token)).active
        except LucidError:
            return False

    async def _rotated(
        self,
        key: Key,
        record: GrantRecord,
        spec: GrantSpec,
        step: Step,
        tokens: TokenSet,
        adopt_digest: str | None,
    ) -> None:
        assert step.state is not None
        # Every refresh brings a new refresh token with a full lifetime: Lucid's documented one,
        # or the one introspection showed when the grant was adopted.
        lifetime = step.state.refresh_lifetime or REFRESH_TOKEN_LIFETIME
        annotations = token_annotations(tokens, tokens.issued_at + lifetime, "Issued")
        if adopt_digest is not None:
            annotations[ANN_BOOTSTRAP] = adopt_digest
        # The first duty: the rotated refresh token exists nowhere else.
        saved = await self.store.save_rotation(
            *key,
            step.state.resource_version,
            tokens.refresh_token,
            tokens.access_token,
            annotations,
        )
        step.state = self._remember(saved)
        step.refreshed = True
        self.metrics.refreshes.labels("success").inc()
        was_failing = record.failures > 0
        record.failures = 0
        record.retry_at = None
        record.last_error = None
        if adopt_digest is not None:
            await self._introspect_expiry(key, spec, tokens)
        step.next_at = self.due_at(record, spec, step.state)
        if was_failing:
            await post_event(
                self.kube,
                record.body,
                "Normal",
                "Recovered",
                "Refreshed again after failures.",
                self.clock(),
            )

    async def _introspect_expiry(self, key: Key, spec: GrantSpec, tokens: TokenSet) -> None:
        """On import, learn the refresh token's real expiry from Lucid instead of assuming it."""
        assert spec is not None
        secret = await self._secret(key[0], spec.client_secret_name)
        creds = ClientCredentials(
            secret_value(secret, spec.client_id_key) or "",
            secret_value(secret, spec.client_secret_key) or "",
        )
        try:
            info = await self.lucid.introspect(creds, tokens.refresh_token)
            source, expires = "Introspection", info.expires_at
        except LucidError:
            source, expires = "Assumed", None
        if expires is None:
            source = "Assumed"
        ann = {ANN_REFRESH_SOURCE: source}
        if expires is not None:
            ann[ANN_REFRESH_EXPIRES] = f"{expires:.3f}"
            ann[ANN_REFRESH_LIFETIME] = f"{expires - tokens.issued_at:.3f}"
        saved = await self.store.annotate(*key, None, ann)
        self._remember(saved)

    async def _failed(
        self,
        key: Key,
        record: GrantRecord,
        spec: GrantSpec,
        creds: ClientCredentials,
        step: Step,
        exc: LucidError,
        adopt_digest: str | None,
    ) -> None:
        assert step.state is not None
        state = step.state
        now = self.clock()
        release: dict[str, str | None] = {}
        if adopt_digest is not None and not isinstance(exc, TransientError | ClientRejectedError):
            release[ANN_BOOTSTRAP] = adopt_digest  # this bootstrap value is used up
        if isinstance(exc, _RotatedElsewhereError):
            step.next_at = now
        elif isinstance(exc, InvalidGrantError | ScopesRejectedError):
            reason = "ScopesRejected" if isinstance(exc, ScopesRejectedError) else "InvalidGrant"
            self.metrics.refreshes.labels(exc.reason).inc()
            if adopt_digest is not None and state.refresh_token and not state.dead_reason:
                # A refused new authorization does not kill the grant we already hold.
                step.problem = (
                    reason,
                    "The new authorization was refused; the previous grant is kept.",
                )
                step.next_at = now
                await post_event(
                    self.kube, record.body, "Warning", "AuthorizationRefused", step.problem[1], now
                )
            else:
                release[ANN_DEAD] = reason
                step.reauth = dead_grant(reason, spec)
                log.warning(
                    "grant %s/%s: %s confirmed; a person must authorize again", *key, reason
                )
        elif isinstance(exc, ClientRejectedError):
            self.metrics.refreshes.labels(exc.reason).inc()
            record.failures += 1
            secret = await self._secret(key[0], spec.client_secret_name)
            record.client_rejected_rv = str(
                (secret or {}).get("metadata", {}).get("resourceVersion", "")
            )
            step.problem = (
                "ClientRejected",
                f"Lucid rejected the client credentials in Secret {spec.client_secret_name!r}.",
            )
            step.next_at = self._expiry_wake(state)
            await post_event(
                self.kube, record.body, "Warning", "ClientRejected", step.problem[1], now
            )
        else:
            assert isinstance(exc, TransientError)
            self.metrics.refreshes.labels(exc.reason).inc()
            record.failures += 1
            record.last_error = f"{exc} (attempt {record.failures}); retrying with backoff."
            if timing.refresh_token_exhausted(now, state.refresh_expires_at):
                release[ANN_DEAD] = "RefreshTokenExpired"
                step.reauth = dead_grant("RefreshTokenExpired", spec)
            else:
                record.retry_at = timing.retry_at(
                    now, record.failures, self.rand(), exc.retry_after, state.access_expires_at
                )
                step.next_at = record.retry_at
                step.problem = ("ProviderUnavailable", record.last_error)
            log.warning("grant %s/%s: refresh failed: %s", *key, record.last_error)
            if record.failures == 1:
                await post_event(self.kube, record.body, "Warning", "RefreshFailing", str(exc), now)
        released = await self.store.release_lock(*key, state.resource_version, release)
        if released is not None:
            step.state = self._remember(released)

    async def _adopt(
        self,
        key: Key,
        record: GrantRecord,
        spec: GrantSpec,
        creds: ClientCredentials,
        state: GrantState,
        value: str,
        step: Step,
    ) -> None:
        """A new bootstrap value (first authorization, or a person authorized again)."""
        log.info("grant %s/%s: adopting a new authorization", *key)
        record.retry_at = None
        if spec.code_ref is not None:
            await self._refresh(
                key, record, spec, creds, step, "", adopt_digest=digest(value), code=value
            )
        else:
            await self._refresh(key, record, spec, creds, step, value, adopt_digest=digest(value))
        if step.refreshed:
            await post_event(
                self.kube,
                record.body,
                "Normal",
                "Authorized",
                "Adopted a new authorization.",
                self.clock(),
            )

    async def adopt_tokens(self, key: Key, tokens: TokenSet) -> None:
        """Store a grant obtained outside the refresh path (the authorization web flow): under
        the same lock as a refresh, so it cannot race one. The caller wakes the grant after."""
        record = self.cache.grants.get(key)
        if record is None:
            raise KeyError(key)
        state = await self._state(key, record)
        locked: GrantState | None = None
        for _ in range(20):
            try:
                locked = self._remember(await self.store.acquire_lock(*key, state, self.clock()))
                break
            except LockBusyError:
                await asyncio.sleep(1.0)
            except ConflictError:
                pass
            fresh = await self.store.read(*key)
            state = self._remember(fresh) if fresh is not None else state
        if locked is None:
            raise LockBusyError(self.clock())
        annotations = token_annotations(tokens, tokens.issued_at + REFRESH_TOKEN_LIFETIME, "Issued")
        saved = await self.store.save_rotation(
            *key, locked.resource_version, tokens.refresh_token, tokens.access_token, annotations
        )
        self._remember(saved)
        record.failures = 0
        record.retry_at = None
        record.last_error = None
        spec = record.spec()
        if isinstance(spec, GrantSpec):
            await self._introspect_expiry(key, spec, tokens)
        await post_event(
            self.kube,
            record.body,
            "Normal",
            "Authorized",
            "A person authorized the grant.",
            self.clock(),
        )

    async def _clear_refresh_now(self, key: Key) -> None:
        patch = {"metadata": {"annotations": {REFRESH_NOW: None}}}
        try:
            body = await self.kube.patch(grant_path(*key), patch)
            self.cache.observe_grant(body)
        except KubeError as exc:
            log.warning("grant %s/%s: could not clear %s: %s", *key, REFRESH_NOW, exc)

    # -- the consumer Secret ------------------------------------------------------------------

    async def _sync_consumer(
        self, key: Key, record: GrantRecord, spec: GrantSpec, step: Step
    ) -> None:
        """Make the consumer Secret hold the stored access token (after a refresh, or when it was
        deleted, renamed or tampered with); remove an old owned one after a rename."""
        state = step.state
        if state is None or not state.access_token or state.access_expires_at is None:
            return
        consumer = spec.consumer
        existing = await self._secret(key[0], consumer.name)
        if existing is not None:
            why = consumer_conflict(existing, record.uid)
            if why:
                step.problem = (
                    "SecretConflict",
                    f"Secret {consumer.name!r} cannot be written: {why}. Name another Secret.",
                )
                return
        data = consumer_data(
            consumer, state.access_token, state.access_expires_at, state.token_type
        )
        current = (existing or {}).get("data") or {}
        if existing is None or any(current.get(k) != v for k, v in data.items()):
            try:
                written = await write_consumer(self.kube, record.body, consumer, existing, data)
            except ConflictError:
                step.next_at = self.clock()
                return
            self.cache.observe_secret(written)
            why = consumer_conflict(written, record.uid)
            if why:  # it appeared between our read and write, owned by someone else
                step.problem = (
                    "SecretConflict",
                    f"Secret {consumer.name!r} cannot be written: {why}.",
                )
                return
        step.consumer_written = True
        if state.consumer_name != consumer.name:
            await self._forget_old_consumer(key, record, state.consumer_name)
            saved = await self.store.annotate(*key, None, {ANN_CONSUMER: consumer.name})
            step.state = self._remember(saved)

    async def _forget_old_consumer(self, key: Key, record: GrantRecord, old: str | None) -> None:
        if not old:
            return
        secret = await self._secret(key[0], old)
        owned = any(
            ref.get("uid") == record.uid
            for ref in (secret or {}).get("metadata", {}).get("ownerReferences") or []
        )
        if secret is not None and owned:
            await self.kube.delete(secret_path(key[0], old))

    # -- deletion ------------------------------------------------------------------------------

    async def _sync_finalizer(self, record: GrantRecord, spec: GrantSpec) -> None:
        """Only grants with deletionPolicy Revoke carry our finalizer: the others need nothing
        done at deletion (owned Secrets go by garbage collection)."""
        finalizers = list(record.body["metadata"].get("finalizers") or [])
        want = spec.deletion_policy == "Revoke"
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self._patch_finalizers(record, finalizers, new)

    async def _patch_finalizers(self, record: GrantRecord, old: list[str], new: list[str]) -> None:
        meta = record.body["metadata"]
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

    async def _finalize(self, key: Key, record: GrantRecord) -> None:
        finalizers = list(record.body["metadata"].get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        spec = record.spec()
        state_secret = await self._secret(key[0], state_secret_name(key[1]))
        state = parse_state(state_secret) if state_secret else None
        if isinstance(spec, GrantSpec) and state and state.refresh_token and not state.dead_reason:
            secret = await self._secret(key[0], spec.client_secret_name)
            creds = ClientCredentials(
                secret_value(secret, spec.client_id_key) or "",
                secret_value(secret, spec.client_secret_key) or "",
            )
            for attempt in range(1, REVOKE_ATTEMPTS + 1):
                try:
                    await self.lucid.revoke(creds, state.refresh_token)
                    log.info("grant %s/%s: revoked at Lucid", *key)
                    break
                except LucidError as exc:
                    log.warning("grant %s/%s: revoke attempt %d failed: %s", *key, attempt, exc)
                    await asyncio.sleep(min(2.0**attempt, 10.0))
        try:
            await self._patch_finalizers(
                record, finalizers, [f for f in finalizers if f != FINALIZER]
            )
        except KubeError as exc:
            log.warning("grant %s/%s: finalizer not removed yet: %s", *key, exc)

    # -- status, metrics and events ----------------------------------------------------------

    async def _publish(self, key: Key, record: GrantRecord, step: Step, *, suspended: bool) -> None:
        now = self.clock()
        state = step.state
        outcome = Outcome(
            access_expires_at=state.access_expires_at if state and state.access_token else None,
            refresh_expires_at=state.refresh_expires_at if state and state.refresh_token else None,
            refresh_expiry_source=state.refresh_expiry_source
            if state and state.refresh_token
            else None,
            last_refresh_at=state.last_refresh_at if state else None,
            scopes=state.scopes if state else (),
            user_id=state.user_id if state else None,
            account_id=state.account_id if state else None,
            consumer_written=step.consumer_written,
            problem=step.problem,
            reauth=step.reauth,
            next_refresh_at=None
            if suspended or (step.reauth and Reason(step.reauth[0]).fatal)
            else step.next_at,
            failures=record.failures,
            suspended=suspended,
            authorization_url=self.authorization_url(record.body) if step.reauth else None,
        )
        current = record.body.get("status") or {}
        desired = desired_status(outcome, current, record.generation, now, rfc3339)
        patch = status_diff(current, desired)
        self.metrics.set_grant(
            *key,
            access_expires_at=outcome.access_expires_at,
            refresh_expires_at=outcome.refresh_expires_at,
            last_refresh_at=outcome.last_refresh_at,
            ready=outcome.ready(now),
            reauth_reason=outcome.reauth[0] if outcome.reauth else None,
            failures=outcome.failures,
            suspended=suspended,
        )
        if patch is None:
            return
        await self._announce(record, current, desired, now)
        body = await self.kube.patch(grant_path(*key, "status"), {"status": patch})
        record.body = {**record.body, "status": body.get("status", desired)}
        self.cache.observe_grant(record.body)
        if step.next_at is None and outcome.ready(now):
            step.next_at = self._expiry_wake(state)

    async def _announce(
        self,
        record: GrantRecord,
        current: Mapping[str, Any],
        desired: Mapping[str, Any],
        now: float,
    ) -> None:
        """An event when a condition changes its reason (transitions only)."""
        reauth = condition_of(desired, REAUTH) or {}
        url = self.authorization_url(record.body) if reauth.get("status") == "True" else None
        for type_ in (READY, REAUTH):
            old = condition_of(current, type_)
            new = condition_of(desired, type_)
            if new is None or (
                old and (old.get("status"), old.get("reason")) == (new["status"], new["reason"])
            ):
                continue
            if type_ == READY and new["status"] == "True" and not old:
                continue  # the first Ready is announced as Authorized
            if type_ == REAUTH and new["status"] == "False":
                continue
            kind = "Normal" if (type_ == READY) == (new["status"] == "True") else "Warning"
            message = str(new["message"])
            if url and new["reason"] == reauth.get("reason"):
                message = f"{message} Authorize at {url}."
            await post_event(self.kube, record.body, kind, str(new["reason"]), message, now)


class _RotatedElsewhereError(LucidError):
    """The stored refresh token changed under us: someone else refreshed; just run again."""

    reason = "rotated_elsewhere"
