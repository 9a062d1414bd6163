"""Least privilege, checked against reality: run the operator through every feature that calls
the API server, record each (verb, group, resource) it used, and compare with deploy/base/rbac.yaml
in both directions."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .harness import CLIENT_ID, CLIENT_SECRET, ROOT, TEST_AGENT, grant_spec, wait_for
from .test_operator import authorize


def granted(files: tuple[str, ...], skip_namespace: str = "") -> set[tuple[str, str, str]]:
    """Every (verb, group, resource) the Roles and ClusterRoles in `files` grant; Roles in
    `skip_namespace` are left out (the namespaced overlay repeats one Role per namespace)."""
    rules = set()
    docs = [doc for f in files for doc in yaml.safe_load_all((ROOT / f).read_text())]
    for doc in docs:
        if doc and doc["kind"] in ("ClusterRole", "Role"):
            if doc["metadata"].get("namespace") == skip_namespace:
                continue
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            rules.add((verb, group, resource))
    return rules


ARGS = {"cluster": ("--all-namespaces",), "namespaced": ("--namespace", "default")}


def admission_needs(secrets: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What no call uses but the OwnerReferencesPermissionEnforcement admission plugin checks
    when the operator creates these Secrets (kubernetes plugin/pkg/admission/gc/gc_admission.go):
    an ownerReference needs `delete` on the object itself, and blockOwnerDeletion needs `update`
    on the owner's `finalizers` subresource."""
    needs = set()
    for secret in secrets:
        for ref in secret["metadata"].get("ownerReferences") or []:
            needs.add(("delete", "", "secrets"))
            if ref.get("blockOwnerDeletion"):
                group = ref["apiVersion"].split("/")[0]
                needs.add(("update", group, f"{ref['kind'].lower()}s/finalizers"))
    return needs


def rules_for(mode: str) -> set[tuple[str, str, str]]:
    base = granted(("deploy/base/rbac.yaml",))
    if mode == "cluster":  # deploy/ as is
        return base
    # The namespaced overlay deletes the base's ClusterRole and keeps its leader-election Role;
    # its Roles repeat per namespace, so one of them stands for all.
    overlay = granted(("deploy/overlays/namespaced/namespaced-rbac.yaml",), skip_namespace="team-b")
    return overlay | {rule for rule in base if rule[1] == "coordination.k8s.io"}


@pytest.mark.parametrize("install_mode", sorted(ARGS))
def test_every_call_is_granted_and_every_grant_is_used(
    install_mode, kube_api, cluster, lucid, start_operator
):
    mode = install_mode
    api, _ = kube_api
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    authorize(cluster, lucid)
    assert cluster.create_grant("reporting", grant_spec(deletionPolicy="Revoke")).status_code == 201
    start_operator(
        *ARGS[mode],
        LUCIDGRANT_LEADER_ELECTION="true",
        LUCIDGRANT_LEASE_DURATION="2",
        LUCIDGRANT_POD_NAMESPACE="lucidgrant-system",
    )
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    wait_for(lambda: ("update", "leases") in api.counts(), what="a Lease renewal")
    owned = [
        s
        for s in cluster.http.get("/api/v1/namespaces/default/secrets").json()["items"]
        if s["metadata"].get("ownerReferences")
    ]
    assert len(owned) == 2, "the state Secret and the consumer Secret, both owned by the grant"
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
    } | admission_needs(owned)
    rules = rules_for(mode)
    missing = used - rules
    assert not missing, f"the operator called what RBAC does not grant: {sorted(missing)}"
    unused = {rule for rule in rules if rule not in used}
    assert not unused, f"RBAC grants what the operator never used: {sorted(unused)}"
