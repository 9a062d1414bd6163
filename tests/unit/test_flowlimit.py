"""The web flow's limits as pure functions of time: buckets per key and the cap on states."""

from __future__ import annotations

import pytest

from lucidgrant.flowlimit import KeyedBuckets, OutstandingStates


def test_a_bucket_allows_its_burst_then_the_rate():
    buckets = KeyedBuckets(per_minute=6, burst=3)
    assert [buckets.take("10.0.0.1", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("10.0.0.1", 100.0)
    assert wait == pytest.approx(10.0)  # 6 a minute: one every 10 s
    assert buckets.take("10.0.0.1", 100.0 + wait - 0.5) > 0
    assert buckets.take("10.0.0.1", 100.0 + wait) == 0.0
    # Another key has its own bucket.
    assert buckets.take("10.0.0.2", 100.0) == 0.0


def test_a_refused_request_takes_nothing():
    buckets = KeyedBuckets(per_minute=60, burst=1)
    assert buckets.take("k", 0.0) == 0.0
    for _ in range(100):
        assert buckets.take("k", 0.5) == pytest.approx(0.5)
    assert buckets.take("k", 1.0) == 0.0


def test_a_clock_going_back_grants_nothing():
    buckets = KeyedBuckets(per_minute=60, burst=1)
    assert buckets.take("k", 50.0) == 0.0
    assert buckets.take("k", 10.0) > 0
    assert buckets.take("k", 50.5) > 0
    assert buckets.take("k", 51.0) == 0.0


def test_memory_is_bounded_and_full_buckets_are_forgotten():
    buckets = KeyedBuckets(per_minute=60, burst=2, max_keys=3)
    for key in "abc":
        assert buckets.take(key, 0.0) == 0.0
    # A fourth address while three buckets are still draining: refused, not remembered.
    assert buckets.take("d", 0.5) > 0
    assert len(buckets) == 3
    # Once the first three have filled up again they are dropped and "d" gets a bucket.
    assert buckets.take("d", 2.0) == 0.0
    assert len(buckets) == 1


@pytest.mark.parametrize(
    "args", [{"per_minute": 0, "burst": 1}, {"per_minute": 1, "burst": 0.5}, {"max_keys": 0}]
)
def test_nonsense_limits_are_refused(args):
    with pytest.raises(ValueError, match="must be"):
        KeyedBuckets(**{"per_minute": 1, "burst": 1, **args})


def test_outstanding_states_are_capped_per_grant_and_in_all():
    states = OutstandingStates(total=3, per_grant=2)
    assert states.add("ns/a", "n1", expires_at=600.0, now=0.0)
    assert states.add("ns/a", "n2", expires_at=600.0, now=0.0)
    assert not states.add("ns/a", "n3", expires_at=600.0, now=1.0)
    assert states.add("ns/b", "n4", expires_at=600.0, now=1.0)
    assert not states.add("ns/c", "n5", expires_at=600.0, now=1.0)
    assert len(states) == 3
    # A used state frees its place; expired ones are dropped on the next issue.
    states.discard("n1")
    assert states.add("ns/a", "n6", expires_at=900.0, now=2.0)
    assert states.add("ns/c", "n7", expires_at=900.0, now=600.0)
    assert len(states) == 2
    with pytest.raises(ValueError, match="at least 1"):
        OutstandingStates(total=0, per_grant=1)
