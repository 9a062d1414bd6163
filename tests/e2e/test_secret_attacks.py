"""Attacks on the Secrets the operator reads and writes, performed against the real operator
process (docs/attacks-secrets.md lists them with what the operator does now)."""

from __future__ import annotations

from typing import Any

from lucidgrant.kube import PARTIAL_METADATA
from lucidgrant.names import SECRET_SELECTOR
from lucidgrant.secretdata import b64

from .harness import CLIENT_SECRET, TEST_AGENT, dump, grant_spec, leaked, wait_for
from .test_operator import authorize, setup_grant

SECRETS = "/api/v1/namespaces/default/secrets"


def test_the_secret_watch_selects_only_labelled_secrets(kube_api, cluster, lucid, start_operator):
    """Unrelated Secrets (Helm releases can be megabytes each) are filtered by the API server:
    every list and watch of Secrets the operator makes carries the label selector."""
    api, _ = kube_api
    setup_grant(cluster, lucid)
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    collections = [
        r
        for r in list(api.requests)
        if r.resource == "secrets" and r.verb in ("list", "watch") and r.user_agent != TEST_AGENT
    ]
    assert {r.verb for r in collections} == {"list", "watch"}
    assert {r.label_selector for r in collections} == {SECRET_SELECTOR}


PASSWORD = "db-password-never-read"
SA_TOKEN = "sa-token-never-read"
STATE = "reporting-lucidgrant-state"
# What an attacker who may create LucidGrants (but not read Secrets) points a grant at, and the
# reason the grant must report. Reading: as client or bootstrap Secret; writing: as the
# access-token Secret (those grants are authorized through a bootstrap Secret of their own,
# standing in for the attacker's own consent in the web flow).
READS: dict[str, tuple[dict[str, Any], str]] = {
    "read-app": ({"clientSecretRef": {"name": "app"}}, "SecretNotMarked"),
    "read-sa": (
        {"clientSecretRef": {"name": "sa", "clientIdKey": "token", "clientSecretKey": "token"}},
        "SecretNotMarked",
    ),
    "read-state": (
        {"clientSecretRef": {"name": STATE, "clientIdKey": "refresh_token"}},
        "SecretNotMarked",
    ),
    # Adopting the victim's refresh token would rotate it away: the victim's grant lost.
    "adopt-state": (
        {"authorization": {"refreshTokenSecretRef": {"name": STATE, "key": "refresh_token"}}},
        "SecretNotMarked",
    ),
}
WRITES = ["app", "sa", STATE, "lucid-client"]


def test_a_grant_cannot_read_or_write_secrets_not_marked_for_it(
    kube_api, cluster, lucid, start_operator
):
    setup_grant(cluster, lucid)  # the victim: "reporting", its client Secret "lucid-client"
    cluster.put_secret("app", {"client_id": PASSWORD, "client_secret": PASSWORD}, marked=False)
    sa = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "sa",
            # Even labelled as a client Secret: only Opaque Secrets are read.
            "labels": {"lucidgrant.dev/role": "client"},
            "annotations": {"kubernetes.io/service-account.name": "default"},
        },
        "stringData": {"token": SA_TOKEN},
    }
    assert cluster.http.post(SECRETS, json=sa).status_code == 201
    operator = start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="the victim Ready")
    victim_client = cluster.secret_object("lucid-client")
    before = {name: cluster.secret_object(name) for name in ("app", "sa")}

    for name, (spec, _) in READS.items():
        assert cluster.create_grant(name, grant_spec(**spec)).status_code == 201
    for i, target in enumerate(WRITES):
        authorize(cluster, lucid, f"writer-{i}-boot")
        spec = grant_spec(
            authorization={"refreshTokenSecretRef": {"name": f"writer-{i}-boot"}},
            accessTokenSecret={"name": target},
        )
        assert cluster.create_grant(f"write-{i}", spec).status_code == 201
    expected = {name: reason for name, (_, reason) in READS.items()}
    expected |= {f"write-{i}": "SecretConflict" for i in range(len(WRITES))}

    def reasons() -> dict[str, str]:
        return {n: (cluster.condition(n, "Ready") or {}).get("reason", "") for n in expected}

    wait_for(lambda: reasons() == expected, timeout=60, what="every attack refused")
    # The writers were authorized: their refusals came with a live token, not before one.
    for i in range(len(WRITES)):
        assert (cluster.condition(f"write-{i}", "ReauthorizationRequired") or {}).get(
            "reason"
        ) == "Authorized"

    # Untouched: the app's and the service account's Secrets as they were, the victim's client
    # Secret too, and its state Secret still holds the one live refresh token of its grant.
    assert {name: cluster.secret_object(name) for name in ("app", "sa")} == before
    assert cluster.secret_object("lucid-client") == victim_client

    def live_state() -> dict[str, str]:
        state = cluster.secret(STATE) or {}
        return state if state.get("refresh_token") in lucid.live_refresh_tokens() else {}

    state = wait_for(live_state, what="the victim's state Secret holding its live refresh token")
    assert set(state) == {"refresh_token", "access_token"}
    assert cluster.is_true("reporting", "Ready")

    # Never read: no value of those Secrets anywhere the attacker can look (statuses, events,
    # the operator's log and /metrics, every other Secret, the access-token Secrets included).
    others = [
        dump(s.get("data"))
        for s in cluster.http.get(SECRETS).json()["items"]
        if s["metadata"]["name"] not in ("app", "sa", STATE, "lucid-client")
    ]
    texts = [
        dump(cluster.statuses()),
        dump(cluster.events()),
        operator.logs(),
        operator.metrics(),
        *others,
    ]
    values = [PASSWORD, SA_TOKEN, state["refresh_token"], CLIENT_SECRET]
    assert not leaked(set(values) | {b64(v) for v in values}, texts)

    # Not even fetched: the operator asked for the app's Secret (no lucidgrant label) as its
    # metadata alone, every time, so that its values never reached the process.
    reads = [
        r.accept
        for r in list(kube_api[0].requests)
        if r.resource == "secrets" and r.name == "app" and r.verb == "get"
        if r.user_agent != TEST_AGENT
    ]
    assert reads and all(a == PARTIAL_METADATA for a in reads), reads
