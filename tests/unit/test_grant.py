import pytest

from lucidgrant.grant import SpecError, parse_duration, parse_spec


def spec(**over):
    base = {
        "clientSecretRef": {"name": "client"},
        "scopes": ["lucidchart.document.content:readonly"],
        "authorization": {"refreshTokenSecretRef": {"name": "boot"}},
        "accessTokenSecret": {"name": "token"},
    }
    base.update(over)
    return base


def test_defaults():
    parsed = parse_spec(spec())
    assert parsed.client_id_key == "client_id"
    assert parsed.token_kind == "user"
    assert parsed.refresh_before == 600
    assert parsed.refresh_token_ref and parsed.refresh_token_ref.key == "refresh_token"
    assert parsed.consumer.access_token_key == "access_token"
    assert parsed.requested_scopes[-1] == "offline_access"
    assert parsed.deletion_policy == "Retain"


@pytest.mark.parametrize(
    ("over", "path"),
    [
        ({"tokenKind": "bot"}, "spec.tokenKind"),
        ({"deletionPolicy": "Keep"}, "spec.deletionPolicy"),
        ({"refreshBefore": "ten minutes"}, "spec.refreshBefore"),
        ({"scopes": []}, "spec.scopes"),
        ({"scopes": ["ok", "bad scope"]}, "spec.scopes[1]"),
        ({"clientSecretRef": {}}, "spec.clientSecretRef.name"),
        ({"accessTokenSecret": {"name": "Bad_Name"}}, "spec.accessTokenSecret.name"),
        ({"authorization": {}}, "spec.authorization"),
        (
            {
                "authorization": {
                    "refreshTokenSecretRef": {"name": "a"},
                    "codeSecretRef": {"name": "b"},
                }
            },
            "spec.authorization",
        ),
        ({"authorization": {"codeSecretRef": {"name": "c"}}}, "spec.redirectUri"),
        (
            {"accessTokenSecret": {"name": "t", "keys": {"accessToken": "x", "tokenType": "x"}}},
            "spec.accessTokenSecret.keys",
        ),
        ({"suspend": "yes"}, "spec.suspend"),
    ],
)
def test_refusals_name_the_field(over, path):
    with pytest.raises(SpecError) as err:
        parse_spec(spec(**over))
    assert err.value.path == path


def test_code_grant_with_redirect():
    parsed = parse_spec(
        spec(authorization={"codeSecretRef": {"name": "c"}}, redirectUri="https://x.example/cb")
    )
    assert parsed.code_ref and parsed.code_ref.key == "code"
    assert parsed.bootstrap_ref == parsed.code_ref


def test_durations():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("10")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0s", "'0s': must be above zero: the operator refreshes when the access token has"),
        ("0m0s", "use e.g. 10m"),
        (600, "600: must be a duration such as 10m, 90s or 1h30m"),
        ("10 minutes", "'10 minutes': must be a duration"),
    ],
)
def test_refresh_before_says_why_and_what_to_write(value, says):
    with pytest.raises(SpecError) as caught:
        parse_spec(spec(refreshBefore=value))
    assert caught.value.path == "spec.refreshBefore" and says in str(caught.value)
