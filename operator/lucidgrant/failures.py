"""What a failure means, as pure functions: `after_failure` for a failed refresh,
`after_kube_error` for a Kubernetes API call that failed anywhere in a reconcile.

A failed refresh's meaning is a pure function of the failure, the state it happened in and
the grant's facts, deciding what the operator writes as it releases the lock (a dead grant is
marked on the state Secret, a used-up bootstrap value remembered), what status says, when to
try again, and which event and metric to emit. The refresh path (refresh.py) has already
confirmed an invalid_grant before it gets here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from lucidgrant import timing
from lucidgrant.cache import Facts
from lucidgrant.decide import expiry_wake
from lucidgrant.grant import GrantSpec
from lucidgrant.kube import KubeError, NotFoundError
from lucidgrant.lucid_answers import (
    ClientRejectedError,
    InvalidGrantError,
    LucidError,
    ScopesRejectedError,
    TransientError,
)
from lucidgrant.names import (
    ANN_BOOTSTRAP,
    ANN_DEAD,
    EVENT_AUTHORIZATION_REFUSED,
    EVENT_REFRESH_FAILING,
    Reason,
    secret_of_path,
)
from lucidgrant.state_secret import GrantState
from lucidgrant.status import authorize_command, client_rejected_message, dead_grant


class RotatedElsewhereError(LucidError):
    """The stored refresh token changed under us: someone else refreshed; just run again."""

    reason = "rotated_elsewhere"


@dataclass(frozen=True)
class Event:
    kind: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class AfterFailure:
    """What a failed refresh means: the annotations to write as the lock is released, what
    status says (a reason that needs a person goes to ReauthorizationRequired), when to try
    again, the bookkeeping to keep, an event, and the refresh-result metric label."""

    facts: Facts
    release: Mapping[str, str | None] = field(default_factory=dict)
    reason: Reason | None = None
    message: str = ""
    next_at: float | None = None
    event: Event | None = None
    metric: str | None = None
    # The failure concerns a new authorization only: the grant held before lives on, so the
    # reason goes to Ready, not to ReauthorizationRequired.
    keeps_grant: bool = False


def refused_authorization(error: LucidError, spec: GrantSpec, grant: tuple[str, str]) -> str:
    """Why a new authorization was not adopted, and how to replace it."""
    ref = spec.bootstrap_ref
    where = f" in Secret {ref.name!r} key {ref.key!r}" if ref else ""
    status = f" (HTTP {error.status})" if error.status else ""
    return (
        f"{error}{status} for the new authorization{where}: the grant held before is kept and "
        f"still refreshed. To replace it, authorize again: {authorize_command(*grant)}"
    )


def after_failure(
    error: LucidError,
    spec: GrantSpec,
    state: GrantState,
    facts: Facts,
    *,
    grant: tuple[str, str],
    adopting: str | None,
    client_rv: str | None,
    now: float,
    rand: float,
    doubt_for: float = 0.0,
) -> AfterFailure:
    """`grant` is (namespace, name); `adopting` is the digest of the bootstrap value being
    adopted (None for a routine refresh). One invalid_grant is not enough: the refresh path
    has confirmed it already. `doubt_for`: seconds during which even a confirmed invalid_grant
    is retried, not believed (soon after a leader handover, the old leader's write-ahead log
    may still bring the live token)."""
    if isinstance(error, InvalidGrantError) and doubt_for > 0 and adopting is None:
        error = TransientError(
            "invalid_grant soon after this replica took over; checked again once the previous "
            "leader could replay its write-ahead log",
            retry_after=doubt_for,
        )
    release: dict[str, str | None] = {}
    if adopting is not None and not isinstance(error, TransientError | ClientRejectedError):
        release[ANN_BOOTSTRAP] = adopting  # this bootstrap value is used up
    if isinstance(error, RotatedElsewhereError):
        return AfterFailure(facts, release, next_at=now)
    if isinstance(error, InvalidGrantError | ScopesRejectedError):
        reason = (
            Reason.SCOPES_REJECTED
            if isinstance(error, ScopesRejectedError)
            else Reason.INVALID_GRANT
        )
        if adopting is not None and state.refresh_token and not state.dead_reason:
            # A refused new authorization does not kill the grant we already hold.
            message = refused_authorization(error, spec, grant)
            event = Event("Warning", EVENT_AUTHORIZATION_REFUSED, message)
            return AfterFailure(
                facts, release, reason, message, now, event, error.reason, keeps_grant=True
            )
        release[ANN_DEAD] = reason
        reason, message = dead_grant(reason, spec)
        return AfterFailure(facts, release, reason, message, metric=error.reason)
    failures = facts.failures + 1
    if isinstance(error, ClientRejectedError):
        message = client_rejected_message(spec)
        return AfterFailure(
            replace(facts, failures=failures, client_rejected_rv=client_rv),
            release,
            Reason.CLIENT_REJECTED,
            message,
            expiry_wake(state, now),
            Event("Warning", Reason.CLIENT_REJECTED, message),
            error.reason,
        )
    assert isinstance(error, TransientError)
    last_error = f"{error} (attempt {failures}); retrying with backoff."
    failing = Event("Warning", EVENT_REFRESH_FAILING, str(error)) if failures == 1 else None
    facts = replace(facts, failures=failures, last_error=last_error)
    if timing.refresh_token_exhausted(now, state.refresh_expires_at):
        release[ANN_DEAD] = Reason.REFRESH_TOKEN_EXPIRED
        reason, message = dead_grant(Reason.REFRESH_TOKEN_EXPIRED, spec)
        return AfterFailure(facts, release, reason, message, None, failing, error.reason)
    retry = timing.retry_at(now, failures, rand, error.retry_after, state.access_expires_at)
    return AfterFailure(
        replace(facts, retry_at=retry),
        release,
        Reason.PROVIDER_UNAVAILABLE,
        last_error,
        retry,
        failing,
        error.reason,
    )


@dataclass(frozen=True)
class AfterKubeError:
    """What status says, when to run again, and which Secret the cache must forget."""

    reason: Reason
    message: str
    next_at: float
    evict: tuple[str, str] | None = None


def after_kube_error(exc: KubeError | OSError, *, now: float, rand: float) -> AfterKubeError:
    if isinstance(exc, KubeError) and exc.status == 422 and exc.fields:
        # The server refused what we wrote: not an outage, and no retry will pass alone.
        return AfterKubeError(
            Reason.INVALID_SPEC,
            f"The API server refused a write as invalid ({exc}; fields "
            f"{', '.join(sorted(set(exc.fields)))}); check the names, labels and "
            "annotations in the spec.",
            now + timing.backoff_delay(6, rand),
        )
    # A Secret the cache held is gone (its deletion fell in a watch gap): read it afresh and
    # run again soon.
    gone = secret_of_path(exc.path) if isinstance(exc, NotFoundError) else None
    return AfterKubeError(
        Reason.KUBERNETES_UNAVAILABLE,
        "A Kubernetes API call failed; retrying.",
        now + timing.backoff_delay(0 if gone else 2, rand),
        gone,
    )
