import httpx
import pytest

from lucidgrant.lucid_answers import (
    ClientRejectedError,
    InvalidGrantError,
    PartialAnswerError,
    TransientError,
    classify_error,
    parse_token_response,
)


def resp(status, body=b"", headers=None):
    return httpx.Response(status, content=body, headers=headers or {})


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_side_is_transient(status):
    assert isinstance(classify_error(resp(status, b"<html>down</html>"), 0), TransientError)


def test_429_retry_after():
    err = classify_error(resp(429, headers={"Retry-After": "7"}), 0)
    assert isinstance(err, TransientError) and err.retry_after == 7


def test_invalid_grant():
    body = b'{"error":"invalid_grant","error_description":"Invalid client id, client secret, or refresh token"}'
    assert isinstance(classify_error(resp(400, body), 0), InvalidGrantError)


@pytest.mark.parametrize("status", [401, 403])
def test_client_rejected(status):
    assert isinstance(classify_error(resp(status, b"{}"), 0), ClientRejectedError)


def test_html_400_is_not_evidence_about_the_grant():
    assert isinstance(classify_error(resp(400, b"<html>proxy</html>"), 0), TransientError)


def test_error_text_never_carries_the_body():
    secret = b'{"error":"invalid_grant","refresh_token":"lrt_SECRET"}'
    assert "lrt_SECRET" not in str(classify_error(resp(400, secret), 0))


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"access_token": "a"},
        {"access_token": "a", "refresh_token": "r", "expires_in": "3600"},
        {"access_token": "a", "refresh_token": "r", "expires_in": True},
        {"access_token": "", "refresh_token": "r", "expires_in": 3600},
    ],
)
def test_malformed_token_answers_are_transient(body):
    with pytest.raises(TransientError):
        parse_token_response(body, 0)


def test_token_answer_parsed_and_repr_hides_tokens():
    tokens = parse_token_response(
        {
            "access_token": "lat_A",
            "refresh_token": "lrt_R",
            "expires_in": 3600,
            "scopes": ["x", "offline_access"],
            "token_type": "bearer",
            "user_id": 1001,
        },
        100.0,
    )
    assert tokens.access_expires_at == 3700
    assert tokens.user_id == "1001"
    assert "lat_A" not in repr(tokens) and "lrt_R" not in repr(tokens)


def test_an_answer_with_a_new_refresh_token_but_no_access_token_keeps_the_refresh_token():
    with pytest.raises(PartialAnswerError) as err:
        parse_token_response({"refresh_token": "lrt_NEW", "expires_in": 3600}, 0)
    assert err.value.refresh_token == "lrt_NEW"
    assert "lrt_NEW" not in str(err.value) and "lrt_NEW" not in repr(err.value)
