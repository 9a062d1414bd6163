"""Two replicas with disjoint label selectors split the grants between them."""

from __future__ import annotations

import re
from functools import partial

from .harness import CLIENT_ID, CLIENT_SECRET, grant_spec, wait_for
from .test_operator import authorize


def grants_exported(metrics: str) -> set[str]:
    return set(re.findall(r'^lucidgrant_ready\{name="([^"]+)"', metrics, re.M))


def test_two_shards_split_the_grants_without_overlap(cluster, lucid, start_operator):
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    shard_of = {f"g{i}": "a" if i % 2 else "b" for i in range(6)}
    for name, shard in shard_of.items():
        authorize(cluster, lucid, f"{name}-boot")
        spec = grant_spec(
            authorization={"refreshTokenSecretRef": {"name": f"{name}-boot"}},
            accessTokenSecret={"name": f"{name}-token"},
        )
        response = cluster.http.post(
            "/apis/lucidgrant.dev/v1alpha1/namespaces/default/lucidgrants",
            json={
                "apiVersion": "lucidgrant.dev/v1alpha1",
                "kind": "LucidGrant",
                "metadata": {"name": name, "labels": {"shard": shard}},
                "spec": spec,
            },
        )
        assert response.status_code == 201
    a = start_operator("--namespace", "default", "--selector", "shard=a")
    b = start_operator("--namespace", "default", "--selector", "shard=b")
    for name in shard_of:
        wait_for(partial(cluster.is_true, name, "Ready"), what=f"{name} Ready")
    wait_for(lambda: len(grants_exported(a.metrics()) | grants_exported(b.metrics())) == 6)
    assert grants_exported(a.metrics()) == {n for n, s in shard_of.items() if s == "a"}
    assert grants_exported(b.metrics()) == {n for n, s in shard_of.items() if s == "b"}
    assert lucid.invalid_grant_count == 0
