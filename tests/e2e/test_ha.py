"""Two replicas with leader election: one refreshes; when it dies the other takes over."""

from __future__ import annotations

import re
import signal
import time
from functools import partial

from .harness import wait_for
from .test_operator import authorized_grants


def leads(proc) -> bool:
    match = re.search(r"^lucidgrant_leader (\S+)$", proc.metrics(), re.M)
    return bool(match and float(match.group(1)) == 1.0)


def test_standby_takes_over_after_sigkill_without_losing_or_doubling(
    cluster, lucid, start_operator
):
    ids = authorized_grants(cluster, lucid, [f"g{i}" for i in range(3)])
    env = {
        "LUCIDGRANT_LEADER_ELECTION": "true",
        "LUCIDGRANT_LEASE_DURATION": "3",
        "LUCIDGRANT_POD_NAMESPACE": "lucidgrant-system",  # where the deployed Role allows Leases
    }
    a = start_operator(**env)
    b = start_operator(**env)
    wait_for(lambda: leads(a) != leads(b), timeout=15, what="exactly one leader")
    leader, standby = (a, b) if leads(a) else (b, a)
    for i in range(3):
        wait_for(partial(cluster.is_true, f"g{i}", "Ready"), what=f"g{i} Ready")
    before = {g: lucid.grant_info(g).rotations for g in ids}
    time.sleep(5)  # rotations under way
    leader.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: leads(standby), timeout=15, what="standby takes over")
    takeover = time.monotonic() - killed
    wait_for(
        lambda: all(lucid.grant_info(g).rotations >= before[g] + 4 for g in ids),
        timeout=60,
        what="rotations continue under the new leader",
    )
    assert lucid.invalid_grant_count == 0
    for i, g in enumerate(ids):
        stored = (cluster.secret(f"g{i}-lucidgrant-state") or {}).get("refresh_token")
        assert stored == lucid.grant_info(g).refresh_token
        assert not cluster.is_true(f"g{i}", "ReauthorizationRequired")
    print(f"takeover after SIGKILL: {takeover:.1f}s (lease 3s)")
    assert takeover < 10
