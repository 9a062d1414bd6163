"""Secrets opt in: the operator reads only Secrets a person marked for it, writes only Secrets
its grant created or a person opted in, and adopts only its own state Secret. Each test is an
attack on an earlier version (see docs/attacks-secrets.md)."""

from __future__ import annotations

import json

import pytest

from lucidgrant.kube import ConflictError
from lucidgrant.names import LABEL_ROLE, ROLE_CLIENT, secret_path, state_secret_name
from lucidgrant.timing import UNWATCHED_RECHECK

from .world import NS, OPTED_IN, World, grant_body

PASSWORD = "db-password-do-not-leak"
SA_TOKEN = "kubernetes.io/service-account-token"


def everything_written(world: World, logs: str) -> str:
    """Status, events, logs and the cache: where a value read from a Secret could surface."""
    held = list(world.cache.secrets.values())
    return json.dumps([world.grant(), world.kube.events(), held, logs], default=str)


async def test_an_unmarked_client_secret_is_never_read(world, caplog):
    world.put_secret("db", {"client_id": PASSWORD, "client_secret": PASSWORD}, labels={})
    world.put_secret("boot", {"refresh_token": world.lucid.issue()})
    world.put_grant(grant_body(clientSecretRef={"name": "db"}))
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretNotMarked")
    message = world.grant()["status"]["conditions"][0]["message"]
    assert f"kubectl label secret db -n {NS} {LABEL_ROLE}={ROLE_CLIENT}" in message
    assert "spec.clientSecretRef.name" in message
    assert world.refresh_calls() == 0
    assert PASSWORD not in everything_written(world, caplog.text)
    assert await world.reconciler.client_credentials((NS, "g")) is None, "nor by the web flow"


async def test_a_service_account_token_secret_is_not_read_even_when_labelled(world):
    labels = {LABEL_ROLE: ROLE_CLIENT}
    world.put_secret("sa", {"client_id": PASSWORD, "client_secret": PASSWORD}, labels=labels)
    world.kube.objects[secret_path(NS, "sa")]["type"] = SA_TOKEN
    world.cache.observe_secret(world.kube.objects[secret_path(NS, "sa")])
    world.put_secret("boot", {"refresh_token": world.lucid.issue()})
    world.put_grant(grant_body(clientSecretRef={"name": "sa"}))
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretNotMarked")
    assert world.refresh_calls() == 0
    assert await world.reconciler.client_credentials((NS, "g")) is None


async def test_an_unmarked_bootstrap_secret_is_not_adopted(world, caplog):
    world.put_secret("client", {"client_id": "client-1", "client_secret": "secret-1"})
    token = world.lucid.issue()
    world.put_secret("boot", {"refresh_token": token}, labels={})
    world.put_grant(grant_body())
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretNotMarked")
    assert (
        "spec.authorization.refreshTokenSecretRef.name"
        in world.grant()["status"]["conditions"][0]["message"]
    )
    assert world.refresh_calls() == 0
    assert token not in everything_written(world, caplog.text)


async def refused(world: World, consumer: str) -> str:
    """Reconcile an authorized grant whose access-token Secret is `consumer`: refused, the
    Secret untouched; the condition's message."""
    world.authorized_grant(accessTokenSecret={"name": consumer})
    before = json.dumps(world.kube.objects.get(secret_path(NS, consumer)), sort_keys=True)
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretConflict")
    message = str(world.grant()["status"]["conditions"][0]["message"])
    assert f"Secret {consumer!r} (spec.accessTokenSecret.name) cannot be written" in message
    after = json.dumps(world.kube.objects.get(secret_path(NS, consumer)), sort_keys=True)
    assert after == before, "untouched"
    return message


async def test_a_service_account_token_secret_is_not_written(world):
    world.put_secret("sa", {"token": "sa-token"}, labels=OPTED_IN)
    world.kube.objects[secret_path(NS, "sa")]["type"] = SA_TOKEN
    assert "only Opaque Secrets are written" in await refused(world, "sa")


async def test_a_secret_without_opt_in_is_not_written(world):
    world.put_secret("app", {"password": PASSWORD}, labels={})
    message = await refused(world, "app")
    opt_in = f"`kubectl label secret app -n {NS} lucidgrant.dev/role=access-token lucidgrant.dev/grant=g`"
    assert f"to let the grant write into it, label it: {opt_in}" in message


async def test_its_own_client_secret_is_not_written(world):
    assert "client or bootstrap Secret" in await refused(world, "client")


async def test_another_grants_future_state_secret_is_not_written(world):
    assert "reserved for state Secrets" in await refused(world, state_secret_name("later"))


async def test_nothing_is_written_in_the_operators_namespace(world):
    world.reconciler.consumer.operator_namespace = NS
    assert "operator's own namespace" in await refused(world, "tok")


async def test_an_opted_in_secret_is_written_and_keeps_its_keys(world):
    world.put_secret("app", {"other": "kept"}, labels=OPTED_IN)
    world.authorized_grant(accessTokenSecret={"name": "app"})
    await world.reconcile()
    assert world.condition("Ready") == ("True", "Refreshed")
    assert world.secret("app", "other") == "kept"
    assert world.secret("app", "access_token") == f"at-{world.lucid.live_refresh_token()}"


async def test_a_secret_named_like_the_state_secret_is_not_adopted(world):
    world.put_secret(state_secret_name("g"), {"refresh_token": "planted"}, labels={})
    world.authorized_grant()
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretConflict")
    assert (
        "lacks the label lucidgrant.dev/role=state"
        in world.grant()["status"]["conditions"][0]["message"]
    )
    assert world.refresh_calls() == 0
    assert world.secret(state_secret_name("g"), "refresh_token") == "planted", "untouched"


async def test_a_deleted_namesakes_state_secret_is_not_adopted(world):
    world.authorized_grant()
    await world.reconcile()
    old = world.state().refresh_token
    # The grant is deleted and created again before garbage collection removed its state.
    path = next(p for p in world.kube.objects if p.endswith("/lucidgrants/g"))
    del world.kube.objects[path]
    world.cache.forget_grant((NS, "g"))
    world.put_grant(grant_body())
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretConflict")
    assert "not owned by this grant" in world.grant()["status"]["conditions"][0]["message"]
    assert world.state().refresh_token == old, "untouched"


@pytest.mark.parametrize("label", [LABEL_ROLE, "lucidgrant.dev/client"])
async def test_a_grant_cannot_mark_its_access_token_secret_for_reading(world, label):
    """Labelled lucidgrant.dev/role=client through the spec, the access-token Secret would be
    readable as another grant's client Secret, whose web-flow link then carries the access
    token to Lucid's page as client_id (and in its Location header to whoever asks). No label
    under lucidgrant.dev/ is taken from the spec."""
    labels = {label: ROLE_CLIENT}
    world.authorized_grant(accessTokenSecret={"name": "tok", "labels": labels})
    await world.reconcile()
    assert world.condition("Ready") == ("False", "InvalidSpec")
    message = world.grant()["status"]["conditions"][0]["message"]
    assert f"spec.accessTokenSecret.labels: Invalid value: '{label}'" in message
    assert world.state().refresh_token == world.lucid.live_refresh_token(), "still refreshed"
    assert world.kube.objects.get(secret_path(NS, "tok")) is None, "never written"
    keys = {"clientIdKey": "access_token", "clientSecretKey": "token_type"}
    world.put_grant(grant_body("h", clientSecretRef={"name": "tok", **keys}, authorization=None))
    assert await world.reconciler.client_credentials((NS, "h")) is None


async def test_a_stray_state_secret_deleted_unseen_is_noticed(world):
    """Unlabelled, the stray Secret is outside the Secret watch's selection: no event tells
    of its deletion, so the grant looks again by itself."""
    world.put_secret(state_secret_name("g"), {"refresh_token": "planted"}, labels={})
    world.authorized_grant()
    at = await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretConflict")
    assert at is not None and at <= world.clock() + UNWATCHED_RECHECK
    del world.kube.objects[secret_path(NS, state_secret_name("g"))]  # no watch event
    world.clock.now += UNWATCHED_RECHECK
    await world.reconcile()
    assert world.condition("Ready") == ("True", "Refreshed")


async def test_a_secret_that_appeared_unseen_is_checked_before_any_write(world):
    """The cache saw no Secret of that name; an app's Secret appeared since, outside the watch's
    selection. The operator's create fails, and it must not merge into the app's Secret."""
    world.authorized_grant()
    path = secret_path(NS, "tok")

    def app_creates_it(method: str, where: str) -> None:
        if (method, where) == ("POST", path) and path not in world.kube.objects:
            world.kube.put(path, {"metadata": {"name": "tok"}, "data": {"password": "eA=="}})
            raise ConflictError(method, where, 409, "AlreadyExists")

    world.kube.fault = app_creates_it
    await world.reconcile()
    world.kube.fault = None
    await world.reconcile()
    assert world.condition("Ready") == ("False", "SecretConflict")
    assert set(world.kube.objects[path]["data"]) == {"password"}, "untouched"
