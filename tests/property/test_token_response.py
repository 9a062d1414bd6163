"""Lucid's token answers, whatever they hold: `parse_token_response` returns a TokenSet the rest
of the operator can use (non-empty tokens, a finite positive lifetime whose expiry can be
written as a date, string scopes) or raises TransientError. Nothing else."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lucidgrant.lucid_answers import TokenSet, TransientError, parse_token_response

ISSUED_AT = 1_750_000_000.0

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
tokens = st.text(min_size=1, max_size=20) | json_values
lifetimes = (
    st.integers(min_value=-5, max_value=10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, 3600, 3600.5, 10**12, 10**30, 10**400, True, "3600", None])
    | json_values
)
scope_values = st.lists(st.text(max_size=10), max_size=3) | st.text(max_size=20) | json_values
token_bodies = st.fixed_dictionaries(
    {},
    optional={
        "access_token": tokens,
        "refresh_token": tokens,
        "expires_in": lifetimes,
        "expires": lifetimes,
        "scopes": scope_values,
        "token_type": json_values,
        "user_id": json_values,
        "account_id": json_values,
        "client_id": json_values,
    },
)
# Mostly well-formed answers with one field off, so the interesting boundary is explored.
near_valid = st.builds(
    lambda base, key, value: {**base, key: value},
    st.just(
        {
            "access_token": "lat_x",
            "refresh_token": "lrt_y",
            "expires_in": 3600,
            "scopes": ["offline_access"],
            "token_type": "bearer",
            "user_id": 1001,
        }
    ),
    st.sampled_from(["access_token", "refresh_token", "expires_in", "scopes", "token_type"]),
    json_values | lifetimes,
)
bodies = token_bodies | near_valid | json_values


def check(body: Any) -> None:
    try:
        result = parse_token_response(body, ISSUED_AT)
    except TransientError:
        return
    assert isinstance(result, TokenSet)
    assert isinstance(result.access_token, str) and result.access_token
    assert isinstance(result.refresh_token, str) and result.refresh_token
    assert isinstance(result.token_type, str)
    assert isinstance(result.expires_in, float)
    assert math.isfinite(result.expires_in) and result.expires_in > 0
    # The expiry goes into annotations, status and the consumer Secret as a date.
    datetime.fromtimestamp(result.access_expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert all(isinstance(s, str) for s in result.scopes)
    assert result.user_id is None or isinstance(result.user_id, str)
    assert result.account_id is None or isinstance(result.account_id, str)
    assert "lat_x" not in repr(result) and "lrt_y" not in repr(result)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_parse_token_response_returns_a_usable_token_set_or_transient_error(body: Any) -> None:
    check(body)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_bodies_that_went_through_json_are_handled_too(value: Any) -> None:
    # What LucidClient actually passes: json.loads of the body (which accepts NaN, Infinity
    # and integers of any size).
    text = json.dumps(value)
    check(json.loads(text))


def test_the_examples_that_matter() -> None:
    for literal in ("Infinity", "NaN", "1e400", "1" + "0" * 400, "1e300"):
        body = json.loads(
            '{"access_token": "a", "refresh_token": "r", "expires_in": ' + literal + "}"
        )
        check(body)
