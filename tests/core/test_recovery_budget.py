"""The time budget of a recovery in the operator's own timing, from its pure decisions (the
gate's probe schedule and the token bucket) on a fake clock: Lucid returns at the worst moment,
just after a probe went unanswered; the next probe reopens the gate and the held grants take
their turns at the bucket. Issue 14's target: at 1,000 grants, every expired token is live again
within 10 s of Lucid's return."""

from __future__ import annotations

from lucidgrant.lucid_health import Gate, GateSettings
from lucidgrant.ratelimit import DEFAULT_BURST, DEFAULT_RATE, TokenBucket

# The refresh after its turn at the bucket: Lucid's answer and four Kubernetes writes.
REFRESH_SLACK = 1.0
TARGET = 10.0


def admitted(bucket: TokenBucket, now: float) -> float:
    """When the bucket lets one call through, asked at `now` (as LucidGates.admit waits)."""
    while (wait := bucket.take(now)) > 0:
        now += wait
    return now


def last_turn_after_return(n: int, outage: float = 3 * 3600.0) -> float:
    """Seconds from Lucid's return to the n-th held grant's turn at the bucket."""
    settings = GateSettings()
    gate: Gate[int] = Gate(settings)
    bucket = TokenBucket(0.0, DEFAULT_RATE, DEFAULT_BURST)
    for grant in range(settings.distinct_grants):
        gate.record(grant, answered=False, now=0.0)
    for grant in range(n):
        gate.park(grant, access_expires_at=-1.0)
    returned_at: float | None = None
    while (due := gate.probe_due_at()) is not None:
        sent = admitted(bucket, due)
        gate.probe_sent(sent)
        if sent < outage:
            gate.probe_result(answered=False)
            returned_at = sent  # Lucid returns just after this probe went unanswered
        else:
            gate.probe_result(answered=True)
    assert returned_at is not None
    now = sent
    held = gate.release()
    assert len(held) == n
    for _ in held:
        now = admitted(bucket, now)
    return now - returned_at


def test_a_thousand_expired_grants_get_their_turn_within_the_target() -> None:
    assert last_turn_after_return(1000) <= TARGET - REFRESH_SLACK
