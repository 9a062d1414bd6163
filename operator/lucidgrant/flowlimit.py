"""How much the public authorization flow may be asked, so that strangers cannot turn it into
load on Lucid, on the API server or on the operator's memory.

- `KeyedBuckets`: a token bucket per key (a client address, a grant). A bucket that has filled
  up again is forgotten, so memory follows the keys active in the last minutes; with
  `max_keys` buckets alive, a new key is refused rather than remembered.
- `OutstandingStates`: the states issued and neither used nor expired, capped in all and per
  grant, since each one can cost a code exchange with the grant's client credentials.

Pure: every time comes in as an argument. (ratelimit.TokenBucket is the Lucid gate's bucket,
with pauses on 429 and at least one call a second: a person's clicks need slower rates.)"""

from __future__ import annotations

from dataclasses import dataclass

# Rounding slack, so that a caller who waited exactly as told gets its turn.
EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class KeyedBuckets:
    def __init__(self, per_minute: float, burst: float, max_keys: int = 10_000) -> None:
        if per_minute <= 0 or burst < 1 or max_keys < 1:
            raise ValueError(
                f"per_minute={per_minute}, burst={burst}, max_keys={max_keys}: the rate must be "
                "above 0, the burst and the key count at least 1"
            )
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take one request for `key` and answer 0, or answer the seconds to wait (taking
        nothing)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            if len(self._buckets) >= self.max_keys:
                return 1.0 / self.rate
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = self._level(bucket, now)
        bucket.stamp = max(bucket.stamp, now)
        if bucket.tokens >= 1.0 - EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.tokens + max(0.0, now - bucket.stamp) * self.rate)

    def _forget_full(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst]:
            del self._buckets[key]


class OutstandingStates:
    def __init__(self, total: int, per_grant: int) -> None:
        if total < 1 or per_grant < 1:
            raise ValueError(f"total={total}, per_grant={per_grant}: both must be at least 1")
        self.total = total
        self.per_grant = per_grant
        self._states: dict[str, tuple[str, float]] = {}  # nonce -> (grant, expiry)

    def __len__(self) -> int:
        return len(self._states)

    def add(self, grant: str, nonce: str, expires_at: float, now: float) -> bool:
        """Count a newly issued state; False (and nothing counted) when a cap is reached."""
        for old in [n for n, (_, exp) in self._states.items() if exp <= now]:
            del self._states[old]
        of_grant = sum(1 for g, _ in self._states.values() if g == grant)
        if len(self._states) >= self.total or of_grant >= self.per_grant:
            return False
        self._states[nonce] = (grant, expires_at)
        return True

    def discard(self, nonce: str) -> None:
        """A state was used (or refused for good): it no longer counts."""
        self._states.pop(nonce, None)
