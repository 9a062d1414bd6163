"""The operator-hosted authorization flow, end to end: the real operator serving /authorize and
/callback on its own listener, the Lucid emulator's consent pages, and the emulated Kubernetes
API. The state's expiry and the refusals of a changed or recreated grant are tested in process
(tests/core/test_authflow.py); attacks on the flow in test_flow_attacks.py."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import httpx
import pytest

from .flow import (
    EXTERNAL,
    KEY_SECRET,
    POD_NS,
    Browser,
    auth_url,
    prepare,
    query_of,
    refused,
    snapshot,
    start_flow,
    with_query,
)
from .harness import CLIENT_ID, leaked, wait_for

# The cluster-wide install: the flow's key Secret lives in the operator's own namespace, where
# the namespaced install grants no Secret access (test_real_server.py shows that as a bug).
pytestmark = pytest.mark.parametrize("install_mode", ["cluster"])

# Plenty for one test's requests from one address (the default is 30 a minute).
RELAXED = {"LUCIDGRANT_FLOW_CLIENT_RATE": "6000"}


def test_one_click_authorizes_and_the_link_works_once(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster), what="status.authorizationURL")
    assert auth_url(cluster) == f"{EXTERNAL}/authorize/default/reporting"
    (event,) = [e for e in cluster.events() if e["reason"] == "AwaitingAuthorization"]
    assert event["message"].endswith(
        "Run: kubectl lucidgrant authorize reporting -n default "
        f"(or open {EXTERNAL}/authorize/default/reporting)"
    )

    browser = Browser(flow)
    to_lucid = browser.open(browser.link(cluster))
    sent = query_of(str(to_lucid.headers["location"]))
    assert str(to_lucid.headers["location"]).startswith(f"{lucid.url}/oauth2/authorize?")
    assert sent["client_id"] == CLIENT_ID
    assert sent["redirect_uri"] == f"{EXTERNAL}/callback"
    assert sent["scope"].split() == ["lucidchart.document.content:readonly", "offline_access"]
    assert (sent["response_type"], sent["prompt"]) == ("code", "consent")
    from_lucid = httpx.get(to_lucid.headers["location"], follow_redirects=False)
    callback = flow.local(from_lucid.headers["location"])
    response = browser.open(callback)
    assert response.status_code == 200, response.text
    assert "LucidGrant default/reporting is authorized" in response.text

    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    assert not cluster.is_true("reporting", "ReauthorizationRequired")
    assert "authorizationURL" not in (cluster.grant("reporting") or {})["status"]
    (grant,) = lucid.grant_infos()
    wait_for(
        lambda: (
            (cluster.secret("reporting-token") or {}).get("access_token")
            == lucid.grant_info(grant.id).access_token
        ),
        what="the live access token written",
    )
    assert any(e["reason"] == "Authorized" for e in cluster.events())

    # The same callback again: single use, and nothing changes.
    before = snapshot(cluster, lucid)
    refused(browser.open(callback), 400, "already been used")
    assert snapshot(cluster, lucid) == before
    # A working grant is not replaced through the link.
    again = flow.get("/authorize/default/reporting")
    assert again.status_code == 404 and "kubectl lucidgrant authorize" in again.text

    key = base64.b64decode((cluster.secret_object(KEY_SECRET, ns=POD_NS) or {})["data"]["key"])
    assert len(key) == 32
    key_texts = [key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()]
    assert not leaked(set(key_texts), [flow.op.logs(), json.dumps(cluster.events())])


def test_account_grants_go_to_the_account_page(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    cluster.patch_grant("reporting", {"spec": {"tokenKind": "account"}})
    wait_for(lambda: (cluster.grant("reporting") or {})["status"].get("observedGeneration") == 2)
    browser = Browser(flow)
    to_lucid = browser.open(browser.link(cluster))
    assert urlsplit(str(to_lucid.headers["location"])).path == "/oauth2/authorizeAccount"
    from_lucid = httpx.get(to_lucid.headers["location"], follow_redirects=False)
    assert browser.open(flow.local(from_lucid.headers["location"])).status_code == 200
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    assert (cluster.grant("reporting") or {})["status"]["lucidAccountId"] == "2002"


def test_forged_tampered_and_failed_callbacks_change_nothing(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator, **RELAXED)
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    browser = Browser(flow)
    callback = f"{flow.url}/callback"
    good = browser.consent(cluster)
    state, code = query_of(good)["state"], query_of(good)["code"]
    before = snapshot(cluster, lucid)

    version, payload, signature = state.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other = base64.urlsafe_b64encode(json.dumps({**claims, "n": "other"}).encode()).decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    cases = [
        (with_query(callback, code=code, state=f"{version}.{payload}.{'x' * 43}"), "not signed"),
        (
            with_query(callback, code=code, state=f"{version}.{other.rstrip('=')}.{signature}"),
            "not signed",
        ),
        (with_query(callback, code=code, state=f"{version}.{payload}.{flipped}"), "not signed"),
        (with_query(callback, code=code, state="garbage"), "malformed"),
        (with_query(callback, code=code), "no state parameter"),
        (with_query(callback, state=state), "no authorization code"),
    ]
    for url, why in cases:
        refused(browser.open(url), 400, why)
        assert snapshot(cluster, lucid) == before, why

    # Whatever comes back from the request is shown escaped, never as markup.
    evil = '"><script>alert(1)</script>'
    for params in (
        {"error": "access_denied", "error_description": evil, "state": evil},
        {"error": evil, "state": state},
        {"code": code, "state": evil},
    ):
        response = browser.open(with_query(callback, **params))
        assert response.status_code == 400
        assert "<script>" not in response.text and evil not in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert snapshot(cluster, lucid) == before

    # A person who denies on Lucid's consent page.
    lucid.auto_consent = False
    to_lucid = browser.open(browser.link(cluster))
    consent_page = httpx.get(to_lucid.headers["location"])
    assert consent_page.status_code == 200 and "Approve" in consent_page.text
    fields = query_of(str(to_lucid.headers["location"]))
    form = {k: fields[k] for k in ("client_id", "redirect_uri", "scope", "state")}
    denied = httpx.post(
        f"{lucid.url}/oauth2/authorize/consent", data={**form, "kind": "user", "decision": "deny"}
    )
    refused(browser.open(flow.local(denied.headers["location"])), 400, "access_denied")
    assert snapshot(cluster, lucid) == before
    lucid.auto_consent = True

    # Lucid fails the code exchange: 502, and the link must be clicked again.
    lucid.faults.fail_next(1, 503)
    refused(browser.open(good), 502, "Lucid failed to answer")
    assert snapshot(cluster, lucid) == before
    refused(browser.open(good), 400, "already been used")

    # After all that, a good click still works.
    assert browser.authorize(cluster).status_code == 200
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
