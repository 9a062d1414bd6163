"""Rules the API server checks at admission (the CRD's CEL rules, in crds/), so that a bad
grant is refused with the field, the value's problem and the fix, instead of being stored and
reported later."""

from __future__ import annotations

import pytest

from .harness import grant_spec


@pytest.mark.parametrize(
    ("over", "field", "says"),
    [
        (
            {"authorization": {"codeSecretRef": {"name": "code"}}},
            "spec.redirectUri",
            "is required with authorization.codeSecretRef",
        ),
        ({"refreshBefore": "0s"}, "spec.refreshBefore", "must be above zero"),
        ({"refreshBefore": "0m00s"}, "spec.refreshBefore", "use e.g. 10m"),
        (
            {"accessTokenSecret": {"name": "t", "keys": {"expiresAt": "access_token"}}},
            "spec.accessTokenSecret.keys",
            "key names must be distinct",
        ),
        (
            {"accessTokenSecret": {"name": "t", "keys": {"authorizationHeader": "token_type"}}},
            "spec.accessTokenSecret.keys",
            "key names must be distinct",
        ),
    ],
)
def test_refused_at_admission_with_the_field_and_the_fix(cluster, over, field, says):
    response = cluster.create_grant("bad", grant_spec(**over))
    assert response.status_code == 422, response.text
    body = response.json()
    (cause,) = body["details"]["causes"]
    assert cause["field"] == field
    assert says in cause["message"] and f"{field}: " in body["message"]
    assert cluster.grant("bad") is None


@pytest.mark.parametrize(
    "over",
    [
        {"refreshBefore": "0m30s"},
        {
            "redirectUri": "https://ops.example.com/cb",
            "authorization": {"codeSecretRef": {"name": "c"}},
        },
        {"accessTokenSecret": {"name": "t", "keys": {"authorizationHeader": "authorization"}}},
    ],
)
def test_the_rules_admit_good_grants(cluster, over):
    response = cluster.create_grant("good", grant_spec(**over))
    assert response.status_code == 201, response.text
