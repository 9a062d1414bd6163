"""Status and conditions: what a LucidGrant's status should say, and the smallest merge patch
that makes it say so (None when nothing changed, so routine work writes nothing extra)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lucidgrant import timing
from lucidgrant.grant import GrantSpec, format_duration
from lucidgrant.names import READY, REAUTH, Reason


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown, the operator cannot tell
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def merge_conditions(
    current: list[Mapping[str, Any]], desired: list[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """Conditions in the metav1.Condition shape; lastTransitionTime moves only when the status
    flips, as Kubernetes conventions ask."""
    by_type = {c.get("type"): c for c in current}
    result = []
    for cond in desired:
        status = cond.status_text
        old = by_type.get(cond.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        result.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        )
    return result


def condition_of(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def authorize_command(namespace: str, name: str) -> str:
    """The command that gives a grant a new authorization, for messages that need a person."""
    return f"kubectl lucidgrant authorize {name} -n {namespace}"


def adoption_pending(spec: GrantSpec) -> str | None:
    """What to say of a grant that never held a token while its bootstrap Secret holds a
    value (None without a bootstrap Secret)."""
    ref = spec.bootstrap_ref
    if ref is None:
        return None
    return (
        f"No grant held yet: the authorization in Secret {ref.name!r} key {ref.key!r} is not "
        "adopted yet; Ready says what it waits for."
    )


def awaiting_authorization(spec: GrantSpec) -> tuple[Reason, str]:
    """ReauthorizationRequired's reason and message for a grant that never held a token and
    has no authorization on its way: a person must authorize once."""
    ref = spec.bootstrap_ref
    what = "code" if spec.code_ref else "refresh token"
    where = (
        f"puts a {what} in Secret {ref.name!r} key {ref.key!r}"
        if ref
        else "sets spec.authorization"
    )
    return (
        Reason.AWAITING_AUTHORIZATION,
        f"No grant held yet: a person must authorize the Lucid app once, which {where}.",
    )


def refresh_before_note(spec: GrantSpec, lifetime: float | None) -> str | None:
    """What to say when spec.refreshBefore is capped at a third of the access token's lifetime
    (timing.refresh_margin), which the grant's owner would not otherwise know."""
    if not lifetime:
        return None
    margin = timing.refresh_margin(spec.refresh_before, lifetime)
    if margin >= spec.refresh_before:
        return None
    return (
        f"spec.refreshBefore ({format_duration(spec.refresh_before)}) is more than a third of "
        f"the access token's lifetime ({format_duration(lifetime)}), so refreshes happen "
        f"{format_duration(margin)} before expiry instead; set it to {format_duration(margin)} "
        "or less to match."
    )


def client_rejected_message(spec: GrantSpec) -> str:
    """Why the client is refused and where to fix it (Lucid answered 401, 403 or
    invalid_client)."""
    return (
        f"Lucid rejected the client id and secret in Secret {spec.client_secret_name!r} (keys "
        f"{spec.client_id_key!r} and {spec.client_secret_key!r}): correct them there, and check "
        "that the Lucid app is still enabled; a change to the Secret is tried at once."
    )


_DEAD = {
    Reason.INVALID_GRANT: "Lucid refused the refresh token (revoked, or rotated away)",
    Reason.REFRESH_TOKEN_EXPIRED: "The refresh token expired",
    Reason.SCOPES_REJECTED: (
        "Lucid refused the scopes of spec.scopes (invalid_scopes); after fixing them, or the "
        "scopes the Lucid app may request"
    ),
}


def dead_grant(reason: str, spec: GrantSpec) -> tuple[Reason, str]:
    """ReauthorizationRequired's reason and message for a grant Lucid no longer honours;
    `reason` is as stored on the state Secret (an unknown one reads as InvalidGrant)."""
    ref = spec.bootstrap_ref
    how = f" and put the new value in Secret {ref.name!r} key {ref.key!r}" if ref else ""
    known = Reason.of(reason)
    if known is None or known not in _DEAD:
        return (Reason.INVALID_GRANT, f"The grant is no longer valid: authorize again{how}.")
    return (known, f"{_DEAD[known]}: authorize again{how}.")


@dataclass(frozen=True)
class Outcome:
    """What one reconcile of a grant found, for status, metrics and events.

    `problem` is why the grant is not (or soon not) fine, as (reason, message); `reauth` is set
    when only a person can help. Reasons are fixed CamelCase words."""

    access_expires_at: float | None = None
    refresh_expires_at: float | None = None
    refresh_expiry_source: str | None = None
    last_refresh_at: float | None = None
    scopes: tuple[str, ...] = ()
    user_id: str | None = None
    account_id: str | None = None
    consumer_written: bool = False
    problem: tuple[Reason, str] | None = None
    reauth: tuple[Reason, str] | None = None
    next_refresh_at: float | None = None
    failures: int = 0
    suspended: bool = False
    authorization_url: str | None = None
    # False when the state Secret was not read (an invalid spec, an API failure): whether the
    # grant holds an authorization is then unknown.
    state_known: bool = True
    # Set (a message) when the grant never held a token and its bootstrap Secret holds a value
    # not adopted yet: whether a person must act is unknown until it is tried, and an alert
    # that fires at once must not page anyone while it is on its way.
    adoption_pending: str | None = None
    # Said after Ready=True's message (e.g. a refreshBefore capped at a third of the lifetime).
    note: str | None = None

    def ready(self, now: float) -> bool:
        # A dead grant's access token is revoked with it.
        dead = self.reauth is not None and self.reauth[0].fatal
        return (
            not dead
            and not self.suspended
            and self.consumer_written
            and self.access_expires_at is not None
            and self.access_expires_at > now
        )


def conditions_for(outcome: Outcome, now: float, stamp: Any) -> list[Condition]:
    """Ready says whether pods have a live token now; ReauthorizationRequired whether a person
    must act. A provider outage makes Ready false once the token expires, never Reauth true."""
    if outcome.ready(now):
        until = stamp(outcome.access_expires_at)
        message = f"The Secret holds an access token valid until {until}."
        if outcome.note:
            message += f" {outcome.note}"
        if outcome.problem:
            reason, text = outcome.problem
            lead = "A new authorization was refused" if reason.needs_person else "Refreshing fails"
            message += f" {lead} ({reason}): {text}"
        ready = Condition(READY, True, Reason.REFRESHED, message)
    elif outcome.suspended:
        ready = Condition(
            READY,
            False,
            Reason.SUSPENDED,
            "spec.suspend is true: no refreshes until it is false; the access token expires.",
        )
    elif outcome.problem:
        ready = Condition(READY, False, outcome.problem[0], outcome.problem[1])
    elif outcome.reauth:
        ready = Condition(READY, False, outcome.reauth[0], outcome.reauth[1])
    elif outcome.adoption_pending:
        ready = Condition(READY, False, Reason.AWAITING_AUTHORIZATION, outcome.adoption_pending)
    else:
        ready = Condition(
            READY, False, Reason.ACCESS_TOKEN_EXPIRED, "The access token expired; a refresh is due."
        )
    if outcome.reauth:
        reauth = Condition(REAUTH, True, outcome.reauth[0], outcome.reauth[1])
    elif not outcome.state_known:
        why = outcome.problem[0] if outcome.problem else Reason.KUBERNETES_UNAVAILABLE
        message = (
            "Not known while the spec is invalid: the operator reads no Secret of such a grant. "
            "Fix the field that Ready names."
            if why is Reason.INVALID_SPEC
            else f"Not known: the grant's state Secret could not be read ({why}); retrying."
        )
        reauth = Condition(REAUTH, None, why, message)
    elif outcome.adoption_pending:
        why = outcome.problem[0] if outcome.problem else Reason.AWAITING_AUTHORIZATION
        reauth = Condition(REAUTH, None, why, outcome.adoption_pending)
    else:
        reauth = Condition(
            REAUTH, False, Reason.AUTHORIZED, "The operator holds a grant (a refresh token)."
        )
    return [ready, reauth]


def desired_status(
    outcome: Outcome,
    current: Mapping[str, Any] | None,
    generation: int,
    now: float,
    stamp: Any,
) -> dict[str, Any]:
    """The whole operator-owned status for an outcome; `stamp` formats a Unix time as RFC 3339."""

    def ts(value: float | None) -> str | None:
        return None if value is None else stamp(value)

    conditions = merge_conditions(
        list((current or {}).get("conditions") or []),
        conditions_for(outcome, now, stamp),
        generation,
        stamp(now),
    )
    return {
        "observedGeneration": generation,
        "conditions": conditions,
        "accessTokenExpiresAt": ts(outcome.access_expires_at),
        "refreshTokenExpiresAt": ts(outcome.refresh_expires_at),
        "refreshTokenExpirySource": outcome.refresh_expiry_source,
        "lastRefreshTime": ts(outcome.last_refresh_at),
        "nextRefreshTime": ts(outcome.next_refresh_at),
        "grantedScopes": list(outcome.scopes) or None,
        "lucidUserId": outcome.user_id,
        "lucidAccountId": outcome.account_id,
        "consecutiveFailures": outcome.failures,
        "authorizationURL": outcome.authorization_url if outcome.reauth else None,
    }


def _without_times(conditions: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions or []]


def _same_conditions(a: Any, b: Any) -> bool:
    return _without_times(a) == _without_times(b)


def status_diff(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `desired`; a None value deletes the field."""
    current = current or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key == "conditions":
            if not _same_conditions(current.get(key), value):
                patch[key] = value
        elif current.get(key) != value:
            if value is None and key not in current:
                continue
            patch[key] = value
    return patch or None
