"""The web flow in process: the pure StateSigner under a fake clock, and AuthFlow's handlers
served by aiohttp's test server with a fake FlowHost (no operator, no Lucid, no cluster)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lucidgrant.authflow import AuthFlow, add_routes
from lucidgrant.authstate import StateError, StateSigner
from lucidgrant.cache import Cache, GrantRecord, Key
from lucidgrant.lucid import ClientCredentials, InvalidGrantError, TokenSet, TransientError

from .fakes import FakeClock

KEY = b"k" * 32


def test_a_state_is_signed_expires_and_works_once():
    clock = FakeClock()
    signer = StateSigner(KEY, ttl=600, clock=clock)
    state = signer.issue("ns", "g", "uid-1", 3)
    claims = signer.verify(state)
    assert (claims.namespace, claims.name, claims.uid, claims.generation) == ("ns", "g", "uid-1", 3)
    signer.consume(claims)
    with pytest.raises(StateError, match="already been used"):
        signer.consume(signer.verify(state))
    late = signer.issue("ns", "g", "uid-1", 3)
    clock.now += 600
    with pytest.raises(StateError, match="expired"):
        signer.verify(late)


def test_used_nonces_are_forgotten_once_their_state_expired():
    clock = FakeClock()
    signer = StateSigner(KEY, ttl=10, clock=clock)
    signer.consume(signer.verify(signer.issue("ns", "g", "u", 1)))
    clock.now += 11
    signer.consume(signer.verify(signer.issue("ns", "g", "u", 1)))
    assert len(signer._used) == 1


def test_forged_tampered_and_malformed_states_are_refused():
    signer = StateSigner(KEY)
    state = signer.issue("ns", "g", "uid-1", 1)
    version, payload, signature = state.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other = base64.urlsafe_b64encode(json.dumps({**claims, "n": "other"}).encode()).decode()
    for bad, why in [
        (f"{version}.{payload}.{'x' * 43}", "not signed"),
        (f"{version}.{other.rstrip('=')}.{signature}", "not signed"),
        (StateSigner(b"o" * 32).issue("ns", "g", "uid-1", 1), "not signed"),
        ("garbage", "malformed"),
        (f"v2.{payload}.{signature}", "malformed"),
        ("v1." + "a" * 2000 + ".b", "malformed"),
    ]:
        with pytest.raises(StateError, match=why):
            signer.verify(bad)
    with pytest.raises(ValueError, match="32 bytes"):
        StateSigner(b"short")
    assert "kkk" not in repr(signer)


def grant(generation: int = 1, uid: str = "uid-1", reauth: str = "True") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": "g",
            "uid": uid,
            "generation": generation,
            "resourceVersion": str(generation),
        },
        "spec": {
            "clientSecretRef": {"name": "client"},
            "scopes": ["a.b"],
            "accessTokenSecret": {"name": "tok"},
        },
        "status": {"conditions": [{"type": "ReauthorizationRequired", "status": reauth}]},
    }


class Host:
    """A fake FlowHost: a cache with one grant, and records of what the flow asked for."""

    def __init__(self) -> None:
        self.cache = Cache()
        self.cache.observe_grant(grant())
        self.exchanged: list[tuple[str, str]] = []
        self.stored: list[Key] = []
        self.exchange_error: Exception | None = None

    def grant(self, key: Key) -> GrantRecord | None:
        return self.cache.grants.get(key)

    async def client_credentials(self, key: Key) -> ClientCredentials | None:
        return ClientCredentials("client-1", "secret-1")

    async def exchange_code(
        self, creds: ClientCredentials, code: str, redirect_uri: str
    ) -> TokenSet:
        self.exchanged.append((code, redirect_uri))
        if self.exchange_error is not None:
            raise self.exchange_error
        return TokenSet("at", "rt", "bearer", 3600, ("a.b",), 0.0)

    async def authorized(self, key: Key, tokens: TokenSet) -> None:
        self.stored.append(key)

    async def state_key(self) -> bytes:
        return KEY


@pytest.fixture
async def served():
    host = Host()
    flow = AuthFlow(host, "https://ops.test", "https://lucid.test")
    app = web.Application()
    add_routes(app, flow)
    async with TestClient(TestServer(app)) as client:
        yield host, client


async def state_from_link(client: TestClient[Any, Any]) -> str:
    response = await client.get("/authorize/ns/g", allow_redirects=False)
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith("https://lucid.test/oauth2/authorize?")
    query = parse_qs(urlsplit(location).query)
    assert query["redirect_uri"] == ["https://ops.test/callback"]
    assert query["scope"] == ["a.b offline_access"]
    return query["state"][0]


async def test_the_link_leads_to_lucid_and_the_callback_stores_once(served):
    host, client = served
    state = await state_from_link(client)
    ok = await client.get("/callback", params={"state": state, "code": "c1"})
    assert ok.status == 200 and host.stored == [("ns", "g")]
    assert host.exchanged == [("c1", "https://ops.test/callback")]
    again = await client.get("/callback", params={"state": state, "code": "c1"})
    assert again.status == 400 and "already been used" in await again.text()
    assert host.stored == [("ns", "g")]


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        (grant(generation=2), "changed since this link was made"),
        (grant(uid="uid-2", generation=5), "deleted and created again"),
    ],
)
async def test_a_changed_or_recreated_grant_refuses_an_old_link(served, changed, why):
    host, client = served
    state = await state_from_link(client)
    host.cache.grants.clear()
    host.cache.observe_grant(changed)
    refused = await client.get("/callback", params={"state": state, "code": "c1"})
    assert refused.status == 400 and why in await refused.text()
    assert host.exchanged == [] and host.stored == []


async def test_a_failed_exchange_stores_nothing(served):
    host, client = served
    for error, status, text in [
        (InvalidGrantError("x"), 400, "expired or used"),
        (TransientError("x"), 502, "failed to answer"),
    ]:
        host.exchange_error = error
        state = await state_from_link(client)
        refused = await client.get("/callback", params={"state": state, "code": "c1"})
        assert refused.status == status and text in await refused.text()
    assert host.stored == []


async def test_a_working_grant_is_not_replaced_through_the_link(served):
    host, client = served
    host.cache.grants.clear()
    host.cache.observe_grant(grant(reauth="False"))
    response = await client.get("/authorize/ns/g", allow_redirects=False)
    assert response.status == 409 and "kubectl lucidgrant authorize g" in await response.text()
    assert (await client.get("/authorize/ns/nope")).status == 404
