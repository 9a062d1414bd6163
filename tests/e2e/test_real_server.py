"""The operator against the real API server's rules (tests/testbed/test_kube_real_rules.py has
each rule with its kubernetes/kubernetes source): RBAC from deploy/ with resourceNames,
OwnerReferencesPermissionEnforcement, in-stream watch errors and list/watch outages, watch gaps
healed by a re-list, Foreground and namespace deletion, metadata validation.

Each test here failed against the stricter emulator until the operator (or deploy/) was fixed:
docs/real-server.md lists what each one showed."""

from __future__ import annotations

import time

import pytest

from lucidgrant.names import LABEL_ROLE, ROLE_CLIENT
from lucidgrant_testbed.kube_rbac import OWNER_REFERENCES_PERMISSION_ENFORCEMENT

from .flow import Browser, auth_url, start_flow
from .harness import CLIENT_ID, CLIENT_SECRET, GRANTS, SCOPES, grant_spec, wait_for
from .test_ha import leads
from .test_operator import authorized_grants, setup_grant

LEADER_ENV = {
    "LUCIDGRANT_LEADER_ELECTION": "true",
    "LUCIDGRANT_LEASE_DURATION": "3",
    "LUCIDGRANT_POD_NAMESPACE": "lucidgrant-system",
}


def ready(cluster, name: str = "reporting") -> None:
    wait_for(lambda: cluster.is_true(name, "Ready"), what=f"{name} Ready")


def collected(cluster, ns: str = "default") -> bool:
    """The state Secret is gone, or being deleted."""
    state = cluster.secret_object("reporting-lucidgrant-state", ns)
    return state is None or bool(state["metadata"].get("deletionTimestamp"))


def running(cluster, lucid, start_operator, **spec):
    """A Ready grant and the operator process serving it; the grant's Lucid id."""
    grant_id = setup_grant(cluster, lucid, **spec)
    proc = start_operator()
    ready(cluster)
    return grant_id, proc


def test_a_watch_gap_is_healed_by_a_relist(kube_api, cluster, lucid, start_operator):
    """A restarted API server forgets watch history: the operator's resume answers 410 Gone
    and kopf lists again. Objects changed in the gap are seen in the new list."""
    kube, _ = kube_api
    running(cluster, lucid, start_operator)

    def lists() -> int:
        return sum(1 for r in kube.requests if (r.verb, r.resource) == ("list", "lucidgrants"))

    listed = lists()
    # The watches are down for 3 s; the grant changes meanwhile; the server forgets the history.
    kube.faults.add("GET", "", 503, verbs=("watch",), seconds=3)
    kube.drop_watches()
    generation = cluster.patch_grant("reporting", {"spec": {"refreshBefore": "20m"}})
    kube.restart()
    wait_for(lambda: lists() > listed, what="a re-list after 410 Gone")

    def observed() -> bool:
        status = (cluster.grant("reporting") or {}).get("status") or {}
        return bool(status.get("observedGeneration") == generation["metadata"]["generation"])

    wait_for(observed, what="the change made in the gap observed")
    ready(cluster)


def test_a_consumer_secret_deleted_in_a_watch_gap_is_created_again(
    kube_api, cluster, lucid, start_operator
):
    kube, _ = kube_api
    grant_id, _ = running(cluster, lucid, start_operator)
    # The watches are down for 3 s; the Secret goes meanwhile; the server forgets the history.
    kube.faults.add("GET", "/secrets", 503, verbs=("watch",), seconds=3)
    kube.drop_watches()
    cluster.delete_secret("lucid-token")
    kube.restart()
    rotations = lucid.grant_info(grant_id).rotations
    wait_for(lambda: lucid.grant_info(grant_id).rotations >= rotations + 2, what="rotations")
    wait_for(lambda: cluster.secret("lucid-token"), timeout=20, what="consumer Secret again")


def test_a_secret_deleted_unseen_is_created_again_within_the_resync_interval(
    kube_api, cluster, lucid, start_operator
):
    """The re-list (lucidgrant/resync.py) heals a DELETED a watch gap lost, within its interval,
    without waiting for a refresh to find the Secret gone: no rotation falls in the wait."""
    kube, _ = kube_api
    lucid.access_ttl = 3600.0  # the next refresh is 50 minutes away
    grant_id = setup_grant(cluster, lucid)
    start_operator(LUCIDGRANT_RESYNC_INTERVAL="3")
    ready(cluster)
    wait_for(lambda: cluster.secret("lucid-token"), what="consumer Secret")
    rotations = lucid.grant_info(grant_id).rotations
    kube.faults.add("GET", "/secrets", 503, verbs=("watch",), seconds=3)
    kube.drop_watches()
    cluster.delete_secret("lucid-token")
    kube.restart()
    # The bound: the interval, the 3 s of refused watches, and a busy machine's slack.
    wait_for(lambda: cluster.secret("lucid-token"), timeout=20, what="consumer Secret again")
    assert lucid.grant_info(grant_id).rotations == rotations


def test_a_grant_deleted_unseen_is_forgotten_within_the_resync_interval(
    kube_api, cluster, lucid, start_operator
):
    """A grant (deletionPolicy Retain: no finalizer) deleted while the grant watch is down, its
    DELETED lost: the re-list forgets it, so its metrics go (it lingered, reported Ready)."""
    kube, _ = kube_api
    lucid.access_ttl = 3600.0
    setup_grant(cluster, lucid)
    proc = start_operator(LUCIDGRANT_RESYNC_INTERVAL="3")
    ready(cluster)

    def series() -> bool:
        return 'lucidgrant_ready{name="reporting",namespace="default"}' in proc.metrics()

    wait_for(series, what="the grant's metrics")
    kube.faults.add("GET", "/lucidgrants", 503, verbs=("watch",), seconds=3)
    kube.drop_watches()
    cluster.delete_grant("reporting")
    kube.restart()
    wait_for(lambda: not series(), timeout=20, what="the grant forgotten")
    assert 'lucidgrant_grants{state="ready"} 0.0' in proc.metrics()


def test_lists_are_read_in_chunks_to_the_end(kube_api, cluster, lucid, start_operator):
    """kopf's lists and the re-list ask for pages of 500 and follow `continue`: the grant's
    Secrets come after 600 others, on the second page, and are never taken for deleted."""
    kube, _ = kube_api
    labels = {LABEL_ROLE: ROLE_CLIENT}  # selected by the Secret watch, referenced by no grant
    kube.apply([{"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": f"filler-{i:03}", "labels": labels}}
                for i in range(600)])  # fmt: skip
    setup_grant(cluster, lucid)
    proc = start_operator(LUCIDGRANT_RESYNC_INTERVAL="1")
    ready(cluster)

    def continued(user_agent: str) -> int:
        return sum(
            1
            for r in list(kube.requests)
            if (r.verb, r.resource) == ("list", "secrets")
            and "limit=500" in r.query
            and "continue=" in r.query
            and user_agent in r.user_agent
        )

    wait_for(lambda: continued("kopf") >= 1, what="kopf's second page")
    wait_for(lambda: continued("OpenAPI") >= 2, what="two re-lists' second pages")
    assert "is gone" not in proc.logs()
    assert cluster.is_true("reporting", "Ready")


def test_the_operators_writes_have_no_unknown_fields(kube_api, cluster, lucid, start_operator):
    """A real server warns of (fieldValidation=Warn, its default) and drops every field a
    custom resource's schema does not declare: the operator's grant writes (status, finalizer,
    annotations) declare none, through a refresh."""
    kube, _ = kube_api
    grant_id, _ = running(cluster, lucid, start_operator)
    rotations = lucid.grant_info(grant_id).rotations
    wait_for(lambda: lucid.grant_info(grant_id).rotations > rotations, what="a rotation")
    writes = [
        r
        for r in list(kube.requests)
        if r.resource == "lucidgrants" and r.verb in ("patch", "update", "create")
    ]
    assert any(r.subresource == "status" for r in writes)
    assert [(r.verb, r.subresource, r.warnings) for r in writes if r.warnings] == []


def in_stream_error(kube) -> float:
    assert kube.watch_error(500) >= 1
    return 0.0


def list_watch_outage(kube) -> float:
    kube.faults.storage_unavailable(65.0, status=503)
    kube.drop_watches()
    return 65.0


@pytest.mark.parametrize("fault", [in_stream_error, list_watch_outage])
def test_watch_errors_are_survived(fault, kube_api, cluster, lucid, start_operator):
    kube, _ = kube_api
    grant_id, proc = running(cluster, lucid, start_operator)
    lasts = fault(kube)
    started = time.monotonic()
    wait_for(
        lambda: proc.proc.poll() is not None or time.monotonic() - started > lasts + 5,
        timeout=lasts + 15,
        what="the fault's end, or the operator's exit",
    )
    kube.faults.clear()
    assert proc.proc.poll() is None, "the operator exited on a list/watch error"
    rotations = lucid.grant_info(grant_id).rotations
    wait_for(lambda: lucid.grant_info(grant_id).rotations > rotations, what="rotations again")
    assert not cluster.is_true("reporting", "ReauthorizationRequired")


def test_shards_with_their_own_leases_each_lead(cluster, lucid, start_operator):
    authorized_grants(cluster, lucid, ["ga", "gb"], {"ga": {"shard": "a"}, "gb": {"shard": "b"}})
    a = start_operator(
        "--namespace", "default", "--selector", "shard=a", **LEADER_ENV,
        LUCIDGRANT_LEASE_NAME="lucidgrant-shard-a",
    )  # fmt: skip
    b = start_operator(
        "--namespace", "default", "--selector", "shard=b", **LEADER_ENV,
        LUCIDGRANT_LEASE_NAME="lucidgrant-shard-b",
    )  # fmt: skip
    wait_for(lambda: leads(a) and leads(b), timeout=15, what="each shard leads its own Lease")
    ready(cluster, "ga")
    ready(cluster, "gb")


@pytest.mark.parametrize("admission_plugins", [(OWNER_REFERENCES_PERMISSION_ENFORCEMENT,)])
def test_owner_references_permission_enforcement_admits_the_operators_secrets(
    admission_plugins, cluster, lucid, start_operator
):
    setup_grant(cluster, lucid)
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), timeout=20, what="Ready")


def test_a_grant_with_a_long_name_becomes_ready(cluster, lucid, start_operator):
    name = "g" * 64
    setup_grant(cluster, lucid, name=name)
    start_operator()
    wait_for(lambda: cluster.is_true(name, "Ready"), timeout=20, what="Ready")
    for secret in (f"{name}-lucidgrant-state", "lucid-token"):
        meta = (cluster.secret_object(secret) or {}).get("metadata") or {}
        assert meta["annotations"]["lucidgrant.dev/grant-name"] == name
        assert len(meta["labels"]["lucidgrant.dev/grant"]) <= 63


def test_consumer_labels_the_server_refuses_are_an_invalid_spec(cluster, lucid, start_operator):
    setup_grant(cluster, lucid, accessTokenSecret={"name": "lucid-token", "labels": {"a": "-x"}})
    start_operator()

    def reason() -> str:
        return str((cluster.condition("reporting", "Ready") or {}).get("reason", ""))

    wait_for(lambda: reason() not in ("", "Pending"), what="a Ready condition")
    wait_for(lambda: reason() == "InvalidSpec", timeout=15, what="InvalidSpec")
    message = (cluster.condition("reporting", "Ready") or {}).get("message", "")
    assert "spec.accessTokenSecret.labels" in message


def test_foreground_deletion_still_revokes(cluster, lucid, start_operator):
    grant_id, proc = running(cluster, lucid, start_operator, deletionPolicy="Revoke")
    # The collector is quicker than the operator here: the operator is down while it works.
    proc.stop()
    path = f"{GRANTS.format(ns='default')}/reporting"
    assert cluster.http.delete(path, params={"propagationPolicy": "Foreground"}).is_success

    wait_for(lambda: collected(cluster), what="the garbage collector at the state Secret")
    start_operator()
    wait_for(lambda: cluster.grant("reporting") is None, timeout=20, what="grant gone")
    assert lucid.grant_info(grant_id).revoked


@pytest.mark.parametrize("install_mode", ["cluster"])
def test_namespace_deletion_still_revokes(install_mode, cluster, lucid, start_operator):
    ns = "team"
    assert cluster.http.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).is_success
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, ns)
    tokens = lucid.issue_grant(CLIENT_ID, SCOPES)
    cluster.put_secret("lucid-bootstrap", {"refresh_token": tokens["refresh_token"]}, ns)
    grant_id = str(lucid.grant_of(tokens["refresh_token"]))
    assert cluster.create_grant("reporting", grant_spec(deletionPolicy="Revoke"), ns).is_success
    proc = start_operator("--all-namespaces")

    def ready_in_team() -> bool:
        conditions = ((cluster.grant("reporting", ns) or {}).get("status") or {}).get("conditions")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions or [])

    wait_for(ready_in_team, what="Ready")
    # The namespace controller is quicker than the operator here: the operator is down meanwhile.
    proc.stop()
    assert cluster.http.delete(f"/api/v1/namespaces/{ns}").is_success
    wait_for(lambda: collected(cluster, ns), what="the namespace controller at the state Secret")
    restarted = start_operator("--all-namespaces")
    wait_for(
        lambda: cluster.http.get(f"/api/v1/namespaces/{ns}").status_code == 404,
        timeout=30,
        what="the namespace gone",
    )
    # The client Secret went with the namespace: revoking is impossible, and said loudly.
    assert lucid.grant_info(grant_id).revoked or (
        "NOT revoked at Lucid" in restarted.logs() and "client Secret" in restarted.logs()
    )


def test_the_web_flow_works_in_the_namespaced_install(cluster, lucid, start_operator):
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    browser = Browser(start_flow(cluster, start_operator, "--namespace", "default"))
    wait_for(lambda: auth_url(cluster), what="status.authorizationURL")
    response = browser.open(browser.link(cluster))
    assert response.status_code == 302, response.text
