"""The token bucket per client id: the rate it keeps, and how a 429 slows every caller. A greedy
caller on a fake clock takes every call the bucket allows; nothing sleeps."""

import pytest

from lucidgrant.ratelimit import (
    DEFAULT_BURST,
    DEFAULT_RATE,
    MIN_RATE,
    PAUSE_CAP,
    RAMP,
    TokenBucket,
)


def greedy(bucket: TokenBucket, start: float, end: float) -> list[float]:
    """The times of every call a caller that always wants one gets between start and end."""
    calls: list[float] = []
    now = start
    while now < end:
        wait = bucket.take(now)
        if wait == 0.0:
            calls.append(now)
        else:
            assert wait > 0
            now += wait
    return calls


def in_window(calls: list[float], start: float, end: float) -> int:
    return sum(start <= t < end for t in calls)


def test_a_burst_then_the_rate():
    bucket = TokenBucket(0.0, rate=100.0, burst=10.0)
    calls = greedy(bucket, 0.0, 10.0)
    assert in_window(calls, 0.0, 1e-9) == 10, "the burst goes at once"
    assert len(calls) == pytest.approx(10 + 100 * 10, abs=2)
    # Never more than rate + burst in any one second.
    assert max(in_window(calls, t / 10, t / 10 + 1.0) for t in range(90)) <= 110


def test_defaults_and_an_idle_bucket_keeps_no_more_than_its_burst():
    bucket = TokenBucket(0.0)
    assert (bucket.rate, bucket.burst) == (DEFAULT_RATE, DEFAULT_BURST)
    assert in_window(greedy(bucket, 3600.0, 3600.5), 3600.0, 3600.0 + 1e-9) == DEFAULT_BURST


def test_a_429_without_retry_after_pauses_then_halves_and_climbs_back():
    bucket = TokenBucket(0.0, rate=100.0, burst=10.0)
    greedy(bucket, 0.0, 5.0)
    bucket.throttled(5.0, None)
    assert bucket.rate_at(6.0) == 0.0
    calls = greedy(bucket, 5.0, 5.0 + 2.0 + RAMP + 10.0)
    assert in_window(calls, 5.0, 7.0) == 0, "2 s pause after a first 429"
    assert in_window(calls, 7.0, 8.0) == pytest.approx(50, abs=2), "half the rate at first"
    assert bucket.rate_at(7.0 + RAMP / 2) == pytest.approx(75)
    assert in_window(calls, 7.0 + RAMP, 8.0 + RAMP) == pytest.approx(100, abs=2)


def test_429s_before_the_rate_is_whole_double_the_pause_and_halve_again():
    bucket = TokenBucket(0.0, rate=100.0, burst=10.0)
    bucket.throttled(0.0, None)  # pause 2 s, then 50/s
    bucket.throttled(3.0, None)  # rate ~50.8 -> pause 4 s, then ~25/s
    assert bucket.rate_at(6.9) == 0.0
    assert bucket.rate_at(7.0) == pytest.approx(25.4, abs=0.1)
    bucket.throttled(8.0, None)  # pause 8 s
    assert bucket.rate_at(15.9) == 0.0 and bucket.rate_at(16.0) > 0


def test_the_pause_is_capped_and_the_rate_floored():
    bucket = TokenBucket(0.0, rate=100.0)
    now = 0.0
    for pause in (2, 4, 8, 16, 32, PAUSE_CAP, PAUSE_CAP, PAUSE_CAP):
        bucket.throttled(now, None)  # each 429 comes as soon as the pause before it ends
        assert bucket.rate_at(now + pause - 0.01) == 0.0
        now += pause
    assert bucket.rate_at(now) == MIN_RATE, "100 halved 8 times, floored"


def test_once_the_rate_is_whole_again_a_429_is_a_first_strike():
    bucket = TokenBucket(0.0, rate=100.0)
    bucket.throttled(0.0, None)
    bucket.throttled(3.0, None)
    later = 7.0 + RAMP + 1.0
    assert bucket.rate_at(later) == 100.0
    bucket.throttled(later, None)
    assert bucket.rate_at(later + 1.99) == 0.0
    assert bucket.rate_at(later + 2.0) == pytest.approx(50.0)


@pytest.mark.parametrize(("retry_after", "quiet"), [(30.0, 30.0), (0.0, 0.0), (10_000.0, 1200.0)])
def test_retry_after_sets_the_pause(retry_after, quiet):
    bucket = TokenBucket(0.0, rate=100.0)
    bucket.throttled(0.0, retry_after)
    calls = greedy(bucket, 0.0, quiet + 1.0)
    assert in_window(calls, 0.0, quiet) == 0
    assert calls and calls[0] == pytest.approx(quiet, abs=0.05)


def test_429s_answering_calls_sent_before_the_pause_do_not_cut_again():
    bucket = TokenBucket(0.0, rate=100.0)
    bucket.throttled(0.0, None)
    for i in range(30):  # the rest of a concurrent burst, answered during the pause
        bucket.throttled(0.01 * i, None)
    assert bucket.rate_at(2.0) == pytest.approx(50.0)
    bucket.throttled(1.0, 5.0)  # ... but a Retry-After among them is honoured
    assert bucket.rate_at(5.9) == 0.0
    assert bucket.rate_at(6.0) == pytest.approx(50.0)


def test_every_caller_of_the_client_waits_after_a_429():
    bucket = TokenBucket(0.0, rate=100.0, burst=10.0)
    bucket.throttled(0.0, None)
    waits = [bucket.take(0.5) for _ in range(5)]
    assert all(w == pytest.approx(1.5 + 1 / 50) for w in waits)


@pytest.mark.parametrize(("rate", "burst"), [(0.5, 10.0), (100.0, 0.0)])
def test_bad_settings_say_which(rate, burst):
    with pytest.raises(ValueError, match=f"rate={rate}, burst={burst}"):
        TokenBucket(0.0, rate=rate, burst=burst)


def test_at_todays_unix_times_a_caller_who_waits_as_told_gets_its_call():
    """Times near 2e9 are precise to about 2e-7 s: the bucket must not answer waits that are
    lost in rounding (the caller would ask again forever at the same instant)."""
    start = 1_800_000_000.0
    bucket = TokenBucket(start, rate=100.0, burst=10.0)
    calls = greedy(bucket, start, start + 10.0)
    assert len(calls) == pytest.approx(10 + 100 * 10, abs=2)
