"""A token bucket per client id that keeps calls to Lucid under a rate, and slows every grant of
that client when Lucid answers 429, not only the grant that got it.

Default rate: Lucid documents no limit for its OAuth endpoints (its REST API documents 750
requests per minute per user). 150 calls a second is 45 times the steady rate of 10,000 grants
with one-hour tokens (about 3 a second), and gives 1,000 grants with expired tokens their turn
within 6.6 s of the gate reopening, so that with the probe's wait (at most
lucid_health.PROBE_INTERVAL) they are live within 10 s of Lucid's return; a burst of 10 keeps
the peak close to the rate.

On a 429 the bucket empties, pauses for Retry-After (or, without one, 2 s doubling with each
429 that comes before the rate is whole again, at most 60 s), and restarts at half the rate it
had, climbing back linearly to the full rate over RAMP seconds. 429s that arrive during the
pause answer calls sent before it and do not cut again.

Pure: every time comes in as an argument."""

from __future__ import annotations

from lucidgrant.timing import RETRY_AFTER_CAP

DEFAULT_RATE = 150.0
DEFAULT_BURST = 10.0
MIN_RATE = 1.0
RAMP = 60.0
PAUSE_BASE = 2.0
PAUSE_CAP = 60.0
# Rounding slack, so that a caller who waited exactly as told gets its call: Unix times near
# 2e9 are precise to about 2e-7 s, a few hundred-thousandths of a call at 150 calls a second.
EPSILON = 1e-3
# The shortest wait answered, so that a caller's clock surely moves.
MIN_WAIT = 1e-3


class TokenBucket:
    def __init__(
        self, now: float, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST
    ) -> None:
        if rate < MIN_RATE or burst < 1:
            raise ValueError(
                f"rate={rate}, burst={burst}: the rate must be at least {MIN_RATE} calls a "
                "second and the burst at least 1 call"
            )
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now
        self._resume = now  # before this, no call may go (a 429's pause)
        self._floor = rate  # the rate at `_resume`, climbing to `rate` over RAMP seconds
        self._strikes = 0  # 429s since the rate was last whole

    def rate_at(self, now: float) -> float:
        """Calls a second allowed at `now` (0 during a pause)."""
        if now < self._resume:
            return 0.0
        climbed = (self.rate - self._floor) * (now - self._resume) / RAMP
        return min(self.rate, self._floor + climbed)

    def take(self, now: float) -> float:
        """Take one call if one is free and answer 0; else answer how long to wait before
        asking again (taking nothing)."""
        self._refill(now)
        if self._tokens >= 1.0 - EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        start = max(now, self._resume)
        # The rate only grows from `start` on, so this wait is never too short.
        return max(MIN_WAIT, start - now + (1.0 - self._tokens) / self.rate_at(start))

    def throttled(self, now: float, retry_after: float | None) -> None:
        """Lucid answered 429 (with Retry-After in seconds, or None)."""
        self._refill(now)
        if now < self._resume:
            if retry_after is not None:
                self._resume = max(self._resume, now + min(retry_after, RETRY_AFTER_CAP))
            return
        current = self.rate_at(now)
        self._strikes = self._strikes + 1 if current < self.rate else 1
        if retry_after is None:
            pause = min(PAUSE_CAP, PAUSE_BASE * 2.0 ** (self._strikes - 1))
        else:
            pause = min(retry_after, RETRY_AFTER_CAP)
        self._tokens = 0.0
        self._floor = max(MIN_RATE, current / 2.0)
        self._resume = now + pause

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + self._accrued(self._stamp, now))
            self._stamp = now

    def _accrued(self, start: float, end: float) -> float:
        """Calls allowed between `start` and `end`: the integral of rate_at, which is 0 before
        `_resume`, then linear up to the full rate at `_resume + RAMP`, then flat."""
        start = max(start, self._resume)
        if end <= start:
            return 0.0
        whole_at = self._resume + (RAMP if self._floor < self.rate else 0.0)
        ramp_end = min(end, whole_at)
        total = 0.0
        if ramp_end > start:
            total += (ramp_end - start) * (self.rate_at(start) + self.rate_at(ramp_end)) / 2.0
        flat_start = max(start, whole_at)
        if end > flat_start:
            total += (end - flat_start) * self.rate
        return total
