from typing import Any

from lucidgrant.names import Reason
from lucidgrant.status import Outcome, condition_of, desired_status, status_diff
from lucidgrant.timing import rfc3339

NOW = 1_800_000_000.0


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = condition_of(status, type_)
    assert found is not None
    return dict(found)


def status_for(outcome, current=None):
    return desired_status(outcome, current, 3, NOW, rfc3339)


def test_ready_when_token_valid_and_written():
    st = status_for(Outcome(access_expires_at=NOW + 100, consumer_written=True))
    ready = cond(st, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Refreshed"
    assert ready["observedGeneration"] == 3
    assert cond(st, "ReauthorizationRequired")["status"] == "False"


def test_outage_is_not_reauthorization():
    outage = Outcome(
        access_expires_at=NOW - 5,
        consumer_written=True,
        problem=(Reason.PROVIDER_UNAVAILABLE, "503"),
    )
    st = status_for(outage)
    assert cond(st, "Ready")["reason"] == "ProviderUnavailable"
    assert cond(st, "ReauthorizationRequired")["status"] == "False"


def test_reauth_shows_link():
    st = status_for(
        Outcome(reauth=(Reason.INVALID_GRANT, "authorize again"), authorization_url="https://x/a")
    )
    assert cond(st, "ReauthorizationRequired")["status"] == "True"
    assert st["authorizationURL"] == "https://x/a"


def test_no_patch_when_nothing_changed_and_transition_time_kept():
    outcome = Outcome(access_expires_at=NOW + 100, consumer_written=True)
    first = status_for(outcome)
    later = desired_status(outcome, first, 3, NOW + 50, rfc3339)
    assert status_diff(first, later) is None
    assert (
        later["conditions"][0]["lastTransitionTime"] == first["conditions"][0]["lastTransitionTime"]
    )


def test_patch_carries_only_changes_and_deletes():
    before = status_for(
        Outcome(reauth=(Reason.INVALID_GRANT, "x"), authorization_url="https://x/a")
    )
    after = status_for(Outcome(access_expires_at=NOW + 100, consumer_written=True), before)
    patch = status_diff(before, after)
    assert patch is not None
    assert patch["authorizationURL"] is None
    assert "observedGeneration" not in patch


def test_messages_tell_a_person_where_to_put_the_new_authorization():
    from lucidgrant.grant import parse_spec
    from lucidgrant.status import awaiting_authorization, dead_grant

    spec = parse_spec(
        {
            "clientSecretRef": {"name": "client"},
            "scopes": ["a"],
            "authorization": {"refreshTokenSecretRef": {"name": "boot", "key": "rt"}},
            "accessTokenSecret": {"name": "tok"},
        }
    )
    reason, message = awaiting_authorization(spec)
    assert reason == "AwaitingAuthorization" and "'boot' key 'rt'" in message
    reason, message = dead_grant("RefreshTokenExpired", spec)
    assert reason == "RefreshTokenExpired" and "authorize again" in message and "'boot'" in message
    assert dead_grant("something-else", spec)[0] == "InvalidGrant"
