"""What the world sees of a reconcile: the grant's status (only when it changed), the per-grant
metrics, and Kubernetes Events on transitions and failures (never per routine refresh).

Messages are built from fixed texts and names, never from tokens; the e2e tests scan every
event and status for every token the Lucid emulator issued."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lucidgrant.cache import Cache, Facts, GrantRecord, Key
from lucidgrant.decide import expiry_wake
from lucidgrant.grant import GrantSpec
from lucidgrant.kube import KubeClient, KubeError
from lucidgrant.metrics import Metrics
from lucidgrant.names import READY, REAUTH, Reason, events_path, grant_path
from lucidgrant.state_secret import GrantState
from lucidgrant.status import (
    Outcome,
    adoption_pending,
    authorize_command,
    awaiting_authorization,
    condition_of,
    desired_status,
    refresh_before_note,
    status_diff,
)
from lucidgrant.timing import rfc3339

log = logging.getLogger(__name__)

AuthorizationURL = Callable[[Mapping[str, Any]], str | None]


@dataclass
class Progress:
    """What this reconcile found and did so far; local to one reconcile, never cached."""

    facts: Facts
    state: GrantState | None = None
    consumer_written: bool = False
    problem: tuple[Reason, str] | None = None
    reauth: tuple[Reason, str] | None = None
    next_at: float | None = None
    suspended: bool = False
    # The bootstrap Secret holds a value (adopted or not): a grant that never held a token may
    # have an authorization on its way.
    bootstrap_given: bool = False
    # The reconcile posted an event of its own (Authorized, Recovered): Ready turning true is
    # that same transition and gets no second one.
    announced: bool = False
    # An adoption waited for the lock (another process is at the grant) or for its turn under
    # the rate limit: nothing was learnt, and a grant that never held a token would claim that
    # a person must act (ReauthorizationRequired) while its authorization is on its way.
    adoption_deferred: bool = False

    def say(self, reason: Reason | None, message: str) -> None:
        """A reason that needs a person goes to ReauthorizationRequired, others to Ready."""
        if reason is None:
            return
        if reason.needs_person:
            self.reauth = (reason, message)
        else:
            self.problem = (reason, message)


class Publisher:
    def __init__(
        self,
        kube: KubeClient,
        cache: Cache,
        metrics: Metrics,
        clock: Callable[[], float],
        authorization_url: AuthorizationURL = lambda grant: None,
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.metrics = metrics
        self.clock = clock
        self.authorization_url = authorization_url

    def outcome(self, key: Key, record: GrantRecord, p: Progress) -> Outcome:
        state = p.state
        kept = state if state and state.refresh_token else None
        spec = record.spec()
        reauth = p.reauth
        pending = None
        if reauth is None and state is not None and kept is None and isinstance(spec, GrantSpec):
            # Never held a token, whatever else Ready reports (a missing client Secret, ...): a
            # person must authorize, unless an authorization waits to be adopted.
            pending = adoption_pending(spec) if p.bootstrap_given else None
            reauth = None if pending else awaiting_authorization(spec)
        if reauth is not None:
            reauth = (reauth[0], f"{reauth[1]} Run: {authorize_command(*key)}")
        note = None
        if isinstance(spec, GrantSpec) and state is not None and state.access_token:
            note = refresh_before_note(spec, state.access_lifetime)
        return Outcome(
            access_expires_at=state.access_expires_at if state and state.access_token else None,
            refresh_expires_at=kept.refresh_expires_at if kept else None,
            refresh_expiry_source=kept.refresh_expiry_source if kept else None,
            last_refresh_at=state.last_refresh_at if state else None,
            scopes=state.scopes if state else (),
            user_id=state.user_id if state else None,
            account_id=state.account_id if state else None,
            consumer_written=p.consumer_written,
            problem=p.problem,
            reauth=reauth,
            next_refresh_at=None if p.suspended or (reauth and reauth[0].fatal) else p.next_at,
            failures=p.facts.failures,
            suspended=p.suspended,
            authorization_url=self.authorization_url(record.body) if reauth else None,
            state_known=state is not None,
            adoption_pending=pending,
            note=note,
        )

    async def publish(self, key: tuple[str, str], record: GrantRecord, p: Progress) -> float | None:
        """Set the metrics and, if it changed, write the status (with an event per changed
        condition). Answer when the grant wants to run again: a grant that just turned Ready
        with nothing else to do wakes when its token expires, so that Ready turns false on
        time."""
        now = self.clock()
        outcome = self.outcome(key, record, p)
        self.metrics.set_grant(
            *key,
            access_expires_at=outcome.access_expires_at,
            refresh_expires_at=outcome.refresh_expires_at,
            last_refresh_at=outcome.last_refresh_at,
            ready=outcome.ready(now),
            reauth_reason=outcome.reauth[0] if outcome.reauth else None,
            failures=outcome.failures,
            suspended=outcome.suspended,
        )
        current = record.body.get("status") or {}
        desired = desired_status(outcome, current, record.generation, now, rfc3339)
        patch = status_diff(current, desired)
        if patch is None:
            return p.next_at
        await self._announce(key, record.body, current, desired, p.announced)
        body = await self.kube.patch(grant_path(*key, "status"), {"status": patch})
        self.cache.observe_grant({**record.body, "status": body.get("status", desired)})
        if p.next_at is None and outcome.ready(now):
            return expiry_wake(p.state, now)
        return p.next_at

    async def _announce(
        self,
        key: Key,
        grant: Mapping[str, Any],
        current: Mapping[str, Any],
        desired: Mapping[str, Any],
        announced: bool,
    ) -> None:
        """A log line for every condition that changes its status or reason, and one Event per
        transition: a reason both conditions take at once (Ready=False and
        ReauthorizationRequired=True, InvalidGrant) is posted once."""
        reauth = condition_of(desired, REAUTH) or {}
        url = self.authorization_url(grant) if reauth.get("status") == "True" else None
        posted: set[str] = set()
        for type_ in (READY, REAUTH):
            old = condition_of(current, type_)
            new = condition_of(desired, type_)
            if new is None or (
                old and (old.get("status"), old.get("reason")) == (new["status"], new["reason"])
            ):
                continue
            fine = new["status"] == ("True" if type_ == READY else "False")
            log.log(
                logging.INFO if fine else logging.WARNING,
                "grant %s/%s: %s=%s %s: %s",
                *key,
                type_,
                new["status"],
                new["reason"],
                new["message"],
            )
            if type_ == READY and new["status"] == "True" and (announced or not old):
                continue  # announced as Authorized or Recovered
            if (type_ == REAUTH and new["status"] != "True") or new["reason"] in posted:
                continue
            posted.add(new["reason"])
            kind = "Normal" if (type_ == READY) == (new["status"] == "True") else "Warning"
            message = str(new["message"])
            if url and new["reason"] == reauth.get("reason"):
                message = f"{message} (or open {url})"
            await self.event(grant, kind, str(new["reason"]), message)

    async def event(self, grant: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """Post an Event about the grant; worth a try, never a failure of the reconcile."""
        meta = grant["metadata"]
        namespace = meta["namespace"]
        stamp = rfc3339(self.clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": grant.get("apiVersion"),
                "kind": grant.get("kind"),
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "lucidgrant"},
            "reportingComponent": "lucidgrant.dev/operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.kube.create(events_path(namespace), body)
        except (KubeError, OSError) as exc:
            log.warning(
                "could not post event %s for %s/%s: %s", reason, namespace, meta["name"], exc
            )
