"""Helpers for the tests of the operator-hosted authorization flow: an operator serving the flow
on its own listener behind a pretend https:// front, and a browser that keeps the flow's cookie.

The operator refuses an http:// external URL, so the tests give it `EXTERNAL` (as an Ingress
terminating TLS would be) and rewrite that prefix to the flow listener's loopback address. The
flow's cookie is `Secure`, which httpx will not send over plain HTTP: `Browser` keeps it and
sends it by hand, as a browser behind the https:// front would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from lucidgrant_testbed.lucid import LucidEmulator

from .harness import CLIENT_ID, CLIENT_SECRET, Cluster, OperatorProcess, free_port, grant_spec

POD_NS = "lucidgrant-system"
KEY_SECRET = "lucidgrant-state-key"
EXTERNAL = "https://lucidgrant.example"
COOKIE = "__Host-lucidgrant-flow"


@dataclass
class Flow:
    op: OperatorProcess
    url: str  # the flow listener, where EXTERNAL points

    def local(self, url: str) -> str:
        assert url.startswith(EXTERNAL + "/"), url
        return self.url + url[len(EXTERNAL) :]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, **kwargs)


def start_flow(cluster: Cluster, start_operator: Any, *args: str, **env: str) -> Flow:
    """An operator that hosts the authorization flow (the cluster needs `prepare` first);
    `args` default to the cluster-wide install's --all-namespaces."""
    port = free_port()
    op: OperatorProcess = start_operator(
        *(args or ("--all-namespaces",)),
        LUCIDGRANT_FLOW_HOST="127.0.0.1",
        LUCIDGRANT_FLOW_PORT=str(port),
        LUCIDGRANT_EXTERNAL_URL=EXTERNAL,
        **env,
    )
    return Flow(op, f"http://127.0.0.1:{port}")


def prepare(cluster: Cluster, *names: str) -> None:
    """The operator's namespace, the client Secret, and grants with no bootstrap yet."""
    cluster.http.post(
        "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POD_NS}},
    )
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    for name in names:
        spec = grant_spec(
            authorization={"refreshTokenSecretRef": {"name": f"{name}-bootstrap"}},
            accessTokenSecret={"name": f"{name}-token"},
        )
        assert cluster.create_grant(name, spec).status_code == 201


def auth_url(cluster: Cluster, name: str = "reporting") -> str | None:
    status = (cluster.grant(name) or {}).get("status") or {}
    return (
        status.get("authorizationURL") if cluster.is_true(name, "ReauthorizationRequired") else None
    )


@dataclass
class Browser:
    """One person's browser: it keeps the flow's cookie and stops before the callback."""

    flow: Flow
    cookie: str | None = None
    set_cookies: list[str] = field(default_factory=list)

    def open(self, url: str, **headers: str) -> httpx.Response:
        sent = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        response = httpx.get(url, headers={**sent, **headers}, follow_redirects=False, timeout=30)
        for header in response.headers.get_list("set-cookie"):
            self.set_cookies.append(header)
            name, _, rest = header.partition("=")
            if name == COOKIE:
                self.cookie = rest.split(";", 1)[0]
        return response

    def link(self, cluster: Cluster, name: str = "reporting") -> str:
        link = auth_url(cluster, name)
        assert link, f"{name} awaits no person"
        return self.flow.local(link)

    def consent(self, cluster: Cluster, name: str = "reporting", **headers: str) -> str:
        """Click the grant's link and consent on Lucid's page: the callback URL, not opened."""
        first = self.open(self.link(cluster, name), **headers)
        assert first.status_code == 302, first.text
        second = httpx.get(first.headers["location"], follow_redirects=False)
        assert second.status_code == 302, second.text
        return self.flow.local(str(second.headers["location"]))

    def authorize(
        self, cluster: Cluster, name: str = "reporting", **headers: str
    ) -> httpx.Response:
        return self.open(self.consent(cluster, name, **headers), **headers)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(params)}"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def snapshot(cluster: Cluster, lucid: LucidEmulator, name: str = "reporting") -> tuple[Any, ...]:
    """What a refused callback must leave alone: the grant's stored tokens, the key, Lucid's
    count of exchanged codes, and the conditions."""
    state = cluster.secret_object(f"{name}-lucidgrant-state") or {}
    key = cluster.secret_object(KEY_SECRET, ns=POD_NS) or {}
    return (
        state.get("data"),
        key.get("metadata", {}).get("resourceVersion"),
        lucid.calls[("token_code", 200)],
        cluster.is_true(name, "ReauthorizationRequired"),
        cluster.is_true(name, "Ready"),
    )


def refused(response: httpx.Response, status: int, text: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert text in response.text, response.text
    assert "Nothing was changed" in response.text
    assert response.headers["content-type"].startswith("text/html")
