"""Least privilege, checked against reality: run the operator through every feature that calls
the API server, record each (verb, group, resource) it used, and compare with deploy/base/rbac.yaml
in both directions."""

from __future__ import annotations

import yaml

from .harness import CLIENT_ID, CLIENT_SECRET, ROOT, TEST_AGENT, grant_spec, wait_for
from .test_operator import authorize


def granted() -> set[tuple[str, str, str]]:
    rules = set()
    for doc in yaml.safe_load_all((ROOT / "deploy/base/rbac.yaml").read_text()):
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            rules.add((verb, group, resource))
    return rules


def test_every_call_is_granted_and_every_grant_is_used(kube_api, cluster, lucid, start_operator):
    api, _ = kube_api
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    authorize(cluster, lucid)
    assert cluster.create_grant("reporting", grant_spec(deletionPolicy="Revoke")).status_code == 201
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lucidgrant-system"}}
    assert cluster.http.post("/api/v1/namespaces", json=ns).status_code == 201
    start_operator(
        "--all-namespaces",
        LUCIDGRANT_LEADER_ELECTION="true",
        LUCIDGRANT_LEASE_DURATION="2",
        LUCIDGRANT_POD_NAMESPACE="lucidgrant-system",
    )
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    wait_for(lambda: ("update", "leases") in api.counts(), what="a Lease renewal")
    cluster.patch_grant(
        "reporting", {"metadata": {"annotations": {"lucidgrant.dev/refresh-now": "1"}}}
    )
    cluster.patch_grant("reporting", {"spec": {"accessTokenSecret": {"name": "renamed"}}})
    wait_for(lambda: cluster.secret("lucid-token") is None, what="old Secret removed")
    cluster.delete_grant("reporting")
    wait_for(lambda: cluster.grant("reporting") is None, what="grant finalized")

    used = {
        (r.verb, r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource)
        for r in list(api.requests)
        if r.resource and r.user_agent != TEST_AGENT
    }
    rules = granted()
    missing = used - rules
    assert not missing, f"the operator called what RBAC does not grant: {sorted(missing)}"
    unused = {rule for rule in rules if rule not in used}
    assert not unused, f"RBAC grants what the operator never used: {sorted(unused)}"
