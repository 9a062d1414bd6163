"""What to do next with one grant: pure functions of an immutable snapshot, no I/O.

`decide` runs a chain of policies, each `policy(snapshot) -> Decision | None`, in order; the
first that answers wins (the shape of cert-manager's certificate trigger policies). The order
is the priority: a grant being deleted is finalized whatever else is true, a broken spec is
reported before any Secret is read, and so on down to "not due yet". `missing_scopes` says
whether the grant still covers its spec; what a failed refresh means is failures.py's.

Because everything here is a function of its arguments (the clock and the dice included), the
tests drive every reason and transition in a table, without a cluster, Lucid or sleeping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from lucidgrant import timing
from lucidgrant.cache import Facts
from lucidgrant.grant import OFFLINE_ACCESS, GrantSpec, SpecError
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.names import Reason
from lucidgrant.secretdata import digest, mark_command
from lucidgrant.state_secret import GrantState
from lucidgrant.status import awaiting_authorization, client_rejected_message, dead_grant

# Without a stored lifetime, Lucid's documented one.
DEFAULT_ACCESS_LIFETIME = 3600.0


class Action(Enum):
    FINALIZE = "finalize"  # the grant is being deleted: revoke if asked, drop the finalizer
    REPORT = "report"  # only say why in status (invalid spec)
    SUSPEND = "suspend"  # spec.suspend: status only, no refresh, no Secret writes
    HOLD = "hold"  # the client Secret is unusable: keep the consumer Secret, wait for a change
    ADOPT = "adopt"  # a new authorization arrived: exchange or refresh it under the lock
    AWAIT_PERSON = "await-person"  # only a person can help: stop calling Lucid
    REFRESH = "refresh"
    WAIT = "wait"  # nothing due: come back at `at`


@dataclass(frozen=True)
class Snapshot:
    """What is known about one grant at one moment. Fields the decision before them made
    unnecessary stay at their defaults (an invalid spec reads no Secret)."""

    now: float
    spec: GrantSpec | SpecError
    facts: Facts = field(default_factory=Facts)
    deleting: bool = False
    refresh_now: bool = False
    jitter: float = 0.0
    state: GrantState | None = None
    client: ClientCredentials | None = None
    client_secret_found: bool = False
    # Which of the client Secret's two keys hold no value (when it exists but is unusable).
    client_keys_missing: tuple[str, ...] = ()
    client_rv: str | None = None
    bootstrap: str | None = field(default=None, repr=False)
    # A referenced client or bootstrap Secret nobody marked for lucidgrant:
    # (spec field, namespace, name).
    unmarked: tuple[str, str, str] | None = None
    # Why a Secret named like the state Secret is not this grant's (it is never adopted).
    state_conflict: str | None = None


@dataclass(frozen=True)
class Decision:
    """`reason` and `message` are what status says about it (None: nothing to say yet)."""

    action: Action
    reason: Reason | None = None
    message: str = ""
    at: float | None = None


Policy = Callable[[Snapshot], Decision | None]


def _valid(snap: Snapshot) -> GrantSpec:
    assert isinstance(snap.spec, GrantSpec), "policies after spec_invalid see a valid spec"
    return snap.spec


def being_deleted(snap: Snapshot) -> Decision | None:
    return Decision(Action.FINALIZE) if snap.deleting else None


def spec_invalid(snap: Snapshot) -> Decision | None:
    if isinstance(snap.spec, SpecError):
        return Decision(Action.REPORT, Reason.INVALID_SPEC, f"The spec is invalid: {snap.spec}")
    return None


def state_not_ours(snap: Snapshot) -> Decision | None:
    if snap.state_conflict is None:
        return None
    return Decision(Action.REPORT, Reason.SECRET_CONFLICT, snap.state_conflict)


def suspended(snap: Snapshot) -> Decision | None:
    if _valid(snap).suspend:
        return Decision(Action.SUSPEND, Reason.SUSPENDED, "spec.suspend is true: no refreshes.")
    return None


def secret_not_marked(snap: Snapshot) -> Decision | None:
    if snap.unmarked is None:
        return None
    where, namespace, name = snap.unmarked
    message = (
        f"The Secret {name!r} ({where}) is not marked for lucidgrant, so nothing in it is read: "
        f"if it is meant for this grant, make it an Opaque Secret and run "
        f"`{mark_command(namespace, name)}`."
    )
    return Decision(Action.HOLD, Reason.SECRET_NOT_MARKED, message)


def client_missing(snap: Snapshot) -> Decision | None:
    if snap.client is not None:
        return None
    spec = _valid(snap)
    name = spec.client_secret_name
    if not snap.client_secret_found:
        message = (
            f"The client Secret {name!r} (spec.clientSecretRef.name) does not exist: create it "
            f"in this namespace with the Lucid app's client id under key {spec.client_id_key!r} "
            f"and its client secret under key {spec.client_secret_key!r}."
        )
        return Decision(Action.HOLD, Reason.MISSING_SECRET, message)
    roles = {
        spec.client_id_key: ("clientIdKey", "client id"),
        spec.client_secret_key: ("clientSecretKey", "client secret"),
    }
    missing = snap.client_keys_missing or tuple(roles)
    fields = " and ".join(roles[k][0] for k in missing)
    if len(missing) == 1:
        (key,) = missing
        message = (
            f"The client Secret {name!r} has no value under key {key!r} "
            f"(spec.clientSecretRef.{roles[key][0]}): put the {roles[key][1]} there, or set "
            f"{fields} to the key that holds it."
        )
    else:
        message = (
            f"The client Secret {name!r} has no values under keys "
            f"{' and '.join(repr(k) for k in missing)} (spec.clientSecretRef.{fields}): put the "
            f"client id and secret there, or set {fields} to the keys that hold them."
        )
    return Decision(Action.HOLD, Reason.MISSING_SECRET, message)


def client_rejected(snap: Snapshot) -> Decision | None:
    """Lucid refused these very credentials: wait for the client Secret to change."""
    if snap.facts.client_rejected_rv is None or snap.facts.client_rejected_rv != snap.client_rv:
        return None
    return Decision(Action.HOLD, Reason.CLIENT_REJECTED, client_rejected_message(_valid(snap)))


def new_authorization(snap: Snapshot) -> Decision | None:
    """A bootstrap value not adopted yet: the first authorization, or a person authorized again
    (that also revives a dead grant)."""
    assert snap.state is not None
    if snap.bootstrap is not None and digest(snap.bootstrap) != snap.state.bootstrap_digest:
        return Decision(Action.ADOPT)
    return None


def grant_dead(snap: Snapshot) -> Decision | None:
    assert snap.state is not None
    if snap.state.dead_reason:
        reason, message = dead_grant(snap.state.dead_reason, _valid(snap))
        return Decision(Action.AWAIT_PERSON, reason, message)
    return None


def never_authorized(snap: Snapshot) -> Decision | None:
    assert snap.state is not None
    if snap.state.refresh_token is None:
        reason, message = awaiting_authorization(_valid(snap))
        return Decision(Action.AWAIT_PERSON, reason, message)
    return None


def refresh_forced(snap: Snapshot) -> Decision | None:
    return Decision(Action.REFRESH) if snap.refresh_now else None


def refresh_due(snap: Snapshot) -> Decision | None:
    """Due at the routine time, or at the retry time after a failure; until then, wait (and
    keep saying that refreshing fails, if it does)."""
    at = next_refresh_at(snap)
    if snap.now >= at:
        return Decision(Action.REFRESH)
    if snap.facts.last_error:
        return Decision(Action.WAIT, Reason.PROVIDER_UNAVAILABLE, snap.facts.last_error, at)
    return Decision(Action.WAIT, at=at)


POLICIES: tuple[Policy, ...] = (
    being_deleted,
    spec_invalid,
    state_not_ours,
    suspended,
    secret_not_marked,
    client_missing,
    client_rejected,
    new_authorization,
    grant_dead,
    never_authorized,
    refresh_forced,
    refresh_due,
)


def decide(snap: Snapshot, policies: tuple[Policy, ...] = POLICIES) -> Decision:
    for policy in policies:
        decision = policy(snap)
        if decision is not None:
            return decision
    raise AssertionError("refresh_due always answers")


def facts_for(snap: Snapshot) -> Facts:
    """The bookkeeping the reconcile starts from: a changed client Secret is tried at once."""
    if snap.facts.client_rejected_rv not in (None, snap.client_rv):
        return replace(snap.facts, client_rejected_rv=None)
    return snap.facts


# -- times ----------------------------------------------------------------------------------


def routine_refresh_at(state: GrantState, spec: GrantSpec, jitter: float, now: float) -> float:
    """When the stored access token wants refreshing (now, when there is none)."""
    if state.access_expires_at is None or not state.access_token:
        return now
    lifetime = state.access_lifetime or DEFAULT_ACCESS_LIFETIME
    return timing.refresh_due_at(state.access_expires_at, lifetime, spec.refresh_before, jitter)


def next_refresh_at(snap: Snapshot) -> float:
    assert snap.state is not None
    if snap.facts.retry_at is not None:
        return snap.facts.retry_at
    return routine_refresh_at(snap.state, _valid(snap), snap.jitter, snap.now)


def expiry_wake(state: GrantState | None, now: float) -> float | None:
    """Wake when the access token expires, so that Ready turns false on time."""
    if state and state.access_expires_at and state.access_expires_at > now:
        return state.access_expires_at + 0.5
    return None


# -- after the action -----------------------------------------------------------------------


def missing_scopes(spec: GrantSpec, state: GrantState) -> tuple[Reason, str] | None:
    """ScopesChanged when the spec asks for scopes the stored grant lacks."""
    if not state.refresh_token or state.dead_reason or not state.scopes:
        return None
    missing = set(spec.scopes) - set(state.scopes) - {OFFLINE_ACCESS}
    if not missing:
        return None
    return (
        Reason.SCOPES_CHANGED,
        f"The grant lacks scopes {', '.join(sorted(missing))}: a refresh can never widen scopes, "
        "so a person must authorize again.",
    )
