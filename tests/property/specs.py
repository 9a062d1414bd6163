"""Hypothesis strategies for LucidGrant specs: a valid spec, then zero to three mutations
(wrong types, bad strings, missing or extra fields, both or neither authorization source), so
that about half are refused by the schema and the rest exercise what the operator accepts."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

NAMES = ["lucid-client", "missing-client", "shared-token", "boot-a", "boot-b", "code-a"]
dns = st.sampled_from(NAMES) | st.from_regex(r"[a-z0-9]([-a-z0-9]{0,12}[a-z0-9])?", fullmatch=True)
keys = st.from_regex(r"[-._a-zA-Z0-9]{1,12}", fullmatch=True)
scope = st.sampled_from(
    ["lucidchart.document.content:readonly", "offline_access", "lucidchart.document.content"]
) | st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)
durations = st.sampled_from(["10m", "90s", "1h30m", "0s", "500ms", "1s"]) | st.from_regex(
    r"([0-9]{1,3}(ms|s|m|h)){1,2}", fullmatch=True
)
junk = st.one_of(
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["", "UPPER", "-x", "a_b", "a b", "x" * 300, "ns/name", "10 minutes"]),
)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "clientSecretRef": {"name": draw(dns)},
        "scopes": draw(st.lists(scope, min_size=1, max_size=3)),
        "accessTokenSecret": {"name": draw(dns)},
    }
    if draw(st.booleans()):
        spec["clientSecretRef"]["clientIdKey"] = draw(keys)
    if draw(st.booleans()):
        spec["tokenKind"] = draw(st.sampled_from(["user", "account"]))
    source = draw(st.sampled_from(["refresh", "code", "none"]))
    if source == "refresh":
        ref: dict[str, Any] = {"name": draw(dns)}
        if draw(st.booleans()):
            ref["key"] = draw(keys)
        spec["authorization"] = {"refreshTokenSecretRef": ref}
    elif source == "code":
        spec["authorization"] = {"codeSecretRef": {"name": draw(dns)}}
    if draw(st.booleans()):
        spec["redirectUri"] = "https://ops.example.com/" + draw(keys)
    if draw(st.booleans()):
        spec["accessTokenSecret"]["keys"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "accessToken": keys,
                    "expiresAt": keys,
                    "tokenType": keys,
                    "authorizationHeader": keys,
                },
            )
        )
    if draw(st.booleans()):
        spec["accessTokenSecret"]["labels"] = draw(
            st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), keys, max_size=2)
        )
    if draw(st.booleans()):
        spec["refreshBefore"] = draw(durations)
    if draw(st.booleans()):
        spec["suspend"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["deletionPolicy"] = draw(st.sampled_from(["Retain", "Revoke"]))
    return spec


PATHS = [
    ("clientSecretRef",),
    ("clientSecretRef", "name"),
    ("clientSecretRef", "clientSecretKey"),
    ("clientSecretRef", "namespace"),
    ("tokenKind",),
    ("scopes",),
    ("redirectUri",),
    ("authorization",),
    ("authorization", "refreshTokenSecretRef"),
    ("authorization", "codeSecretRef"),
    ("authorization", "refreshTokenSecretRef", "namespace"),
    ("accessTokenSecret",),
    ("accessTokenSecret", "name"),
    ("accessTokenSecret", "namespace"),
    ("accessTokenSecret", "keys", "accessToken"),
    ("accessTokenSecret", "labels"),
    ("refreshBefore",),
    ("suspend",),
    ("deletionPolicy",),
    ("unknownField",),
]


def _set(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = spec
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is _DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


_DELETE = object()


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = copy.deepcopy(draw(valid_specs()))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        value = draw(
            st.one_of(
                junk,
                st.just(_DELETE),
                dns,
                st.just({"name": "boot-a"}),
                st.just([]),
                st.lists(scope, min_size=65, max_size=66),
            )
        )
        _set(spec, path, value)
    return spec
