import re

import pytest

from lucidgrant.grant import SpecError, parse_duration, parse_spec
from lucidgrant.names import grant_label, secret_of_path, secret_path

LABELS = "spec.accessTokenSecret.labels"
ANNOTATIONS = "spec.accessTokenSecret.annotations"


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
        # What the API server would refuse in the consumer Secret's metadata (422).
        ({"accessTokenSecret": {"name": "t", "labels": {"a": "-x"}}}, LABELS),
        ({"accessTokenSecret": {"name": "t", "labels": {"a": "v" * 64}}}, LABELS),
        ({"accessTokenSecret": {"name": "t", "labels": {"bad key": "v"}}}, LABELS),
        ({"accessTokenSecret": {"name": "t", "labels": {"Example.com/k": "v"}}}, LABELS),
        ({"accessTokenSecret": {"name": "t", "annotations": {"a/b/c": "v"}}}, ANNOTATIONS),
        ({"accessTokenSecret": {"name": "t", "annotations": {"a": "v" * 262144}}}, ANNOTATIONS),
    ],
)
def test_refusals_name_the_field(over, path):
    with pytest.raises(SpecError) as err:
        parse_spec(spec(**over))
    assert err.value.path == path


def test_metadata_the_api_server_accepts_is_kept():
    consumer = {
        "name": "t",
        "labels": {"app.example.com/tier": "backend", "empty": "", "x": "v" * 63},
        "annotations": {"Example.COM/Note": "any text at all", "a": "v" * 1000},
    }
    parsed = parse_spec(spec(accessTokenSecret=consumer))
    assert parsed.consumer.labels == consumer["labels"]
    assert parsed.consumer.annotations == consumer["annotations"]


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


def test_grant_label_fits_a_label_value_and_keeps_names_apart():
    assert grant_label("reporting") == "reporting"
    long_a, long_b = "g" * 70 + "-a", "g" * 70 + "-b"
    for name in (long_a, long_b, "a" * 52 + "-" + "b" * 200):
        value = grant_label(name)
        assert len(value) <= 63
        assert re.match(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", value), value
    assert grant_label(long_a) != grant_label(long_b)
    assert grant_label("x" * 63) == "x" * 63


def test_secret_of_path_inverts_secret_path():
    assert secret_of_path(secret_path("team-a", "lucid-token")) == ("team-a", "lucid-token")
    assert secret_of_path(secret_path("team-a")) is None
    assert secret_of_path("/apis/lucidgrant.dev/v1alpha1/namespaces/a/lucidgrants/b") is None
