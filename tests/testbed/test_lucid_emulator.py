"""The Lucid OAuth emulator, driven over real HTTP on loopback with httpx, as the operator will
drive it. Expiry is tested with a fake clock; only the slow-answer faults wait in real time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lucidgrant_testbed.lucid import (
    ACCESS_PREFIX,
    CODE_PREFIX,
    INVALID_CLIENT,
    INVALID_GRANT,
    REFRESH_PREFIX,
    LucidEmulator,
    RefreshRecord,
)
from lucidgrant_testbed.threaded import running_in_thread

CLIENT = "client-1"
SECRET = "secret-1"
OTHER_CLIENT = "client-2"
OTHER_SECRET = "secret-2"
REDIRECT = "https://ops.example.com/lucidgrant/callback"
SCOPES = ["lucidchart.document.content:readonly", "offline_access"]
START = 1_700_000_000.0
ACCESS_TTL = 60.0
REFRESH_TTL = 600.0
CODE_TTL = 120.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lucid(clock: FakeClock) -> Iterator[LucidEmulator]:
    emulator = LucidEmulator(
        access_ttl=ACCESS_TTL, refresh_ttl=REFRESH_TTL, code_ttl=CODE_TTL, clock=clock
    )
    emulator.add_client(CLIENT, SECRET, [REDIRECT])
    emulator.add_client(OTHER_CLIENT, OTHER_SECRET)
    with running_in_thread(emulator) as (running, _):
        yield running


@pytest.fixture
def http(lucid: LucidEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lucid.url, timeout=5.0, follow_redirects=False) as client:
        yield client


def authorize(
    http: httpx.Client, path: str = "/oauth2/authorize", **overrides: str
) -> httpx.Response:
    params = {
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "scope": " ".join(SCOPES),
        "state": "st-42",
        "response_type": "code",
        **overrides,
    }
    return http.get(path, params=params)


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st-42"]
    return query["code"][0]


def exchange(http: httpx.Client, code: str, **overrides: str) -> httpx.Response:
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT,
        **overrides,
    }
    return http.post("/oauth2/token", json=body)


def refresh(
    http: httpx.Client, token: str, client_id: str = CLIENT, client_secret: str = SECRET
) -> httpx.Response:
    body = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return http.post("/oauth2/token", json=body)


def introspect(http: httpx.Client, token: str, client_id: str = CLIENT) -> dict[str, Any]:
    secret = SECRET if client_id == CLIENT else OTHER_SECRET
    form = {"client_id": client_id, "client_secret": secret, "token": token}
    response = http.post("/oauth2/token/introspect", data=form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def new_grant(lucid: LucidEmulator, kind: str = "user") -> dict[str, Any]:
    return lucid.issue_grant(CLIENT, SCOPES, kind="account" if kind == "account" else "user")


# ------------------------------------------------------------------ authorize pages


def test_authorize_user_auto_consent_redirects_with_code_and_state(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    response = authorize(http)
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    code = code_from(response)
    assert code.startswith(CODE_PREFIX)
    token = exchange(http, code).json()
    assert token["user_id"] == 1001
    assert "account_id" not in token
    assert lucid.calls[("authorize", 302)] == 1


def test_authorize_account_gives_an_account_token(lucid: LucidEmulator, http: httpx.Client) -> None:
    lucid.consenting_account_id = 777
    token = exchange(http, code_from(authorize(http, "/oauth2/authorizeAccount"))).json()
    assert token["account_id"] == 777
    assert "user_id" not in token


def test_authorize_keeps_the_redirect_uris_own_query(lucid: LucidEmulator) -> None:
    lucid.add_client("q", "s", ["https://app.example.com/cb?tenant=7"])
    with httpx.Client(base_url=lucid.url) as http:
        response = authorize(
            http, client_id="q", redirect_uri="https://app.example.com/cb?tenant=7"
        )
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["tenant"] == ["7"]
    assert query["code"][0].startswith(CODE_PREFIX)


def test_consent_page_approve_and_deny(lucid: LucidEmulator, http: httpx.Client) -> None:
    lucid.auto_consent = False
    page = authorize(http, "/oauth2/authorizeAccount")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'action="/oauth2/authorize/consent"' in page.text
    assert "offline_access" in page.text

    form = {
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "scope": " ".join(SCOPES),
        "state": "st-42",
        "kind": "account",
    }
    approved = http.post("/oauth2/authorize/consent", data={**form, "decision": "approve"})
    token = exchange(http, code_from(approved)).json()
    assert token["account_id"] == 2002

    denied = http.post("/oauth2/authorize/consent", data={**form, "decision": "deny"})
    assert denied.status_code == 302
    query = parse_qs(urlsplit(denied.headers["location"]).query)
    assert query == {"error": ["access_denied"], "state": ["st-42"]}

    forged = http.post(
        "/oauth2/authorize/consent",
        data={**form, "redirect_uri": "https://evil.example.com/", "decision": "approve"},
    )
    assert forged.status_code == 400
    assert "location" not in forged.headers


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": "https://evil.example.com/cb"},
        {"redirect_uri": ""},
        {"client_id": "nobody"},
    ],
)
def test_authorize_refuses_without_redirecting(
    lucid: LucidEmulator, http: httpx.Client, overrides: dict[str, str]
) -> None:
    response = authorize(http, **overrides)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert lucid.calls[("authorize", 400)] == 1


def test_authorize_wrong_response_type_redirects_with_error(http: httpx.Client) -> None:
    response = authorize(http, response_type="token")
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["unsupported_response_type"]
    assert "code" not in query


# ------------------------------------------------------------------ code exchange


def test_code_exchange_fields_and_types(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    response = exchange(http, code_from(authorize(http)))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    token = response.json()
    assert set(token) == {
        "access_token",
        "refresh_token",
        "client_id",
        "expires_in",
        "expires",
        "scopes",
        "token_type",
        "user_id",
    }
    assert token["access_token"].startswith(ACCESS_PREFIX)
    assert token["refresh_token"].startswith(REFRESH_PREFIX)
    assert token["client_id"] == CLIENT
    assert token["expires_in"] == 60
    assert token["expires"] == int((START + ACCESS_TTL) * 1000)
    assert token["scopes"] == SCOPES
    assert token["token_type"] == "bearer"
    assert lucid.calls[("token_code", 200)] == 1


def test_refresh_token_only_with_offline_access(http: httpx.Client) -> None:
    code = code_from(authorize(http, scope="lucidchart.document.content:readonly"))
    token = exchange(http, code).json()
    assert "refresh_token" not in token
    assert token["scopes"] == ["lucidchart.document.content:readonly"]
    assert introspect(http, token["access_token"])["active"] is True


def test_code_is_single_use(lucid: LucidEmulator, http: httpx.Client) -> None:
    code = code_from(authorize(http))
    assert exchange(http, code).status_code == 200
    again = exchange(http, code)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert lucid.calls[("token_code", 400)] == 1
    assert len(lucid.grant_infos()) == 1


def test_expired_code_and_mismatched_exchange_are_refused(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    code = code_from(authorize(http))
    assert exchange(http, code, redirect_uri="https://ops.example.com/other").status_code == 400
    other = exchange(http, code, client_id=OTHER_CLIENT, client_secret=OTHER_SECRET)
    assert other.status_code == 400
    clock.advance(CODE_TTL)
    expired = exchange(http, code)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"
    fresh = lucid.issue_code(CLIENT, REDIRECT, SCOPES)
    lucid.expire_token(fresh)
    assert exchange(http, fresh).status_code == 400


def test_token_endpoint_accepts_a_form_body(http: httpx.Client) -> None:
    form = {
        "grant_type": "authorization_code",
        "code": code_from(authorize(http)),
        "client_id": CLIENT,
        "client_secret": SECRET,
        "redirect_uri": REDIRECT,
    }
    assert http.post("/oauth2/token", data=form).status_code == 200


def test_token_endpoint_refuses_a_bad_body_and_grant_type(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    broken = http.post(
        "/oauth2/token", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"] == "invalid_request"
    body = {"grant_type": "password", "client_id": CLIENT, "client_secret": SECRET}
    unsupported = http.post("/oauth2/token", json=body)
    assert unsupported.json()["error"] == "unsupported_grant_type"
    assert lucid.calls[("token", 400)] == 2


# ------------------------------------------------------------------ refresh and rotation


def test_refresh_rotates_and_invalidates_the_old_pair_at_once(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    first = new_grant(lucid)
    clock.advance(10)
    response = refresh(http, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user_id"] == 1001
    assert second["scopes"] == SCOPES
    assert second["expires"] == int((START + 10 + ACCESS_TTL) * 1000)

    assert introspect(http, first["access_token"]) == {"active": False}
    assert introspect(http, first["refresh_token"]) == {"active": False}
    assert introspect(http, second["access_token"])["active"] is True
    old = refresh(http, first["refresh_token"])
    assert old.status_code == 400
    assert old.json() == INVALID_GRANT
    assert lucid.invalid_grant_count == 1
    assert lucid.live_refresh_tokens() == {second["refresh_token"]}


def test_many_rotations_in_a_row(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    token = new_grant(lucid)
    seen = {token["refresh_token"]}
    for _ in range(50):
        clock.advance(ACCESS_TTL - 5)
        response = refresh(http, token["refresh_token"])
        assert response.status_code == 200, response.text
        token = response.json()
        seen.add(token["refresh_token"])
    assert len(seen) == 51
    info = lucid.grant_info(lucid.grant_of(token["access_token"]) or "")
    assert info.rotations == 50
    assert info.refresh_token == token["refresh_token"]
    assert lucid.refresh_count == 50
    assert lucid.calls[("token_refresh", 200)] == 50
    # Each refresh came 5 s before the access token it replaced expired.
    assert {round(r.previous_access_expires_at - r.at, 6) for r in info.refreshes} == {5.0}


def test_refresh_after_access_token_expiry_works(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    token = new_grant(lucid)
    clock.advance(ACCESS_TTL * 3)
    assert introspect(http, token["access_token"]) == {"active": False}
    assert introspect(http, token["refresh_token"])["active"] is True
    response = refresh(http, token["refresh_token"])
    assert response.status_code == 200
    assert response.json()["expires_in"] == 60
    record = lucid.refresh_records()[-1]
    assert record.at - record.previous_access_expires_at == pytest.approx(ACCESS_TTL * 2)


def test_each_refresh_token_lives_from_its_own_creation(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    first = new_grant(lucid)
    clock.advance(REFRESH_TTL - 1)
    second = refresh(http, first["refresh_token"]).json()
    assert introspect(http, second["refresh_token"])["expires_in"] == int(REFRESH_TTL)
    clock.advance(REFRESH_TTL - 1)
    assert refresh(http, second["refresh_token"]).status_code == 200


def test_expired_refresh_token_is_invalid_grant(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    token = new_grant(lucid)
    clock.advance(REFRESH_TTL)
    response = refresh(http, token["refresh_token"])
    assert response.status_code == 400
    assert response.json() == INVALID_GRANT
    assert lucid.live_refresh_tokens() == set()

    other = new_grant(lucid)
    assert lucid.expire_token(other["refresh_token"])
    assert refresh(http, other["refresh_token"]).json()["error"] == "invalid_grant"
    assert lucid.invalid_grant_count == 2


def test_refresh_token_of_another_client_is_invalid_grant(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    token = new_grant(lucid)
    response = refresh(http, token["refresh_token"], OTHER_CLIENT, OTHER_SECRET)
    assert response.status_code == 400
    assert refresh(http, token["refresh_token"]).status_code == 200


def test_bad_client_credentials_are_401_invalid_client(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    token = new_grant(lucid)
    wrong = refresh(http, token["refresh_token"], client_secret="guess")
    assert wrong.status_code == 401
    assert wrong.json() == INVALID_CLIENT
    assert refresh(http, token["refresh_token"], client_id="nobody").status_code == 401
    lucid.bad_client_status = 403
    assert refresh(http, token["refresh_token"], client_secret="guess").status_code == 403
    # Refused credentials never touch the grant.
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.invalid_grant_count == 0


def test_disabled_client_is_invalid_client_everywhere(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    token = new_grant(lucid)
    lucid.disable_client(CLIENT)
    response = refresh(http, token["refresh_token"])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    form = {"client_id": CLIENT, "client_secret": SECRET, "token": token["access_token"]}
    assert http.post("/oauth2/token/introspect", data=form).status_code == 401
    assert authorize(http).status_code == 400
    lucid.disable_client(CLIENT, disabled=False)
    assert refresh(http, token["refresh_token"]).status_code == 200


# ------------------------------------------------------------------ introspect and revoke


def test_introspect_access_and_refresh_tokens(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    user = new_grant(lucid)
    account = new_grant(lucid, "account")
    clock.advance(15)
    access = introspect(http, user["access_token"])
    assert access == {
        "active": True,
        "client_id": CLIENT,
        "expires_in": 45,
        "expires": int((START + ACCESS_TTL) * 1000),
        "scope": " ".join(SCOPES),
        "token_type": "bearer",
        "user_id": 1001,
    }
    refresh_info = introspect(http, account["refresh_token"])
    assert refresh_info["account_id"] == 2002
    assert "user_id" not in refresh_info
    assert refresh_info["expires"] == int((START + REFRESH_TTL) * 1000)
    assert introspect(http, "lat_unknown") == {"active": False}
    # Another client cannot read this client's tokens.
    assert introspect(http, user["access_token"], OTHER_CLIENT) == {"active": False}
    assert lucid.calls[("introspect", 200)] == 4


def test_revoke_kills_every_token_of_the_grant(lucid: LucidEmulator, http: httpx.Client) -> None:
    token = new_grant(lucid)
    bystander = new_grant(lucid)
    form = {"client_id": CLIENT, "client_secret": SECRET, "token": token["access_token"]}
    assert http.post("/oauth2/token/revoke", data=form).status_code == 200
    assert introspect(http, token["access_token"]) == {"active": False}
    assert introspect(http, token["refresh_token"]) == {"active": False}
    assert refresh(http, token["refresh_token"]).json()["error"] == "invalid_grant"
    assert introspect(http, bystander["access_token"])["active"] is True
    assert lucid.grant_info(lucid.grant_of(token["access_token"]) or "").revoked
    assert lucid.calls[("revoke", 200)] == 1

    unknown = {"client_id": CLIENT, "client_secret": SECRET, "token": "lrt_nothing"}
    assert http.post("/oauth2/token/revoke", data=unknown).status_code == 200


def test_revoke_from_the_test_side(lucid: LucidEmulator, http: httpx.Client) -> None:
    token = new_grant(lucid)
    rotated = refresh(http, token["refresh_token"]).json()
    # Even a rotated-away token identifies its grant, as a user revoking in Lucid's UI would.
    grant_id = lucid.revoke_grant_of(token["access_token"])
    assert grant_id == lucid.grant_of(rotated["refresh_token"])
    assert refresh(http, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    assert lucid.revoke_grant_of("lat_nothing") is None


# ------------------------------------------------------------------ faults


def test_outage_window_answers_html_503_then_recovers(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    token = new_grant(lucid)
    lucid.faults.outage(120)
    for _ in range(3):
        response = refresh(http, token["refresh_token"])
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
        assert "maintenance" in response.text
    form = {"client_id": CLIENT, "client_secret": SECRET, "token": token["access_token"]}
    assert http.post("/oauth2/token/introspect", data=form).status_code == 503
    # The authorize page stays up: faults affect the api endpoints only.
    assert authorize(http).status_code == 302
    clock.advance(120)
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.calls[("token_refresh", 503)] == 3
    assert lucid.calls[("introspect", 503)] == 1

    lucid.faults.outage_until(clock() + 1000)
    assert refresh(http, token["refresh_token"]).status_code == 503
    lucid.faults.end_outage()
    assert lucid.grant_of(token["refresh_token"]) is not None


def test_429_with_and_without_retry_after(lucid: LucidEmulator, http: httpx.Client) -> None:
    token = new_grant(lucid)
    lucid.faults.fail_next(1, status=429, retry_after=2.5)
    lucid.faults.fail_next(1, status=429)
    limited = refresh(http, token["refresh_token"])
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.json()["error"] == "rate_limit_exceeded"
    bare = refresh(http, token["refresh_token"])
    assert bare.status_code == 429
    assert "retry-after" not in bare.headers
    # The failures did not consume the token.
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.calls[("token_refresh", 429)] == 2


@pytest.mark.parametrize(
    ("status", "body", "content_type", "text"),
    [
        (500, "json", "application/json", '"server_error"'),
        (502, "html", "text/html", "<html>"),
        (503, "empty", None, ""),
        (500, "malformed", "application/json", '{"access_token": "lat_trunc'),
    ],
)
def test_server_errors(
    lucid: LucidEmulator,
    http: httpx.Client,
    status: int,
    body: Any,
    content_type: str | None,
    text: str,
) -> None:
    token = new_grant(lucid)
    lucid.faults.fail_next(2, status=status, body=body)
    for _ in range(2):
        response = refresh(http, token["refresh_token"])
        assert response.status_code == status
        assert text in response.text
        if content_type is not None:
            assert response.headers["content-type"].startswith(content_type)
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.calls[("token_refresh", status)] == 2


def test_malformed_and_html_200_answers(lucid: LucidEmulator, http: httpx.Client) -> None:
    token = new_grant(lucid)
    lucid.faults.malformed_next(1)
    lucid.faults.html_next(1)
    malformed = refresh(http, token["refresh_token"])
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    page = refresh(http, token["refresh_token"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.calls[("token_refresh", 200)] == 3
    assert lucid.refresh_count == 1


def test_slow_answer_beyond_the_client_timeout_changes_nothing(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    token = new_grant(lucid)
    lucid.faults.slow(0.6, n=1)
    with pytest.raises(httpx.ReadTimeout):
        refresh_with_timeout(http, token["refresh_token"], 0.2)
    # The answer nobody waited for was never processed: the same token still refreshes.
    wait_for(lambda: lucid.calls[("token_refresh", 499)] == 1)
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.refresh_count == 1


def test_slow_answer_within_the_timeout_is_processed(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    token = new_grant(lucid)
    lucid.faults.slow(0.2)
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert introspect(http, token["access_token"]) == {"active": False}
    lucid.faults.clear()
    assert lucid.stats()["faults"]["slow_seconds"] == 0.0


def test_slow_process_first_loses_the_new_tokens(lucid: LucidEmulator, http: httpx.Client) -> None:
    token = new_grant(lucid)
    lucid.faults.slow(0.6, n=1, process_first=True)
    with pytest.raises(httpx.ReadTimeout):
        refresh_with_timeout(http, token["refresh_token"], 0.2)
    assert lucid.refresh_count == 1
    assert refresh(http, token["refresh_token"]).json() == INVALID_GRANT


def test_flaky_invalid_grant_leaves_the_grant_alive(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    token = new_grant(lucid)
    lucid.faults.flaky_invalid_grant_next(2)
    for _ in range(2):
        response = refresh(http, token["refresh_token"])
        assert response.status_code == 400
        assert response.json() == INVALID_GRANT
    assert introspect(http, token["refresh_token"])["active"] is True
    assert token["refresh_token"] in lucid.live_refresh_tokens()
    assert refresh(http, token["refresh_token"]).status_code == 200
    assert lucid.flaky_invalid_grant_count == 2
    assert lucid.invalid_grant_count == 2


def test_flaky_invalid_grant_probability_is_seeded(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    def run() -> list[int]:
        lucid.faults.flaky_invalid_grant(0.5, seed=7)
        token = new_grant(lucid)["refresh_token"]
        statuses = []
        for _ in range(20):
            response = refresh(http, token)
            statuses.append(response.status_code)
            if response.status_code == 200:
                token = response.json()["refresh_token"]
        return statuses

    first = run()
    assert run() == first
    assert 200 in first
    assert 400 in first
    # Every 400 was flaky: no grant was lost and none was rotated twice.
    assert lucid.flaky_invalid_grant_count == lucid.invalid_grant_count == 2 * first.count(400)


def test_faults_do_not_touch_the_control_api(lucid: LucidEmulator, http: httpx.Client) -> None:
    lucid.faults.outage(60)
    lucid.faults.fail_next(5)
    assert http.get("/_emulator/stats").status_code == 200
    assert lucid.stats()["faults"]["pending_failures"] == 5


# ------------------------------------------------------------------ test-facing API


def test_python_api_accounts_for_every_secret(lucid: LucidEmulator, http: httpx.Client) -> None:
    token = new_grant(lucid)
    code = lucid.issue_code(CLIENT, REDIRECT, SCOPES, kind="account")
    rotated = refresh(http, token["refresh_token"]).json()
    issued = lucid.all_issued_secrets()
    assert {
        SECRET,
        OTHER_SECRET,
        code,
        token["access_token"],
        token["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
    } == issued
    assert lucid.live_refresh_tokens() == {rotated["refresh_token"]}
    assert exchange(http, code).json()["account_id"] == 2002
    assert lucid.grant_of(code) is None
    with pytest.raises(KeyError):
        lucid.issue_grant("nobody", SCOPES)


def test_refresh_records_and_counters(
    lucid: LucidEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    token = new_grant(lucid)
    grant_id = lucid.grant_of(token["access_token"])
    assert grant_id is not None
    clock.advance(50)
    refresh(http, token["refresh_token"])
    refresh(http, token["refresh_token"])
    assert lucid.refresh_records() == [RefreshRecord(grant_id, START + 50, START + ACCESS_TTL)]
    assert lucid.refresh_records(since=1) == []
    assert dict(lucid.calls) == {("token_refresh", 200): 1, ("token_refresh", 400): 1}
    stats = lucid.stats()
    assert stats["refresh_count"] == 1
    assert stats["invalid_grant_count"] == 1
    assert stats["grants"] == 1
    assert stats["live_refresh_tokens"] == 1


def test_observers_see_every_arrival_and_every_rotation(
    lucid: LucidEmulator, http: httpx.Client
) -> None:
    arrivals: list[int] = []
    rotations: list[tuple[str, str]] = []
    lucid.on_arrival = lambda: arrivals.append(1)
    lucid.on_rotation = lambda grant_id, token: rotations.append((grant_id, token))
    token = new_grant(lucid)
    grant_id = lucid.grant_of(token["refresh_token"])
    lucid.faults.fail_next(1, 503)
    assert refresh(http, token["refresh_token"]).status_code == 503
    rotated = refresh(http, token["refresh_token"]).json()
    assert refresh(http, token["refresh_token"]).status_code == 400
    assert len(arrivals) == 3, "a failed answer is an arrival too"
    assert rotations == [(grant_id, rotated["refresh_token"])]


# ------------------------------------------------------------------ control API


def test_control_api_drives_the_emulator(lucid: LucidEmulator, http: httpx.Client) -> None:
    created = http.post(
        "/_emulator/clients", json={"client_id": "c9", "client_secret": "s9", "redirect_uris": None}
    )
    assert created.status_code == 200
    granted = http.post(
        "/_emulator/grants", json={"client_id": "c9", "scopes": SCOPES, "kind": "account"}
    )
    assert granted.status_code == 200
    token = granted.json()
    assert token["account_id"] == 2002
    lookup = http.post("/_emulator/lookup", json={"token": token["refresh_token"]}).json()
    assert lookup["client_id"] == "c9"
    assert lookup["rotations"] == 0

    fault = http.post("/_emulator/faults", json={"fault": "fail_next", "n": 1, "status": 502})
    assert fault.json()["pending_failures"] == 1
    body = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": "c9",
        "client_secret": "s9",
    }
    assert http.post("/oauth2/token", json=body).status_code == 502
    rotated = http.post("/oauth2/token", json=body)
    assert rotated.status_code == 200
    http.post("/_emulator/faults", json={"fault": "outage", "seconds": 30})
    assert http.post("/oauth2/token", json=body).status_code == 503
    assert http.post("/_emulator/faults", json={"fault": "clear"}).status_code == 200
    assert http.post("/_emulator/faults", json={"fault": "nope"}).status_code == 400
    assert http.post("/_emulator/faults", json={"fault": "slow", "bad": 1}).status_code == 400
    assert (
        http.post("/_emulator/faults", json={"fault": "fail_next", "body": "xml"}).status_code
        == 400
    )

    refreshes = http.get("/_emulator/refreshes", params={"since": 0}).json()
    assert refreshes["next"] == 1
    assert refreshes["records"][0][0] == lookup["id"]

    new_refresh = rotated.json()["refresh_token"]
    assert http.post("/_emulator/expire", json={"token": new_refresh}).status_code == 200
    assert http.post("/_emulator/expire", json={"token": "lrt_nothing"}).status_code == 404
    revoked = http.post("/_emulator/revoke", json={"token": new_refresh})
    assert revoked.json() == {"grant_id": lookup["id"]}
    assert http.post("/_emulator/revoke", json={"token": "x"}).status_code == 404
    assert http.post("/_emulator/lookup", json={"token": "x"}).status_code == 404

    stats = http.get("/_emulator/stats").json()
    assert stats["refresh_count"] == 1
    assert stats["live_refresh_tokens"] == 0
    assert {"endpoint": "token_refresh", "status": 502, "count": 1} in stats["calls"]
    assert {"endpoint": "token_refresh", "status": 503, "count": 1} in stats["calls"]


def test_standalone_main_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lucidgrant_testbed.lucid",
            "--port",
            "0",
            "--access-ttl",
            "60",
            "--refresh-ttl",
            "600",
            "--client",
            "cli:se:cret",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=5.0) as http:
            token = http.post(
                "/_emulator/grants", json={"client_id": "cli", "scopes": SCOPES}
            ).json()
            assert token["expires_in"] == 60
            body = {
                "grant_type": "refresh_token",
                "refresh_token": token["refresh_token"],
                "client_id": "cli",
                "client_secret": "se:cret",
            }
            assert http.post("/oauth2/token", json=body).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ helpers


def refresh_with_timeout(http: httpx.Client, token: str, timeout: float) -> httpx.Response:
    body = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    return http.post("/oauth2/token", json=body, timeout=timeout)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition that the server's thread makes true shortly after an answer."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
