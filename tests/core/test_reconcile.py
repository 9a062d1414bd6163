"""The refresh path in process: the real reconcile against an in-memory Kubernetes and Lucid
behind httpx.MockTransport, under a fake clock. Nothing sleeps; every wait moves the clock."""

from __future__ import annotations

from typing import Any

import pytest

from lucidgrant.kube import ConflictError
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.names import (
    ANN_LOCK_HOLDER,
    ANN_LOCK_UNTIL,
    FINALIZER,
    REFRESH_NOW,
    grant_path,
    secret_path,
    state_secret_name,
)
from lucidgrant.refresh import CONFIRM_DELAY
from lucidgrant.secretdata import b64
from lucidgrant.wal import RotationLog

from .world import NS, OPTED_IN, World, grant_body

STATE = secret_path(NS, state_secret_name("g"))
CONSUMER = secret_path(NS, "tok")


def writes(world: World) -> list[tuple[str, str]]:
    return [c for c in world.kube.calls if c[0] != "GET"]


async def test_adoption_stores_the_rotated_token_before_the_consumer_secret(world):
    world.authorized_grant()
    next_at = await world.reconcile()
    live = world.lucid.live_refresh_token()
    assert world.state().refresh_token == live, "the rotated refresh token is stored"
    assert world.secret("tok", "access_token") == f"at-{live}"
    order = [path for _, path in writes(world) if path in (STATE, CONSUMER)]
    stored = order.index(STATE, order.index(STATE) + 1)  # after the lock
    assert stored < order.index(CONSUMER)
    assert world.condition("Ready") == ("True", "Refreshed")
    assert world.condition("ReauthorizationRequired") == ("False", "Authorized")
    assert world.state().refresh_expiry_source == "Introspection"
    assert "Authorized" in world.event_reasons()
    assert world.grant()["status"]["lucidUserId"] == "1001"
    assert next_at == pytest.approx(world.state().access_expires_at - 600)
    assert world.refresh_calls() == 1
    # Not due: nothing is called, nothing is written.
    before = len(writes(world))
    assert await world.reconcile() == next_at
    assert world.refresh_calls() == 1 and len(writes(world)) == before


async def test_a_due_refresh_rotates_and_a_refresh_now_is_cleared(world):
    world.authorized_grant()
    due = await world.reconcile()
    assert due is not None
    world.clock.now = due
    await world.reconcile()
    assert world.lucid.grants[world.lucid.live_refresh_token()].rotations == 2
    assert world.state().refresh_token == world.lucid.live_refresh_token()
    body = grant_body()
    body["metadata"]["annotations"] = {REFRESH_NOW: "1"}
    world.put_grant(body)
    await world.reconcile()
    assert world.lucid.grants[world.lucid.live_refresh_token()].rotations == 3
    assert REFRESH_NOW not in world.grant()["metadata"].get("annotations", {})


async def test_a_routine_refresh_is_one_lucid_call_and_four_writes(world, tmp_path):
    """What a routine refresh costs, write-ahead log on: Lucid once; the lock, the rotation and
    the consumer Secret (three Secret PATCHes) and the status; nothing read."""
    wal = RotationLog(tmp_path)
    wal.open()
    logged = World(wal, restart_of=world)
    logged.authorized_grant()
    due = await logged.reconcile()
    assert due is not None
    logged.clock.now = due
    calls, lucid = len(world.kube.calls), len(world.lucid.requests)
    await logged.reconcile()
    assert [path for path, _ in world.lucid.requests[lucid:]] == ["/oauth2/token"]
    status = grant_path(NS, "g", "status")
    assert world.kube.calls[calls:] == [("PATCH", STATE)] * 2 + [
        ("PATCH", CONSUMER),
        ("PATCH", status),
    ]
    assert logged.condition("Ready") == ("True", "Refreshed")
    await logged.http.aclose()


async def test_code_bootstrap_is_exchanged(world):
    world.put_secret("client", {"client_id": "client-1", "client_secret": "secret-1"})
    world.put_secret("code", {"code": world.lucid.issue()})
    world.put_grant(
        grant_body(
            redirectUri="https://ops.test/callback",
            authorization={"codeSecretRef": {"name": "code"}},
        )
    )
    await world.reconcile()
    assert world.condition("Ready") == ("True", "Refreshed")
    (_, body), *_ = world.lucid.requests
    assert body["grant_type"] == "authorization_code"
    assert body["redirect_uri"] == "https://ops.test/callback"


async def test_invalid_grant_is_believed_only_after_a_reread_an_introspection_and_a_retry(world):
    world.authorized_grant()
    await world.reconcile()
    world.lucid.grants[world.lucid.live_refresh_token()].alive = False  # revoked at Lucid
    world.clock.slept.clear()
    calls = world.refresh_calls()
    world.clock.now += 3600
    assert await world.reconcile() is None
    assert world.refresh_calls() == calls + 2, "asked twice"
    assert world.lucid.calls("/oauth2/token/introspect") == 2  # adoption, then confirmation
    assert CONFIRM_DELAY in world.clock.slept
    assert world.state().dead_reason == "InvalidGrant"
    assert world.condition("ReauthorizationRequired") == ("True", "InvalidGrant")
    assert world.condition("Ready") == ("False", "InvalidGrant")
    assert world.grant()["status"]["authorizationURL"] == "https://ops.test/authorize"
    assert "nextRefreshTime" not in world.grant()["status"]
    # A dead grant is not called again, even when asked to; a new bootstrap value revives it.
    body = grant_body()
    body["metadata"]["annotations"] = {REFRESH_NOW: "1"}
    world.put_grant(body)
    await world.reconcile()
    assert world.refresh_calls() == calls + 2
    assert REFRESH_NOW not in world.grant()["metadata"].get("annotations", {})
    world.put_secret("boot", {"refresh_token": world.lucid.issue()})
    await world.reconcile()
    assert world.condition("ReauthorizationRequired") == ("False", "Authorized")
    assert world.state().dead_reason is None


async def test_an_invalid_grant_for_a_token_introspection_calls_active_is_transient(world):
    world.authorized_grant()
    due = await world.reconcile()
    world.lucid.script = [400]
    world.lucid.introspect_active = True
    world.clock.now = due or 0
    next_at = await world.reconcile()
    assert world.state().dead_reason is None
    assert world.condition("ReauthorizationRequired") == ("False", "Authorized")
    assert world.reconciler.cache.grants[(NS, "g")].facts.failures == 1
    assert next_at is not None and next_at > world.clock.now


async def test_rotated_elsewhere_is_not_invalid_grant(world):
    world.authorized_grant()
    await world.reconcile()
    ours = world.state().refresh_token

    def another_writer() -> None:
        """Between our lock and our call (our lock expired): someone rotated and stored."""
        grant = world.lucid.grants[world.lucid.live_refresh_token()]
        world.lucid.rotate(grant)
        stored = world.kube.objects[STATE]
        world.kube.put(STATE, {**stored, "data": {"refresh_token": b64(grant.refresh_token)}})

    world.lucid.before_token = another_writer
    world.clock.now += 3600
    next_at = await world.reconcile()
    assert next_at == world.clock.now, "runs again at once with the stored token"
    assert world.state().dead_reason is None and ours != world.state().refresh_token
    assert world.lucid.calls("/oauth2/token/introspect") == 1, "no confirmation needed"
    await world.reconcile()
    assert world.state().refresh_token == world.lucid.live_refresh_token()
    assert world.condition("Ready") == ("True", "Refreshed")


async def test_a_partial_answer_keeps_the_rotated_refresh_token(world):
    world.authorized_grant()
    due = await world.reconcile()
    world.lucid.partial = 1
    world.clock.now = due or 0
    retry = await world.reconcile()
    state = world.state()
    assert state.refresh_token == world.lucid.live_refresh_token(), "the rotation is kept"
    assert state.access_token is None and state.lock_holder is None
    world.clock.now = retry or 0
    await world.reconcile()
    assert world.secret("tok", "access_token") == f"at-{world.lucid.live_refresh_token()}"
    assert world.condition("Ready") == ("True", "Refreshed")


async def test_transient_failures_back_off_then_recover(world):
    world.authorized_grant()
    due = await world.reconcile()
    world.lucid.script = [503, 502]
    world.clock.now = due or 0
    first = await world.reconcile()
    assert first == world.clock.now + 1.0  # half of the first 2 s backoff (rand 0)
    assert world.condition("Ready") == ("True", "Refreshed"), "the token still works"
    assert "Refreshing fails (ProviderUnavailable)" in _ready_message(world)
    assert world.grant()["status"]["consecutiveFailures"] == 1
    assert world.state().lock_holder is None, "the lock is released"
    assert await world.reconcile() == first, "waits for the retry time"
    world.clock.now = first or 0
    second = await world.reconcile()
    assert second == world.clock.now + 2.0
    world.clock.now = second or 0
    await world.reconcile()
    assert world.grant()["status"]["consecutiveFailures"] == 0
    reasons = world.event_reasons()
    assert reasons.count("RefreshFailing") == 1 and "Recovered" in reasons


def _ready_message(world: World) -> str:
    (ready,) = [c for c in world.grant()["status"]["conditions"] if c["type"] == "Ready"]
    return str(ready["message"])


async def test_rejected_client_is_not_retried_until_its_secret_changes(world):
    world.authorized_grant()
    world.put_secret("client", {"client_id": "client-1", "client_secret": "wrong"})
    await world.reconcile()
    assert world.condition("Ready") == ("False", "ClientRejected")
    calls = world.refresh_calls()
    await world.reconcile()
    assert world.refresh_calls() == calls, "the same credentials are not tried again"
    world.put_secret("client", {"client_id": "client-1", "client_secret": "secret-1"})
    await world.reconcile()
    assert world.condition("Ready") == ("True", "Refreshed")


async def test_missing_client_secret_says_so(world):
    world.put_secret("boot", {"refresh_token": world.lucid.issue()})
    world.put_grant(grant_body())
    await world.reconcile()
    assert world.condition("Ready") == ("False", "MissingSecret")
    assert world.refresh_calls() == 0


async def test_a_held_lock_is_waited_for(world):
    world.authorized_grant()
    await world.reconcile()
    until = world.clock.now + 4000
    held = {ANN_LOCK_HOLDER: "other", ANN_LOCK_UNTIL: f"{until:.3f}"}
    mine = world.kube.objects[STATE]["metadata"]
    world.put_secret(
        state_secret_name("g"),
        {},
        annotations=held,
        labels=mine["labels"],
        ownerReferences=mine["ownerReferences"],
    )
    world.clock.now += 3500
    calls = world.refresh_calls()
    assert await world.reconcile() == pytest.approx(until + 0.5)
    assert world.refresh_calls() == calls
    assert world.metrics.refreshes.labels("lock_busy")._value.get() == 1


async def test_a_stale_cached_state_loses_the_lock_race_and_rereads(world):
    world.authorized_grant()
    await world.reconcile()
    world.kube.objects[STATE]["metadata"]["resourceVersion"] = "999"  # written elsewhere
    world.clock.now += 3500
    next_at = await world.reconcile()
    assert next_at == pytest.approx(world.clock.now + 0.2)
    assert (
        world.cache.secret((NS, state_secret_name("g")))[1]["metadata"]["resourceVersion"] == "999"
    )


async def test_consumer_secret_owned_by_another_controller_is_refused(world):
    world.authorized_grant()
    owner = {"kind": "Deployment", "name": "x", "uid": "other", "controller": True}
    world.put_secret("tok", {"keep": "me"}, ownerReferences=[owner], labels={})
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretConflict")
    assert world.secret("tok", "keep") == "me" and world.secret("tok", "access_token") is None


async def test_a_consumer_secret_created_meanwhile_is_merged_into(world):
    world.authorized_grant()

    def person_creates_it(method: str, path: str) -> None:
        if (method, path) == ("POST", CONSUMER) and CONSUMER not in world.kube.objects:
            meta = {"name": "tok", "labels": OPTED_IN}
            world.kube.put(CONSUMER, {"metadata": meta, "data": {"keep": b64("me")}})
            raise ConflictError(method, path, 409, "AlreadyExists")

    world.kube.fault = person_creates_it
    await world.reconcile()  # the create fails: it is read, then merged into
    await world.reconcile()
    assert world.condition("Ready") == ("True", "Refreshed")
    assert world.secret("tok", "keep") == "me"
    assert world.secret("tok", "access_token") == f"at-{world.lucid.live_refresh_token()}"


async def test_renamed_consumer_secret_moves(world):
    world.authorized_grant()
    await world.reconcile()
    body = grant_body(accessTokenSecret={"name": "renamed"})
    body["metadata"]["generation"] = 2
    world.put_grant(body)
    await world.reconcile()
    assert world.secret("renamed", "access_token")
    assert CONSUMER not in world.kube.objects
    assert world.state().consumer_name == "renamed"


async def test_kubernetes_outage_is_reported_and_retried(world):
    world.authorized_grant()

    def outage(method: str, path: str) -> None:
        if (method, path) == ("POST", CONSUMER):
            raise ConnectionRefusedError("down")

    world.kube.fault = outage
    next_at = await world.reconcile()
    assert world.condition("Ready") == ("False", "KubernetesUnavailable")
    assert next_at is not None and world.clock.now < next_at <= world.clock.now + 4


async def test_suspended_grant_is_left_alone(world):
    world.authorized_grant(suspend=True)
    assert await world.reconcile() is None
    assert world.refresh_calls() == 0
    assert world.condition("Ready") == ("False", "Suspended")
    assert world.metrics.suspended.labels(NS, "g")._value.get() == 1
    assert "nextRefreshTime" not in world.grant()["status"]
    assert CONSUMER not in world.kube.objects


async def test_scopes_beyond_the_grant_need_a_person_but_keep_working(world):
    world.authorized_grant(scopes=["a.b", "c.d"])
    next_at = await world.reconcile()
    assert world.condition("ReauthorizationRequired") == ("True", "ScopesChanged")
    assert world.condition("Ready") == ("True", "Refreshed")
    assert next_at is not None, "still refreshed"


async def test_invalid_spec_is_reported_without_reading_secrets(world):
    world.put_grant(grant_body(tokenKind="bot"))
    assert await world.reconcile() is None
    assert world.condition("Ready") == ("False", "InvalidSpec")
    assert [c for c in world.kube.calls if "/secrets" in c[1]] == []


async def test_deletion_with_revoke_revokes_then_lets_go(world):
    world.authorized_grant(deletionPolicy="Revoke")
    await world.reconcile()
    assert world.grant()["metadata"]["finalizers"] == [FINALIZER]
    live = world.lucid.live_refresh_token()
    body = dict(world.grant())
    body["metadata"] = {**body["metadata"], "deletionTimestamp": "2030-01-01T00:00:00Z"}
    world.cache.observe_grant(body)
    assert await world.reconcile() is None
    assert not world.lucid.grants[live].alive
    assert world.grant()["metadata"]["finalizers"] == []


async def test_deletion_gives_up_revoking_after_a_few_tries(world):
    world.authorized_grant(deletionPolicy="Revoke")
    await world.reconcile()
    world.lucid.client_secret = "rotated-at-lucid"  # every revoke is refused now
    body = dict(world.grant())
    body["metadata"] = {**body["metadata"], "deletionTimestamp": "2030-01-01T00:00:00Z"}
    world.cache.observe_grant(body)
    world.clock.slept.clear()
    await world.reconcile()
    assert world.lucid.calls("/oauth2/token/revoke") == 3
    assert world.clock.slept == [2.0, 4.0]
    assert world.grant()["metadata"]["finalizers"] == []


class Redeem:
    """What the web flow hands over: a check under the lock, then the exchange."""

    def __init__(self, tokens: Any, refuse: bool = False) -> None:
        self.tokens = tokens
        self.refuse = refuse
        self.checked_with: Any = None

    async def check(self, locked: Any) -> dict[str, str | None]:
        self.checked_with = locked
        if self.refuse:
            raise LookupError("no person needed")
        return {"lucidgrant.dev/used-states": '{"n":1}'}

    async def exchange(self) -> Any:
        return self.tokens


async def test_the_web_flow_stores_its_grant_under_the_lock(world):
    world.authorized_grant()
    await world.reconcile()
    grant = world.lucid.grants[world.lucid.live_refresh_token()]
    creds = ClientCredentials("client-1", "secret-1")
    tokens = await world.reconciler.refresher.lucid.refresh(creds, grant.refresh_token)
    before = world.state()
    refused = Redeem(tokens, refuse=True)
    with pytest.raises(LookupError):
        await world.reconciler.authorized((NS, "g"), refused, None)
    assert refused.checked_with.lock_holder is not None, "checked under the lock"
    assert world.state().refresh_token == before.refresh_token
    assert world.state().lock_holder is None
    await world.reconciler.authorized((NS, "g"), Redeem(tokens), "alice@example.com")
    assert world.state().refresh_token == tokens.refresh_token
    assert world.state().used_states == '{"n":1}'
    assert world.state().lock_holder is None
    assert world.event_reasons().count("Authorized") == 2
    with pytest.raises(KeyError):
        await world.reconciler.authorized((NS, "nope"), Redeem(tokens), None)


async def test_the_grant_path_is_where_status_goes(world):
    world.authorized_grant()
    await world.reconcile()
    assert ("PATCH", grant_path(NS, "g", "status")) in world.kube.calls


async def test_an_existing_secret_keeps_its_keys_and_a_state_secret_is_refused(world):
    world.authorized_grant(accessTokenSecret={"name": "tok", "keys": {"authorizationHeader": "h"}})
    world.put_secret("tok", {"other": "kept"}, labels=OPTED_IN)
    await world.reconcile()
    assert world.secret("tok", "other") == "kept"
    assert world.secret("tok", "h") == f"Bearer {world.secret('tok', 'access_token')}"
    world.put_secret("boot2", {"refresh_token": world.lucid.issue()})
    world.put_grant(
        grant_body(
            "second",
            authorization={"refreshTokenSecretRef": {"name": "boot2"}},
            accessTokenSecret={"name": state_secret_name("g")},
        )
    )
    await world.reconcile("second")
    assert world.condition("Ready", "second") == ("False", "SecretConflict")
    assert world.state().refresh_token in world.lucid.grants, "the first grant is untouched"
