"""Attacks on the operator-hosted authorization flow, each performed against the real operator
process (docs/attacks.md lists them with what the operator does now)."""

from __future__ import annotations

import resource
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lucidgrant_testbed.lucid import LucidEmulator
from tests.prefork import run

from .flow import (
    Browser,
    auth_url,
    prepare,
    query_of,
    refused,
    snapshot,
    start_flow,
    with_query,
)
from .harness import CLIENT_ID, CLIENT_SECRET, SCOPES, Cluster, dump, grant_spec, wait_for

# The cluster-wide install: the flow's key Secret lives in the operator's own namespace.
pytestmark = pytest.mark.parametrize("install_mode", ["cluster"])

ALL = "/authorize/default/{}"


def ready(cluster: Cluster, name: str = "reporting") -> bool:
    return cluster.is_true(name, "Ready") and not cluster.is_true(name, "ReauthorizationRequired")


def lucid_user_of(cluster: Cluster, name: str = "reporting") -> str | None:
    status: dict[str, Any] = (cluster.grant(name) or {}).get("status") or {}
    return status.get("lucidUserId")


def bootstrap(cluster: Cluster, lucid: LucidEmulator, name: str = "reporting") -> None:
    """Repair a grant without the web flow: a refresh token in its bootstrap Secret."""
    tokens = lucid.issue_grant(CLIENT_ID, SCOPES)
    cluster.put_secret(f"{name}-bootstrap", {"refresh_token": tokens["refresh_token"]})


def test_a_state_minted_before_a_repair_cannot_swap_the_grant(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    attacker = Browser(flow)
    stale = attacker.consent(cluster)  # made while the grant awaited a person; kept for later
    bootstrap(cluster, lucid)  # the owner repairs the grant another way
    wait_for(lambda: ready(cluster), what="repaired")
    user = lucid_user_of(cluster)
    before = snapshot(cluster, lucid)
    refused(attacker.open(stale), 409, "does not need a person")
    assert snapshot(cluster, lucid) == before
    assert lucid_user_of(cluster) == user


def test_a_state_without_its_cookie_or_from_another_browser_is_refused(
    cluster, lucid, start_operator
):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    victim, attacker = Browser(flow), Browser(flow)
    # The attacker starts a flow and lures the victim to the callback with the attacker's code.
    lure = attacker.consent(cluster)
    (set_cookie,) = attacker.set_cookies
    attrs = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite", "max-age"} <= attrs
    assert "samesite=lax" in set_cookie.lower() and "domain" not in attrs
    before = snapshot(cluster, lucid)
    refused(httpx.get(lure), 400, "another browser")  # no cookie at all
    victim.open(victim.link(cluster))  # the victim's own browser has its own cookie
    refused(victim.open(lure), 400, "another browser")
    assert snapshot(cluster, lucid) == before
    # The browser that started the flow completes it.
    ok = attacker.open(lure)
    assert ok.status_code == 200, ok.text
    wait_for(lambda: ready(cluster), what="Ready")


def test_a_state_used_on_one_replica_is_refused_on_another(
    cluster, lucid, start_operator, tmp_path
):
    prepare(cluster, "reporting")
    one = start_flow(cluster, start_operator, LUCIDGRANT_LEADER_ELECTION="true")
    two = start_flow(cluster, start_operator, LUCIDGRANT_LEADER_ELECTION="true")
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    browser = Browser(one)
    callback = browser.consent(cluster)
    lucid.faults.fail_next(1, 503)  # the exchange fails: the grant still awaits a person after it
    refused(browser.open(callback), 502, "Lucid failed to answer")
    on_two = two.url + callback[len(one.url) :]
    before = snapshot(cluster, lucid)
    refused(browser.open(on_two), 400, "already been used")
    assert snapshot(cluster, lucid) == before
    assert auth_url(cluster)
    # The ledger of used states lives on the grant's state Secret, bounded and without tokens.
    state = cluster.secret_object("reporting-lucidgrant-state") or {}
    ledger = state["metadata"]["annotations"]["lucidgrant.dev/used-states"]
    assert len(ledger) < 200 and query_of(callback)["state"] not in ledger


def test_strangers_cannot_tell_which_grants_exist_or_need_a_person(cluster, lucid, start_operator):
    prepare(cluster, "pending", "working", "orphan")
    bootstrap(cluster, lucid, "working")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: ready(cluster, "working"), what="working Ready")
    cluster.patch_grant("orphan", {"spec": {"clientSecretRef": {"name": "no-such-secret"}}})
    wait_for(lambda: auth_url(cluster, "pending"), what="pending awaits a person")
    wait_for(
        lambda: (cluster.grant("orphan") or {}).get("status", {}).get("observedGeneration") == 2,
        what="orphan observed",
    )
    answers = {
        name: flow.get(ALL.format(name), follow_redirects=False)
        for name in ("working", "orphan", "nobody")
    }
    assert answers["nobody"].status_code == 404
    for name, answer in answers.items():
        assert (answer.status_code, answer.text) == (404, answers["nobody"].text), name
        assert "no-such-secret" not in answer.text and "lucid-client" not in answer.text
    other_ns = flow.get("/authorize/kube-system/pending", follow_redirects=False)
    assert (other_ns.status_code, other_ns.text) == (404, answers["nobody"].text)
    assert flow.get(ALL.format("pending"), follow_redirects=False).status_code == 302


@pytest.mark.parametrize(
    "keys",
    [
        {"clientIdKey": "client_secret", "clientSecretKey": "client_id"},  # swapped
        {"clientIdKey": "client_secret"},  # the secret as both
    ],
)
def test_a_grant_cannot_show_a_client_secret_as_its_client_id(cluster, lucid, start_operator, keys):
    """Someone who may create LucidGrants but not read Secrets names the team's marked client
    Secret with its keys chosen so that client_secret is read as client_id, which the link
    puts in the Location header to Lucid for whoever opens it."""
    prepare(cluster, "reporting")
    spec = grant_spec(
        clientSecretRef={"name": "lucid-client", **keys},
        authorization={"refreshTokenSecretRef": {"name": "evil-bootstrap"}},
        accessTokenSecret={"name": "evil-token"},
    )
    assert cluster.create_grant("evil", spec).status_code == 201
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster, "evil"), what="evil awaits a person")
    browser = Browser(flow)
    answer = browser.open(browser.link(cluster, "evil"))
    assert CLIENT_SECRET not in dump(dict(answer.headers)) + answer.text
    nobody = flow.get(ALL.format("nobody"), follow_redirects=False)
    assert (answer.status_code, answer.text) == (404, nobody.text)
    # The team's own grant, whose keys Lucid accepts as a client, still gets its link.
    assert browser.open(browser.link(cluster)).status_code == 302


def test_error_texts_from_the_query_are_never_shown(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    browser = Browser(flow)
    state = query_of(browser.consent(cluster))["state"]
    lie = "Your account is locked. Call +1 555 0100 and read out your password"
    callback = f"{flow.url}/callback"
    # Before the state is verified nothing from the query is shown, not even the error code.
    unverified = httpx.get(
        with_query(callback, error="access_denied", error_description=lie, state="x")
    )
    refused(unverified, 400, "malformed")
    assert "access_denied" not in unverified.text and "555" not in unverified.text
    # With a good state, a known error code is explained in the operator's words ...
    known = browser.open(
        with_query(callback, error="access_denied", error_description=lie, state=state)
    )
    refused(known, 400, "Lucid did not grant access: access_denied")
    assert "555" not in known.text
    # ... and an unknown one is not repeated at all.
    made_up = browser.open(with_query(callback, error=lie, state=state))
    refused(made_up, 400, "Lucid did not grant access.")
    assert "555" not in made_up.text
    assert auth_url(cluster)


def test_a_flood_of_links_is_capped(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(
        cluster,
        start_operator,
        LUCIDGRANT_FLOW_MAX_STATES="5",
        LUCIDGRANT_FLOW_GRANT_RATE="600",
        LUCIDGRANT_FLOW_CLIENT_RATE="600",
    )
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    link = flow.url + ALL.format("reporting")
    codes = [httpx.get(link).status_code for _ in range(8)]
    assert codes == [302] * 5 + [429] * 3
    too_many = httpx.get(link)
    assert "Too many" in too_many.text and "Retry-After" in too_many.headers


def test_one_address_is_rate_limited(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator, LUCIDGRANT_FLOW_CLIENT_RATE="3")
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    codes = [flow.get("/callback").status_code for _ in range(12)]
    # A burst of 10, then one every 20 s: the flood is answered 429 without any work.
    assert codes[:10] == [400] * 10 and codes[10:] == [429, 429]


def test_a_callback_flood_does_not_delay_another_grants_refresh(cluster, lucid, start_operator):
    """Exchanges for the flow run on their own connection pool: with every connection the
    refreshes could use (LUCIDGRANT_CONCURRENCY=2) matched by a hanging code exchange, a new
    grant's first refresh still goes through at once."""
    prepare(cluster, "a1", "a2")
    flow = start_flow(
        cluster, start_operator, LUCIDGRANT_CONCURRENCY="2", LUCIDGRANT_LUCID_TIMEOUT="12"
    )
    wait_for(lambda: auth_url(cluster, "a1") and auth_url(cluster, "a2"), what="awaiting")
    callbacks = [Browser(flow) for _ in range(2)]
    urls = [b.consent(cluster, name) for b, name in zip(callbacks, ("a1", "a2"), strict=True)]
    lucid.faults.slow(8.0, n=2)
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda b=b, u=u: answers.append(b.open(u)))
        for b, u in zip(callbacks, urls, strict=True)
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: lucid.stats()["faults"]["slow_remaining"] == 0, what="exchanges hanging")
    t0 = time.monotonic()
    bootstrap(cluster, lucid, "b")
    assert (
        cluster.create_grant(
            "b",
            grant_spec(
                authorization={"refreshTokenSecretRef": {"name": "b-bootstrap"}},
                accessTokenSecret={"name": "b-token"},
            ),
        ).status_code
        == 201
    )
    wait_for(lambda: ready(cluster, "b"), timeout=20, what="b Ready")
    took = time.monotonic() - t0
    for thread in threads:
        thread.join(20)
    assert [a.status_code for a in answers] == [200, 200]
    assert took < 6.0, f"b waited {took:.1f}s behind the hanging exchanges"


def half_open(port: int, n: int) -> list[socket.socket]:
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /callback?state=x HTTP/1.1\r\nHost: lucidgrant.example\r\n")
        conns.append(s)
    return conns


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_half_open_flood_neither_silences_healthz_nor_holds_connections(
    cluster, lucid, start_operator
):
    prepare(cluster, "reporting")
    flow = start_flow(
        cluster,
        start_operator,
        LUCIDGRANT_HEADER_TIMEOUT="2",
        LUCIDGRANT_FLOW_MAX_CONNECTIONS="100",
    )
    # As in a pod with a small file limit: 300 held connections would exhaust it.
    resource.prlimit(flow.op.proc.pid, resource.RLIMIT_NOFILE, (256, 256))
    port = int(flow.url.rsplit(":", 1)[1])
    conns = half_open(port, 300)
    try:
        t0 = time.monotonic()
        for _ in range(5):
            assert httpx.get(f"{flow.op.url}/healthz", timeout=2).status_code == 200
        assert time.monotonic() - t0 < 5
        # Past the cap the server hangs up at once; the rest at the header deadline.
        wait_for(lambda: sum(map(closed_by_server, conns)) >= 200, timeout=5, what="the cap")
        wait_for(lambda: all(map(closed_by_server, conns)), timeout=10, what="the deadline")
        assert flow.get(ALL.format("reporting"), follow_redirects=False).status_code == 302
    finally:
        for s in conns:
            s.close()


def test_metrics_and_probes_are_not_on_the_public_listener(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    for path in ("/metrics", "/healthz", "/readyz"):
        assert flow.get(path).status_code == 404, path
    assert "lucidgrant_" in flow.op.metrics()
    assert httpx.get(f"{flow.op.url}/authorize/default/reporting").status_code == 404
    assert httpx.get(f"{flow.op.url}/callback").status_code == 404


def test_the_authorizing_person_is_recorded_from_the_proxy_header(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator, LUCIDGRANT_FLOW_USER_HEADER="X-Auth-Request-Email")
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    browser = Browser(flow)
    # Without the header the request did not come through the proxy: refused.
    refused(browser.open(browser.link(cluster)), 403, "authenticating proxy")
    who = {"X-Auth-Request-Email": "alice@example.com"}
    callback = browser.consent(cluster, **who)
    refused(browser.open(callback), 403, "authenticating proxy")
    assert browser.open(callback, **who).status_code == 200
    wait_for(lambda: ready(cluster), what="Ready")
    (event,) = [e for e in cluster.events() if e["reason"] == "Authorized"]
    assert "alice@example.com" in event["message"]


def test_the_user_header_is_ignored_unless_configured(cluster, lucid, start_operator):
    prepare(cluster, "reporting")
    flow = start_flow(cluster, start_operator)
    wait_for(lambda: auth_url(cluster), what="awaiting a person")
    who = {"X-Auth-Request-Email": "mallory@example.com", "X-Forwarded-User": "mallory"}
    assert Browser(flow).authorize(cluster, **who).status_code == 200
    wait_for(lambda: ready(cluster), what="Ready")
    assert "mallory" not in dump(cluster.events()) + flow.op.logs()


def test_an_http_external_url_is_refused_at_start(kube_api, tmp_path: Path):
    env = {
        "KUBECONFIG": str(kube_api[1]),
        "LUCIDGRANT_EXTERNAL_URL": "http://lucidgrant.example",
        "PATH": "/usr/bin:/bin",
    }
    done = run(
        [sys.executable, "-m", "lucidgrant", "run", "--namespace", "default"], env, timeout=60
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "LUCIDGRANT_EXTERNAL_URL" in line]
    assert len(lines) == 1 and "https://" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
