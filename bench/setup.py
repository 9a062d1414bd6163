"""Creating the benchmark's grants over plain HTTP, concurrently: a grant at the Lucid emulator
(as a person's one-time authorization would), its refresh token in a bootstrap Secret, and the
LucidGrant that points at it. Also the one-shot baseline's Secrets, in a namespace of their own
that the operator does not watch."""

from __future__ import annotations

import asyncio
import base64
import zlib
from dataclasses import dataclass
from typing import Any

import httpx

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret"
SCOPES = ["lucidchart.document.content:readonly", "offline_access"]
NAMESPACE = "default"
ONESHOT_NAMESPACE = "oneshot"
GRANTS = "/apis/lucidgrant.dev/v1alpha1/namespaces/{ns}/lucidgrants"
SECRETS = "/api/v1/namespaces/{ns}/secrets"


@dataclass(frozen=True)
class BenchGrant:
    name: str
    lucid_id: str
    uid: str

    @property
    def jitter(self) -> float:
        """The operator's per-grant jitter in [0, 1), as lucidgrant.cache computes it."""
        return (zlib.crc32(self.uid.encode()) % 10_000) / 10_000


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    return dict(response.json())


async def _issue(lucid: httpx.AsyncClient) -> tuple[str, str]:
    """A grant at Lucid: (its id, its refresh token)."""
    tokens = _ok(
        await lucid.post("/_emulator/grants", json={"client_id": CLIENT_ID, "scopes": SCOPES})
    )
    info = _ok(await lucid.post("/_emulator/lookup", json={"token": tokens["refresh_token"]}))
    return str(info["id"]), str(tokens["refresh_token"])


async def _secret(kube: httpx.AsyncClient, ns: str, name: str, values: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: _b64(v) for k, v in values.items()},
    }
    _ok(await kube.post(SECRETS.format(ns=ns), json=body))


async def _one_grant(
    kube: httpx.AsyncClient, lucid: httpx.AsyncClient, name: str, refresh_before: str
) -> BenchGrant:
    lucid_id, refresh_token = await _issue(lucid)
    await _secret(kube, NAMESPACE, f"{name}-bootstrap", {"refresh_token": refresh_token})
    body = {
        "apiVersion": "lucidgrant.dev/v1alpha1",
        "kind": "LucidGrant",
        "metadata": {"name": name, "labels": {"bench": "true"}},
        "spec": {
            "clientSecretRef": {"name": "lucid-client"},
            "scopes": SCOPES,
            "authorization": {"refreshTokenSecretRef": {"name": f"{name}-bootstrap"}},
            "accessTokenSecret": {"name": f"{name}-token"},
            "refreshBefore": refresh_before,
        },
    }
    created = _ok(await kube.post(GRANTS.format(ns=NAMESPACE), json=body))
    return BenchGrant(name, lucid_id, str(created["metadata"]["uid"]))


async def _bounded(n: int, make: Any, concurrency: int) -> list[Any]:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with slots:
            return await make(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _create_grants(
    kube_url: str, lucid_url: str, n: int, refresh_before: str, concurrency: int
) -> list[BenchGrant]:
    async with (
        httpx.AsyncClient(base_url=kube_url, timeout=60) as kube,
        httpx.AsyncClient(base_url=lucid_url, timeout=60) as lucid,
    ):
        await _secret(
            kube,
            NAMESPACE,
            "lucid-client",
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        )
        return await _bounded(
            n,
            lambda i: _one_grant(kube, lucid, f"bench-{i:05d}", refresh_before),
            concurrency,
        )


def create_grants(
    kube_url: str, lucid_url: str, n: int, refresh_before: str, concurrency: int = 16
) -> list[BenchGrant]:
    return asyncio.run(_create_grants(kube_url, lucid_url, n, refresh_before, concurrency))


async def _create_oneshot(kube_url: str, lucid_url: str, n: int) -> list[tuple[str, str]]:
    async with (
        httpx.AsyncClient(base_url=kube_url, timeout=60) as kube,
        httpx.AsyncClient(base_url=lucid_url, timeout=60) as lucid,
    ):
        _ok(
            await kube.post(
                "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "oneshot"}},
            )
        )
        out = []
        for i in range(n):
            lucid_id, refresh_token = await _issue(lucid)
            name = f"oneshot-{i:03d}"
            await _secret(kube, ONESHOT_NAMESPACE, name, {"refresh_token": refresh_token})
            out.append((name, lucid_id))
        return out


def create_oneshot_secrets(kube_url: str, lucid_url: str, n: int) -> list[tuple[str, str]]:
    """(Secret name, Lucid grant id) for each one-shot sample grant."""
    return asyncio.run(_create_oneshot(kube_url, lucid_url, n))
