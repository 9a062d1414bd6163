"""Timing rules: when to refresh and how long to back off, as pure functions of times (seconds
since the epoch), so that every decision is testable without sleeping. Randomness comes in as
an argument. The work queue (workqueue.py) acts on the times these rules compute."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# How the code that waits is handed its way of waiting: tests pass one that does not.
Sleep = Callable[[float], Awaitable[None]]

# Share of the refresh margin used as jitter, so that grants created together spread out.
JITTER_FRACTION = 0.1
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
# A Retry-After beyond this is not believed (by a grant's retry, nor by the Lucid rate limit).
RETRY_AFTER_CAP = BACKOFF_CAP * 4
# Give up on transient errors only when the refresh token is this close to its end: the refresh
# token itself is what a person would have to replace.
REFRESH_TOKEN_FLOOR = 60.0
# A grant held by a Secret outside the Secret watch's selection (an unmarked client Secret, a
# stray state Secret) looks again this often: no event says when such a Secret changes or goes.
UNWATCHED_RECHECK = 60.0


def refresh_margin(refresh_before: float, access_lifetime: float) -> float:
    """How long before expiry to refresh: refreshBefore, capped at a third of the token's real
    lifetime so that short-lived tokens are not refreshed the moment they are issued."""
    return max(0.0, min(refresh_before, access_lifetime / 3.0))


def refresh_due_at(
    access_expires_at: float, access_lifetime: float, refresh_before: float, rand: float
) -> float:
    """The moment a routine refresh is due; `rand` in [0, 1) moves it earlier by up to a tenth
    of the margin."""
    margin = refresh_margin(refresh_before, access_lifetime)
    return access_expires_at - margin - JITTER_FRACTION * margin * rand


def backoff_delay(
    failures: int, rand: float, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP
) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, never above `cap`.
    `failures` counts consecutive failures including the one just seen (>= 1)."""
    ceiling = min(cap, base * 2.0 ** max(0, failures - 1))
    return ceiling / 2.0 + ceiling / 2.0 * rand


def retry_at(
    now: float,
    failures: int,
    rand: float,
    retry_after: float | None,
    access_expires_at: float | None,
) -> float:
    """When to try again after a transient failure: the backoff, pushed out to Retry-After when
    the provider asked for more, and pulled in so that a still-valid access token gets a try
    shortly before it expires rather than a full backoff after."""
    delay = backoff_delay(failures, rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    at = now + delay
    if access_expires_at is not None and now < access_expires_at - 5.0 < at:
        at = max(now + 1.0, access_expires_at - 5.0)
    return at


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def refresh_token_exhausted(now: float, refresh_expires_at: float | None) -> bool:
    """True when the refresh token is (nearly) dead: retrying a transient failure is pointless."""
    return refresh_expires_at is not None and now >= refresh_expires_at - REFRESH_TOKEN_FLOOR


def rfc3339(ts: float) -> str:
    """A Unix time as the API server writes times (status fields, Secret data for consumers)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
