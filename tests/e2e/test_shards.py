"""Two replicas with disjoint label selectors split the grants between them."""

from __future__ import annotations

import re
from functools import partial

from .harness import wait_for
from .test_operator import authorized_grants


def grants_exported(metrics: str) -> set[str]:
    return set(re.findall(r'^lucidgrant_ready\{name="([^"]+)"', metrics, re.M))


def test_two_shards_split_the_grants_without_overlap(cluster, lucid, start_operator):
    shard_of = {f"g{i}": "a" if i % 2 else "b" for i in range(6)}
    labels = {name: {"shard": shard} for name, shard in shard_of.items()}
    authorized_grants(cluster, lucid, list(shard_of), labels)
    a = start_operator("--namespace", "default", "--selector", "shard=a")
    b = start_operator("--namespace", "default", "--selector", "shard=b")
    for name in shard_of:
        wait_for(partial(cluster.is_true, name, "Ready"), what=f"{name} Ready")
    wait_for(lambda: len(grants_exported(a.metrics()) | grants_exported(b.metrics())) == 6)
    assert grants_exported(a.metrics()) == {n for n, s in shard_of.items() if s == "a"}
    assert grants_exported(b.metrics()) == {n for n, s in shard_of.items() if s == "b"}
    assert lucid.invalid_grant_count == 0
