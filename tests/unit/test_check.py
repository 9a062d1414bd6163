"""`kubectl lucidgrant check`'s verdicts on a Deployment and a Lease as pure functions of the
objects: the emulated API serves no Deployments, so the e2e tests see only the FAIL line."""

from __future__ import annotations

from typing import Any

from lucidgrant.cli.check import deployment_finding, lease_finding, lease_name
from lucidgrant.timing import rfc3339

NOW = 1_800_000_000.0


def deployment(ready: int, replicas: int = 2, **env: str) -> dict[str, Any]:
    container = {"name": "operator", "env": [{"name": k, "value": v} for k, v in env.items()]}
    return {
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [container]}}},
        "status": {"readyReplicas": ready},
    }


def test_deployment_readiness():
    assert deployment_finding("ops", "lucidgrant", None).state == "FAIL"
    down = deployment_finding("ops", "lucidgrant", deployment(0))
    assert down.state == "FAIL" and "0/2 replicas ready" in down.text
    assert "kubectl -n ops logs deploy/lucidgrant" in down.text
    assert deployment_finding("ops", "lucidgrant", deployment(1)).state == "WARN"
    assert deployment_finding("ops", "lucidgrant", deployment(2)).state == "OK"


def test_the_lease_follows_the_deployments_settings():
    on = deployment(2, LUCIDGRANT_LEADER_ELECTION="true", LUCIDGRANT_LEASE_NAME="shard-a")
    assert lease_name(on) == "shard-a"
    assert lease_name(deployment(2)) is None
    assert lease_name(None) == "lucidgrant-leader"
    off = lease_finding("ops", None, None, NOW)
    assert off.state == "OK" and "leader election is off" in off.text


def lease(holder: str, renewed: float) -> dict[str, Any]:
    spec = {"holderIdentity": holder, "renewTime": rfc3339(renewed), "leaseDurationSeconds": 15}
    return {"spec": spec}


def test_a_lease_is_held_only_while_renewed():
    held = lease_finding("ops", "l", lease("pod-1", NOW - 5), NOW)
    assert held.state == "OK" and "held by pod-1, renewed 5s ago" in held.text
    lapsed = lease_finding("ops", "l", lease("pod-1", NOW - 60), NOW)
    assert lapsed.state == "FAIL" and "has lapsed (last renewed 60s ago)" in lapsed.text
    assert lease_finding("ops", "l", None, NOW).state == "FAIL"
