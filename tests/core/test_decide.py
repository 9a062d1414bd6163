"""The decision chain, table-driven: every reason of the condition table (Ready and
ReauthorizationRequired) and every transition the chain makes, as pure functions of a snapshot."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lucidgrant.cache import Facts
from lucidgrant.decide import (
    Action,
    Snapshot,
    decide,
    expiry_wake,
    facts_for,
    missing_scopes,
    next_refresh_at,
)
from lucidgrant.failures import RotatedElsewhereError, after_failure
from lucidgrant.grant import SpecError, parse_spec
from lucidgrant.lucid_answers import (
    ClientCredentials,
    ClientRejectedError,
    InvalidGrantError,
    PartialAnswerError,
    ScopesRejectedError,
    TransientError,
)
from lucidgrant.names import ANN_BOOTSTRAP, ANN_DEAD, Reason
from lucidgrant.secretdata import digest
from lucidgrant.state_secret import GrantState

NOW = 1_800_000_000.0
CREDS = ClientCredentials("id", "secret")


def spec(**extra: Any):
    body = {
        "clientSecretRef": {"name": "client"},
        "scopes": ["a.b"],
        "authorization": {"refreshTokenSecretRef": {"name": "boot"}},
        "accessTokenSecret": {"name": "tok"},
        **extra,
    }
    return parse_spec(body)


HEALTHY = GrantState(
    resource_version="7",
    refresh_token="rt",
    access_token="at",
    access_expires_at=NOW + 3000,
    access_lifetime=3600,
    refresh_expires_at=NOW + 86400 * 100,
    scopes=("a.b", "offline_access"),
    bootstrap_digest=digest("boot-value"),
)


def snap(**changes: Any) -> Snapshot:
    base = Snapshot(
        now=NOW,
        spec=spec(),
        state=HEALTHY,
        client=CREDS,
        client_secret_found=True,
        client_rv="11",
        bootstrap="boot-value",
    )
    return replace(base, **changes)


def bad_spec() -> SpecError:
    try:
        spec(tokenKind="bot")
    except SpecError as exc:
        return exc
    raise AssertionError


DUE = NOW + 3000 - 600  # expiry minus refreshBefore (10m), no jitter

CHAIN = [
    # (case, snapshot changes, action, reason, message part, at)
    ("deleted", {"deleting": True, "spec": bad_spec()}, Action.FINALIZE, None, "", None),
    (
        "invalid spec",
        {"spec": bad_spec()},
        Action.REPORT,
        Reason.INVALID_SPEC,
        "spec.tokenKind",
        None,
    ),
    (
        "suspended",
        {"spec": spec(suspend=True), "client": None},
        Action.SUSPEND,
        Reason.SUSPENDED,
        "suspend",
        None,
    ),
    (
        "no client Secret",
        {"client": None, "client_secret_found": False},
        Action.HOLD,
        Reason.MISSING_SECRET,
        "Secret 'client' (spec.clientSecretRef.name) does not exist: create it",
        None,
    ),
    (
        "client keys empty",
        {"client": None},
        Action.HOLD,
        Reason.MISSING_SECRET,
        "keys 'client_id' and 'client_secret' (spec.clientSecretRef.clientIdKey and "
        "clientSecretKey): put the client id and secret there, or set clientIdKey and "
        "clientSecretKey to the keys that hold them.",
        None,
    ),
    (
        "client secret key empty",
        {"client": None, "client_keys_missing": ("client_secret",)},
        Action.HOLD,
        Reason.MISSING_SECRET,
        "no value under key 'client_secret' (spec.clientSecretRef.clientSecretKey): put the "
        "client secret there, or set clientSecretKey to the key that holds it.",
        None,
    ),
    (
        "client rejected",
        {"facts": Facts(client_rejected_rv="11")},
        Action.HOLD,
        Reason.CLIENT_REJECTED,
        "(keys 'client_id' and 'client_secret'): correct them there",
        None,
    ),
    (
        "client changed after rejection",
        {"facts": Facts(client_rejected_rv="10")},
        Action.WAIT,
        None,
        "",
        DUE,
    ),
    ("new bootstrap", {"bootstrap": "another"}, Action.ADOPT, None, "", None),
    (
        "new bootstrap revives a dead grant",
        {"bootstrap": "another", "state": replace(HEALTHY, dead_reason="InvalidGrant")},
        Action.ADOPT,
        None,
        "",
        None,
    ),
    (
        "dead: invalid_grant",
        {"state": replace(HEALTHY, dead_reason="InvalidGrant")},
        Action.AWAIT_PERSON,
        Reason.INVALID_GRANT,
        "Secret 'boot'",
        None,
    ),
    (
        "dead: refresh token expired",
        {"state": replace(HEALTHY, dead_reason="RefreshTokenExpired")},
        Action.AWAIT_PERSON,
        Reason.REFRESH_TOKEN_EXPIRED,
        "expired",
        None,
    ),
    (
        "dead: scopes rejected",
        {"state": replace(HEALTHY, dead_reason="ScopesRejected")},
        Action.AWAIT_PERSON,
        Reason.SCOPES_REJECTED,
        "scopes",
        None,
    ),
    (
        "dead: unknown stored reason",
        {"state": replace(HEALTHY, dead_reason="Gone")},
        Action.AWAIT_PERSON,
        Reason.INVALID_GRANT,
        "no longer valid",
        None,
    ),
    (
        "never authorized",
        {"state": GrantState("1"), "bootstrap": None},
        Action.AWAIT_PERSON,
        Reason.AWAITING_AUTHORIZATION,
        "authorize the Lucid app once",
        None,
    ),
    (
        "refresh-now",
        {"refresh_now": True, "facts": Facts(retry_at=NOW + 99)},
        Action.REFRESH,
        None,
        "",
        None,
    ),
    (
        "no access token yet",
        {"state": replace(HEALTHY, access_token=None)},
        Action.REFRESH,
        None,
        "",
        None,
    ),
    ("due", {"now": DUE}, Action.REFRESH, None, "", None),
    ("not due", {}, Action.WAIT, None, "", DUE),
    (
        "backing off",
        {"facts": Facts(failures=2, retry_at=NOW + 30, last_error="HTTP 503")},
        Action.WAIT,
        Reason.PROVIDER_UNAVAILABLE,
        "HTTP 503",
        NOW + 30,
    ),
    (
        "retry time reached",
        {"facts": Facts(failures=2, retry_at=NOW, last_error="HTTP 503")},
        Action.REFRESH,
        None,
        "",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "changes", "action", "reason", "text", "at"), CHAIN, ids=[c[0] for c in CHAIN]
)
def test_the_chain_picks_one_action(case, changes, action, reason, text, at):
    decision = decide(snap(**changes))
    assert decision.action is action, case
    assert decision.reason == reason
    assert text in decision.message
    assert decision.at == at


def test_a_changed_client_secret_is_tried_at_once_and_missing_scopes_are_reported():
    assert facts_for(snap(facts=Facts(client_rejected_rv="10"))).client_rejected_rv is None
    assert facts_for(snap(facts=Facts(client_rejected_rv="11"))).client_rejected_rv == "11"
    wider = spec(scopes=["a.b", "c.d"])
    reason, message = missing_scopes(wider, HEALTHY) or (None, "")
    assert reason is Reason.SCOPES_CHANGED and "c.d" in message
    assert missing_scopes(spec(), HEALTHY) is None
    assert missing_scopes(wider, replace(HEALTHY, dead_reason="InvalidGrant")) is None
    assert missing_scopes(wider, replace(HEALTHY, scopes=())) is None


def test_jitter_moves_the_routine_refresh_earlier_and_expiry_wakes_ready():
    assert next_refresh_at(snap(jitter=0.5)) == pytest.approx(DUE - 30)
    assert expiry_wake(HEALTHY, NOW) == NOW + 3000.5
    assert expiry_wake(replace(HEALTHY, access_expires_at=NOW - 1), NOW) is None


def failure(error, *, state=HEALTHY, facts=None, adopting=None):
    return after_failure(
        error,
        spec(),
        state,
        facts or Facts(),
        grant=("team", "reporting"),
        adopting=adopting,
        client_rv="11",
        now=NOW,
        rand=0.0,
    )


def test_transient_failures_back_off_and_announce_only_the_first():
    first = failure(TransientError("Lucid answered HTTP 503"))
    assert first.reason is Reason.PROVIDER_UNAVAILABLE
    assert first.facts.failures == 1 and first.facts.retry_at == first.next_at
    assert first.next_at == NOW + 1.0  # half of the first 2 s backoff, no jitter
    assert first.event is not None and first.event.reason == "RefreshFailing"
    assert first.metric == "transient_error" and first.release == {}
    second = failure(TransientError("again", retry_after=120), facts=first.facts)
    assert second.facts.failures == 2 and second.event is None
    assert second.next_at == NOW + 120  # Retry-After wins over a shorter backoff
    assert "(attempt 2)" in (second.facts.last_error or "")


def test_a_transient_failure_at_the_end_of_the_refresh_token_is_fatal():
    ending = replace(HEALTHY, refresh_expires_at=NOW + 30)
    verdict = failure(TransientError("HTTP 503"), state=ending)
    assert verdict.reason is Reason.REFRESH_TOKEN_EXPIRED and verdict.reason.fatal
    assert verdict.release == {ANN_DEAD: Reason.REFRESH_TOKEN_EXPIRED}
    assert verdict.next_at is None


def test_a_partial_answer_is_a_transient_failure():
    verdict = failure(PartialAnswerError("rt-new"))
    assert verdict.reason is Reason.PROVIDER_UNAVAILABLE and verdict.facts.failures == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InvalidGrantError("x"), Reason.INVALID_GRANT),
        (ScopesRejectedError("x"), Reason.SCOPES_REJECTED),
    ],
)
def test_a_confirmed_refusal_kills_the_grant(error, reason):
    verdict = failure(error)
    assert verdict.reason is reason and verdict.reason.needs_person
    assert verdict.release == {ANN_DEAD: reason}
    assert verdict.facts == Facts() and verdict.next_at is None


def test_a_refused_new_authorization_keeps_the_grant_held():
    verdict = failure(InvalidGrantError("x"), adopting="d1")
    assert verdict.reason is Reason.INVALID_GRANT
    assert not verdict.release.get(ANN_DEAD) and verdict.release[ANN_BOOTSTRAP] == "d1"
    assert verdict.next_at == NOW
    assert verdict.event is not None and verdict.event.reason == "AuthorizationRefused"
    never_held = failure(InvalidGrantError("x"), adopting="d1", state=GrantState("1"))
    assert never_held.release == {ANN_BOOTSTRAP: "d1", ANN_DEAD: Reason.INVALID_GRANT}


def test_client_rejected_waits_for_the_secret_to_change():
    verdict = failure(ClientRejectedError("x"), adopting="d1")
    assert verdict.reason is Reason.CLIENT_REJECTED
    assert verdict.facts.client_rejected_rv == "11" and verdict.facts.failures == 1
    assert verdict.next_at == (HEALTHY.access_expires_at or 0) + 0.5
    assert verdict.release == {}, "the bootstrap value is not used up by a client problem"


def test_rotated_elsewhere_runs_again_at_once():
    verdict = failure(RotatedElsewhereError("x"))
    assert verdict.next_at == NOW and verdict.reason is None and verdict.metric is None


def test_reasons_know_who_must_act():
    people = {r for r in Reason if r.needs_person}
    assert people == {
        Reason.AWAITING_AUTHORIZATION,
        Reason.INVALID_GRANT,
        Reason.REFRESH_TOKEN_EXPIRED,
        Reason.SCOPES_REJECTED,
        Reason.SCOPES_CHANGED,
    }
    assert {r for r in Reason if r.fatal} == people - {Reason.SCOPES_CHANGED}
    assert Reason.of("ScopesChanged") is Reason.SCOPES_CHANGED and Reason.of("Nope") is None
