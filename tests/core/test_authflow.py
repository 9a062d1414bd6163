"""The web flow in process: the pure state functions under a fake clock, and AuthFlow's handlers
served by aiohttp's test server with a fake FlowHost that keeps the grant's state Secret as the
real host does under the refresh lock (no operator, no Lucid, no cluster)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lucidgrant.authflow import CLIENT_REFUSED_FOR, AuthFlow, add_routes
from lucidgrant.authstate import (
    COOKIE,
    MAX_USED,
    StateError,
    StateSigner,
    browser_nonce,
    check_browser,
    record_use,
)
from lucidgrant.cache import Cache, GrantRecord, Key
from lucidgrant.config import Settings
from lucidgrant.flowhost import Redemption
from lucidgrant.flowpages import lucid_error_text
from lucidgrant.lucid_answers import ClientCredentials, InvalidGrantError, TokenSet, TransientError
from lucidgrant.names import ANN_USED_STATES
from lucidgrant.state_secret import GrantState

from .fakes import FakeClock

KEY = b"k" * 32
BROWSER = browser_nonce(None)


# -- the state, pure ---------------------------------------------------------------------------


def test_a_state_is_signed_expires_and_belongs_to_one_browser():
    clock = FakeClock()
    signer = StateSigner(KEY, ttl=600, clock=clock)
    state, issued = signer.issue("ns", "g", "uid-1", 3, BROWSER)
    claims = signer.verify(state)
    assert claims == issued
    assert (claims.namespace, claims.name, claims.uid, claims.generation) == ("ns", "g", "uid-1", 3)
    check_browser(claims, BROWSER)
    for cookie in (None, "", browser_nonce(None), BROWSER[:-1] + "x"):
        with pytest.raises(StateError, match="another browser"):
            check_browser(claims, cookie)
    assert BROWSER not in state  # only its hash travels through Lucid
    clock.now += 600
    with pytest.raises(StateError, match="expired"):
        signer.verify(state)


def test_a_browser_keeps_its_nonce_and_junk_cookies_are_replaced():
    assert browser_nonce(BROWSER) == BROWSER
    for junk in (None, "", "short", "x" * 43 + ";", "é" * 43):
        fresh = browser_nonce(junk)
        assert fresh != junk and browser_nonce(fresh) == fresh


def test_forged_tampered_and_malformed_states_are_refused():
    signer = StateSigner(KEY)
    state, _ = signer.issue("ns", "g", "uid-1", 1, BROWSER)
    version, payload, signature = state.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other = base64.urlsafe_b64encode(json.dumps({**claims, "n": "other"}).encode()).decode()
    foreign, _ = StateSigner(b"o" * 32).issue("ns", "g", "uid-1", 1, BROWSER)
    for bad, why in [
        (f"{version}.{payload}.{'x' * 43}", "not signed"),
        (f"{version}.{other.rstrip('=')}.{signature}", "not signed"),
        (foreign, "not signed"),
        ("garbage", "malformed"),
        (f"v2.{payload}.{signature}", "malformed"),
        ("v1." + "a" * 2000 + ".b", "malformed"),
    ]:
        with pytest.raises(StateError, match=why):
            signer.verify(bad)
    with pytest.raises(ValueError, match="32 bytes"):
        StateSigner(b"short")
    assert "kkk" not in repr(signer)


def test_the_ledger_takes_a_state_once_forgets_expired_ones_and_is_bounded():
    clock = FakeClock()
    signer = StateSigner(KEY, ttl=10, clock=clock)
    first = signer.issue("ns", "g", "u", 1, BROWSER)[1]
    ledger = record_use(None, first, clock.now)
    assert first.nonce not in ledger
    with pytest.raises(StateError, match="already been used"):
        record_use(ledger, first, clock.now + 1)
    clock.now += 11  # the first state expired: its entry goes with it
    second = signer.issue("ns", "g", "u", 1, BROWSER)[1]
    assert len(json.loads(record_use(ledger, second, clock.now))) == 1
    full = None
    for _ in range(MAX_USED):
        full = record_use(full, signer.issue("ns", "g", "u", 1, BROWSER)[1], clock.now)
    with pytest.raises(StateError, match="Too many"):
        record_use(full, second, clock.now)
    # A ledger someone spoiled does not stop the flow (nor does it remember anything).
    assert record_use("{not json", second, clock.now)


def test_only_known_lucid_errors_are_named():
    assert lucid_error_text("access_denied").startswith("Lucid did not grant access: access_denied")
    assert lucid_error_text("<script>call 555</script>") == "Lucid did not grant access."


# -- the handlers ------------------------------------------------------------------------------


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
    """A fake FlowHost: the grant in the cache and on the API server, its state Secret (no
    refresh token yet), and records of what the flow asked for. `authorized` does what the
    real host does under the refresh lock: check, write the annotations, exchange, store."""

    def __init__(self) -> None:
        self.cache = Cache()
        self.cache.observe_grant(grant())
        self.state = GrantState(resource_version="1")
        self.exchanged: list[tuple[str, str]] = []
        self.stored: list[tuple[Key, str | None]] = []
        self.exchange_error: Exception | None = None
        self.creds: ClientCredentials | None = ClientCredentials("client-1", "secret-1")
        # Lucid's clients, and the pairs the flow asked it about (None: it does not answer).
        self.lucid_clients: set[ClientCredentials] | None = {self.creds}
        self.client_checks: list[ClientCredentials] = []

    def grant(self, key: Key) -> GrantRecord | None:
        return self.cache.grants.get(key)

    async def client_credentials(self, key: Key) -> ClientCredentials | None:
        return self.creds

    async def client_accepted(self, creds: ClientCredentials) -> bool:
        self.client_checks.append(creds)
        if self.lucid_clients is None:
            raise TransientError("Lucid is down")
        return creds in self.lucid_clients

    async def exchange_code(
        self, creds: ClientCredentials, code: str, redirect_uri: str
    ) -> TokenSet:
        self.exchanged.append((code, redirect_uri))
        if self.exchange_error is not None:
            raise self.exchange_error
        return TokenSet("at", "rt", "bearer", 3600, ("a.b",), 0.0)

    async def authorized(self, key: Key, redemption: Redemption, by: str | None) -> None:
        marks = await redemption.check(self.state)
        self.state = replace(self.state, used_states=marks[ANN_USED_STATES])
        tokens = await redemption.exchange()
        self.state = replace(self.state, refresh_token=tokens.refresh_token, scopes=tokens.scopes)
        self.stored.append((key, by))

    async def state_key(self) -> bytes:
        return KEY


def settings(**over: Any) -> Settings:
    return Settings(external_url="https://ops.test", lucid_app_url="https://lucid.test", **over)


@pytest.fixture
async def make_served():
    clients: list[TestClient[Any, Any]] = []

    async def make(**over: Any) -> tuple[Host, TestClient[Any, Any], FakeClock]:
        host, clock = Host(), FakeClock()
        app = web.Application()
        add_routes(app, AuthFlow(host, settings(**over), clock))
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return host, client, clock

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def served(make_served):
    host, client, _ = await make_served()
    return host, client


class Browser:
    """Keeps the flow's cookie by hand: it is Secure, and the test server speaks plain HTTP."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.cookie: str | None = None

    async def get(self, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookie:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        response = await self.client.get(path, headers=headers, allow_redirects=False, **kwargs)
        if COOKIE in response.cookies:
            self.cookie = response.cookies[COOKIE].value
        return response

    async def state(self, **headers: str) -> str:
        response = await self.get("/authorize/ns/g", headers=headers)
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
        assert location.startswith("https://lucid.test/oauth2/authorize?")
        query = parse_qs(urlsplit(location).query)
        assert query["redirect_uri"] == ["https://ops.test/callback"]
        assert query["scope"] == ["a.b offline_access"]
        return str(query["state"][0])

    async def callback(self, state: str, code: str = "c1", **headers: str) -> Any:
        return await self.get("/callback", params={"state": state, "code": code}, headers=headers)


async def test_the_link_sets_the_cookie_and_the_callback_stores_once(served):
    host, client = served
    browser = Browser(client)
    state = await browser.state()
    cookie = (await client.get("/authorize/ns/g", allow_redirects=False)).headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=600"):
        assert attribute in cookie
    assert "Domain" not in cookie
    ok = await browser.callback(state)
    assert ok.status == 200 and host.stored == [(("ns", "g"), None)]
    assert host.exchanged == [("c1", "https://ops.test/callback")]
    again = await browser.callback(state)
    assert again.status == 400 and "already been used" in await again.text()
    assert host.stored == [(("ns", "g"), None)]


async def test_a_state_without_its_browser_does_nothing(served):
    host, client = served
    state = await Browser(client).state()
    stranger = Browser(client)
    await stranger.state()  # a browser with its own cookie
    for who in (Browser(client), stranger):
        refused = await who.callback(state)
        assert refused.status == 400 and "another browser" in await refused.text()
    assert host.exchanged == [] and host.stored == []


async def test_a_repaired_grant_refuses_a_link_made_before(served):
    host, client = served
    browser = Browser(client)
    state = await browser.state()
    host.state = replace(host.state, refresh_token="repaired", scopes=("a.b",))
    refused = await browser.callback(state)
    assert refused.status == 409 and "does not need a person" in await refused.text()
    assert host.exchanged == [] and host.stored == []


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        (grant(generation=2), "changed since this link was made"),
        (grant(uid="uid-2", generation=5), "deleted and created again"),
        (None, "no longer exists"),
    ],
)
async def test_a_changed_or_recreated_grant_refuses_an_old_link(served, changed, why):
    host, client = served
    browser = Browser(client)
    state = await browser.state()
    host.cache.grants.clear()
    if changed is not None:
        host.cache.observe_grant(changed)
    refused = await browser.callback(state)
    assert refused.status == 400 and why in await refused.text()
    assert host.exchanged == [] and host.stored == []


async def test_a_failed_exchange_stores_nothing_and_uses_the_state(served):
    host, client = served
    browser = Browser(client)
    for error, status, text in [
        (InvalidGrantError("x"), 400, "expired or used"),
        (TransientError("x"), 502, "failed to answer"),
    ]:
        host.exchange_error = error
        state = await browser.state()
        refused = await browser.callback(state)
        assert refused.status == status and text in await refused.text()
        again = await browser.callback(state)
        assert "already been used" in await again.text()
    assert host.stored == []


async def test_grants_not_awaiting_a_person_answer_like_unknown_ones(served):
    host, client = served
    unknown = await client.get("/authorize/ns/nope", allow_redirects=False)
    body = await unknown.text()
    assert unknown.status == 404 and "kubectl lucidgrant authorize" in body
    host.cache.grants.clear()
    host.cache.observe_grant(grant(reauth="False"))
    working = await client.get("/authorize/ns/g", allow_redirects=False)
    assert (working.status, await working.text()) == (404, body)
    host.cache.grants.clear()
    host.cache.observe_grant(grant())
    host.creds = None  # the client Secret is gone
    orphan = await client.get("/authorize/ns/g", allow_redirects=False)
    assert (orphan.status, await orphan.text()) == (404, body)
    assert "client" not in body


async def test_a_client_id_lucid_does_not_accept_with_its_secret_is_never_shown(served):
    """The grant chooses which key of its client Secret is the client id: with the keys
    swapped, the link would show the client secret in Lucid's URL to whoever opens it."""
    host, client = served
    unknown = await (await client.get("/authorize/ns/nope", allow_redirects=False)).text()
    host.creds = ClientCredentials("secret-1", "client-1")
    swapped = await client.get("/authorize/ns/g", allow_redirects=False)
    assert (swapped.status, await swapped.text()) == (404, unknown)
    assert "secret-1" not in json.dumps(dict(swapped.headers))
    host.lucid_clients, host.creds = None, ClientCredentials("client-2", "secret-2")
    down = await client.get("/authorize/ns/g", allow_redirects=False)
    assert down.status == 503 and "secret-2" not in json.dumps(dict(down.headers))
    host.lucid_clients, host.creds = {host.creds}, host.creds
    for _ in range(2):
        linked = await client.get("/authorize/ns/g", allow_redirects=False)
        assert linked.status == 302 and "client_id=client-2" in linked.headers["Location"]
    assert host.client_checks.count(host.creds) == 2, "one check when down, then once"


async def test_a_flood_of_links_asks_lucid_once_a_minute_about_a_refused_client(make_served):
    """An attacker who can create grants with a client pair Lucid refuses, and reach the link,
    must not turn each request into a call to Lucid on the operator's behalf."""
    host, client, clock = await make_served(flow_client_rate=1000.0, flow_grant_rate=1000.0)
    refused = host.creds = ClientCredentials("client-x", "secret-x")
    for _ in range(5):
        answer = await client.get("/authorize/ns/g", allow_redirects=False)
        assert answer.status == 404
    assert host.client_checks == [refused]
    clock.now += CLIENT_REFUSED_FOR - 1
    await client.get("/authorize/ns/g", allow_redirects=False)
    assert host.client_checks == [refused]
    clock.now += 2  # a minute on, Lucid is asked again, and now accepts the pair
    host.lucid_clients = {refused}
    linked = await client.get("/authorize/ns/g", allow_redirects=False)
    assert linked.status == 302 and host.client_checks == [refused, refused]


async def test_nothing_of_the_query_is_shown_before_the_state_is_verified(served):
    host, client = served
    browser = Browser(client)
    lie = "Call 555 0100 now"
    unverified = await browser.get(
        "/callback", params={"error": "access_denied", "error_description": lie}
    )
    text = await unverified.text()
    assert unverified.status == 400 and "access_denied" not in text and "555" not in text
    state = await browser.state()
    for error, shown in [("access_denied", "access_denied"), (lie, "grant access.")]:
        answer = await browser.get(
            "/callback", params={"state": state, "error": error, "error_description": lie}
        )
        text = await answer.text()
        assert answer.status == 400 and shown in text and "555" not in text
    assert host.exchanged == []


async def test_the_proxy_user_header_is_required_and_recorded_when_configured(make_served):
    host, client, _ = await make_served(flow_user_header="X-Auth-Request-Email")
    browser = Browser(client)
    assert (await browser.get("/authorize/ns/g")).status == 403
    who = {"X-Auth-Request-Email": "alice@example.com"}
    state = await browser.state(**who)
    assert (await browser.callback(state)).status == 403
    assert (await browser.callback(state, **{"X-Auth-Request-Email": "a" * 300})).status == 403
    assert (await browser.callback(state, **who)).status == 200
    assert host.stored == [(("ns", "g"), "alice@example.com")]


async def test_floods_are_refused_before_any_work(make_served):
    host, client, clock = await make_served(flow_client_rate=6, flow_max_states=3)
    browser = Browser(client)
    answers = [(await browser.get("/authorize/ns/g")).status for _ in range(5)]
    assert answers == [302, 302, 302, 429, 429]  # three states outstanding at most
    clock.now += 600  # the three expire; the per-address bucket refilled meanwhile
    assert (await browser.get("/authorize/ns/g")).status == 302
    for _ in range(10):
        await browser.get("/callback")
    limited = await browser.get("/callback")
    assert limited.status == 429 and int(limited.headers["Retry-After"]) == 10
    assert host.exchanged == []
    clock.now += 10
    assert (await browser.get("/callback")).status == 400


async def test_one_grant_is_rate_limited_whatever_the_address(make_served):
    _, client, _ = await make_served(flow_grant_rate=1, flow_address_header="X-Forwarded-For")
    answers = [
        (
            await client.get(
                "/authorize/ns/g",
                headers={"X-Forwarded-For": f"198.51.100.7, 10.0.0.{i}"},
                allow_redirects=False,
            )
        ).status
        for i in range(12)
    ]
    assert answers == [302] * 10 + [429] * 2
    # Another grant's bucket is its own (this one is unknown: the same 404 as always).
    assert (await client.get("/authorize/ns/other")).status == 404
    # The address is the proxy's last hop: one address behind it is limited alone.
    same = {"X-Forwarded-For": "10.9.9.9"}
    other = [(await client.get(f"/authorize/ns/x{i}", headers=same)).status for i in range(11)]
    assert other == [404] * 10 + [429]
