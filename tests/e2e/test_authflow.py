"""The operator-hosted authorization flow, end to end: the real operator serving /authorize and
/callback, the Lucid emulator's consent pages, and the emulated Kubernetes API. The state's
expiry and the refusals of a changed or recreated grant are tested in process
(tests/core/test_authflow.py)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from lucidgrant_testbed.lucid import LucidEmulator

from .harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    Cluster,
    OperatorProcess,
    free_port,
    grant_spec,
    leaked,
    wait_for,
)

# The cluster-wide install: the flow's key Secret lives in the operator's own namespace, where
# the namespaced install grants no Secret access (test_real_server.py shows that as a bug).
pytestmark = pytest.mark.parametrize("install_mode", ["cluster"])

POD_NS = "lucidgrant-system"
KEY_SECRET = "lucidgrant-state-key"


def start_with_flow(cluster: Cluster, start_operator: Any, **env: str) -> OperatorProcess:
    """A grant with no bootstrap yet, and an operator that hosts the authorization flow."""
    cluster.http.post(
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POD_NS}},
    )
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    assert cluster.create_grant("reporting", grant_spec()).status_code == 201
    port = free_port()
    op: OperatorProcess = start_operator(
        "--all-namespaces",
        LUCIDGRANT_HTTP_PORT=str(port),
        LUCIDGRANT_EXTERNAL_URL=f"http://127.0.0.1:{port}",
        **env,
    )
    wait_for(lambda: auth_url(cluster), what="status.authorizationURL")
    assert auth_url(cluster) == f"{op.url}/authorize/default/reporting"
    return op


def auth_url(cluster: Cluster, name: str = "reporting") -> str | None:
    status = (cluster.grant(name) or {}).get("status") or {}
    return (
        status.get("authorizationURL") if cluster.is_true(name, "ReauthorizationRequired") else None
    )


def consent(cluster: Cluster, name: str = "reporting") -> str:
    """Click the link and consent, but stop before the browser reaches /callback: its URL."""
    first = httpx.get(auth_url(cluster, name) or "", follow_redirects=False)
    assert first.status_code == 302, first.text
    second = httpx.get(first.headers["location"], follow_redirects=False)
    assert second.status_code == 302, second.text
    return str(second.headers["location"])


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(params)}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def snapshot(cluster: Cluster, lucid: LucidEmulator) -> tuple[Any, ...]:
    """What a refused callback must leave alone."""
    state = cluster.secret_object("reporting-lucidgrant-state") or {}
    key = cluster.secret_object(KEY_SECRET, ns=POD_NS) or {}
    return (
        state.get("metadata", {}).get("resourceVersion"),
        state.get("data"),
        key.get("metadata", {}).get("resourceVersion"),
        lucid.calls[("token_code", 200)],
        cluster.is_true("reporting", "ReauthorizationRequired"),
        cluster.is_true("reporting", "Ready"),
    )


def refused(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert text in response.text, response.text
    assert "Nothing was changed" in response.text
    assert response.headers["content-type"].startswith("text/html")


def test_one_click_authorizes_and_the_link_works_once(cluster, lucid, start_operator):
    op = start_with_flow(cluster, start_operator)
    (event,) = [e for e in cluster.events() if e["reason"] == "AwaitingAuthorization"]
    assert event["message"].endswith(
        "Run: kubectl lucidgrant authorize reporting -n default "
        f"(or open {op.url}/authorize/default/reporting)"
    )

    response = httpx.get(auth_url(cluster) or "", follow_redirects=True)
    assert response.status_code == 200, response.text
    assert "LucidGrant default/reporting is authorized" in response.text
    to_lucid, from_lucid = response.history
    sent = query_of(str(to_lucid.headers["location"]))
    assert str(to_lucid.headers["location"]).startswith(f"{lucid.url}/oauth2/authorize?")
    assert sent["client_id"] == CLIENT_ID
    assert sent["redirect_uri"] == f"{op.url}/callback"
    assert sent["scope"].split() == ["lucidchart.document.content:readonly", "offline_access"]
    assert (sent["response_type"], sent["prompt"]) == ("code", "consent")

    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    assert not cluster.is_true("reporting", "ReauthorizationRequired")
    assert "authorizationURL" not in (cluster.grant("reporting") or {})["status"]
    (grant,) = lucid.grant_infos()
    wait_for(
        lambda: (
            (cluster.secret("lucid-token") or {}).get("access_token")
            == lucid.grant_info(grant.id).access_token
        ),
        what="the live access token written",
    )
    assert any(e["reason"] == "Authorized" for e in cluster.events())

    # The same callback again: single use, and nothing changes.
    before = snapshot(cluster, lucid)
    refused(httpx.get(str(from_lucid.headers["location"])), 400, "already been used")
    assert snapshot(cluster, lucid) == before
    # A working grant is not replaced through the link.
    again = httpx.get(f"{op.url}/authorize/default/reporting")
    assert again.status_code == 409 and "kubectl lucidgrant authorize reporting" in again.text
    assert httpx.get(f"{op.url}/authorize/default/nope").status_code == 404

    key = base64.b64decode((cluster.secret_object(KEY_SECRET, ns=POD_NS) or {})["data"]["key"])
    assert len(key) == 32
    key_texts = [key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()]
    assert not leaked(set(key_texts), [op.logs(), json.dumps(cluster.events())])


def test_account_grants_go_to_the_account_page(cluster, lucid, start_operator):
    op = start_with_flow(cluster, start_operator)
    cluster.patch_grant("reporting", {"spec": {"tokenKind": "account"}})
    wait_for(lambda: (cluster.grant("reporting") or {})["status"].get("observedGeneration") == 2)
    response = httpx.get(f"{op.url}/authorize/default/reporting", follow_redirects=True)
    assert response.status_code == 200, response.text
    assert urlsplit(str(response.history[0].headers["location"])).path == "/oauth2/authorizeAccount"
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    assert (cluster.grant("reporting") or {})["status"]["lucidAccountId"] == "2002"


def test_forged_tampered_and_failed_callbacks_change_nothing(cluster, lucid, start_operator):
    op = start_with_flow(cluster, start_operator)
    callback = f"{op.url}/callback"
    good = consent(cluster)
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
        refused(httpx.get(url), 400, why)
        assert snapshot(cluster, lucid) == before, why

    # Whatever comes back from the request is shown escaped, never as markup.
    evil = '"><script>alert(1)</script>'
    for params in (
        {"error": "access_denied", "error_description": evil, "state": evil},
        {"error": evil, "state": state},
        {"code": code, "state": evil},
    ):
        response = httpx.get(with_query(callback, **params))
        assert response.status_code == 400
        assert "<script>" not in response.text and evil not in response.text
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "&lt;script&gt;" in httpx.get(with_query(callback, error=evil)).text
    assert snapshot(cluster, lucid) == before

    # A person who denies on Lucid's consent page.
    lucid.auto_consent = False
    to_lucid = httpx.get(auth_url(cluster) or "")
    consent_page = httpx.get(to_lucid.headers["location"])
    assert consent_page.status_code == 200 and "Approve" in consent_page.text
    fields = query_of(str(to_lucid.headers["location"]))
    form = {k: fields[k] for k in ("client_id", "redirect_uri", "scope", "state")}
    denied = httpx.post(
        f"{lucid.url}/oauth2/authorize/consent",
        data={**form, "kind": "user", "decision": "deny"},
        follow_redirects=True,
    )
    refused(denied, 400, "Lucid did not grant access: access_denied")
    assert snapshot(cluster, lucid) == before
    lucid.auto_consent = True

    # Lucid fails the code exchange: 502, and the link must be clicked again.
    lucid.faults.fail_next(1, 503)
    refused(httpx.get(good), 502, "Lucid failed to answer")
    assert snapshot(cluster, lucid) == before
    refused(httpx.get(good), 400, "already been used")

    # After all that, a good click still works.
    response = httpx.get(auth_url(cluster) or "", follow_redirects=True)
    assert response.status_code == 200, response.text
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
