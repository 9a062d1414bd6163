from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from lucidgrant import timing


def test_margin_is_refresh_before_for_hour_tokens():
    assert timing.refresh_margin(600, 3600) == 600


def test_margin_capped_at_a_third_of_short_lifetimes():
    assert timing.refresh_margin(600, 60) == 20


def test_due_time_moves_earlier_with_jitter_but_within_a_tenth():
    no_jitter = timing.refresh_due_at(10_000, 3600, 600, 0.0)
    full_jitter = timing.refresh_due_at(10_000, 3600, 600, 0.9999)
    assert no_jitter == 9_400
    assert 9_340 < full_jitter < no_jitter


@pytest.mark.parametrize("failures", range(1, 15))
def test_backoff_grows_and_stays_within_cap(failures):
    low = timing.backoff_delay(failures, 0.0)
    high = timing.backoff_delay(failures, 0.9999)
    ceiling = min(timing.BACKOFF_CAP, timing.BACKOFF_BASE * 2 ** (failures - 1))
    assert low == pytest.approx(ceiling / 2)
    assert ceiling / 2 <= high <= ceiling <= timing.BACKOFF_CAP


def test_retry_after_pushes_backoff_out():
    at = timing.retry_at(1000, 1, 0.0, retry_after=120, access_expires_at=None)
    assert at == 1120


def test_retry_is_pulled_in_before_a_valid_token_expires():
    at = timing.retry_at(1000, 10, 0.5, retry_after=None, access_expires_at=1030)
    assert at == 1025


def test_retry_after_formats():
    now = 1_700_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert timing.parse_retry_after("30", now) == 30
    assert timing.parse_retry_after(date, now) == pytest.approx(90, abs=1)
    assert timing.parse_retry_after("soon", now) is None
    assert timing.parse_retry_after(None, now) is None


def test_refresh_token_exhausted_near_its_end():
    assert not timing.refresh_token_exhausted(1000, None)
    assert not timing.refresh_token_exhausted(1000, 5000)
    assert timing.refresh_token_exhausted(4950, 5000)
